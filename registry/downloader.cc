#include "registry/downloader.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "registry/range_fetch.h"
#include "registry/reference.h"
#include "registry/sha256.h"

namespace garnet::registry {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Sleeps `d` unless `cancel` becomes set; returns false when cancelled.
bool SleepUnlessCancelled(milliseconds d, const std::atomic<bool>* cancel) {
  auto until = Clock::now() + d;
  while (Clock::now() < until) {
    if (cancel != nullptr && cancel->load()) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(milliseconds(20), until - Clock::now()));
  }
  return cancel == nullptr || !cancel->load();
}

// Splits [0, size) into ranges of between min and max part bytes, about four per connection.
// Ranges are handed out in file order, so the contiguous prefix (what the hasher can read) trails
// the fastest connection by at most a few ranges.
std::vector<RangeRow> SplitRanges(uint64_t size, const DownloadOptions& o) {
  uint64_t conns = static_cast<uint64_t>(std::max(1, o.connections));
  uint64_t part = (size + 4 * conns - 1) / (4 * conns);
  part = std::max(o.min_part_bytes, std::min(o.max_part_bytes, part));
  part = std::max<uint64_t>(part, 1);
  std::vector<RangeRow> out;
  for (uint64_t s = 0; s < size; s += part) out.push_back(RangeRow{s, std::min(size, s + part), 0});
  return out;
}

bool RangesValid(const std::vector<RangeRow>& r, uint64_t size) {
  uint64_t next = 0;
  for (const RangeRow& x : r) {
    if (x.start != next || x.end <= x.start || x.done > x.end - x.start) return false;
    next = x.end;
  }
  return next == size;
}

// Hashes the file's contiguous written prefix as it grows. Two threads: a reader that preads the
// new prefix into a small ring of buffers and the hasher that only runs SHA-256 over them, so
// the copy out of the page cache (~10% of the hashing time) is off the one thread whose speed
// bounds a verified download.
class PrefixHasher {
 public:
  explicit PrefixHasher(int fd) : fd_(fd) {
    // Not value-initialised: zero-filling 4 MiB would delay the transfer's start.
    for (Slot& s : slots_) s.data.reset(new uint8_t[kSlotBytes]);
    Start();
  }
  ~PrefixHasher() { Stop(); }
  PrefixHasher(const PrefixHasher&) = delete;
  PrefixHasher& operator=(const PrefixHasher&) = delete;

