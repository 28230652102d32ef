#include "registry/range_fetch.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "registry/http.h"

namespace garnet::registry {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// With sync_blobs, written bytes are handed to writeback in pieces of this size as they arrive,
// so a flush (a checkpoint's, the last one's before the rename) never waits for much more.
constexpr uint64_t kWritebackBytes = 4ull << 20;

// A connection's receive rate is known once it received this much over this long (the first
// write of each request, which may have waited in the socket, left out).
constexpr uint64_t kRateMinBytes = 1ull << 20;
constexpr auto kRateMinTime = std::chrono::milliseconds(2);
// While its rate is unknown, a connection pauses for the hasher at most this long per request.
constexpr auto kUnknownRatePause = std::chrono::milliseconds(20);

// What one worker (one connection) received so far, over the time it was receiving.
struct RateMeter {
  uint64_t bytes = 0;
  Clock::duration time{0};
};

class Fetcher;
// Called by a worker after it wrote bytes of range `i` (defined after Fetcher).
void Written(Fetcher* f, size_t i);

// One HTTP request for one range.
struct Xfer {
  CURL* h = nullptr;
  uint64_t start = 0;         // the range's first byte
  uint64_t pos = 0;           // next file offset to write
  uint64_t written_back = 0;  // [start of this request, written_back) was handed to writeback
  bool writeback = false;     // hand written pieces to writeback (sync_blobs)
  uint64_t end = 0;           // exclusive; UINT64_MAX when the size is unknown
  uint64_t size = 0;
  bool size_known = true;
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
  Clock::time_point first_write;   // when the first body bytes were written
  uint64_t first_write_bytes = 0;  // how many
  std::string content_range;
  Clock::time_point last_activity;
  char err[CURL_ERROR_SIZE] = {0};
  int fd = -1;
  std::atomic<uint64_t>* done = nullptr;  // the range's progress counter
  std::atomic<uint64_t>* total_received = nullptr;
  Fetcher* fetcher = nullptr;
  size_t index = 0;  // the range's index
};

size_t XferHeader(char* data, size_t size, size_t nitems, void* user) {
  auto* x = static_cast<Xfer*>(user);
  std::string_view line(data, size * nitems);
  if (line.starts_with("HTTP/")) {
    x->content_range.clear();
  } else if (line.size() > 14) {
    std::string name(line.substr(0, 14));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "content-range:") x->content_range = std::string(line.substr(14));
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
  x->done->store(x->pos - x->start, std::memory_order_release);
  Written(x->fetcher, x->index);
  if (x->writeback && x->pos - x->written_back >= kWritebackBytes) {
    // Asynchronous: starts writing these pages back now; errors surface at the next fdatasync.
    ::sync_file_range(x->fd, static_cast<off_t>(x->written_back),
                      static_cast<off_t>(x->pos - x->written_back), SYNC_FILE_RANGE_WRITE);
    x->written_back = x->pos;
  }
  if (x->received == 0) {
    x->first_write = Clock::now();
    x->first_write_bytes = want;
  }
  x->received += want;
  x->total_received->fetch_add(want, std::memory_order_relaxed);
  x->last_activity = Clock::now();
  if (x->size_known && x->pos >= x->end) {
    x->complete = true;
    if (want < n) return CURL_WRITEFUNC_ERROR;  // the server sent more than asked: stop here
  }
  return n;
}

class Fetcher {
 public:
  Fetcher(const RangeTarget& t, const DownloadOptions& o, const RangeHooks& hooks,
          std::vector<RangeRow>* ranges, bool single)
      : t_(t), o_(o), hooks_(hooks), rows_(ranges), single_(single) {
    Reset(*ranges);
  }

  double lag_paused_seconds() const { return 1e-9 * static_cast<double>(lag_paused_ns_.load()); }

  Status Run(bool* single, uint64_t* received) {
    Status result;
    for (;;) {
      result = RunWorkers();
      if (!result.ok() || !switch_single_) break;
      // The server ignored Range: start over as one stream.
      switch_single_ = false;
      single_ = true;
      Reset({RangeRow{0, t_.size, 0}});
      Snapshot(/*durable=*/false);
      result = hooks_.switched_to_single(*rows_);
      if (!result.ok()) break;
    }
    Snapshot(/*durable=*/true);
    *single = single_;
    *received = received_.load();
    return result;
  }

