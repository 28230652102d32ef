#include "registry/downloader.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <list>
#include <random>
#include <thread>
#include <vector>

#include "registry/reference.h"
#include "registry/sha256.h"

namespace garnet::registry {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::chrono::milliseconds Backoff(const DownloadOptions& o, int attempt) {
  double ms = static_cast<double>(o.backoff_initial.count());
  for (int i = 1; i < attempt && ms < o.backoff_max.count(); ++i) ms *= 2;
  ms = std::min(ms, static_cast<double>(o.backoff_max.count()));
  thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return milliseconds(static_cast<int64_t>(ms * jitter(rng)));
}

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

// Hashes the file's contiguous written prefix as it grows (reads back through the page cache).
class PrefixHasher {
 public:
  explicit PrefixHasher(int fd) : fd_(fd), thread_([this] { Run(); }) {}
  ~PrefixHasher() { Stop(); }

  void Advance(uint64_t watermark) {
    std::lock_guard<std::mutex> lock(mu_);
    watermark_ = watermark;
    cv_.notify_one();
  }
  uint64_t hashed() const { return hashed_.load(); }
  // Hashes up to `size` and returns the hex digest.
  Result<std::string> Finish(uint64_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      watermark_ = size;
      finishing_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
    if (!error_.ok()) return error_;
    if (hashed_.load() != size) return Status::Internal("hashing", "hasher stopped early");
    return sha_.FinishHex();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      uint64_t target;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || watermark_ > hashed_ || finishing_; });
        if (stop_) return;
        if (watermark_ <= hashed_) {
          if (finishing_) return;
          continue;
        }
        target = watermark_;
      }
      uint64_t pos = hashed_.load();
      while (pos < target) {
        if (stop_) return;
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), target - pos));
        ssize_t n = ::pread(fd_, buf.data(), want, static_cast<off_t>(pos));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          error_ = n == 0
                       ? Status::DataLoss("hashing partial download", "file shorter than written")
                       : PosixError("hashing partial download", errno);
          return;
        }
        sha_.Update(buf.data(), static_cast<size_t>(n));
        pos += static_cast<uint64_t>(n);
        hashed_.store(pos);
      }
    }
  }

  const int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t watermark_ = 0;
  bool finishing_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> hashed_{0};
  Sha256 sha_;
  Status error_;
  std::thread thread_;
};

// One HTTP request for one range, driven by the multi loop.
struct Xfer {
  CURL* h = nullptr;
  curl_slist* headers = nullptr;
  size_t idx = 0;
  uint64_t pos = 0;  // next file offset to write
  uint64_t end = 0;  // exclusive; UINT64_MAX when the size is unknown
  bool ranged = false;
  bool checked = false;
  bool error_body = false;
  bool range_ignored = false;
  bool complete = false;
  bool write_error = false;
  int write_errno = 0;
  std::string bad_range;  // non-empty: the server answered a different range/size
  long code = 0;
  uint64_t received = 0;
  std::string content_range;
  Clock::time_point last_activity;
  char err[CURL_ERROR_SIZE] = {0};
  // Shared loop state.
  int fd = -1;
  uint64_t size = 0;
  bool size_known = true;
  std::vector<RangeRow>* ranges = nullptr;
  uint64_t* total_received = nullptr;
};

size_t XferHeader(char* data, size_t size, size_t nitems, void* user) {
  auto* x = static_cast<Xfer*>(user);
  std::string_view line(data, size * nitems);
  if (line.starts_with("HTTP/")) {
    x->content_range.clear();
  } else if (line.size() > 14 &&
             (line.starts_with("Content-Range:") || line.starts_with("content-range:") ||
              line.starts_with("Content-range:"))) {
    x->content_range = std::string(line.substr(14));
  }
  return size * nitems;
}

