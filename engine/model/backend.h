// The seam between the engine (sequences, generation, timing) and a compute backend (CPU now,
// Vulkan later). A backend runs the Gemma 4 forward pass (../shared/docs/gemma4.md §2) over a
// batch of tokens of one sequence and owns that sequence's KV state.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "engine/base/status.h"

namespace garnet::model {

// Backend-specific per-sequence state (its KV cache).
class BackendSequence {
 public:
  virtual ~BackendSequence() = default;
  virtual uint64_t kv_bytes() const = 0;
};

// One token of a batch that may mix sequences.
struct BatchItem {
  BackendSequence* seq = nullptr;
  int32_t token = 0;
  int64_t pos = 0;      // its position in seq
  bool logits = false;  // produce logits for this item
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // A fresh sequence (empty cache). ResourceExhausted when its cache cannot be allocated.
  virtual Result<std::unique_ptr<BackendSequence>> NewSequence() = 0;
  // Runs tokens[0..T) at positions pos0..pos0+T-1 (1 <= T <= ubatch, pos0 + T <= context),
  // writing their K/V into `seq`. When `logits` is non-null it receives n_vocab values for the
  // last token, or for every token (row-major [T, n_vocab]) when all_logits is set. On error the
  // sequence's cache may hold partial K/V for these positions (the caller rewinds to pos0).
  // Calls are serialised by the caller.
  virtual Status Forward(BackendSequence* seq, const int32_t* tokens, int64_t T, int64_t pos0,
                         bool all_logits, float* logits) = 0;
  // A batch mixing sequences (e.g. one decode token for each of several sequences, so the
  // weights are read once for all). 1 <= items <= ubatch; a sequence's items must have
  // consecutive increasing positions. `logits` receives one n_vocab row per item with
  // logits = true, in item order.
  virtual Status ForwardBatch(std::span<const BatchItem> items, float* logits) = 0;
  // ForwardBatch for a caller that needs only the greedy pick (sampling::GreedyPick) of each
  // item with logits = true: `picks` receives one id per such item, in item order (-1 where no
  // logit qualifies), and no logits row is returned. The CPU backend picks from its logits on
  // the host; the Vulkan backend picks on the device and reads back only the ids.
  virtual Status ForwardBatchPicks(std::span<const BatchItem> items, int32_t* picks) = 0;
  // ForwardBatch for a caller that samples each logits row from its best k only (a top-k
  // sampler: sampling::Sampler::CandidatesNeeded), 1 <= k <= kMaxTopCandidates: `top` receives
  // k (logit, id) pairs per item with logits = true, in item order, each list in
  // sampling::TopCandidates' order (best first, lower id on ties) padded with (-inf, -1) where
  // fewer than k qualify. The CPU backend takes them from its logits; the Vulkan backend sorts
  // the row's chunks on the device and merges their heads on the host (k pairs per 2048
  // logits read back instead of the row).
  static constexpr uint32_t kMaxTopCandidates = 128;
  virtual Status ForwardBatchTop(std::span<const BatchItem> items, uint32_t k,
                                 std::pair<float, int32_t>* top) = 0;
};

}  // namespace garnet::model