 private:
  void Reset(const std::vector<RangeRow>& rows) {
    n_ = rows.size();
    start_.resize(n_);
    end_.resize(n_);
    done_ = std::make_unique<std::atomic<uint64_t>[]>(n_);
    for (size_t i = 0; i < n_; ++i) {
      start_[i] = rows[i].start;
      end_[i] = t_.size_known ? rows[i].end : UINT64_MAX;
      done_[i].store(t_.size_known && !single_ ? rows[i].done : 0);
    }
    attempts_.assign(n_, 0);
    {
      std::lock_guard<std::mutex> lock(save_mu_);
      saved_rows_.clear();
    }
    not_before_.assign(n_, Clock::now());
    active_.assign(n_, 0);
    unknown_complete_ = false;
    lowest_.store(0);
  }

  bool Complete(size_t i) const {
    if (!t_.size_known) return unknown_complete_;
    return start_[i] + done_[i].load(std::memory_order_acquire) >= end_[i];
  }

  // The live counters in their persisted form.
  std::vector<RangeRow> Rows() const {
    std::vector<RangeRow> rows(n_);
    for (size_t i = 0; i < n_; ++i) {
      uint64_t d = done_[i].load(std::memory_order_acquire);
      rows[i] = RangeRow{start_[i], t_.size_known ? end_[i] : start_[i] + d, d};
    }
    return rows;
  }

  // Copies the live counters into *rows_. With `durable` (and sync_blobs), the partial file is
  // fdatasync'ed first, after the copy, so the rows claim only bytes on disk; if that flush
  // fails, *rows_ keeps the last rows saved by a checkpoint.
  void Snapshot(bool durable) {
    std::vector<RangeRow> rows = Rows();
    if (durable && o_.sync_blobs && t_.size_known && ::fdatasync(t_.fd) != 0) {
      std::lock_guard<std::mutex> lock(save_mu_);
      if (saved_rows_.size() == n_) *rows_ = saved_rows_;
      return;
    }
    *rows_ = std::move(rows);
  }

  uint64_t Completed() const {
    uint64_t c = 0;
    for (size_t i = 0; i < n_; ++i) c += done_[i].load(std::memory_order_relaxed);
    return c;
  }

  // The end of the contiguous written prefix. Ranges below lowest_ are complete (they stay so
  // until the next Reset), so the scan starts there and moves the hint up.
  uint64_t Watermark() {
    size_t i = lowest_.load(std::memory_order_acquire);
    while (i < n_ && Complete(i)) ++i;
    size_t seen = lowest_.load(std::memory_order_relaxed);
    while (seen < i && !lowest_.compare_exchange_weak(seen, i, std::memory_order_acq_rel)) {
    }
    if (i < n_) return start_[i] + done_[i].load(std::memory_order_acquire);
    return t_.size_known ? t_.size : done_[0].load();
  }

 public:
  // A worker wrote bytes of range `i`: when that range is the lowest incomplete one, the prefix
  // grew, and the hasher hears of it now rather than at the coordinator's next tick (which
  // still catches anything a race here misses).
  void OnWritten(size_t i) {
    if (i == lowest_.load(std::memory_order_acquire)) hooks_.advance(Watermark());
  }

