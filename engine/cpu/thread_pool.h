// A small fixed thread pool for data-parallel kernels.
//
// ParallelFor splits [0, n) into one contiguous range per thread and blocks until every range is
// done; the calling thread works too. Workers sleep on a condition variable between calls (they
// spin briefly first, which keeps per-op latency low during decode).
//
// Thread-safety: ParallelFor may be called from one thread at a time (it is not reentrant and
// not concurrent); callers that share a pool serialise their calls. Construction and
// destruction are not concurrent with calls.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace garnet::cpu {

class ThreadPool {
 public:
  // n_threads total, including the caller; <= 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end, thread_index) over a partition of [0, n) into at most size() ranges whose
  // boundaries are multiples of `grain` (except the end). Blocks until all are done.
  using RangeFn = std::function<void(int64_t begin, int64_t end, int thread)>;
  void ParallelFor(int64_t n, const RangeFn& fn, int64_t grain = 1);

 private:
  void Worker(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  const RangeFn* job_ = nullptr;  // guarded by mu_ (read by workers after a generation change)
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
};

}  // namespace garnet::cpu
