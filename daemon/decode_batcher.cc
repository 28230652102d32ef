#include "daemon/decode_batcher.h"

#include <algorithm>
#include <memory>
#include <string>

#include "engine/model/chat.h"
#include "engine/tokenizer/tokenizer.h"

namespace garnet::daemon {
namespace {

using Clock = std::chrono::steady_clock;

double Now() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

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
  engine::Engine& eng = batcher.engine();
  BatchedResult out;
  engine::GenerateResult& res = out.result;
  const double t0 = Now();
  GARNET_RETURN_IF_ERROR(eng.Feed(seq, prompt));
  const double t1 = Now();
  res.timing.prompt_tokens = static_cast<int64_t>(prompt.size());
  res.timing.prompt_seconds = t1 - t0;
  if (seq.logits().empty()) {
    return Status::FailedPrecondition("generate", "empty prompt on an empty sequence");
  }
  const tok::Tokenizer* tk = eng.tokenizer();
  std::vector<int32_t> stops = req.stop_ids;
  if (stops.empty() && tk != nullptr) stops = chat::StopTokenIds(*tk);
  sampling::Sampler sampler(req.sampler);
  std::unique_ptr<tok::StreamDecoder> decoder;
  if (tk != nullptr) decoder = std::make_unique<tok::StreamDecoder>(tk);
  chat::StopMatcher matcher(req.stop_strings);
  const int64_t n_ctx = eng.options().n_ctx;
  DecodeBatcher::Member member(&batcher);
  double t_first = 0;
  res.finish = engine::FinishReason::kMaxTokens;
  for (int32_t i = 0; i < req.max_tokens; ++i) {
    if (req.cancel != nullptr && req.cancel->load()) {
      res.finish = engine::FinishReason::kCancelled;
      break;
    }
    const int32_t tok = sampler.Sample(seq.logits());
    if (tok < 0) return Status::Internal("generate", "sampler found no token (all banned?)");
    if (i == 0) {
      t_first = Now();
      res.timing.ttft_seconds = t_first - t0;
    }
    if (std::find(stops.begin(), stops.end(), tok) != stops.end()) {
      res.finish = engine::FinishReason::kStopToken;
      break;
    }
    sampler.Accept(tok);
    res.tokens.push_back(tok);
    ++res.timing.generated_tokens;
    const std::string piece = decoder ? decoder->Push(tok) : std::string();
    auto m = matcher.Push(piece);
    res.text += m.text;
    const bool go_on = on_token ? on_token(tok, m.text) : true;
    if (m.stopped) {
      res.finish = engine::FinishReason::kStopString;
      break;
    }
    if (!go_on) {
      res.finish = engine::FinishReason::kCancelled;
      break;
    }
    if (i + 1 == req.max_tokens) break;
    if (seq.n_past() >= n_ctx) {
      res.finish = engine::FinishReason::kContextFull;
      break;
    }
    GARNET_ASSIGN_OR_RETURN(size_t batch, member.Step(seq, tok));
    out.max_batch = std::max(out.max_batch, batch);
  }
  if (res.finish != engine::FinishReason::kStopString) {
    const std::string tail = decoder ? decoder->Flush() : std::string();
    auto m = matcher.Push(tail);
    const std::string rest = m.text + (m.stopped ? std::string() : matcher.Flush());
    if (m.stopped) res.finish = engine::FinishReason::kStopString;
    res.text += rest;
    if (!rest.empty() && on_token) on_token(-1, rest);
  }
  if (t_first > 0) res.timing.decode_seconds = Now() - t_first;
  return out;
}

}  // namespace garnet::daemon
