#include "daemon/jobs.h"

#include <vector>

namespace garnet::daemon {

Jobs::~Jobs() {
  CancelAll();
  Join();
}

Status Jobs::Run(std::shared_ptr<std::atomic<bool>> cancel,
                 std::function<void(const std::atomic<bool>&)> fn) {
  std::lock_guard lock(mu_);
  ReapLocked();
  if (closed_) return Status::Unavailable("garnetd", "shutting down");
  if (jobs_.size() >= max_jobs_) {
    return Status::ResourceExhausted("garnetd", "too many requests in progress (" +
                                                    std::to_string(max_jobs_) + "); retry later");
  }
  jobs_.emplace_back();
  auto it = std::prev(jobs_.end());
  it->cancel = cancel;
  it->thread = std::thread([this, it, cancel, fn = std::move(fn)] {
    fn(*cancel);
    {
      std::lock_guard lock(mu_);
      it->finished = true;
    }
    cv_.notify_all();
  });
  return Status::OK();
}

void Jobs::ReapLocked() {
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->finished) {
      it->thread.join();  // returns at once: the thread is past its last statement
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

void Jobs::CancelAll() {
  std::lock_guard lock(mu_);
  closed_ = true;
  for (Job& j : jobs_) j.cancel->store(true);
}

void Jobs::Join() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] {
    for (const Job& j : jobs_) {
      if (!j.finished) return false;
    }
    return true;
  });
  ReapLocked();
}

void Jobs::CallStarted() {
  std::lock_guard lock(mu_);
  calls_++;
}

void Jobs::CallDone() {
  {
    std::lock_guard lock(mu_);
    calls_--;
  }
  cv_.notify_all();
}

bool Jobs::WaitCallsDone(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  return cv_.wait_until(lock, deadline, [&] { return calls_ == 0; });
}

uint32_t Jobs::running() const {
  std::lock_guard lock(mu_);
  uint32_t n = 0;
  for (const Job& j : jobs_) n += j.finished ? 0 : 1;
  return n;
}

}  // namespace garnet::daemon