  // [0, watermark) is written. Any thread; a smaller value than before is ignored.
  void Advance(uint64_t watermark) {
    std::lock_guard<std::mutex> lock(mu_);
    if (watermark <= watermark_) return;
    watermark_ = watermark;
    reader_cv_.notify_one();
  }
  uint64_t hashed() const { return hashed_.load(std::memory_order_relaxed); }
  // Bytes per second of hashing (busy time only); 0 until kMinPiece bytes were hashed.
  double rate() const {
    const uint64_t bytes = hashed_.load(std::memory_order_relaxed);
    const int64_t ns = busy_ns_.load(std::memory_order_relaxed);
    if (bytes < kMinPiece || ns <= 0) return 0;
    return static_cast<double>(bytes) * 1e9 / static_cast<double>(ns);
  }
  // Hashes up to `size` and returns the hex digest.
  Result<std::string> Finish(uint64_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      watermark_ = size;
      finishing_ = true;
      reader_cv_.notify_one();
    }
    Join();
    if (!error_.ok()) return error_;
    if (hashed_.load() != size) return Status::Internal("hashing", "hasher stopped early");
    return sha_.FinishHex();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      reader_cv_.notify_one();
      hasher_cv_.notify_one();
    }
    Join();
  }
  // Forgets everything hashed and starts again from byte 0: the file is being rewritten from its
  // start (a server that stopped honouring Range), so the prefix hashed so far may be stale.
  // The caller must not call Advance concurrently.
  void Restart() {
    Stop();
    {
      std::lock_guard<std::mutex> lock(mu_);
      head_ = filled_ = 0;
      watermark_ = 0;
      finishing_ = reader_done_ = stop_ = false;
      hashed_ = 0;
      busy_ns_ = 0;
      sha_.Reset();
      error_ = Status::OK();
      starved_ = 0;
    }
    Start();
  }
  // Seconds the hasher spent waiting for data between its first and its last piece (it waits
  // when the transfer does not keep up); valid after Finish.
  double starved_seconds() const { return starved_; }

 private:
  static constexpr size_t kSlots = 4;
  static constexpr size_t kSlotBytes = 1 << 20;
  static constexpr size_t kMinPiece = 256 << 10;
  struct Slot {
    std::unique_ptr<uint8_t[]> data;
    size_t len = 0;
  };

  void Start() {
    reader_ = std::thread([this] { ReadLoop(); });
    hasher_ = std::thread([this] { HashLoop(); });
  }
  void Join() {
    if (reader_.joinable()) reader_.join();
    if (hasher_.joinable()) hasher_.join();
  }

  void ReadLoop() {
    uint64_t pos = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      // While the hasher has work queued, wait for a piece of at least kMinPiece: many small
      // pieces (a connection's bytes trickling in) cost a hand-over each.
      reader_cv_.wait(lock, [&] {
        if (stop_ || (finishing_ && pos >= watermark_)) return true;
        if (filled_ == kSlots || watermark_ <= pos) return false;
        return filled_ == 0 || finishing_ || watermark_ - pos >= kMinPiece;
      });
      if (stop_) return;
      if (pos >= watermark_) break;  // finishing, everything read
      Slot& slot = slots_[(head_ + filled_) % kSlots];
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kSlotBytes, watermark_ - pos));
      lock.unlock();
      size_t got = 0;
      Status err;
      while (got < want) {
        ssize_t n = ::pread(fd_, slot.data.get() + got, want - got, static_cast<off_t>(pos + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          err = n == 0 ? Status::DataLoss("hashing partial download", "file shorter than written")
                       : PosixError("hashing partial download", errno);
          break;
        }
        got += static_cast<size_t>(n);
      }
      lock.lock();
      if (!err.ok()) {
        error_ = std::move(err);
        break;
      }
      slot.len = got;
      pos += got;
      ++filled_;
      hasher_cv_.notify_one();
    }
    reader_done_ = true;
    hasher_cv_.notify_one();
  }

  void HashLoop() {
    bool started = false;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (filled_ == 0 && !stop_ && !reader_done_) {
        const auto t0 = Clock::now();
        hasher_cv_.wait(lock, [&] { return stop_ || filled_ > 0 || reader_done_; });
        if (started && filled_ > 0) {
          starved_ += std::chrono::duration<double>(Clock::now() - t0).count();
        }
      }
      if (stop_ || filled_ == 0) return;  // stopped, or the reader is done and all is hashed
      Slot& slot = slots_[head_];
      lock.unlock();
      started = true;
      const auto h0 = Clock::now();
      sha_.Update(slot.data.get(), slot.len);
      busy_ns_.fetch_add(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - h0).count(),
          std::memory_order_relaxed);
      hashed_.fetch_add(slot.len, std::memory_order_relaxed);
      lock.lock();
      head_ = (head_ + 1) % kSlots;
      --filled_;
      reader_cv_.notify_one();  // a free slot, or an idle hasher that takes a piece of any size
    }
  }

  const int fd_;
  std::mutex mu_;
  std::condition_variable reader_cv_;  // watermark advanced, a slot freed, finish or stop
  std::condition_variable hasher_cv_;  // a slot filled, the reader ended, or stop
  Slot slots_[kSlots];
  size_t head_ = 0;    // the oldest filled slot; guarded by mu_
  size_t filled_ = 0;  // guarded by mu_
  uint64_t watermark_ = 0;
  bool finishing_ = false;
  bool reader_done_ = false;
  bool stop_ = false;
  std::atomic<uint64_t> hashed_{0};
  std::atomic<int64_t> busy_ns_{0};  // time spent in Sha256::Update
  Sha256 sha_;                       // the hasher thread's until it is joined
  Status error_;                     // set by the reader under mu_; read after Join
  double starved_ = 0;               // the hasher thread's until it is joined
  std::thread reader_;
  std::thread hasher_;
};

}  // namespace

std::string_view PhaseName(Phase p) {
  switch (p) {
    case Phase::kResolving:
      return "resolving";
    case Phase::kWaiting:
      return "waiting";
    case Phase::kDownloading:
      return "downloading";
    case Phase::kVerifying:
      return "verifying";
    case Phase::kDone:
      return "done";
  }
  return "unknown";
}

struct Downloader::Plan {
  Clock::time_point started;  // Fetch was called
  double resolved = 0;        // seconds from `started` to the HEAD's answer
  std::string key;
  std::string url;
  std::string display;
  uint64_t size = 0;
  bool size_known = false;
  std::string sha256;  // expected; empty when unknown
};

