// Status and Result<T>: how every garnet library reports failure.
//
// No exception crosses a library boundary. A function that can fail returns a Status (or a
// Result<T> holding either a value or a non-OK Status). The code set is exactly gRPC's, so the
// daemon maps a Status onto grpc::Status one-to-one.
//
// Messages have two parts, "context: detail", e.g.
//   "gguf header at offset 8: tensor_count 4294967296 exceeds what the file can hold".
// A message names what was wrong so a user can act on it; it never contains file contents.
//
// Thread-safety: Status and Result are values; distinct objects may be used from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace garnet {

// Numerically equal to grpc::StatusCode.
enum class Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// Short lower-case name of a code ("invalid argument", "not found", ...).
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  // OK. Success carries no allocation.
  Status() = default;
  Status(Code code, std::string_view context, std::string_view detail = {});

  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status OK() { return Status(); }
#define GARNET_STATUS_CTOR(Name, code_)                                        \
  static Status Name(std::string_view context, std::string_view detail = {}) { \
    return Status(Code::code_, context, detail);                               \
  }                                                                            \
  bool Is##Name() const {                                                      \
    return code() == Code::code_;                                              \
  }
  GARNET_STATUS_CTOR(Cancelled, kCancelled)
  GARNET_STATUS_CTOR(Unknown, kUnknown)
  GARNET_STATUS_CTOR(InvalidArgument, kInvalidArgument)
  GARNET_STATUS_CTOR(DeadlineExceeded, kDeadlineExceeded)
  GARNET_STATUS_CTOR(NotFound, kNotFound)
  GARNET_STATUS_CTOR(AlreadyExists, kAlreadyExists)
  GARNET_STATUS_CTOR(PermissionDenied, kPermissionDenied)
  GARNET_STATUS_CTOR(ResourceExhausted, kResourceExhausted)
  GARNET_STATUS_CTOR(FailedPrecondition, kFailedPrecondition)
  GARNET_STATUS_CTOR(Aborted, kAborted)
  GARNET_STATUS_CTOR(OutOfRange, kOutOfRange)
  GARNET_STATUS_CTOR(Unimplemented, kUnimplemented)
  GARNET_STATUS_CTOR(Internal, kInternal)
  GARNET_STATUS_CTOR(Unavailable, kUnavailable)
  GARNET_STATUS_CTOR(DataLoss, kDataLoss)
  GARNET_STATUS_CTOR(Unauthenticated, kUnauthenticated)
#undef GARNET_STATUS_CTOR

  bool ok() const {
    return rep_ == nullptr;
  }
  Code code() const {
    return rep_ ? rep_->code : Code::kOk;
  }
  // "context: detail" (or just "context"); empty for OK.
  const std::string& message() const;
  // "not found: context: detail", or "ok".
  std::string ToString() const;

  // Returns a copy with `outer` prepended to the message: "outer: context: detail".
  Status WithContext(std::string_view outer) const;

 private:
  struct Rep {
    Code code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

// Translates an errno value once, at the OS boundary: ENOENT -> NotFound, EACCES/EPERM ->
// PermissionDenied, ENOSPC/EDQUOT -> ResourceExhausted, EEXIST -> AlreadyExists, everything else
// -> Internal (with strerror text as the detail).
Status PosixError(std::string_view context, int err);

// A value or a non-OK Status. Accessing value() of an error Result is a programming error
// (checked with an abort, never undefined behaviour).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (status_.ok()) status_ = Status::Internal("Result constructed from OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & {
    CheckOk();
    return *value_;
  }
  const T& value() const& {
    CheckOk();
    return *value_;
  }
  T&& value() && {
    CheckOk();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void CheckOk() const;
  std::optional<T> value_;
  Status status_;
};

[[noreturn]] void ResultAccessFailed(const Status& status);

template <typename T>
void Result<T>::CheckOk() const {
  if (!value_.has_value()) ResultAccessFailed(status_);
}

}  // namespace garnet

// Early return on error. Usage: GARNET_RETURN_IF_ERROR(f());
#define GARNET_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::garnet::Status garnet_status_ = (expr);        \
    if (!garnet_status_.ok()) return garnet_status_; \
  } while (0)

#define GARNET_CONCAT_INNER_(a, b) a##b
#define GARNET_CONCAT_(a, b) GARNET_CONCAT_INNER_(a, b)
// Usage: GARNET_ASSIGN_OR_RETURN(auto file, OpenFile(path));
#define GARNET_ASSIGN_OR_RETURN(lhs, expr)                    \
  auto GARNET_CONCAT_(garnet_result_, __LINE__) = (expr);     \
  if (!GARNET_CONCAT_(garnet_result_, __LINE__).ok())         \
    return GARNET_CONCAT_(garnet_result_, __LINE__).status(); \
  lhs = std::move(GARNET_CONCAT_(garnet_result_, __LINE__)).value()
