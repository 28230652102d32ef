// Mirror: a read-only HTTP endpoint that serves the local store in the hub's URL shape, so one
// machine can feed an air-gapped site (GARNET_MIRROR=http://host:port) and the demo can pull
// offline.
//
// Routes (GET and HEAD):
//   /<org>/<repo>/resolve/<rev>/<path>   file bytes; Range supported (206 + Content-Range);
//                                        X-Linked-Size, X-Linked-Etag ("<sha256>"), ETag,
//                                        Accept-Ranges: bytes
//   /api/models/<org>/<repo>/tree/<rev>  JSON listing of the files served under that repo/rev, in
//                                        the hub's shape (type, path, size, lfs.oid, lfs.size)
// What is served: every registered model file whose source is hub-shaped (its catalog or
// Hugging Face source path "<org>/<repo>/resolve/<rev>/<path>"), looked up in the registry
// database when a request misses, plus files added with ServeFile(). URLs only ever index these
// maps; no request path is turned into a filesystem path.
//
// Thread-safety: ServeFile/Refresh may be called while serving. Lifetime: the Registry passed to
// Start must outlive the Mirror; the destructor stops the server and joins its threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/base/status.h"

namespace garnet::registry {

class Registry;

struct MirrorOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
};

class Mirror {
 public:
  // Binds and starts serving on a background thread. `registry` may be null (explicit files
  // only). Failure: Unavailable when the address cannot be bound.
  static Result<std::unique_ptr<Mirror>> Start(Registry* registry, MirrorOptions options);
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  // Serves the file at `file_path` under URL path `url_path` ("org/repo/resolve/main/x.gguf",
  // leading '/' optional). Hashes the file now unless `sha256_hex` is given. InvalidArgument for
  // a malformed url path; the OS error when the file cannot be read.
  Status ServeFile(const std::string& url_path, const std::string& file_path,
                   const std::string& sha256_hex = "");
  // Re-reads the registered models from the registry database.
  Status Refresh();

  int port() const;
  std::string base_url() const;  // "http://host:port"
  uint64_t body_bytes_sent() const;
  void Stop();

 private:
  struct Impl;
  explicit Mirror(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace garnet::registry