struct Downloader::Job {
  std::mutex mu;
  std::condition_variable cv;
  int waiters = 0;  // guarded by Downloader::mu_ and mu
  bool done = false;
  std::optional<Result<FetchResult>> result;
  std::atomic<bool> cancel{false};
  std::mutex listeners_mu;
  std::map<int, ProgressFn> listeners;
  int next_listener = 0;
  std::thread thread;

  void Emit(const Progress& p) {
    std::lock_guard<std::mutex> lock(listeners_mu);
    for (auto& [id, fn] : listeners) {
      if (fn) fn(p);
    }
  }
};

Downloader::Downloader(Store store, Db* db, DownloadOptions options)
    : store_(std::move(store)), db_(db), options_(std::move(options)) {
  EnsureCurlInitialized();
}

Downloader::~Downloader() {
  std::unique_lock<std::mutex> lock(mu_);
  for (auto& [key, job] : jobs_) job->cancel = true;
  jobs_cv_.wait(lock, [&] { return jobs_.empty(); });
}

Result<RemoteInfo> Downloader::Probe(const std::string& url, const std::atomic<bool>* cancel) {
  for (int attempt = 1;; ++attempt) {
    if (cancel != nullptr && cancel->load()) return Status::Cancelled("HEAD " + url, "cancelled");
    bool transient = false;
    Result<RemoteInfo> r = ProbeOnce(url, options_.http, &transient);
    if (r.ok() || !transient) return r;
    if (attempt >= options_.max_attempts) {
      return Status::Unavailable("HEAD " + url,
                                 "gave up after " + std::to_string(attempt) +
                                     " attempts; last error: " + r.status().message());
    }
    if (!SleepUnlessCancelled(RetryBackoff(options_, attempt), cancel)) {
      return Status::Cancelled("HEAD " + url, "cancelled");
    }
  }
}

Result<std::string> Downloader::GetSmall(const std::string& url, size_t max_bytes,
                                         const std::atomic<bool>* cancel) {
  for (int attempt = 1;; ++attempt) {
    if (cancel != nullptr && cancel->load()) return Status::Cancelled("GET " + url, "cancelled");
    bool transient = false;
    Result<std::string> r = GetSmallOnce(url, options_.http, max_bytes, &transient);
    if (r.ok() || !transient) return r;
    if (attempt >= options_.max_attempts) {
      return Status::Unavailable("GET " + url,
                                 "gave up after " + std::to_string(attempt) +
                                     " attempts; last error: " + r.status().message());
    }
    if (!SleepUnlessCancelled(RetryBackoff(options_, attempt), cancel)) {
      return Status::Cancelled("GET " + url, "cancelled");
    }
  }
}

Result<FetchResult> Downloader::AdoptExisting(const std::string& digest, uint64_t size, Job* job) {
  GARNET_ASSIGN_OR_RETURN(std::string path, store_.BlobPath(digest));
  GARNET_ASSIGN_OR_RETURN(std::optional<BlobRow> row, db_->GetBlob(digest));
  if (row && row->size == size) {
    FetchResult r;
    r.digest = digest;
    r.size = size;
    r.already_present = true;
    r.digest_was_known = true;
    return r;
  }
  // A file without a row (a crash between rename and commit, or a copy by hand): re-verify.
  if (job != nullptr) job->Emit(Progress{Phase::kVerifying, digest, "", 0, 1, 0, size, 0});
  uint64_t got_size = 0;
  GARNET_ASSIGN_OR_RETURN(std::string hex,
                          Sha256File(path, job != nullptr ? &job->cancel : nullptr, &got_size));
  if ("sha256-" + hex != digest || got_size != size) {
    ::unlink(path.c_str());
    return Status::NotFound(path, "existing blob failed verification and was removed");
  }
  GARNET_RETURN_IF_ERROR(db_->PutBlob(BlobRow{digest, size, 0}));
  FetchResult r;
  r.digest = digest;
  r.size = size;
  r.already_present = true;
  r.digest_was_known = true;
  return r;
}

