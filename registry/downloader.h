// Resumable, verified, parallel downloads into the content-addressed store.
//
// Fetch(url, pins) ends in one of two states:
//   - OK: the file is at blobs/sha256-<hex>, its sha256 was computed over every byte and matches
//     the pin (or the upstream's X-Linked-Etag) when one is known, and a `blobs` row exists.
//   - an error: no blob is created for it. The partial file and its progress rows stay for a
//     later resume, except after a hash mismatch (DataLoss), where they are discarded.
//
// How: a HEAD resolves size and sha256 (pin > X-Linked-Size / X-Linked-Etag > Content-Length;
// a pin that disagrees with the upstream is FailedPrecondition). The file is split into byte
// ranges fetched over several connections (one worker thread per connection, see
// range_fetch.h) and written with pwrite into partials/<key>.partial, whose full size is reserved
// with fallocate first; each range's progress is saved to SQLite
// every `checkpoint_interval`, soon after every range completion, and when the download stops,
// so a killed process resumes where the last checkpoint left off (with `sync_blobs`, the file is
// flushed before each save, so the saved progress holds after a power loss too). Two threads
// follow the contiguous written prefix, one reading it back, one hashing, so verification
// overlaps the transfer; when the transfer outruns the hasher, connections far ahead of it pause
// (max_hash_lag_bytes). Transient failures (connect/recv errors, 408/429/5xx, stalls with no
// byte for `stall_timeout`) are retried per range with exponential backoff; a range that fails
// `max_attempts` times in a row without progress ends the download with Unavailable. A server
// that ignores Range (200 to a ranged request) switches the download to one stream. Free space
// is checked before starting (ResourceExhausted); ENOSPC while writing is ResourceExhausted too.
//
// Sharing: concurrent Fetch calls for the same blob (same digest, or same URL when the digest is
// unknown) in one process share one download; each caller gets progress and the same result.
// The download stops (resumably) only when every caller has cancelled. Across processes, an
// flock on the partial file serialises downloads of one blob.
//
// Thread-safety: Fetch may be called from any number of threads at once. The Downloader must
// outlive every Fetch call; its destructor cancels running downloads and waits for them.
// Progress callbacks run on the download thread, must return quickly and must not call back
// into the Downloader.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "engine/base/status.h"
#include "registry/db.h"
#include "registry/http.h"
#include "registry/store.h"

