// The inference engine API: open a Gemma 4 GGUF, create sequences, feed tokens (batched
// prefill), read logits, sample, and stream generation with timing. Backend-neutral: the CPU
// backend and the Vulkan backend (vulkan_backend.h) run behind the same calls (backend.h).
//
// Typical use:
//   GARNET_ASSIGN_OR_RETURN(auto engine, Engine::Open(path, options));
//   GARNET_ASSIGN_OR_RETURN(auto seq, engine->NewSequence());
//   auto prompt = chat::FormatChatTokens(*engine->tokenizer(), messages, {});
//   GARNET_ASSIGN_OR_RETURN(auto result, engine->Generate(*seq, prompt, request, on_token));
//
// Generate reads no logits row when its sampler does not need one: a plain greedy sampler takes
// the backend's greedy pick, a top-k one the row's best candidates (Sequence's greedy-pick and
// top-candidates modes; on Vulkan both are reduced on the GPU). The tokens are the same as
// sampling from the full row.
//
// Thread-safety: an Engine may be used from several threads at once, each with its own
// Sequence(s): forward passes are serialised internally one batch at a time, so concurrent
// generations interleave token by token. A Sequence must not be used by two threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gemma4.h"
#include "engine/model/backend.h"
#include "engine/model/cpu_backend.h"
#include "engine/model/sampler.h"
#include "engine/plan/planner.h"

namespace garnet::gguf {
class Model;
}
namespace garnet::tok {
class Tokenizer;
}

