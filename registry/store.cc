#include "registry/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "registry/reference.h"
#include "registry/sha256.h"

namespace garnet::registry {

Result<std::string> DefaultDataDir() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  if (std::string g = env("GARNET_HOME"); !g.empty()) return g;
  if (std::string x = env("XDG_DATA_HOME"); !x.empty() && x.front() == '/') {
    return x + "/garnet";
  }
  if (std::string h = env("HOME"); !h.empty()) return h + "/.local/share/garnet";
  return Status::FailedPrecondition("data directory",
                                    "none of GARNET_HOME, XDG_DATA_HOME or HOME is set");
}

Status MakeDirs(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("directory", "empty path");
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return PosixError("creating directory " + prefix, errno);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError("directory " + path, errno);
  if (!S_ISDIR(st.st_mode))
    return Status::FailedPrecondition(path, "exists and is not a directory");
  return Status::OK();
}

std::string UrlKey(std::string_view url) {
  return "url-" + Sha256::HexOf(url).substr(0, 32);
}

bool IsValidDownloadKey(std::string_view key) {
  if (IsValidDigest(key)) return true;
  if (key.size() != 36 || !key.starts_with("url-")) return false;
  for (char c : key.substr(4)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Result<Store> Store::Open(const std::string& root) {
  std::string r = root;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  Store store(r);
  GARNET_RETURN_IF_ERROR(MakeDirs(store.root_));
  GARNET_RETURN_IF_ERROR(MakeDirs(store.BlobsDir()));
  GARNET_RETURN_IF_ERROR(MakeDirs(store.PartialsDir()));
  return store;
}

Result<std::string> Store::BlobPath(std::string_view digest) const {
  if (!IsValidDigest(digest)) {
    return Status::InvalidArgument("blob digest", "expected sha256-<64 lower-case hex>");
  }
  return BlobsDir() + "/" + std::string(digest);
}

Result<std::string> Store::PartialPath(std::string_view key) const {
  if (!IsValidDownloadKey(key)) {
    return Status::InvalidArgument("download key", "expected sha256-<64 hex> or url-<32 hex>");
  }
  return PartialsDir() + "/" + std::string(key) + ".partial";
}

Result<uint64_t> Store::FreeBytes() const {
  struct statvfs vfs;
  if (::statvfs(root_.c_str(), &vfs) != 0) return PosixError("statvfs " + root_, errno);
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

Status SyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError("opening " + path + " for fsync", errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return PosixError("fsync " + path, err);
  return Status::OK();
}

Result<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError(path, errno);
  if (!S_ISREG(st.st_mode)) return Status::FailedPrecondition(path, "not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

Status Store::Publish(const std::string& partial_path, std::string_view digest, bool make_readonly,
                      bool sync) const {
  GARNET_ASSIGN_OR_RETURN(std::string dest, BlobPath(digest));
  struct stat st;
  if (::stat(dest.c_str(), &st) == 0) {
    ::unlink(partial_path.c_str());
    return Status::OK();
  }
  if (sync) GARNET_RETURN_IF_ERROR(SyncPath(partial_path));
  if (make_readonly && ::chmod(partial_path.c_str(), 0444) != 0) {
    return PosixError("chmod " + partial_path, errno);
  }
  if (::rename(partial_path.c_str(), dest.c_str()) != 0) {
    return PosixError("renaming " + partial_path + " to " + dest, errno);
  }
  return sync ? SyncPath(BlobsDir()) : Status::OK();
}

}  // namespace garnet::registry