size_t XferWrite(char* data, size_t size, size_t nmemb, void* user) {
  auto* x = static_cast<Xfer*>(user);
  const size_t n = size * nmemb;
  if (!x->checked) {
    x->checked = true;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
    if (x->code >= 300 || x->code < 200) {
      x->error_body = true;  // never written to the file; classified when the request ends
    } else if (x->ranged) {
      if (x->code == 200) {
        x->range_ignored = true;
        return CURL_WRITEFUNC_ERROR;
      }
      uint64_t first = 0, last = 0, total = 0;
      bool total_known = false;
      if (x->code != 206 ||
          !ParseContentRange(x->content_range, &first, &last, &total, &total_known)) {
        x->bad_range = "HTTP " + std::to_string(x->code) + " without a valid Content-Range";
      } else if (first != x->pos || last >= x->end || (total_known && total != x->size)) {
        x->bad_range = "asked for bytes " + std::to_string(x->pos) + "-" +
                       std::to_string(x->end - 1) + "/" + std::to_string(x->size) + ", got" +
                       x->content_range + "; the file changed upstream";
      }
      if (!x->bad_range.empty()) return CURL_WRITEFUNC_ERROR;
    }
  }
  if (x->error_body) return n;
  uint64_t want = n;
  if (x->size_known) want = std::min<uint64_t>(n, x->end - x->pos);
  const char* p = data;
  uint64_t left = want;
  while (left > 0) {
    ssize_t w = ::pwrite(x->fd, p, left, static_cast<off_t>(x->pos));
    if (w < 0) {
      if (errno == EINTR) continue;
      x->write_error = true;
      x->write_errno = errno;
      return CURL_WRITEFUNC_ERROR;
    }
    p += w;
    left -= static_cast<uint64_t>(w);
    x->pos += static_cast<uint64_t>(w);
  }
  RangeRow& r = (*x->ranges)[x->idx];
  r.done = x->pos - r.start;
  if (!x->size_known) r.end = x->pos;
  x->received += want;
  *x->total_received += want;
  x->last_activity = Clock::now();
  if (x->size_known && x->pos >= x->end) {
    x->complete = true;
    if (want < n) return CURL_WRITEFUNC_ERROR;  // the server sent more than asked: stop here
  }
  return n;
}

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
    if (!SleepUnlessCancelled(Backoff(options_, attempt), cancel)) {
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
    if (!SleepUnlessCancelled(Backoff(options_, attempt), cancel)) {
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
  if (progress) progress(Progress{Phase::kResolving, "", req.display_name, 0, 1, 0, 0, 0});
  GARNET_ASSIGN_OR_RETURN(RemoteInfo info, Probe(req.url, cancel));

  Plan plan;
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
  if (plan.size_known && saved && saved->size == plan.size &&
      saved->expected_digest == expected_digest && static_cast<uint64_t>(st.st_size) == plan.size &&
      RangesValid(saved->ranges, plan.size)) {
    ranges = saved->ranges;
    single = saved->single_stream;
    if (single) ranges = {RangeRow{0, plan.size, 0}};  // that server cannot resume
  } else {
    if (::ftruncate(fd, 0) != 0) return PosixError("truncating " + partial, errno);
    if (plan.size_known) {
      if (::ftruncate(fd, static_cast<off_t>(plan.size)) != 0) {
        return PosixError("sizing " + partial, errno);
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

  uint64_t remaining = 0;
  for (const RangeRow& r : ranges) remaining += r.end - r.start - r.done;
  GARNET_ASSIGN_OR_RETURN(uint64_t free_bytes, store_.FreeBytes());
  if (plan.size_known && free_bytes < remaining + o.disk_reserve_bytes) {
    return Status::ResourceExhausted(what, "not enough disk space in " + store_.root() + ": need " +
                                               std::to_string(remaining + o.disk_reserve_bytes) +
                                               " bytes (file plus reserve), " +
                                               std::to_string(free_bytes) + " available");
  }

  PrefixHasher hasher(fd);
  uint64_t total_received = 0;
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return Status::ResourceExhausted("curl", "curl_multi_init failed");
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);
  std::list<std::unique_ptr<Xfer>> xfers;
  std::vector<int> attempts(ranges.size(), 0);
  std::vector<Clock::time_point> not_before(ranges.size(), Clock::now());
  std::vector<bool> active(ranges.size(), false);
  Status fatal;
  bool switch_single = false;
  const size_t max_conns = single ? 1 : static_cast<size_t>(std::max(1, o.connections));

  auto remove = [&](Xfer* x) {
    curl_multi_remove_handle(multi, x->h);
    curl_easy_cleanup(x->h);
    curl_slist_free_all(x->headers);
    active[x->idx] = false;
  };
  auto start = [&](size_t i) {
    auto x = std::make_unique<Xfer>();
    x->idx = i;
    x->pos = ranges[i].start + ranges[i].done;
    x->end = plan.size_known ? ranges[i].end : UINT64_MAX;
    x->ranged = plan.size_known && !single;
    x->fd = fd;
    x->size = plan.size;
    x->size_known = plan.size_known;
    x->ranges = &ranges;
    x->total_received = &total_received;
    x->last_activity = Clock::now();
    if (!plan.size_known) {
      ranges[i].done = 0;
      ranges[i].end = 0;
      x->pos = 0;
    }
    CURL* h = curl_easy_init();
    x->h = h;
    curl_easy_setopt(h, CURLOPT_URL, plan.url.c_str());
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->err);
    curl_easy_setopt(h, CURLOPT_USERAGENT, o.http.user_agent.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(o.http.connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, static_cast<long>(o.curl_buffer_bytes));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, XferWrite);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x.get());
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, XferHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x.get());
    if (!o.http.token.empty()) {
      curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
      curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, o.http.token.c_str());
    }
    if (x->ranged) {
      std::string range = std::to_string(x->pos) + "-" + std::to_string(x->end - 1);
      curl_easy_setopt(h, CURLOPT_RANGE, range.c_str());  // copied by curl
    }
    curl_multi_add_handle(multi, h);
    active[i] = true;
    xfers.push_back(std::move(x));
  };
  // Classifies a finished or abandoned request.
  auto finish = [&](Xfer* x, CURLcode rc, bool stalled) {
    if (x->code == 0) curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
    const size_t i = x->idx;
    if (x->complete) {
      attempts[i] = 0;
      // Start writing the finished range back to disk now, so the fsync before the rename has
      // little left to do (asynchronous; errors surface at that fsync).
      if (plan.size_known) {
        ::sync_file_range(fd, static_cast<off_t>(ranges[i].start),
                          static_cast<off_t>(ranges[i].end - ranges[i].start),
                          SYNC_FILE_RANGE_WRITE);
      }
      return;
    }
    if (!plan.size_known && !stalled && rc == CURLE_OK && x->code >= 200 && x->code < 300) {
      x->complete = true;
      ranges[i].end = x->pos;
      ranges[i].done = x->pos;
      return;
    }
    if (x->range_ignored) {
      switch_single = true;
      return;
    }
    if (x->write_error) {
      fatal = (x->write_errno == ENOSPC || x->write_errno == EDQUOT)
                  ? Status::ResourceExhausted(what, "disk full while writing " + partial)
                  : PosixError("writing " + partial, x->write_errno);
      return;
    }
    if (!x->bad_range.empty()) {
      fatal = Status::FailedPrecondition(what, x->bad_range);
      return;
    }
    HttpFailure f;
    if (stalled) {
      f = {Status::Unavailable(
               what, "stalled: no data for " + std::to_string(o.stall_timeout.count()) + " ms"),
           true};
    } else if (x->code >= 400) {
      f = ClassifyHttpStatus(x->code, what);
    } else if (rc != CURLE_OK) {
      f = ClassifyCurlCode(rc, x->err, what);
    } else {
      f = {Status::Unavailable(what, "connection closed before the range was complete"), true};
    }
    if (!f.transient) {
      fatal = f.status;
      return;
    }
    if (x->received > 0) attempts[i] = 0;
    if (++attempts[i] >= o.max_attempts) {
      fatal = Status::Unavailable(
          what, "gave up after " + std::to_string(attempts[i]) +
                    " attempts without progress; last error: " + f.status.message());
      return;
    }
    if (single) ranges[i].done = 0;  // no resume without Range support
    not_before[i] = Clock::now() + Backoff(o, attempts[i]);
  };

  Progress prog{Phase::kDownloading, expected_digest, plan.display, 0, 1, 0, plan.size, 0};
  auto completed = [&] {
    uint64_t c = 0;
    for (const RangeRow& r : ranges) c += r.done;
    return c;
  };
  auto watermark = [&] {
    for (const RangeRow& r : ranges) {
      if (!r.complete() || (!plan.size_known && r.end == 0)) return r.start + r.done;
    }
    return plan.size_known ? plan.size : ranges.back().end;
  };
  auto all_done = [&] {
    for (size_t i = 0; i < ranges.size(); ++i) {
      if (plan.size_known ? !ranges[i].complete()
                          : !(xfers.empty() && ranges[i].end > 0 && !active[i] &&
                              ranges[i].done == ranges[i].end)) {
        return false;
      }
    }
    return true;
  };
  auto checkpoint = [&]() -> Status {
    if (!plan.size_known) return Status::OK();
    return db_->UpdateRanges(plan.key, ranges);
  };

  job->Emit(Progress{Phase::kDownloading, expected_digest, plan.display, 0, 1, completed(),
                     plan.size, 0});
  auto last_progress = Clock::now(), last_checkpoint = Clock::now();
  uint64_t last_progress_bytes = 0;
  double rate = 0;
  bool unknown_done = false;
  for (;;) {
    if (job->cancel.load()) {
      fatal = Status::Cancelled(what, "cancelled; the partial download is kept");
      break;
    }
    if (!fatal.ok()) break;
    if (plan.size_known ? all_done() : unknown_done) break;
    const auto now = Clock::now();
    for (size_t i = 0; i < ranges.size() && xfers.size() < max_conns; ++i) {
      if (!active[i] && !(plan.size_known && ranges[i].complete()) && now >= not_before[i])
        start(i);
    }
    int running = 0;
    curl_multi_perform(multi, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      for (auto it = xfers.begin(); it != xfers.end(); ++it) {
        if ((*it)->h != msg->easy_handle) continue;
        Xfer* x = it->get();
        CURLcode rc = msg->data.result;
        finish(x, rc, false);
        if (!plan.size_known && x->complete) unknown_done = true;
        remove(x);
        xfers.erase(it);
        if (!fatal.ok()) break;
        Status s = checkpoint();  // a range ended: save where it stopped
        if (!s.ok()) fatal = s;
        break;
      }
    }
    for (auto it = xfers.begin(); it != xfers.end();) {
      Xfer* x = it->get();
      if (Clock::now() - x->last_activity > o.stall_timeout) {
        finish(x, CURLE_OK, true);
        remove(x);
        it = xfers.erase(it);
      } else {
        ++it;
      }
    }
    if (switch_single) {
      for (auto& x : xfers) remove(x.get());
      xfers.clear();
      switch_single = false;
      single = true;
      ranges = {RangeRow{0, plan.size, 0}};
      attempts.assign(1, 0);
      not_before.assign(1, Clock::now());
      active.assign(1, false);
      Status s = db_->PutDownload(
          DownloadRow{plan.key, plan.url, plan.size, expected_digest, true, 0, ranges});
      if (!s.ok()) fatal = s;
      continue;
    }
    hasher.Advance(watermark());
    const auto t = Clock::now();
    if (t - last_progress >= o.progress_interval) {
      double dt = std::chrono::duration<double>(t - last_progress).count();
      double inst = static_cast<double>(total_received - last_progress_bytes) / dt;
      rate = rate == 0 ? inst : 0.7 * rate + 0.3 * inst;
      last_progress_bytes = total_received;
      last_progress = t;
      prog.completed = completed();
      prog.bytes_per_second = rate;
      job->Emit(prog);
    }
    if (t - last_checkpoint >= o.checkpoint_interval) {
      last_checkpoint = t;
      Status s = checkpoint();
      if (!s.ok()) fatal = s;
    }
    if (!xfers.empty())
      curl_multi_poll(multi, nullptr, 0, 50, nullptr);
    else
      std::this_thread::sleep_for(milliseconds(10));
  }
  for (auto& x : xfers) remove(x.get());
  xfers.clear();
  curl_multi_cleanup(multi);

  if (!fatal.ok()) {
    hasher.Stop();
    Status s = checkpoint();
    (void)s;  // the original failure is what the caller needs; progress is best effort here
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
  const std::string digest = "sha256-" + *hex;
  if (!plan.sha256.empty() && *hex != plan.sha256) {
    ::unlink(partial.c_str());
    Status s = db_->DeleteDownload(plan.key);
    (void)s;
    return Status::DataLoss(what, "sha256 mismatch: expected " + plan.sha256 + ", got " + *hex +
                                      "; the downloaded data was discarded");
  }
  GARNET_RETURN_IF_ERROR(store_.Publish(partial, digest));
  GARNET_RETURN_IF_ERROR(db_->FinishDownload(plan.key, BlobRow{digest, final_size, 0}));
  if (plan.key != digest) {
    Status s = db_->DeleteDownload(plan.key);
    (void)s;
  }
  job->Emit(Progress{Phase::kDone, digest, plan.display, 0, 1, final_size, final_size, rate});
  FetchResult res;
  res.digest = digest;
  res.size = final_size;
  res.bytes_transferred = total_received;
  res.digest_was_known = !plan.sha256.empty();
  return res;
}

}  // namespace garnet::registry
