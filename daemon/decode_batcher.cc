#include "daemon/decode_batcher.h"

#include <algorithm>
#include <optional>

namespace garnet::daemon {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

DecodeBatcher::DecodeBatcher(engine::Engine* engine, std::chrono::microseconds max_wait)
    : engine_(engine), max_wait_(max_wait) {}

DecodeBatcher::Member::Member(DecodeBatcher* b) : b_(b) {
  std::lock_guard lock(b_->mu_);
  b_->members_++;
}

DecodeBatcher::Member::~Member() {
  {
    std::lock_guard lock(b_->mu_);
    b_->members_--;
  }
  // The others may have been waiting only for this member.
  b_->cv_.notify_all();
}

Result<size_t> DecodeBatcher::Member::Step(engine::Sequence& seq, int32_t token) {
  return b_->Submit(seq, token);
}

DecodeBatcher::Stats DecodeBatcher::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

Result<size_t> DecodeBatcher::Submit(engine::Sequence& seq, int32_t token) {
  Item item;
  item.seq = &seq;
  item.token = token;
  std::unique_lock lock(mu_);
  if (pending_.empty()) first_at_ = Clock::now();
  pending_.push_back(&item);
  cv_.notify_all();  // this may complete the batch a waiting member watches
  while (!item.done) {
    if (!running_ && !pending_.empty()) {
      const bool full = pending_.size() >= members_;
      const auto deadline = first_at_ + max_wait_;
      if (full || Clock::now() >= deadline) {
        std::vector<Item*> batch;
        batch.swap(pending_);
        running_ = true;
        lock.unlock();
        RunBatch(batch);
        lock.lock();
        running_ = false;
        stats_.steps++;
        stats_.sequence_steps += batch.size();
        if (batch.size() > 1) stats_.batched_steps++;
        stats_.max_batch = std::max<uint64_t>(stats_.max_batch, batch.size());
        for (Item* it : batch) it->done = true;
        cv_.notify_all();
        continue;
      }
      cv_.wait_until(lock, deadline);
    } else {
      cv_.wait(lock);
    }
  }
  if (!item.status.ok()) return item.status;
  return item.batch;
}

void DecodeBatcher::RunBatch(std::vector<Item*>& batch) {
  std::vector<engine::Sequence*> seqs;
  std::vector<int32_t> tokens;
  seqs.reserve(batch.size());
  tokens.reserve(batch.size());
  for (const Item* it : batch) {
    seqs.push_back(it->seq);
    tokens.push_back(it->token);
  }
  Status st = engine_->Step(seqs, tokens);
  if (st.ok() || batch.size() == 1) {
    for (Item* it : batch) {
      it->status = st;
      it->batch = batch.size();
    }
    return;
  }
  // Nothing advanced; find whose step fails by running them one at a time.
  for (Item* it : batch) {
    engine::Sequence* one = it->seq;
    it->status = engine_->Step(std::span<engine::Sequence* const>(&one, 1),
                               std::span<const int32_t>(&it->token, 1));
    it->batch = 1;
  }
}

Result<BatchedResult> GenerateBatched(DecodeBatcher& batcher, engine::Sequence& seq,
                                      std::span<const int32_t> prompt,
                                      const engine::GenerateRequest& req,
                                      const engine::TokenCallback& on_token) {
  BatchedResult out;
  // Joins the batcher at the first decode step (after the prefill, so the others do not wait on
  // it meanwhile) and leaves when the generation ends.
  std::optional<DecodeBatcher::Member> member;
  auto step = [&](engine::Sequence& s, int32_t tok) -> Status {
    if (!member) member.emplace(&batcher);
    GARNET_ASSIGN_OR_RETURN(size_t batch, member->Step(s, tok));
    out.max_batch = std::max(out.max_batch, batch);
    return Status::OK();
  };
  GARNET_ASSIGN_OR_RETURN(out.result, batcher.engine().Generate(seq, prompt, req, on_token, step));
  return out;
}

}  // namespace garnet::daemon
