#include "registry/reference.h"

#include <cctype>
#include <cstdio>

namespace garnet::registry {
namespace {

std::string Quote(std::string_view s) {
  // Messages never echo raw control bytes: escape anything outside printable ASCII.
  std::string out = "\"";
  for (unsigned char c : s.substr(0, 160)) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 160) out += "...";
  out += "\"";
  return out;
}

std::string DescribeChar(unsigned char c) {
  if (c == 0) return "NUL byte";
  if (c == '/') return "'/'";
  if (c < 0x20 || c == 0x7f) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "control character 0x%02x", c);
    return buf;
  }
  if (c >= 0x80) return "non-ASCII byte (only ASCII letters, digits, '.', '_' and '-' are allowed)";
  return std::string("'") + static_cast<char>(c) + "'";
}

bool IsLocalPath(std::string_view t) {
  return t.starts_with('/') || t.starts_with("./") || t.starts_with("../") || t.starts_with("~/") ||
         t == "." || t == "..";
}

}  // namespace

std::string Reference::ToString() const {
  switch (kind) {
    case Kind::kCatalog:
      return tag.empty() ? name : name + ":" + tag;
    case Kind::kHuggingFace:
      return "hf.co/" + name + (tag.empty() ? "" : ":" + tag);
    case Kind::kLocalPath:
      return path;
  }
  return {};
}

Status ValidateComponent(std::string_view what, std::string_view value, bool allow_upper) {
  const std::string ctx = std::string(what) + " " + Quote(value);
  if (value.empty()) return Status::InvalidArgument(std::string(what), "must not be empty");
  if (value.size() > kMaxComponentLength) {
    return Status::InvalidArgument(
        ctx.substr(0, 200), "longer than " + std::to_string(kMaxComponentLength) + " characters");
  }
  if (value == "." || value.find("..") != std::string_view::npos) {
    return Status::InvalidArgument(ctx, "'.' and '..' are not allowed");
  }
  for (unsigned char c : value) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || (allow_upper && c >= 'A' && c <= 'Z');
    if (!ok) {
      if (c >= 'A' && c <= 'Z') {
        return Status::InvalidArgument(ctx, "upper-case letters are not allowed here");
      }
      return Status::InvalidArgument(ctx, DescribeChar(c) + " is not allowed");
    }
  }
  if (value.front() == '.' || value.front() == '-') {
    return Status::InvalidArgument(ctx, "must start with a letter or digit");
  }
  return Status::OK();
}

Result<Reference> ParseReference(std::string_view text) {
  const std::string ctx = "model reference " + Quote(text);
  if (text.empty()) return Status::InvalidArgument("model reference", "empty");
  if (text.size() > kMaxReferenceLength) {
    return Status::InvalidArgument(
        "model reference", "longer than " + std::to_string(kMaxReferenceLength) + " characters");
  }
  for (unsigned char c : text) {
    if (c == 0 || c < 0x20 || c == 0x7f || c >= 0x80) {
      return Status::InvalidArgument(ctx, DescribeChar(c) + " is not allowed");
    }
  }
  Reference ref;
  if (IsLocalPath(text)) {
    ref.kind = Reference::Kind::kLocalPath;
    ref.path = std::string(text);
    return ref;
  }
  std::string_view rest;
  if (text.starts_with("hf.co/")) {
    rest = text.substr(6);
  } else if (text.starts_with("huggingface.co/")) {
    rest = text.substr(15);
  }
  if (!rest.empty() || text == "hf.co/" || text == "huggingface.co/") {
    ref.kind = Reference::Kind::kHuggingFace;
    std::string_view quant;
    if (size_t colon = rest.find(':'); colon != std::string_view::npos) {
      quant = rest.substr(colon + 1);
      rest = rest.substr(0, colon);
      Status s = ValidateComponent("quant", quant, /*allow_upper=*/true);
      if (!s.ok()) return s.WithContext(ctx);
    }
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      return Status::InvalidArgument(ctx, "expected hf.co/<org>/<repo>[:quant]");
    }
    std::string_view org = rest.substr(0, slash), repo = rest.substr(slash + 1);
    if (repo.find('/') != std::string_view::npos) {
      return Status::InvalidArgument(ctx, "repo: '/' is not allowed (expected hf.co/<org>/<repo>)");
    }
    Status s = ValidateComponent("org", org, true);
    if (s.ok()) s = ValidateComponent("repo", repo, true);
    if (!s.ok()) return s.WithContext(ctx);
    ref.org = std::string(org);
    ref.repo = std::string(repo);
    ref.name = ref.org + "/" + ref.repo;
    ref.tag = std::string(quant);
    return ref;
  }
  ref.kind = Reference::Kind::kCatalog;
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view name = lower, tag;
  if (size_t colon = lower.find(':'); colon != std::string::npos) {
    name = std::string_view(lower).substr(0, colon);
    tag = std::string_view(lower).substr(colon + 1);
    if (tag.find(':') != std::string_view::npos) {
      return Status::InvalidArgument(ctx, "more than one ':' (expected name[:tag])");
    }
    Status s = ValidateComponent("tag", tag, false);
    if (!s.ok()) return s.WithContext(ctx);
  }
  Status s = ValidateComponent("name", name, false);
  if (!s.ok()) return s.WithContext(ctx);
  ref.name = std::string(name);
  ref.tag = std::string(tag);
  return ref;
}

bool IsLowerHex64(std::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsValidDigest(std::string_view digest) {
  return digest.size() == 71 && digest.starts_with("sha256-") && IsLowerHex64(digest.substr(7));
}

Result<std::string> NormalizeDigest(std::string_view digest) {
  if (digest.size() == 71 && (digest.starts_with("sha256-") || digest.starts_with("sha256:")) &&
      IsLowerHex64(digest.substr(7))) {
    return "sha256-" + std::string(digest.substr(7));
  }
  return Status::InvalidArgument("digest " + Quote(digest),
                                 "expected sha256-<64 lower-case hex characters>");
}

}  // namespace garnet::registry