Result<FetchResult> Downloader::Fetch(const FetchRequest& req, const ProgressFn& progress,
                                      const std::atomic<bool>* cancel) {
  const std::string what = "download of " + req.url;
  if (cancel != nullptr && cancel->load()) return Status::Cancelled(what, "cancelled");
  if (!req.expected_sha256.empty() && !IsLowerHex64(req.expected_sha256)) {
    return Status::InvalidArgument(what, "expected sha256 must be 64 lower-case hex characters");
  }
  const auto started = Clock::now();
  if (progress) progress(Progress{Phase::kResolving, "", req.display_name, 0, 1, 0, 0, 0});
  GARNET_ASSIGN_OR_RETURN(RemoteInfo info, Probe(req.url, cancel));

  Plan plan;
  plan.started = started;
  plan.resolved = std::chrono::duration<double>(Clock::now() - started).count();
  plan.url = req.url;
  plan.display = req.display_name;
  if (req.expected_size) {
    if (info.has_linked_size && info.linked_size != *req.expected_size) {
      return Status::FailedPrecondition(
          what, "the catalog pins " + std::to_string(*req.expected_size) +
                    " bytes but the server reports " + std::to_string(info.linked_size) +
                    " (X-Linked-Size); the upstream file changed");
    }
    if (!info.has_linked_size && info.has_content_length && info.content_length != 0 &&
        info.content_length != *req.expected_size) {
      return Status::FailedPrecondition(
          what, "the catalog pins " + std::to_string(*req.expected_size) +
                    " bytes but the server reports " + std::to_string(info.content_length) +
                    " (Content-Length); the upstream file changed");
    }
    plan.size = *req.expected_size;
    plan.size_known = true;
  } else if (info.has_linked_size) {
    plan.size = info.linked_size;
    plan.size_known = true;
  } else if (info.has_content_length && info.content_length > 0) {
    plan.size = info.content_length;
    plan.size_known = true;
  }
  if (!req.expected_sha256.empty()) {
    if (!info.linked_sha256.empty() && info.linked_sha256 != req.expected_sha256) {
      return Status::FailedPrecondition(what, "the catalog pins sha256 " + req.expected_sha256 +
                                                  " but the server reports " + info.linked_sha256 +
                                                  " (X-Linked-Etag); the upstream file changed");
    }
    plan.sha256 = req.expected_sha256;
  } else {
    plan.sha256 = info.linked_sha256;
  }
  plan.key = plan.sha256.empty() ? UrlKey(plan.url) : "sha256-" + plan.sha256;

  // Fast path: the blob is already stored.
  if (!plan.sha256.empty() && plan.size_known) {
    GARNET_ASSIGN_OR_RETURN(std::string path, store_.BlobPath(plan.key));
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      Job tmp;
      Result<FetchResult> r = AdoptExisting(plan.key, plan.size, &tmp);
      if (r.ok()) {
        if (progress) {
          progress(Progress{Phase::kDone, plan.key, plan.display, 0, 1, plan.size, plan.size, 0});
        }
        return r;
      }
      if (!r.status().IsNotFound()) return r;
    }
  }

  // Join or start the shared download for this key.
  std::shared_ptr<Job> job;
  int listener_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<Job>& slot = jobs_[plan.key];
    bool create = slot == nullptr;
    if (create) slot = std::make_shared<Job>();
    job = slot;
    std::lock_guard<std::mutex> jl(job->mu);
    job->waiters++;
    {
      std::lock_guard<std::mutex> ll(job->listeners_mu);
      listener_id = job->next_listener++;
      job->listeners[listener_id] = progress;
    }
    if (create) {
      job->thread = std::thread([this, plan, j = job.get()] {
        Result<FetchResult> r = RunJob(plan, j);
        std::lock_guard<std::mutex> l(j->mu);
        j->result = std::move(r);
        j->done = true;
        j->cv.notify_all();
      });
    }
  }

  bool cancelled = false;
  {
    std::unique_lock<std::mutex> lock(job->mu);
    while (!job->done) {
      job->cv.wait_for(lock, milliseconds(20));
      if (!job->done && cancel != nullptr && cancel->load()) {
        cancelled = true;
        break;
      }
    }
  }
  // Leave: unregister, and if we were the last caller, stop (if running) and reap the thread.
  bool last = false;
  std::optional<Result<FetchResult>> result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::lock_guard<std::mutex> jl(job->mu);
    {
      std::lock_guard<std::mutex> ll(job->listeners_mu);
      job->listeners.erase(listener_id);
    }
    last = --job->waiters == 0;
    if (last) {
      if (!job->done) job->cancel = true;
      auto it = jobs_.find(plan.key);
      if (it != jobs_.end() && it->second == job) jobs_.erase(it);
    }
    if (job->done) result = job->result;
  }
  if (last) {
    if (job->thread.joinable()) job->thread.join();
    std::lock_guard<std::mutex> lock(mu_);
    jobs_cv_.notify_all();
  }
  if (cancelled) {
    return Status::Cancelled(what,
                             "cancelled; the partial download is kept and a new pull resumes it");
  }
  return std::move(*result);
}

