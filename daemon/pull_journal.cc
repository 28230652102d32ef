#include "daemon/pull_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

namespace garnet::daemon {
namespace {

constexpr size_t kMaxBytes = 64 << 10;
constexpr size_t kMaxNames = 256;
constexpr size_t kMaxNameBytes = 1024;

// Parses the journal's text into `names`; nullptr on success, else why it is ignored.
const char* Parse(const std::string& text, std::set<std::string>* names) {
  if (text.size() > kMaxBytes) return "larger than 64 KiB";
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return "not a JSON array";
  if (j.size() > kMaxNames) return "more than 256 names";
  for (const auto& v : j) {
    if (!v.is_string()) return "an entry is not a string";
    const std::string& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > kMaxNameBytes) return "an entry is empty or too long";
    names->insert(s);
  }
  return nullptr;
}

}  // namespace

PullJournal::PullJournal(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return;  // no journal: nothing was in progress
  std::string text;
  text.resize(kMaxBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  std::set<std::string> names;
  if (const char* why = Parse(text, &names)) {
    std::fprintf(stderr, "garnetd: ignoring the pull journal garnetd-pulls.json: %s\n", why);
    return;
  }
  names_ = names;
  interrupted_.assign(names.begin(), names.end());
}

Status PullJournal::WriteLocked() const {
  nlohmann::json j = nlohmann::json::array();
  for (const std::string& n : names_) j.push_back(n);
  const std::string text = j.dump() + "\n";
  const std::string tmp = path_ + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return PosixError("pull journal " + tmp, errno);
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return PosixError("pull journal " + tmp, err);
    }
    off += static_cast<size_t>(n);
  }
  // Durable before it replaces the old one: a crash leaves the old or the new list, never a
  // torn one.
  if (fsync(fd) != 0 || close(fd) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return PosixError("pull journal " + tmp, err);
  }
  if (rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return PosixError("pull journal " + path_, err);
  }
  return Status::OK();
}

Status PullJournal::Begin(const std::string& name) {
  std::lock_guard lock(mu_);
  active_[name]++;
  if (names_.insert(name).second) return WriteLocked();
  return Status::OK();
}

Status PullJournal::End(const std::string& name, bool keep) {
  std::lock_guard lock(mu_);
  auto it = active_.find(name);
  if (it != active_.end() && --it->second == 0) active_.erase(it);
  if (keep || active_.count(name) != 0) return Status::OK();
  if (names_.erase(name) != 0) return WriteLocked();
  return Status::OK();
}

Status PullJournal::Drop(const std::string& name) {
  std::lock_guard lock(mu_);
  if (active_.count(name) != 0) return Status::OK();
  if (names_.erase(name) != 0) return WriteLocked();
  return Status::OK();
}

std::vector<std::string> PullJournal::Names() const {
  std::lock_guard lock(mu_);
  return {names_.begin(), names_.end()};
}

}  // namespace garnet::daemon