 private:
  Status RunWorkers() {
    stop_ = false;
    size_t workers =
        single_ || !t_.size_known ? 1 : static_cast<size_t>(std::max(1, o_.connections));
    workers = std::min(workers, n_);
    workers_ = workers;
    std::vector<std::thread> threads;
    running_ = workers;
    for (size_t w = 0; w < workers; ++w) threads.emplace_back([this] { Worker(); });

    {
      std::lock_guard<std::mutex> lock(save_mu_);
      save_stop_ = false;
    }
    std::thread saver([this] { SaveLoop(); });
    bool cancelled = false;
    auto last_progress = Clock::now();
    uint64_t last_bytes = received_.load();
    double rate = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        // A short tick: the hasher learns of new contiguous bytes only here, and it must not
        // sit idle while they pile up.
        exit_cv_.wait_for(lock, milliseconds(2), [&] { return running_ == 0; });
        if (running_ == 0) break;
      }
      if (!cancelled && hooks_.cancelled()) {
        cancelled = true;
        stop_ = true;
      }
      hooks_.advance(Watermark());
      const auto now = Clock::now();
      if (now - last_progress >= o_.progress_interval) {
        double dt = std::chrono::duration<double>(now - last_progress).count();
        uint64_t bytes = received_.load();
        double inst = static_cast<double>(bytes - last_bytes) / dt;
        rate = rate == 0 ? inst : 0.7 * rate + 0.3 * inst;
        last_bytes = bytes;
        last_progress = now;
        hooks_.progress(Completed(), rate);
      }
    }
    for (std::thread& th : threads) th.join();
    {
      std::lock_guard<std::mutex> lock(save_mu_);
      save_stop_ = true;
    }
    save_cv_.notify_one();
    saver.join();
    hooks_.advance(Watermark());
    if (cancelled) return Status::Cancelled(t_.what, "cancelled; the partial download is kept");
    std::lock_guard<std::mutex> lock(mu_);
    return fatal_;
  }

  // The checkpoint thread: every checkpoint_interval, and soon after a range ends, saves the
  // progress. With sync_blobs the partial file is fdatasync'ed between taking the snapshot and
  // saving it, so a saved row never claims bytes a power loss could take back. (Runs apart from
  // the coordinator so a slow flush delays neither progress events nor the hasher.)
  void SaveLoop() {
    std::unique_lock<std::mutex> lock(save_mu_);
    for (;;) {
      save_cv_.wait_for(lock, o_.checkpoint_interval,
                        [&] { return save_stop_ || range_ended_.load(); });
      if (save_stop_) return;
      range_ended_ = false;
      lock.unlock();
      Status s = SaveDurable();
      lock.lock();
      if (!s.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        if (fatal_.ok()) fatal_ = std::move(s);
        stop_ = true;
        return;
      }
    }
  }

  // Progress as of now, made durable (see SaveLoop), then handed to the checkpoint hook.
  Status SaveDurable() {
    std::vector<RangeRow> rows = Rows();
    if (o_.sync_blobs && t_.size_known && ::fdatasync(t_.fd) != 0) {
      return PosixError("syncing " + t_.partial, errno);
    }
    GARNET_RETURN_IF_ERROR(hooks_.checkpoint(rows));
    std::lock_guard<std::mutex> lock(save_mu_);
    saved_rows_ = std::move(rows);
    return Status::OK();
  }

  void Worker() {
    RateMeter meter;  // this connection's rate, over all its requests
    CURLM* multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_NOTHING);
    while (!stop_) {
      size_t pick = n_;
      bool all_done = true;
      {
        std::unique_lock<std::mutex> lock(mu_);
        const auto now = Clock::now();
        for (size_t i = 0; i < n_; ++i) {
          if (Complete(i)) continue;
          all_done = false;
          if (active_[i] || now < not_before_[i]) continue;
          pick = i;
          active_[i] = 1;
          break;
        }
        if (pick == n_) {
          if (all_done) break;
          // Others are busy or backing off: wait until a request ends (then there may be a
          // range to take, or nothing left, and this worker should leave at once), or 5 ms.
          idle_cv_.wait_for(lock, milliseconds(5));
          continue;
        }
      }
      RunOne(multi, pick, &meter);
    }
    curl_multi_cleanup(multi);
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
    exit_cv_.notify_all();
  }

  // True when range `i`, about to write at `pos` with its connection receiving `rate` bytes per
  // second (0: not known yet), should wait for the hasher (see RangeHooks::hashed): it is more
  // than max_hash_lag_bytes ahead; the connections together outrun the hasher
  // (hash_lag_rate_factor), or either rate is unknown and `may_guess` (a short pause while the
  // rates are being learnt, see kUnknownRatePause); it is not the lowest incomplete range, and
  // that one is being downloaded right now (so the hasher is sure to get further; a lowest range
  // waiting for a retry or for a free worker never blocks the others).
  bool HashLagging(size_t i, uint64_t pos, double rate, bool may_guess) {
    if (!hooks_.hashed || o_.max_hash_lag_bytes == 0 || !t_.size_known || single_) return false;
    if (pos <= o_.max_hash_lag_bytes || pos - o_.max_hash_lag_bytes <= hooks_.hashed()) {
      return false;
    }
    if (o_.hash_lag_rate_factor > 0) {
      const double hash_rate = hooks_.hash_rate ? hooks_.hash_rate() : 0;
      if (rate <= 0 || hash_rate <= 0) {
        if (!may_guess) return false;
      } else if (rate * static_cast<double>(workers_) <= o_.hash_lag_rate_factor * hash_rate) {
        return false;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t j = 0; j < i; ++j) {
      if (!Complete(j)) return active_[j] != 0;
    }
    return false;  // the lowest incomplete range: the hasher is waiting for it
  }

  void RunOne(CURLM* multi, size_t i, RateMeter* meter) {
    Xfer x;
    x.start = start_[i];
    if (!t_.size_known || single_) done_[i].store(0);  // no resume without Range
    x.pos = start_[i] + done_[i].load();
    x.end = end_[i];
    x.size = t_.size;
    x.size_known = t_.size_known;
    x.ranged = t_.size_known && !single_;
    x.fd = t_.fd;
    x.done = &done_[i];
    x.total_received = &received_;
    x.fetcher = this;
    x.index = i;
    x.written_back = x.pos;
    x.writeback = o_.sync_blobs && t_.size_known;
    x.last_activity = Clock::now();
    CURL* h = curl_easy_init();
    x.h = h;
    curl_easy_setopt(h, CURLOPT_URL, t_.url.c_str());
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x.err);
    curl_easy_setopt(h, CURLOPT_USERAGENT, o_.http.user_agent.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(o_.http.connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, static_cast<long>(o_.curl_buffer_bytes));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, XferWrite);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, XferHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    if (!o_.http.token.empty()) {
      curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
      curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, o_.http.token.c_str());
    }
    if (x.ranged) {
      std::string range = std::to_string(x.pos) + "-" + std::to_string(x.end - 1);
      curl_easy_setopt(h, CURLOPT_RANGE, range.c_str());  // copied by curl
    }
    curl_multi_add_handle(multi, h);
    bool finished = false, stalled = false;
    CURLcode rc = CURLE_OK;
    // The connection's receive rate: its earlier requests plus this one from its first body
    // bytes on (the round trip left out), over the time it was not paused.
    Clock::duration paused_receiving{0};  // pauses after this request's first bytes
    Clock::duration paused_unknown{0};    // pauses while the rate was unknown
    auto this_request = [&] {
      RateMeter m;
      if (x.received > x.first_write_bytes) {
        m.bytes = x.received - x.first_write_bytes;
        m.time = Clock::now() - x.first_write - paused_receiving;
      }
      return m;
    };
    auto receive_rate = [&] {
      const RateMeter m = this_request();
      const uint64_t bytes = meter->bytes + m.bytes;
      const Clock::duration time = meter->time + m.time;
      if (bytes < kRateMinBytes || time < kRateMinTime) return 0.0;
      return static_cast<double>(bytes) / std::chrono::duration<double>(time).count();
    };
    while (!stop_) {
      const double rate = receive_rate();
      const bool unknown = rate <= 0 || !hooks_.hash_rate || hooks_.hash_rate() <= 0;
      if (HashLagging(i, x.pos, rate, paused_unknown < kUnknownRatePause)) {
        // Let the hasher catch up; not reading is our choice, not a stall.
        const auto p0 = Clock::now();
        std::this_thread::sleep_for(milliseconds(1));
        x.last_activity = Clock::now();
        const auto d = x.last_activity - p0;
        if (x.received > 0) paused_receiving += d;
        if (unknown) paused_unknown += d;
        lag_paused_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(),
                                 std::memory_order_relaxed);
        continue;
      }
      int running = 0;
      curl_multi_perform(multi, &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
        if (msg->msg == CURLMSG_DONE) {
          rc = msg->data.result;
          finished = true;
        }
      }
      if (finished) break;
      if (Clock::now() - x.last_activity > o_.stall_timeout) {
        stalled = true;
        break;
      }
      curl_multi_poll(multi, nullptr, 0, 20, nullptr);
    }
    if (x.code == 0) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x.code);
    {
      const RateMeter m = this_request();
      meter->bytes += m.bytes;
      meter->time += m.time;
    }
    curl_multi_remove_handle(multi, h);
    curl_easy_cleanup(h);
    if (x.complete && t_.size_known) {
      // Start writing the finished range back to disk now, so the fsync before the rename has
      // little left to do (asynchronous; errors surface at that fsync).
      ::sync_file_range(t_.fd, static_cast<off_t>(start_[i]),
                        static_cast<off_t>(end_[i] - start_[i]), SYNC_FILE_RANGE_WRITE);
    }
    std::lock_guard<std::mutex> lock(mu_);
    active_[i] = 0;
    range_ended_ = true;
    save_cv_.notify_one();
    idle_cv_.notify_all();
    if (!finished && !stalled && !x.complete) return;  // abandoned: cancelled or another failure
    Classify(x, i, rc, stalled);
  }

  // How a request ended; called with mu_ held.
  void Classify(const Xfer& x, size_t i, CURLcode rc, bool stalled) {
    if (x.complete) {
      attempts_[i] = 0;
      return;
    }
    if (!t_.size_known && !stalled && rc == CURLE_OK && x.code >= 200 && x.code < 300) {
      unknown_complete_ = true;
      return;
    }
    auto fail = [&](Status s) {
      if (fatal_.ok()) fatal_ = std::move(s);
      stop_ = true;
    };
    if (x.range_ignored) {
      switch_single_ = true;
      stop_ = true;
      return;
    }
    if (x.write_error) {
      fail((x.write_errno == ENOSPC || x.write_errno == EDQUOT)
               ? Status::ResourceExhausted(t_.what, "disk full while writing " + t_.partial)
               : PosixError("writing " + t_.partial, x.write_errno));
      return;
    }
    if (!x.bad_range.empty()) {
      fail(Status::FailedPrecondition(t_.what, x.bad_range));
      return;
    }
    HttpFailure f;
    if (stalled) {
      f = {Status::Unavailable(
               t_.what, "stalled: no data for " + std::to_string(o_.stall_timeout.count()) + " ms"),
           true};
    } else if (x.code >= 400) {
      f = ClassifyHttpStatus(x.code, t_.what);
    } else if (rc != CURLE_OK) {
      f = ClassifyCurlCode(rc, x.err, t_.what);
    } else {
      f = {Status::Unavailable(t_.what, "connection closed before the range was complete"), true};
    }
    if (!f.transient) {
      fail(f.status);
      return;
    }
    if (x.received > 0) attempts_[i] = 0;
    if (++attempts_[i] >= o_.max_attempts) {
      fail(Status::Unavailable(
          t_.what, "gave up after " + std::to_string(attempts_[i]) +
                       " attempts without progress; last error: " + f.status.message()));
      return;
    }
    not_before_[i] = Clock::now() + RetryBackoff(o_, attempts_[i]);
  }

  const RangeTarget& t_;
  const DownloadOptions& o_;
  const RangeHooks& hooks_;
  std::vector<RangeRow>* rows_;
  bool single_;

  // Range geometry: fixed while workers run.
  size_t n_ = 0;
  std::vector<uint64_t> start_, end_;
  std::unique_ptr<std::atomic<uint64_t>[]> done_;  // written by the range's worker only
  std::atomic<uint64_t> received_{0};
  std::atomic<int64_t> lag_paused_ns_{0};  // connections paused for the hasher, summed
  std::atomic<bool> stop_{false};
  std::atomic<bool> range_ended_{false};

  std::mutex mu_;
  std::condition_variable exit_cv_;
  std::condition_variable idle_cv_;            // a request ended (workers waiting for a range)
  size_t running_ = 0;                         // guarded by mu_
  std::vector<int> attempts_;                  // guarded by mu_
  std::vector<Clock::time_point> not_before_;  // guarded by mu_
  std::vector<char> active_;                   // guarded by mu_
  Status fatal_;                               // guarded by mu_
  bool switch_single_ = false;                 // guarded by mu_
  std::atomic<bool> unknown_complete_{false};
  std::atomic<size_t> lowest_{0};  // every range below it is complete
  size_t workers_ = 1;             // worker threads of the current RunWorkers

  // The checkpoint thread's state.
  std::mutex save_mu_;
  std::condition_variable save_cv_;
  bool save_stop_ = false;            // guarded by save_mu_
  std::vector<RangeRow> saved_rows_;  // the rows last saved; guarded by save_mu_
};

void Written(Fetcher* f, size_t i) {
  f->OnWritten(i);
}

}  // namespace

std::chrono::milliseconds RetryBackoff(const DownloadOptions& o, int attempt) {
  double ms = static_cast<double>(o.backoff_initial.count());
  for (int i = 1; i < attempt && ms < o.backoff_max.count(); ++i) ms *= 2;
  ms = std::min(ms, static_cast<double>(o.backoff_max.count()));
  thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return milliseconds(static_cast<int64_t>(ms * jitter(rng)));
}

Status FetchRanges(const RangeTarget& target, const DownloadOptions& options,
                   const RangeHooks& hooks, std::vector<RangeRow>* ranges, bool* single,
                   uint64_t* received, double* lag_paused) {
  Fetcher f(target, options, hooks, ranges, *single);
  Status s = f.Run(single, received);
  if (lag_paused != nullptr) *lag_paused = f.lag_paused_seconds();
  return s;
}

}  // namespace garnet::registry
