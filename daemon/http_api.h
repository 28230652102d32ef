// Optional OpenAI-compatible HTTP endpoint (cpp-httplib) and /metrics, on loopback by default:
//   GET  /v1/models
//   POST /v1/chat/completions   (stream: true -> Server-Sent Events, "data: [DONE]" at the end)
//   POST /v1/completions        (raw prompt completion; streaming too)
//   GET  /metrics               (Prometheus text)
//   GET  /health
// Both generation routes map to the same ModelManager (and so the same slots, queue and "busy"
// limit) as the gRPC API.
//
// Web-facing safety: the Host header must name a loopback host (localhost, 127.0.0.1, [::1],
// any port) or one of `allowed_hosts` — a page in the user's browser cannot reach the daemon
// through DNS rebinding; no CORS headers unless `cors_origin` is set; request bodies above
// `max_body_bytes` are refused (413); a configured token is required as `Authorization: Bearer`;
// error messages never carry absolute paths.
//
// Thread-safety: Start/Stop from one thread; requests are served on cpp-httplib's pool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/base/status.h"

namespace garnet::daemon {

class ModelManager;
class RegistryClient;
struct Config;

struct HttpOptions {
  std::string listen = "127.0.0.1:0";
  std::vector<std::string> allowed_hosts;  // extra Host values (without port) to accept
  std::string cors_origin;                 // empty: no CORS
  uint64_t max_body_bytes = 4u << 20;
  std::string token;
};

class HttpApi {
 public:
  // Binds and serves on a background thread. InvalidArgument for a malformed address,
  // PermissionDenied for a non-loopback address without a token, Unavailable when it cannot bind.
  static Result<std::unique_ptr<HttpApi>> Start(const HttpOptions& options, const Config* config,
                                                ModelManager* models, RegistryClient* registry);
  ~HttpApi();  // Stop()
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  std::string base_url() const;  // "http://127.0.0.1:<port>"
  void Stop();

 private:
  struct Impl;
  explicit HttpApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "Host" header check (see the file comment). Exposed for tests.
bool HostAllowed(const std::string& host_header, const std::vector<std::string>& allowed);
// Replaces absolute paths in an error message with "<path>".
std::string ScrubPaths(const std::string& message);

}  // namespace garnet::daemon
