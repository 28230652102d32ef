#include "engine/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GARNET_CPU_RELAX() _mm_pause()
#else
#define GARNET_CPU_RELAX() std::this_thread::yield()
#endif

namespace garnet::cpu {
namespace {

// Range of part `i` of `parts` over [0, n), boundaries rounded to multiples of grain.
void PartRange(int64_t n, int64_t grain, int parts, int i, int64_t* b, int64_t* e) {
  int64_t blocks = (n + grain - 1) / grain;
  int64_t per = blocks / parts, extra = blocks % parts;
  int64_t b0 = i * per + std::min<int64_t>(i, extra);
  int64_t b1 = b0 + per + (i < extra ? 1 : 0);
  *b = std::min(n, b0 * grain);
  *e = std::min(n, b1 * grain);
}

// Waits actively until pred() holds or about `budget` has passed; returns pred(). Decode issues
// hundreds of short parallel ops per token, back to back: staying awake through the gaps avoids
// a futex wake-up per op. After a short pause-spin the loop yields, so on an oversubscribed
// machine the waiting thread hands its core to whoever has work instead of burning it.
template <typename Pred>
bool SpinFor(Pred pred, std::chrono::microseconds budget) {
  for (int i = 0; i < 512; ++i) {
    if (pred()) return true;
    GARNET_CPU_RELAX();
  }
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      if (pred()) return true;
      std::this_thread::yield();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

constexpr std::chrono::microseconds kSpinBudget{2000};

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { Worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, const RangeFn& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int parts = static_cast<int>(std::min<int64_t>(n_threads_, (n + grain - 1) / grain));
  if (parts <= 1) {
    fn(0, n, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_n_ = n;
    job_grain_ = grain;
    pending_.store(n_threads_ - 1);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  int64_t b, e;
  PartRange(n, grain, n_threads_, 0, &b, &e);
  if (b < e) fn(b, e, 0);
  // Spin a little, then sleep until the workers finish.
  if (!SpinFor([&] { return pending_.load(std::memory_order_acquire) == 0; }, kSpinBudget)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_.load() == 0; });
  }
}

void ThreadPool::Worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for the next job before sleeping.
    SpinFor([&] { return generation_.load(std::memory_order_acquire) != seen; }, kSpinBudget);
    const RangeFn* job;
    int64_t n, grain;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_) return;
      job = job_;
      n = job_n_;
      grain = job_grain_;
    }
    int64_t b, e;
    PartRange(n, grain, n_threads_, index, &b, &e);
    if (b < e) (*job)(b, e, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
  }
}

}  // namespace garnet::cpu
