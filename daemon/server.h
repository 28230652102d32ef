// garnetd as a library: builds the registry client, the model manager, the worker pool and the
// gRPC server from a Config, listens, and shuts down gracefully.
//
// Lifecycle: Start() binds every endpoint or fails (nothing left listening); Wait() blocks until
// Shutdown() (from another thread or a signal handler thread); Shutdown() cancels running jobs
// (streams end with CANCELLED), joins workers, lets their calls send their last message for up to
// `grace`, then stops gRPC at once (idle client connections do not delay it), unloads models,
// closes the database and removes the socket file. The destructor calls Shutdown().
//
// Thread-safety: Shutdown() and the accessors may be called from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "daemon/config.h"
#include "engine/base/status.h"

namespace garnet::daemon {

class Server {
 public:
  // Errors: InvalidArgument / PermissionDenied from ValidateConfig; AlreadyExists when another
  // garnetd answers on the socket; Unavailable when an address cannot be bound; the registry's
  // errors for the data dir.
  static Result<std::unique_ptr<Server>> Start(const Config& config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void Wait();
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  // "unix:/path" (empty when the socket is off).
  std::string unix_target() const;
  // "127.0.0.1:<port>" with the bound port (empty when no TCP listener).
  std::string tcp_target() const;
  // "http://127.0.0.1:<port>" of the read-only mirror (empty when off).
  std::string mirror_url() const;
  // "http://127.0.0.1:<port>" of the OpenAI-compatible endpoint (empty when off).
  std::string http_url() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace garnet::daemon