Result<FetchResult> Downloader::RunJob(const Plan& plan, Job* job) {
  GARNET_ASSIGN_OR_RETURN(std::string partial, store_.PartialPath(plan.key));
  int fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError("opening " + partial, errno);
  // Another process may be downloading the same blob: wait for its lock.
  bool announced = false;
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      Status s = PosixError("locking " + partial, errno);
      ::close(fd);
      return s;
    }
    if (!announced) {
      job->Emit(Progress{Phase::kWaiting, plan.sha256.empty() ? "" : plan.key, plan.display, 0, 1,
                         0, plan.size, 0});
      announced = true;
    }
    if (job->cancel.load()) {
      ::close(fd);
      return Status::Cancelled("download of " + plan.url, "cancelled while waiting");
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  Result<FetchResult> r = Status::Internal("download", "not run");
  std::string blob_path = plan.sha256.empty() ? "" : store_.BlobsDir() + "/" + plan.key;
  struct stat st;
  if (!blob_path.empty() && plan.size_known && ::stat(blob_path.c_str(), &st) == 0) {
    // Finished by someone else while we waited.
    ::unlink(partial.c_str());
    Status s = db_->DeleteDownload(plan.key);
    (void)s;
    r = AdoptExisting(plan.key, plan.size, job);
  } else {
    r = Transfer(plan, job, fd, partial);
  }
  ::close(fd);
  return r;
}

