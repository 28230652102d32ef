// The byte-range transfer engine behind Downloader (internal to registry/).
//
// FetchRanges() fills a pre-sized partial file from one URL: one worker thread per connection,
// each driving its own curl multi handle with one request at a time, takes the next incomplete
// range (in file order), writes what arrives with pwrite at the range's offset, and classifies
// how the request ended (see http.h): complete, transient (retried with exponential backoff,
// giving up after `max_attempts` failures of one range without progress), or permanent. A
// request with no byte for `stall_timeout` is abandoned as transient. A 200 answer to a ranged
// request switches the whole transfer to one un-ranged stream. The calling thread coordinates:
// it polls cancellation, reports progress and advances the hasher every 2 ms; the worker writing
// the lowest incomplete range advances it too, as its bytes land. A checkpoint thread saves
// progress every `checkpoint_interval` and soon after a range ends; with `sync_blobs` it
// fdatasyncs the partial file between reading the counters and saving them, so saved progress
// never claims bytes that were not yet on disk (a resume after a power loss trusts only those).
//
// Thread-safety: one call per partial file. `checkpoint` is called on the checkpoint thread (one
// call at a time, never after FetchRanges returns); `advance` and `hashed` from the calling
// thread and the worker threads at once (never after FetchRanges returns); the other hooks on
// the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/base/status.h"
#include "registry/db.h"
#include "registry/downloader.h"

namespace garnet::registry {

// Delay before retry number `attempt` (1-based): backoff_initial doubled per attempt, capped at
// backoff_max, with +-25% jitter.
std::chrono::milliseconds RetryBackoff(const DownloadOptions& o, int attempt);

struct RangeTarget {
  std::string url;
  std::string what;  // "download of <url>", for messages
  int fd = -1;       // the partial file, open read-write
  std::string partial;
  uint64_t size = 0;  // 0 with size_known false: one stream of unknown length
  bool size_known = true;
};

struct RangeHooks {
  std::function<bool()> cancelled;
  // Persist progress (see above: every checkpoint_interval and after a range ends).
  std::function<Status(const std::vector<RangeRow>&)> checkpoint;
  // Persist the switch to one stream (the new single range).
  std::function<Status(const std::vector<RangeRow>&)> switched_to_single;
  std::function<void(uint64_t completed, double bytes_per_second)> progress;
  // The contiguous prefix [0, watermark) is written. Thread-safe (see above); calls from
  // different threads may arrive out of order, so a value below an earlier one says nothing new.
  std::function<void(uint64_t watermark)> advance;
  // Optional: how many bytes of that prefix the hasher has consumed, and its speed in bytes per
  // second of hashing (0 while unknown). Called from the worker threads (must be thread-safe).
  // With DownloadOptions::max_hash_lag_bytes > 0, a worker whose range is not the lowest
  // incomplete one stops reading while it is that far ahead of the hasher and the transfer
  // outruns the hasher (see hash_lag_rate_factor), so the hash finishes soon after the last
  // byte arrives (the lowest range never waits, so the hasher can always catch up).
  std::function<uint64_t()> hashed;
  std::function<double()> hash_rate;
};

// Runs until every range is complete (OK), a permanent failure, or cancellation (Cancelled).
// `ranges` holds the progress on entry and on return (on return, with `sync_blobs`, only what a
// final fdatasync made durable, or the last checkpoint's rows if that flush failed); `single` says
// whether the transfer is (or became) one un-ranged stream; `received` gets the body bytes written
// by this call and `lag_paused` (may be null) the seconds connections spent paused for the hasher,
// summed over connections. For an unknown size, `ranges` is one range whose end is set to the
// final length.
Status FetchRanges(const RangeTarget& target, const DownloadOptions& options,
                   const RangeHooks& hooks, std::vector<RangeRow>* ranges, bool* single,
                   uint64_t* received, double* lag_paused = nullptr);

}  // namespace garnet::registry
