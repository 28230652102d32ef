// Scratch space for tests: a fresh directory that is gone when its owner is, and paths removed
// when the test process exits. A test run leaves nothing behind in the temp directory (a
// developer who runs the suite again and again would otherwise fill /tmp, a tmpfs on many
// machines). Set GARNET_KEEP_TEST_DIRS=1 to keep everything for a post-mortem.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace garnet::testing {

inline bool KeepTestDirs() {
  const char* v = std::getenv("GARNET_KEEP_TEST_DIRS");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

// Removes `path` and everything under it. Read-only entries (the registry's 0444 blobs, a
// directory a test made unwritable) are made writable first. Errors are ignored: this is
// clean-up, never a test's result.
inline void RemoveTree(const std::string& path) {
  if (path.empty() || KeepTestDirs()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(path, ec))) {
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_symlink(ec)) {
        fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
      }
    }
  }
  ec.clear();
  fs::remove_all(path, ec);
}

// Removes `path` (a file or a directory tree) when the process exits normally. A test that
// crashes leaves its files for inspection.
inline void RemoveAtExit(std::string path) {
  struct Paths {
    std::mutex mu;
    std::vector<std::string> list;
    ~Paths() {
      for (const auto& p : list) RemoveTree(p);
    }
  };
  static Paths paths;
  std::lock_guard<std::mutex> lock(paths.mu);
  for (const auto& p : paths.list) {
    if (p == path) return;
  }
  paths.list.push_back(std::move(path));
}

// A fresh directory under the temp directory ($TMPDIR or /tmp), named `prefix` plus six random
// characters, removed with its contents on destruction. path() is empty if it could not be
// made.
class ScratchDir {
 public:
  explicit ScratchDir(std::string_view prefix = "garnet-test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScratchDir() { RemoveTree(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Path(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

}  // namespace garnet::testing
