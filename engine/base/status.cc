#include "engine/base/status.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace garnet {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kCancelled:
      return "cancelled";
    case Code::kUnknown:
      return "unknown";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kDeadlineExceeded:
      return "deadline exceeded";
    case Code::kNotFound:
      return "not found";
    case Code::kAlreadyExists:
      return "already exists";
    case Code::kPermissionDenied:
      return "permission denied";
    case Code::kResourceExhausted:
      return "resource exhausted";
    case Code::kFailedPrecondition:
      return "failed precondition";
    case Code::kAborted:
      return "aborted";
    case Code::kOutOfRange:
      return "out of range";
    case Code::kUnimplemented:
      return "unimplemented";
    case Code::kInternal:
      return "internal";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kDataLoss:
      return "data loss";
    case Code::kUnauthenticated:
      return "unauthenticated";
  }
  return "unknown";
}

Status::Status(Code code, std::string_view context, std::string_view detail) {
  if (code == Code::kOk) return;
  rep_ = std::make_unique<Rep>();
  rep_->code = code;
  rep_->message.assign(context);
  if (!detail.empty()) {
    if (!rep_->message.empty()) rep_->message += ": ";
    rep_->message.append(detail);
  }
}

Status::Status(const Status& other)
    : rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
  return *this;
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(CodeName(code()));
  s += ": ";
  s += rep_->message;
  return s;
}

Status Status::WithContext(std::string_view outer) const {
  if (ok()) return Status();
  return Status(code(), outer, rep_->message);
}

Status PosixError(std::string_view context, int err) {
  char buf[256];
  // GNU strerror_r may return a static string instead of filling buf.
  const char* text = strerror_r(err, buf, sizeof buf);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Status::NotFound(context, text);
    case EACCES:
    case EPERM:
    case EROFS:
      return Status::PermissionDenied(context, text);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return Status::ResourceExhausted(context, text);
    case EEXIST:
      return Status::AlreadyExists(context, text);
    case EINVAL:
    case ENAMETOOLONG:
      return Status::InvalidArgument(context, text);
    case EINTR:
    case EAGAIN:
      return Status::Unavailable(context, text);
    default:
      return Status::Internal(context, text);
  }
}

void ResultAccessFailed(const Status& status) {
  std::fprintf(stderr, "garnet: value() of a failed Result: %s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace garnet
