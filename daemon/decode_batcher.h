// Batched decode across the concurrent requests of one loaded model.
//
// Every generation runs on its own worker thread (so a slow client, cancellation, a deadline or a
// stop string concern only its request), but the forward passes of their decode steps are
// gathered into one engine::Engine::Step call, so the weights are read once per step for all
// active sequences instead of once per sequence.
//
// How a step is formed: a request prefills its prompt alone (Engine::Feed), then joins the
// model's DecodeBatcher as a member. For each token it samples, it submits (sequence, token) and
// blocks. A batch runs as soon as every member has submitted, or `max_wait` after the first
// submission of the batch (so a member busy writing to a slow client delays the others by at
// most that much). The thread that completes the batch (or whose wait ran out) runs Engine::Step
// for all submitted sequences outside the batcher's lock and wakes the others; while it runs,
// later submissions form the next batch. A member leaves when its generation ends, which may
// complete a batch the others wait on.
//
// GenerateBatched() is Engine::Generate with its FeedOne hook doing a batched step: the same
// sampler, stop ids, stop strings, UTF-8 streaming, cancellation check before each step, and
// the same Timing definitions (ttft from the start of the prefill; decode time includes waiting
// for the batch, as the client experienced it).
//
// Thread-safety: a DecodeBatcher may be used from any number of threads; each thread uses its
// own Sequence. The engine must outlive the batcher.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "engine/base/status.h"
#include "engine/model/engine.h"

namespace garnet::daemon {

class DecodeBatcher {
 public:
  explicit DecodeBatcher(engine::Engine* engine,
                         std::chrono::microseconds max_wait = std::chrono::microseconds(2000));
  DecodeBatcher(const DecodeBatcher&) = delete;
  DecodeBatcher& operator=(const DecodeBatcher&) = delete;

  // A request's membership from its first decode step to its end (RAII).
  class Member {
   public:
    explicit Member(DecodeBatcher* b);
    ~Member();
    Member(const Member&) = delete;
    Member& operator=(const Member&) = delete;
    // Appends `token` to `seq` in the next batch; blocks until that batch ran. Returns the number
    // of sequences the step ran with (1: alone). The engine's errors (OutOfRange when the
    // sequence is full, InvalidArgument for a bad id) concern this sequence only: a failed batch
    // is retried sequence by sequence. On error the sequence has not advanced.
    Result<size_t> Step(engine::Sequence& seq, int32_t token);

   private:
    DecodeBatcher* b_;
  };

  // Counters since construction.
  struct Stats {
    uint64_t steps = 0;           // Engine::Step calls for batches
    uint64_t sequence_steps = 0;  // sequences advanced over all steps
    uint64_t batched_steps = 0;   // steps with more than one sequence
    uint64_t max_batch = 0;
  };
  Stats stats() const;

  engine::Engine& engine() const { return *engine_; }

 private:
  struct Item {
    engine::Sequence* seq = nullptr;
    int32_t token = 0;
    bool done = false;
    Status status;
    size_t batch = 0;
  };
  Result<size_t> Submit(engine::Sequence& seq, int32_t token);
  void RunBatch(std::vector<Item*>& batch);  // called without mu_

  engine::Engine* const engine_;
  const std::chrono::microseconds max_wait_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint32_t members_ = 0;                            // guarded by mu_
  std::vector<Item*> pending_;                      // guarded by mu_
  std::chrono::steady_clock::time_point first_at_;  // first submission of pending_
  bool running_ = false;                            // a batch is in Engine::Step
  Stats stats_;                                     // guarded by mu_
};

// What GenerateBatched reports beside the engine's result.
struct BatchedResult {
  engine::GenerateResult result;
  size_t max_batch = 0;  // the most sequences one of this request's decode steps ran with
};

// Engine::Generate through the batcher (see above): prefills `prompt` into `seq` (empty prompt
// only when `seq` already holds logits), then samples and steps. The engine's errors as in
// Engine::Generate.
Result<BatchedResult> GenerateBatched(DecodeBatcher& batcher, engine::Sequence& seq,
                                      std::span<const int32_t> prompt,
                                      const engine::GenerateRequest& request,
                                      const engine::TokenCallback& on_token);

}  // namespace garnet::daemon
