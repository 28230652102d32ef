// The pulls garnetd has in progress, remembered on disk so a pull interrupted by a stop (SIGTERM
// or a crash) resumes on the next start. The registry keeps the partial bytes and their ranges
// (its `downloads` table); what it does not record is which model a download belongs to, so the
// daemon keeps that here: one JSON file, `<data dir>/garnetd-pulls.json`, an array of canonical
// model names, rewritten atomically (temporary file + rename) on every change.
//
// A name is added when a pull starts and removed when the last pull of that name ends, unless
// it ended because the daemon was stopping (then it stays for the next start). A crash leaves it.
//
// Hostile or damaged files: over 64 KiB, not JSON, not an array of strings, or more than 256
// names are ignored as a whole (with a warning on stderr); each name is validated again by the
// registry before anything is pulled.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/base/status.h"

namespace garnet::daemon {

class PullJournal {
 public:
  // Reads the journal at `path` (absent: empty). Never fails on bad content (see above).
  explicit PullJournal(std::string path);
  PullJournal(const PullJournal&) = delete;
  PullJournal& operator=(const PullJournal&) = delete;

  // The names found on disk when the journal was opened (pulls to resume).
  const std::vector<std::string>& interrupted() const { return interrupted_; }

  // A pull of `name` starts: the name is written to disk before it returns. The error is the
  // file system's (the pull may go on; it just would not resume after a stop).
  Status Begin(const std::string& name);
  // A pull of `name` ended. `keep`: it was interrupted by the daemon stopping (stays on disk).
  // Otherwise the name is removed once no other pull of it runs.
  Status End(const std::string& name, bool keep);
  // Forgets a name found on disk without a pull (e.g. the model is already pulled).
  Status Drop(const std::string& name);

  std::vector<std::string> Names() const;

 private:
  Status WriteLocked() const;

  const std::string path_;
  std::vector<std::string> interrupted_;
  mutable std::mutex mu_;
  std::set<std::string> names_;        // on disk; guarded by mu_
  std::map<std::string, int> active_;  // running pulls by name; guarded by mu_
};

}  // namespace garnet::daemon