namespace garnet::engine {

using model::EmbedScale;
using model::KvType;

struct EngineOptions {
  int64_t n_ctx = 4096;  // <= 0: the model's trained context; capped at it either way
  // Prefill micro-batch. 0: automatic — with the Vulkan backend plan::ChooseUbatch from 512
  // (2048 where the model fits the GPU with it at a small cost), else 512. With a ready `plan`
  // the plan's ubatch is used whatever this says (the plan priced it).
  int64_t n_ubatch = 512;
  int n_threads = 0;  // 0: all cores
  KvType kv_type = KvType::kF16;
  EmbedScale embed_scale = EmbedScale::kF32;
  bool swa_full_cache = false;  // testing only: sliding layers keep every position (cpu only)
  // "cpu" or "vulkan" (KV cache f16 or q8_0; Unavailable when the machine has no Vulkan device or
  // the build has no Vulkan backend: the caller may fall back to "cpu").
  std::string backend = "cpu";
  // Vulkan device: "" the best one (discrete first), "<digits>" an index, else a name substring.
  std::string device;
  // Vulkan: sequences sharing one KV allocation and logit rows per pass (the plan's n_seq).
  int64_t n_seq = 1;
  // Vulkan: tensor-core prefill matmuls (see model::VulkanBackendOptions::coop_matmul and
  // f16_matmul).
  bool coop_matmul = true;
  bool f16_matmul = false;
  // Vulkan: runs of at least this many tokens take the tiled prefill attention kernel (0: never;
  // see model::VulkanBackendOptions::attn_prefill_min_tokens).
  int64_t attn_prefill_min_tokens = 0;
  // Vulkan: runs of at least this many tokens take the tensor-core attention kernel where the
  // device has one (0: never; see model::VulkanBackendOptions::attn_coop_min_tokens).
  int64_t attn_coop_min_tokens = 32;
  // Vulkan: replay a recorded one-token pass (see model::VulkanBackendOptions::decode_graph).
  bool decode_graph = true;
  // Vulkan: MoE routing inside the decode router matvec (see
  // model::VulkanBackendOptions::fused_routing).
  bool fused_routing = true;
  // Vulkan: decode matvecs read inputs normalised by the previous residual update (see
  // model::VulkanBackendOptions::prenorm).
  bool prenorm = true;
  // MoE decode: the router beside the attention block's residual update (Vulkan only; see
  // model::VulkanBackendOptions::early_routing).
  bool early_routing = true;
  // Vulkan decode: matvec inputs quantised once by their producer (comparisons; see
  // model::VulkanBackendOptions::quantized_inputs).
  bool quantized_inputs = true;
  // Vulkan: where layers and experts run (engine/plan). A ready `plan` (e.g. the daemon's) is
  // used as given: its layer_device / experts_on_host for the selected device (GPU index 0 of
  // the plan), the host last. Otherwise the engine plans `policy` for n_ctx x n_seq (ubatch,
  // KV f16) against `inventory` when set, else the selected device and this machine's RAM, and
  // refuses with ResourceExhausted (the plan's reason) when the policy finds nothing that fits.
  // Layers the plan puts on the host run on the CPU inside the same forward pass, experts on the
  // host are computed on the CPU for the tokens routed to them; a plan with every layer on the
  // host opens the CPU backend. Plans over several GPUs are refused (Unimplemented) for now.
  plan::Policy policy;
  std::optional<plan::Inventory> inventory;
  std::optional<plan::Plan> plan;
};

struct Timing {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;  // feeding the prompt (prefill)
  double ttft_seconds = 0;    // start of the request to the first generated token
  int64_t generated_tokens = 0;
  double decode_seconds = 0;  // after the first token until the end
  double prompt_tok_s() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double decode_tok_s() const {
    return decode_seconds > 0 && generated_tokens > 1 ? (generated_tokens - 1) / decode_seconds : 0;
  }
};

// One token stream with its own KV state.
class Sequence {
 public:
  ~Sequence();
  int64_t n_past() const { return static_cast<int64_t>(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Logits of the last fed token (n_vocab values); empty before any Feed, and after a feed in
  // greedy-pick mode.
  std::span<const float> logits() const;
  // Every row of the last Feed with all_logits (row-major [tokens, n_vocab]).
  std::span<const float> all_logits() const { return logits_; }
  // Greedy-pick mode: Feed (without all_logits) and Step compute only the greedy pick of the new
  // last token, not its logits, for a caller that samples greedily without bias or penalties
  // (sampling::Sampler::PlainGreedy; Generate sets it so). On the Vulkan backend the pick is made
  // on the device and no 1 MiB logits row is read back per token. Off by default.
  void set_greedy_pick_mode(bool on) { pick_mode_ = on; }
  bool greedy_pick_mode() const { return pick_mode_; }
  // sampling::GreedyPick of the last fed token's logits: the pick of the last feed in
  // greedy-pick mode, else computed from what the last feed returned; -1 before any Feed.
  int32_t greedy_pick() const;
  // Top-candidates mode (k in 1..model::Backend::kMaxTopCandidates; 0, or any other value: off):
  // Feed (without all_logits) and Step return only the new last token's best k logits as
  // (logit, id), best first (sampling::TopCandidates), for a top-k sampler
  // (sampling::Sampler::CandidatesNeeded; Generate sets it so). Greedy-pick mode takes
  // precedence. On Vulkan the row's chunks are sorted on the device: k pairs per 2048 logits
  // read back per token (64 KiB for k = 64) instead of 1 MiB, and no host scan of the row.
  void set_top_candidates(int32_t k) {
    top_k_ = k >= 1 && k <= static_cast<int32_t>(model::Backend::kMaxTopCandidates) ? k : 0;
  }
  int32_t top_candidates_k() const { return top_k_; }
  // The last feed's candidates in top-candidates mode (fewer than k when fewer logits qualify);
  // empty otherwise.
  std::span<const std::pair<float, int32_t>> top_candidates() const {
    return has_top_ ? std::span<const std::pair<float, int32_t>>(top_)
                    : std::span<const std::pair<float, int32_t>>();
  }

 private:
  friend class Engine;
  Sequence() = default;
  std::unique_ptr<model::BackendSequence> state_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
  // The previous logits' storage, reused by the next Feed: a decode step would otherwise
  // allocate, fault in and free n_vocab floats (1 MiB for Gemma 4) per token.
  std::vector<float> spare_;
  int64_t n_vocab_ = 0;
  bool pick_mode_ = false;
  bool has_pick_ = false;  // pick_ holds the last feed's greedy pick (logits_ may be empty)
  int32_t pick_ = -1;
  int32_t top_k_ = 0;     // top-candidates mode: k (0: off)
  bool has_top_ = false;  // top_ holds the last feed's best top_from_k_ (logits_ may be empty)
  int32_t top_from_k_ = 0;
  std::vector<std::pair<float, int32_t>> top_;
  // Keeps the first k of `list` (a backend's candidates, padded with id -1) as top_.
  void SetTop(const std::pair<float, int32_t>* list, int32_t k);
};

enum class FinishReason { kStopToken, kStopString, kMaxTokens, kCancelled, kContextFull };
std::string_view FinishReasonName(FinishReason r);

struct GenerateRequest {
  int32_t max_tokens = 256;
  sampling::SamplerParams sampler;  // default: greedy
  std::vector<int32_t> stop_ids;    // empty: eos and end-of-turn of the tokenizer
  std::vector<std::string> stop_strings;
  const std::atomic<bool>* cancel = nullptr;  // checked before each step
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, without the stop token
  std::string text;             // decoded, cut before a stop string
  FinishReason finish = FinishReason::kMaxTokens;
  Timing timing;
};

// Called once per generated token with its text (complete UTF-8, possibly empty). Returning
// false stops generation (finish = kCancelled).
using TokenCallback = std::function<bool(int32_t token, std::string_view text)>;

class Engine {
 public:
  // Opens the GGUF (all parts of a split set), reads the hyper-parameters, binds and checks the
  // weights, builds the backend and the tokenizer (absent when the file has none). Errors name
  // the file and the key/tensor at fault; Unimplemented for an unknown backend; for "vulkan",
  // Unavailable without a Vulkan device and FailedPrecondition for a weight type it cannot run.
  static Result<std::unique_ptr<Engine>> Open(const std::string& path,
                                              const EngineOptions& options);
  // The same for an explicit list of parts in order (a split model whose files are not named
  // "-0000i-of-0000n", e.g. content-addressed blobs). One path behaves like Open(path).
  static Result<std::unique_ptr<Engine>> OpenParts(const std::vector<std::string>& paths,
                                                   const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const gguf::Gemma4Params& params() const { return params_; }
  const EngineOptions& options() const { return options_; }
  const tok::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  std::string_view backend_name() const;
  uint64_t KvBytesPerSequence() const;
  // The placement the Vulkan engine runs (null for backend "cpu").
  const plan::Plan* plan() const { return plan_ ? &*plan_ : nullptr; }

  // A new empty sequence. ResourceExhausted when its KV cache cannot be allocated.
  Result<std::unique_ptr<Sequence>> NewSequence();

  // Appends tokens to the sequence, running them in ubatch chunks. Afterwards logits() holds the
  // last token's logits (all_logits: every fed token's). OutOfRange when the context would
  // overflow, InvalidArgument for an id outside the vocabulary; on error the sequence is as
  // before the call.
  Status Feed(Sequence& seq, std::span<const int32_t> tokens, bool all_logits = false);

  // One decode step for several sequences at once: appends tokens[i] to *seqs[i] (distinct
  // sequences) in batched forward passes, so the weights are read once for all of them; each
  // sequence's logits() then holds its new token's logits. InvalidArgument for mismatched
  // lengths, a repeated sequence or a bad token id; OutOfRange when a sequence is full. On error
  // no sequence has advanced.
  Status Step(std::span<Sequence* const> seqs, std::span<const int32_t> tokens);

  // Feeds `prompt` (may be empty when the sequence already holds logits), then samples up to
  // max_tokens tokens, feeding each back, calling on_token for each (may be null). Stops on a
  // stop id (not fed, not emitted), a stop string (text cut before it), cancel, or full context.
  // The last generated token is not fed back (the sequence holds the prompt and all generated
  // tokens but the last); on_token receives id -1 for trailing text flushed at the end.
  Result<GenerateResult> Generate(Sequence& seq, std::span<const int32_t> prompt,
                                  const GenerateRequest& request, const TokenCallback& on_token);

  // Appends one sampled token to the sequence and computes its logits (what Generate does with
  // Feed between samples). A caller may do it differently, e.g. in a decode step batched across
  // concurrent requests (daemon/decode_batcher.h).
  using FeedOne = std::function<Status(Sequence& seq, int32_t token)>;
  // Generate with each sampled token fed back through `feed_one` instead of Feed.
  Result<GenerateResult> Generate(Sequence& seq, std::span<const int32_t> prompt,
                                  const GenerateRequest& request, const TokenCallback& on_token,
                                  const FeedOne& feed_one);

 private:
  Engine() = default;
  Status MakeCpuBackend();
  Status MakeVulkanBackend(bool ubatch_auto);  // ubatch_auto: EngineOptions::n_ubatch was 0
  std::unique_ptr<gguf::Model> model_;
  gguf::Gemma4Params params_;
  std::unique_ptr<model::ModelWeights> weights_;
  std::shared_ptr<void> device_;  // the Vulkan device (type-erased): outlives backend_
  std::optional<plan::Plan> plan_;
  std::unique_ptr<model::Backend> backend_;
  std::unique_ptr<tok::Tokenizer> tokenizer_;
  EngineOptions options_;
  uint64_t kv_bytes_ = 0;
  std::mutex forward_mu_;  // one forward pass at a time
};

}  // namespace garnet::engine
