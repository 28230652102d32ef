// libcurl boundary helpers shared by the downloader: global init, HEAD probes, and the one place
// where HTTP statuses and CURLcodes become Status codes.
//
// Classification (what the downloader retries and what it reports at once):
//   401 -> Unauthenticated, 403 -> PermissionDenied (both with a hint about HF_TOKEN),
//   404/410 -> NotFound, 416 -> FailedPrecondition (range rejected: file changed upstream),
//   408/425/429/5xx -> transient (retried), other 4xx -> FailedPrecondition.
//   CURLcodes: malformed URL / unsupported protocol / too many redirects -> InvalidArgument or
//   FailedPrecondition (permanent); everything network-shaped (connect, resolve, recv, send,
//   partial file, timeouts, TLS handshake) -> transient.
//
// Thread-safety: free functions; each Probe uses its own curl handle.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "engine/base/status.h"

namespace garnet::registry {

// Calls curl_global_init once per process (thread-safe).
void EnsureCurlInitialized();

// Options every request shares.
struct HttpOptions {
  std::string token;  // bearer token for gated repos (HF_TOKEN); never sent to other hosts
  std::string user_agent = "garnet/0.1";
  std::chrono::milliseconds connect_timeout{15000};
  // Whole-request limit for probes (HEAD).
  std::chrono::milliseconds probe_timeout{30000};
};

// What a HEAD (following redirects) told us about a file.
struct RemoteInfo {
  long http_status = 0;
  // Final response's Content-Length; nullopt when absent.
  bool has_content_length = false;
  uint64_t content_length = 0;
  // X-Linked-Size / X-Linked-Etag (the hub's LFS headers), seen on any response of the chain.
  bool has_linked_size = false;
  uint64_t linked_size = 0;
  std::string linked_sha256;  // 64 lower-case hex, empty when absent or not a sha256
  bool accept_ranges = false;
};

// A classified failure: `transient` says whether retrying may help.
struct HttpFailure {
  Status status;
  bool transient = false;
};

// Maps an HTTP status (>= 400) to a failure. `what` names the URL in the message.
HttpFailure ClassifyHttpStatus(long code, const std::string& what);
// Maps a CURLcode (non-zero) to a failure; `detail` is curl's error buffer text.
HttpFailure ClassifyCurlCode(int curl_code, const std::string& detail, const std::string& what);

// One HEAD request (following redirects). Returns the failure (classified) for statuses >= 400
// and network errors; the caller decides whether to retry.
Result<RemoteInfo> ProbeOnce(const std::string& url, const HttpOptions& opts, bool* transient);

// Parses "bytes <first>-<last>/<total>" (total may be '*'). False when malformed.
bool ParseContentRange(std::string_view value, uint64_t* first, uint64_t* last, uint64_t* total,
                       bool* total_known);

// Strict decimal u64 parse (no sign, no spaces, no overflow).
bool ParseU64(std::string_view s, uint64_t* out);

}  // namespace garnet::registry

namespace garnet::registry {

// One GET of a small document (JSON listings), following redirects. Bodies over `max_bytes`
// fail with ResourceExhausted. Failures are classified as in ProbeOnce.
Result<std::string> GetSmallOnce(const std::string& url, const HttpOptions& opts, size_t max_bytes,
                                 bool* transient);

}  // namespace garnet::registry