namespace garnet::registry {

enum class Phase : uint8_t {
  kResolving = 0,    // HEAD / catalog lookup
  kWaiting = 1,      // another process holds the download lock
  kDownloading = 2,  // bytes arriving
  kVerifying = 3,    // hashing what is not yet hashed
  kDone = 4,         // file verified and stored
};
std::string_view PhaseName(Phase p);

// One progress event. Small, copyable; sent at most every `progress_interval` while
// downloading, plus once per phase change.
struct Progress {
  Phase phase = Phase::kResolving;
  std::string digest;       // "sha256-<hex>" when known
  std::string file;         // file name (for display)
  uint32_t file_index = 0;  // which file of a multi-file model (0-based); set by the Registry
  uint32_t file_count = 1;
  uint64_t completed = 0;       // bytes of this file present (resumed bytes included)
  uint64_t total = 0;           // 0 when unknown
  double bytes_per_second = 0;  // recent transfer rate
};
using ProgressFn = std::function<void(const Progress&)>;

struct DownloadOptions {
  HttpOptions http;
  int connections = 4;                     // parallel range requests per file
  uint64_t min_part_bytes = 4ull << 20;    // ranges are at least this large...
  uint64_t max_part_bytes = 256ull << 20;  // ...and at most this large
  std::chrono::milliseconds stall_timeout{30000};
  int max_attempts = 6;  // consecutive failed attempts of one range without progress
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds progress_interval{100};
  std::chrono::milliseconds checkpoint_interval{500};
  uint64_t disk_reserve_bytes = 64ull << 20;  // free space kept beyond the file itself
  size_t curl_buffer_bytes = 512 * 1024;
  // When the transfer outruns SHA-256 (a fast link: loopback, a LAN mirror), a connection more
  // than this far ahead of the hasher pauses, unless its range is the lowest one still
  // incomplete: the bytes the hasher needs next then get the CPU, the disk and the link, so
  // the hasher never waits and little is left to hash after the last byte. 0: never pause.
  uint64_t max_hash_lag_bytes = 8ull << 20;
  // "Outruns": the connection's receive rate (over all its requests so far) times the number of
  // connections exceeds this factor times the hasher's measured speed. Below that (a typical
  // network) hashing costs nothing and pausing would only lose parallelism, so nobody pauses.
  // Until both rates are measured (1 MiB over 2 ms on the connection; 256 KiB hashed) a
  // connection may pause up to 20 ms per request. 0: pause on lag alone.
  double hash_lag_rate_factor = 1.0;
  // fsync each finished blob (and the blobs directory) before and after the rename, so a
  // registered blob survives a power loss, and fdatasync the partial file before each progress
  // checkpoint, so saved progress never claims bytes a power loss could take back. Off: faster,
  // still safe against process kills (the page cache keeps what was written).
  bool sync_blobs = true;
};

struct FetchRequest {
  std::string url;
  std::optional<uint64_t> expected_size;  // pin
  std::string expected_sha256;            // pin: 64 lower-case hex, or empty
  std::string display_name;               // for progress events
};

// Where a download's time went: seconds from the start of Fetch to each event (0: did not
// happen, e.g. for a blob already stored). For logs and garnet-bench-pull.
struct FetchTimings {
  double resolved = 0;        // size and digest known (HEAD answered)
  double transfer_start = 0;  // partial file ready (opened, locked, reserved, row saved)
  double first_byte = 0;      // the first body bytes written at the start of the file
  double last_byte = 0;       // the file's last byte written (known sizes only)
  double ranges_done = 0;     // every connection closed, progress flushed and saved
  double hashed = 0;          // SHA-256 over every byte finished
  double stored = 0;          // synced, renamed into blobs/, blob row written
  double hash_starved = 0;    // seconds the hasher waited for data after its first piece
  double lag_paused = 0;      // seconds connections paused for the hasher, summed over them
};

struct FetchResult {
  std::string digest;  // "sha256-<hex>"
  uint64_t size = 0;
  uint64_t bytes_transferred = 0;  // body bytes received by this download
  bool already_present = false;    // nothing was downloaded
  bool digest_was_known = false;   // verified against a pin or X-Linked-Etag
  FetchTimings timings;
};

class Downloader {
 public:
  // `db` is borrowed and must outlive the Downloader.
  Downloader(Store store, Db* db, DownloadOptions options);
  ~Downloader();
  Downloader(const Downloader&) = delete;
  Downloader& operator=(const Downloader&) = delete;

  // See the file comment. `cancel` (may be null) is polled at least every 20 ms; a set flag
  // returns Cancelled promptly (after the download's progress was saved when this was its last
  // caller).
  Result<FetchResult> Fetch(const FetchRequest& req, const ProgressFn& progress,
                            const std::atomic<bool>* cancel);

  // HEAD with retries for transient failures (same policy as downloads).
  Result<RemoteInfo> Probe(const std::string& url, const std::atomic<bool>* cancel);
  // GET of a small document (at most `max_bytes`) with the same retry policy.
  Result<std::string> GetSmall(const std::string& url, size_t max_bytes,
                               const std::atomic<bool>* cancel);

  const DownloadOptions& options() const { return options_; }
  const Store& store() const { return store_; }

 private:
  struct Job;
  struct Plan;
  Result<FetchResult> RunJob(const Plan& plan, Job* job);
  Result<FetchResult> Transfer(const Plan& plan, Job* job, int fd, const std::string& partial);
  Result<FetchResult> AdoptExisting(const std::string& digest, uint64_t size, Job* job);

  const Store store_;
  Db* const db_;
  const DownloadOptions options_;

  std::mutex mu_;
  std::condition_variable jobs_cv_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by download key; guarded by mu_
};

}  // namespace garnet::registry
