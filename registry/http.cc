#include "registry/http.h"

#include <curl/curl.h>

#include <cctype>
#include <mutex>

#include "registry/reference.h"

namespace garnet::registry {
namespace {

std::string Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// The hub's X-Linked-Etag is the LFS oid (sha256), usually quoted; weak validators are "W/".
std::string EtagToSha256(std::string_view v) {
  std::string s = Trim(v);
  std::string_view t = s;
  if (t.starts_with("W/")) t.remove_prefix(2);
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
  return IsLowerHex64(t) ? std::string(t) : std::string();
}

size_t ProbeHeader(char* data, size_t size, size_t nitems, void* user) {
  auto* info = static_cast<RemoteInfo*>(user);
  std::string_view line(data, size * nitems);
  if (line.starts_with("HTTP/")) {
    // A new response of the redirect chain: per-response fields start over.
    info->has_content_length = false;
    info->content_length = 0;
    info->accept_ranges = false;
    return size * nitems;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * nitems;
  std::string_view name = line.substr(0, colon);
  std::string value = Trim(line.substr(colon + 1));
  uint64_t n = 0;
  if (IEquals(name, "content-length") && ParseU64(value, &n)) {
    info->has_content_length = true;
    info->content_length = n;
  } else if (IEquals(name, "x-linked-size") && ParseU64(value, &n)) {
    info->has_linked_size = true;
    info->linked_size = n;
  } else if (IEquals(name, "x-linked-etag")) {
    info->linked_sha256 = EtagToSha256(value);
  } else if (IEquals(name, "accept-ranges")) {
    info->accept_ranges = value.find("bytes") != std::string::npos;
  }
  return size * nitems;
}

const char* kTokenHint =
    "the repository may be gated or private: accept its licence on the hub and set HF_TOKEN "
    "(or pass a token) with read access";

}  // namespace

void EnsureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool ParseContentRange(std::string_view value, uint64_t* first, uint64_t* last, uint64_t* total,
                       bool* total_known) {
  std::string v = Trim(value);
  std::string_view s = v;
  if (!s.starts_with("bytes ")) return false;
  s.remove_prefix(6);
  size_t dash = s.find('-'), slash = s.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) {
    return false;
  }
  if (!ParseU64(s.substr(0, dash), first)) return false;
  if (!ParseU64(s.substr(dash + 1, slash - dash - 1), last)) return false;
  if (*last < *first) return false;
  std::string_view t = s.substr(slash + 1);
  if (t == "*") {
    *total_known = false;
    return true;
  }
  *total_known = true;
  return ParseU64(t, total) && *last < *total;
}

HttpFailure ClassifyHttpStatus(long code, const std::string& what) {
  std::string detail = "HTTP " + std::to_string(code);
  switch (code) {
    case 401:
      return {Status::Unauthenticated(what, detail + ": " + kTokenHint), false};
    case 403:
      return {Status::PermissionDenied(what, detail + ": " + kTokenHint), false};
    case 404:
    case 410:
      return {Status::NotFound(what, detail + ": no such file upstream"), false};
    case 416:
      return {Status::FailedPrecondition(
                  what, detail + ": the server rejected the byte range; the file may have changed"),
              false};
    case 408:
    case 425:
    case 429:
      return {Status::Unavailable(what, detail), true};
    default:
      if (code >= 500) return {Status::Unavailable(what, detail), true};
      return {Status::FailedPrecondition(what, detail), false};
  }
}

HttpFailure ClassifyCurlCode(int curl_code, const std::string& detail, const std::string& what) {
  auto rc = static_cast<CURLcode>(curl_code);
  std::string msg = curl_easy_strerror(rc);
  if (!detail.empty()) msg += " (" + detail + ")";
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return {Status::InvalidArgument(what, msg), false};
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_PEER_FAILED_VERIFICATION:
      return {Status::FailedPrecondition(what, msg), false};
    case CURLE_OUT_OF_MEMORY:
      return {Status::ResourceExhausted(what, msg), false};
    default:
      return {Status::Unavailable(what, msg), true};
  }
}

// Options shared by the small requests (HEAD probe, small GET): redirects within http(s), no
// signals, timeouts and the bearer token from `opts`. `errbuf` must outlive the transfer.
void SetProbeOptions(CURL* h, const HttpOptions& opts, char* errbuf) {
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_USERAGENT, opts.user_agent.c_str());
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(opts.probe_timeout.count()));
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  if (!opts.token.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, opts.token.c_str());
  }
}

Result<RemoteInfo> ProbeOnce(const std::string& url, const HttpOptions& opts, bool* transient) {
  EnsureCurlInitialized();
  *transient = false;
  CURL* h = curl_easy_init();
  if (h == nullptr) return Status::ResourceExhausted("curl", "curl_easy_init failed");
  RemoteInfo info;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, ProbeHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &info);
  SetProbeOptions(h, opts, errbuf);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(h);
  const std::string what = "HEAD " + url;
  if (rc != CURLE_OK) {
    HttpFailure f = ClassifyCurlCode(rc, errbuf, what);
    *transient = f.transient;
    return f.status;
  }
  info.http_status = code;
  if (code >= 400 && code != 405) {
    HttpFailure f = ClassifyHttpStatus(code, what);
    *transient = f.transient;
    return f.status;
  }
  return info;
}

}  // namespace garnet::registry

namespace garnet::registry {
namespace {

struct SmallBody {
  std::string data;
  size_t max = 0;
  bool too_big = false;
};

size_t SmallWrite(char* p, size_t size, size_t nmemb, void* user) {
  auto* b = static_cast<SmallBody*>(user);
  size_t n = size * nmemb;
  if (b->data.size() + n > b->max) {
    b->too_big = true;
    return CURL_WRITEFUNC_ERROR;
  }
  b->data.append(p, n);
  return n;
}

}  // namespace

Result<std::string> GetSmallOnce(const std::string& url, const HttpOptions& opts, size_t max_bytes,
                                 bool* transient) {
  EnsureCurlInitialized();
  *transient = false;
  CURL* h = curl_easy_init();
  if (h == nullptr) return Status::ResourceExhausted("curl", "curl_easy_init failed");
  SmallBody body;
  body.max = max_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, SmallWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  SetProbeOptions(h, opts, errbuf);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(h);
  const std::string what = "GET " + url;
  if (body.too_big) {
    return Status::ResourceExhausted(
        what, "response larger than " + std::to_string(max_bytes) + " bytes");
  }
  if (rc != CURLE_OK) {
    HttpFailure f = ClassifyCurlCode(rc, errbuf, what);
    *transient = f.transient;
    return f.status;
  }
  if (code >= 400) {
    HttpFailure f = ClassifyHttpStatus(code, what);
    *transient = f.transient;
    return f.status;
  }
  return std::move(body.data);
}

}  // namespace garnet::registry
