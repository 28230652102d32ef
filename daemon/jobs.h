// Worker threads for the daemon's blocking work (pulls, loads, generation, hashing), so gRPC
// reactions never block. One thread per job, up to a cap: a long generation never delays a pull
// or a Ps. Every job gets a cancel flag; CancelAll() sets them all (shutdown).
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/base/status.h"

namespace garnet::daemon {

class Jobs {
 public:
  explicit Jobs(uint32_t max_jobs) : max_jobs_(max_jobs) {}
  // Cancels and joins every job.
  ~Jobs();
  Jobs(const Jobs&) = delete;
  Jobs& operator=(const Jobs&) = delete;

  // Runs `fn(cancel)` on a new thread. `cancel` is the caller's flag (set by the RPC's OnCancel);
  // CancelAll() sets it too. ResourceExhausted when `max_jobs` are running; Unavailable after
  // CancelAll(). On failure `fn` is not run.
  Status Run(std::shared_ptr<std::atomic<bool>> cancel,
             std::function<void(const std::atomic<bool>&)> fn);

  // Sets every running job's cancel flag and refuses new jobs.
  void CancelAll();
  // Waits until every job has returned.
  void Join();

  uint32_t running() const;

  // The gRPC calls the jobs serve, counted until the call is over (the reactor's OnDone: its
  // last message and status were sent, or the client went away). Shutdown waits for them before
  // it stops the gRPC server, so replies flush without a fixed grace period.
  void CallStarted();
  void CallDone();
  // Waits until no counted call is open or `deadline` passed; returns whether none is open.
  bool WaitCallsDone(std::chrono::steady_clock::time_point deadline);

 private:
  struct Job {
    std::shared_ptr<std::atomic<bool>> cancel;
    std::thread thread;
    bool finished = false;
  };
  void ReapLocked();

  const uint32_t max_jobs_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Job> jobs_;  // guarded by mu_
  bool closed_ = false;  // guarded by mu_
  uint32_t calls_ = 0;   // guarded by mu_
};

}  // namespace garnet::daemon
