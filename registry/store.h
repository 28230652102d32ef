// The on-disk store: where the data directory is and how names map to paths inside it.
//
// Layout under the data dir:
//   registry.db                   SQLite database (see db.h)
//   blobs/sha256-<hex>            verified, content-addressed model files (read-only, 0444)
//   partials/<key>.partial        downloads in progress; <key> is "sha256-<hex>" when the
//                                 digest is known in advance, else "url-<32 hex>" (a hash of the
//                                 URL). Never anything else: keys are validated here.
//
// Data dir: an explicit path, else $GARNET_HOME, else $XDG_DATA_HOME/garnet, else
// ~/.local/share/garnet.
//
// Thread-safety: Store is an immutable value after Open(); its methods only compute paths or
// touch the filesystem, and may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/base/status.h"

namespace garnet::registry {

// The data dir from the environment (rules above). FailedPrecondition when none of the
// variables is set (no HOME).
Result<std::string> DefaultDataDir();

// Creates `path` and missing parents (mode 0755). OK when it exists as a directory.
Status MakeDirs(const std::string& path);

// A download key for a URL whose digest is not known in advance: "url-<32 hex>".
std::string UrlKey(std::string_view url);
// True for "sha256-<64 hex>" or "url-<32 hex>".
bool IsValidDownloadKey(std::string_view key);

class Store {
 public:
  // Creates the data dir and its sub dirs when missing. Failure: the OS error (PermissionDenied,
  // ...) naming the directory.
  static Result<Store> Open(const std::string& root);

  const std::string& root() const { return root_; }
  std::string DbPath() const { return root_ + "/registry.db"; }
  std::string BlobsDir() const { return root_ + "/blobs"; }
  std::string PartialsDir() const { return root_ + "/partials"; }

  // Path of a blob; InvalidArgument unless `digest` is a valid digest.
  Result<std::string> BlobPath(std::string_view digest) const;
  // Path of a partial download; InvalidArgument unless `key` is a valid download key.
  Result<std::string> PartialPath(std::string_view key) const;

  // Bytes available to an unprivileged user on the store's filesystem (statvfs).
  Result<uint64_t> FreeBytes() const;

  // Moves a finished, verified partial into blobs/<digest>: fsync the file, chmod 0444 (unless
  // `make_readonly` is false: a hard-linked import shares its inode with the user's file),
  // rename (atomic), fsync the directory. If the blob already exists the partial is removed
  // instead. On failure the partial is left in place.
  // With `sync` false the fsyncs are skipped: the blob survives a process kill but maybe not a
  // power loss (Registry::Verify would then report it).
  Status Publish(const std::string& partial_path, std::string_view digest,
                 bool make_readonly = true, bool sync = true) const;

 private:
  explicit Store(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

// Size of a regular file; NotFound when missing.
Result<uint64_t> FileSize(const std::string& path);
// fsync a file or directory by path.
Status SyncPath(const std::string& path);

}  // namespace garnet::registry