Result<FetchResult> Downloader::Transfer(const Plan& plan, Job* job, int fd,
                                         const std::string& partial) {
  const std::string what = "download of " + plan.url;
  const DownloadOptions& o = options_;
  std::vector<RangeRow> ranges;
  bool single = false;

  // Resume state, or a fresh start.
  GARNET_ASSIGN_OR_RETURN(std::optional<DownloadRow> saved, db_->GetDownload(plan.key));
  struct stat st;
  if (::fstat(fd, &st) != 0) return PosixError("stat " + partial, errno);
  const std::string expected_digest = plan.sha256.empty() ? "" : plan.key;
  const bool resume = plan.size_known && saved && saved->size == plan.size &&
                      saved->expected_digest == expected_digest &&
                      static_cast<uint64_t>(st.st_size) == plan.size &&
                      RangesValid(saved->ranges, plan.size);
  // Free-disk check: the part of the file not yet allocated on disk, plus the reserve.
  if (plan.size_known) {
    uint64_t allocated = resume ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
    uint64_t need = (plan.size > allocated ? plan.size - allocated : 0) + o.disk_reserve_bytes;
    GARNET_ASSIGN_OR_RETURN(uint64_t free_bytes, store_.FreeBytes());
    if (free_bytes < need) {
      return Status::ResourceExhausted(
          what, "not enough disk space in " + store_.root() + ": need " + std::to_string(need) +
                    " bytes (the file plus a reserve of " + std::to_string(o.disk_reserve_bytes) +
                    "), " + std::to_string(free_bytes) + " available");
    }
  }
  if (resume) {
    ranges = saved->ranges;
    single = saved->single_stream;
    if (single) ranges = {RangeRow{0, plan.size, 0}};  // that server cannot resume
  } else {
    if (::ftruncate(fd, 0) != 0) return PosixError("truncating " + partial, errno);
    if (plan.size_known) {
      // Reserve the space now: a full disk fails here rather than hours later. Filesystems
      // without fallocate get a sparse file instead.
      if (::fallocate(fd, 0, 0, static_cast<off_t>(plan.size)) != 0) {
        if (errno == ENOSPC || errno == EDQUOT) {
          return Status::ResourceExhausted(what, "disk full: cannot reserve " +
                                                     std::to_string(plan.size) + " bytes in " +
                                                     store_.root());
        }
        if (::ftruncate(fd, static_cast<off_t>(plan.size)) != 0) {
          return PosixError("sizing " + partial, errno);
        }
      }
      ranges = SplitRanges(plan.size, o);
    } else {
      single = true;
      ranges = {RangeRow{0, 0, 0}};
    }
    GARNET_RETURN_IF_ERROR(db_->PutDownload(
        DownloadRow{plan.key, plan.url, plan.size, expected_digest, single, 0, ranges}));
  }
  if (!plan.size_known) single = true;

  auto since_start = [&plan] {
    return std::chrono::duration<double>(Clock::now() - plan.started).count();
  };
  FetchTimings timings;
  timings.resolved = plan.resolved;
  timings.transfer_start = since_start();
  // Set from whichever thread advances the watermark first / to the end.
  std::atomic<bool> first_seen{false}, last_seen{false};
  std::mutex times_mu;
  PrefixHasher hasher(fd);
  job->Emit(Progress{Phase::kDownloading, expected_digest, plan.display, 0, 1,
                     [&] {
                       uint64_t c = 0;
                       for (const RangeRow& r : ranges) c += r.done;
                       return c;
                     }(),
                     plan.size, 0});
  RangeTarget target{plan.url, what, fd, partial, plan.size, plan.size_known};
  double rate = 0;
  RangeHooks hooks;
  hooks.cancelled = [job] { return job->cancel.load(); };
  hooks.checkpoint = [&](const std::vector<RangeRow>& rows) {
    return plan.size_known ? db_->UpdateRanges(plan.key, rows) : Status::OK();
  };
  hooks.switched_to_single = [&](const std::vector<RangeRow>& rows) {
    // The file is rewritten from byte 0 (no worker runs now): what was hashed may be stale.
    hasher.Restart();
    return db_->PutDownload(
        DownloadRow{plan.key, plan.url, plan.size, expected_digest, true, 0, rows});
  };
  hooks.progress = [&](uint64_t completed, double bytes_per_second) {
    rate = bytes_per_second;
    job->Emit(Progress{Phase::kDownloading, expected_digest, plan.display, 0, 1, completed,
                       plan.size, bytes_per_second});
  };
  hooks.advance = [&](uint64_t watermark) {
    hasher.Advance(watermark);
    if (watermark > 0 && !first_seen.exchange(true)) {
      std::lock_guard<std::mutex> lock(times_mu);
      timings.first_byte = since_start();
    }
    if (plan.size_known && watermark == plan.size && !last_seen.exchange(true)) {
      std::lock_guard<std::mutex> lock(times_mu);
      timings.last_byte = since_start();
    }
  };
  hooks.hashed = [&] { return hasher.hashed(); };
  hooks.hash_rate = [&] { return hasher.rate(); };
  uint64_t total_received = 0;
  Status fatal =
      FetchRanges(target, o, hooks, &ranges, &single, &total_received, &timings.lag_paused);
  timings.ranges_done = since_start();
  if (!fatal.ok()) {
    hasher.Stop();
    if (plan.size_known) {
      Status s = db_->UpdateRanges(plan.key, ranges);
      (void)s;  // the original failure is what the caller needs; progress is best effort here
    }
    return fatal;
  }

  const uint64_t final_size = plan.size_known ? plan.size : ranges[0].end;
  if (!plan.size_known && ::ftruncate(fd, static_cast<off_t>(final_size)) != 0) {
    hasher.Stop();
    return PosixError("truncating " + partial, errno);
  }
  if (hasher.hashed() < final_size) {
    job->Emit(Progress{Phase::kVerifying, expected_digest, plan.display, 0, 1, final_size,
                       final_size, rate});
  }
  Result<std::string> hex = hasher.Finish(final_size);
  if (!hex.ok()) return hex.status();
  timings.hashed = since_start();
  timings.hash_starved = hasher.starved_seconds();
  const std::string digest = "sha256-" + *hex;
  if (!plan.sha256.empty() && *hex != plan.sha256) {
    ::unlink(partial.c_str());
    Status s = db_->DeleteDownload(plan.key);
    (void)s;
    return Status::DataLoss(what, "sha256 mismatch: expected " + plan.sha256 + ", got " + *hex +
                                      "; the downloaded data was discarded");
  }
  GARNET_RETURN_IF_ERROR(store_.Publish(partial, digest, /*make_readonly=*/true, o.sync_blobs));
  GARNET_RETURN_IF_ERROR(db_->FinishDownload(plan.key, BlobRow{digest, final_size, 0}));
  if (plan.key != digest) {
    Status s = db_->DeleteDownload(plan.key);
    (void)s;
  }
  timings.stored = since_start();
  job->Emit(Progress{Phase::kDone, digest, plan.display, 0, 1, final_size, final_size, rate});
  FetchResult res;
  res.digest = digest;
  res.size = final_size;
  res.bytes_transferred = total_received;
  res.digest_was_known = !plan.sha256.empty();
  {
    std::lock_guard<std::mutex> lock(times_mu);
    res.timings = timings;
  }
  return res;
}

}  // namespace garnet::registry
