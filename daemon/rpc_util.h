// Internal to daemon/: the pieces every gRPC service shares — Status conversion, the token
// check, request logging, and two reactors that hand blocking work to daemon::Jobs.
//
// Includes the gRPC headers: include this only from the service .cc files.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/jobs.h"
#include "engine/base/status.h"

namespace garnet::daemon {

class ModelManager;
class RegistryClient;
struct Config;

// What the services share; owned by the Server, outlives every call.
struct ServiceContext {
  const Config* config = nullptr;
  RegistryClient* registry = nullptr;
  ModelManager* models = nullptr;
  Jobs* jobs = nullptr;
};

// garnet::Status -> grpc::Status (codes are numerically equal).
inline grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

// Requests over TCP must carry `authorization: Bearer <token>` when a token is configured.
// The Unix socket is protected by its file mode (0600) instead.
Status CheckAuth(const grpc::CallbackServerContext* ctx, const std::string& token);

// One line per request on stderr: method, model, status, seconds, extra facts.
void LogRequest(const char* method, const std::string& model, const Status& status, double seconds,
                const std::string& extra = {});

using SteadyClock = std::chrono::steady_clock;
inline double SecondsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// A unary call whose work runs on a Jobs thread. The work function returns the Status to finish
// with (filling the response first). OnCancel sets the cancel flag the work polls.
class JobUnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  using Work = std::function<Status(const std::atomic<bool>& cancel)>;
  // Starts `work` (or finishes at once when the job cannot start). Returns this reactor.
  static grpc::ServerUnaryReactor* Start(Jobs* jobs, Work work) {
    auto* r = new JobUnaryReactor(jobs);
    Status st = jobs->Run(r->cancel_, [r, work = std::move(work)](const std::atomic<bool>& c) {
      Status result = work(c);
      r->Finish(ToGrpc(result));  // `r` is deleted in OnDone, after this
    });
    if (!st.ok()) r->Finish(ToGrpc(st));
    return r;
  }
  void OnCancel() override { cancel_->store(true); }
  void OnDone() override {
    Jobs* jobs = jobs_;
    delete this;
    jobs->CallDone();
  }

 private:
  explicit JobUnaryReactor(Jobs* jobs)
      : jobs_(jobs), cancel_(std::make_shared<std::atomic<bool>>(false)) {
    jobs_->CallStarted();
  }
  Jobs* jobs_;
  std::shared_ptr<std::atomic<bool>> cancel_;
};

// A server-streaming call fed by a worker. The worker calls Write() for each message and
// Finish() once; the reactor keeps one write in flight and queues the rest. When the client goes
// away (cancel, deadline, broken stream) the cancel flag is set and further writes are dropped.
// `coalesce` lets a newer message replace a queued one (progress events).
template <typename Response>
class StreamWriter final : public grpc::ServerWriteReactor<Response> {
 public:
  using Work = std::function<void(StreamWriter* w, const std::atomic<bool>& cancel)>;

  static grpc::ServerWriteReactor<Response>* Start(Jobs* jobs, Work work) {
    auto* w = new StreamWriter(jobs);
    w->refs_ = 2;  // the gRPC side (OnDone) and the worker (after Finish)
    Status st = jobs->Run(w->cancel_, [w, work = std::move(work)](const std::atomic<bool>& c) {
      work(w, c);
      w->Unref();
    });
    if (!st.ok()) {
      w->refs_ = 1;
      w->Finish(st);
    }
    return w;
  }

  // Queues a message. `replaceable`: may be replaced by the next replaceable message while it
  // waits (progress events). Returns false once the client is gone.
  bool Write(Response msg, bool replaceable = false) {
    std::unique_lock lock(mu_);
    if (broken_ || finishing_) return false;
    if (replaceable && !queue_.empty() && queue_.back().second) {
      queue_.back().first = std::move(msg);
    } else {
      queue_.emplace_back(std::move(msg), replaceable);
    }
    MaybeStartLocked(lock);
    return true;
  }

  // Ends the call with `status` after the queued messages are written.
  void Finish(const Status& status) {
    std::unique_lock lock(mu_);
    if (finishing_) return;
    finishing_ = true;
    final_ = ToGrpc(status);
    if (broken_) queue_.clear();
    MaybeStartLocked(lock);
  }

  const std::atomic<bool>& cancelled() const { return *cancel_; }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    in_flight_ = false;
    if (!ok) {
      broken_ = true;
      cancel_->store(true);
      queue_.clear();
    }
    MaybeStartLocked(lock);
  }
  void OnCancel() override {
    cancel_->store(true);
    std::lock_guard lock(mu_);
    broken_ = true;
  }
  void OnDone() override {
    Jobs* jobs = jobs_;
    Unref();
    jobs->CallDone();
  }

 private:
  explicit StreamWriter(Jobs* jobs)
      : jobs_(jobs), cancel_(std::make_shared<std::atomic<bool>>(false)) {
    jobs_->CallStarted();
  }

  // Starts the next write or the finish; called with mu_ held, releases it before calling gRPC.
  void MaybeStartLocked(std::unique_lock<std::mutex>& lock) {
    if (in_flight_ || finished_) return;
    if (!queue_.empty() && !broken_) {
      current_ = std::move(queue_.front().first);
      queue_.pop_front();
      in_flight_ = true;
      lock.unlock();
      this->StartWrite(&current_);
      return;
    }
    if (finishing_) {
      finished_ = true;
      grpc::Status st = broken_ && final_.ok()
                            ? grpc::Status(grpc::StatusCode::CANCELLED, "client went away")
                            : final_;
      lock.unlock();
      grpc::ServerWriteReactor<Response>::Finish(st);
    }
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  Jobs* jobs_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::atomic<int> refs_{1};
  std::mutex mu_;
  std::deque<std::pair<Response, bool>> queue_;
  Response current_;
  bool in_flight_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool broken_ = false;
  grpc::Status final_;
};

}  // namespace garnet::daemon
