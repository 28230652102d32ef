// Size functions shared by the fit planner and the engines that allocate.
//
// The planner predicts memory with these functions and the backends allocate with the same ones,
// so a prediction is exact by construction (issue: fit planner, "Exactness"). Every function here
// is pure arithmetic on the model's shape: no tensor data is read.
//
// KV cache (gemma4.md §5.3): each layer that owns a cache keeps K and V for every sequence.
//   full-attention layer:    n_ctx cells per sequence
//   sliding-window layer:    min(n_ctx, W + n_ubatch) cells per sequence (a ring: the window plus
//                            room for one micro-batch written before the oldest cells retire)
//   KV-shared layer:         nothing (it reads its donor's cache)
// bytes per cell = 2 (K and V) * n_head_kv * head_dim * bytes-per-element of the KV type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gemma4.h"
#include "engine/quant/types.h"

namespace garnet::plan {

enum class KvType : uint8_t { kF32, kF16, kQ8_0 };
std::string_view KvTypeName(KvType t);
std::optional<KvType> ParseKvType(std::string_view name);  // "f32", "f16", "q8_0"

struct KvOptions {
  uint32_t n_ctx = 4096;    // context per sequence
  uint32_t n_seq = 1;       // parallel sequences, each with its own cells
  uint32_t n_ubatch = 512;  // micro-batch of prefill tokens
  KvType type = KvType::kF16;
};

// Cells one sequence keeps for layer `il` (0 for a KV-shared layer).
uint32_t KvCells(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);
// Bytes of one of K or V for one cell of layer `il` (n_head_kv * head_dim elements).
uint64_t KvRowBytes(const gguf::Gemma4Params& p, uint32_t il, KvType type);
// Bytes of one sequence's K (or V) of layer il on a GPU: cells * row bytes rounded up to
// kBufferAlign, so that every sequence of a KV block starts at an aligned offset whatever the
// row size (a q8_0 row of a 32-wide head is 34 bytes).
uint64_t KvSeqBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);
// Bytes of layer il's K and V for all sequences (0 for a KV-shared layer): 2 x n_seq x
// KvSeqBytes.
uint64_t KvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);
uint64_t KvTotalBytes(const gguf::Gemma4Params& p, const KvOptions& o);
// Whether some KV-sharing layer reads layer il's cache.
bool IsKvDonor(const gguf::Gemma4Params& p, uint32_t il);
// The same for a layer whose cache lives in host memory (the CPU's model::KvCache: one
// allocation per sequence, K and V each exactly cells * row bytes, no alignment padding).
uint64_t HostKvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);

// Where a scratch buffer lives (the Vulkan backend's vk::Residency).
enum class ScratchPlace : uint8_t {
  kDevice,        // device-local activations
  kHostUpload,    // host-visible inputs written before each pass (token ids, positions, ...)
  kHostReadback,  // host-visible results read after each pass (logits)
};

// One named buffer a backend allocates per device for forward passes.
struct ScratchBuffer {
  std::string name;
  uint64_t bytes;
  ScratchPlace place = ScratchPlace::kDevice;
};

// Flash-decoding splits the Vulkan attention uses for a dispatch of `n_tokens` query tokens of
// `n_q_heads` heads over at most `max_keys` keys: 1 (one pass) once there are kSplitTargetGroups
// (token, head) workgroups, else enough slices of >= 64 keys to reach ~that many workgroups, at
// most 64. So a dispatch that splits has fewer than kSplitTargetGroups (token, head) pairs.
inline constexpr uint32_t kSplitTargetGroups = 512;
uint32_t AttentionSplitCount(uint32_t n_tokens, uint32_t n_q_heads, uint32_t max_keys);
// Keys a query of layer `il` can see at most: the window on sliding layers (capped by its
// cells), the context on full layers (0 when the layer has no cells, i.e. it shares KV).
uint32_t AttentionMaxKeys(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);

// EXACTLY the buffers the Vulkan backend (engine/model/vulkan_backend.cc) allocates for a
// micro-batch of n_ubatch tokens and n_seq logit rows per pass, in the order it places them;
// each rounded up to kBufferAlign. Device-local, all f32 unless noted:
//   hidden, norm, branch [T x H]; q, attn [T x widest q]; k, v [T x widest kv];
//   ffn_gate, ffn_up [T x widest ffn]; attn_split: flash-decoding partials (AttentionSplitCount);
//   logits [n_seq x V];
//   MoE: router [T x E], moe_ids (int32), moe_weights [T x K], moe_group (MatmulId's slot
//        grouping for prefill), moe_down [T*K x H], moe_gate_up [T*K x 2 Ie], moe_out [T x H];
//   PLE: ple [T x L*P], ple_gate [T x P].
// Host upload (int32 unless noted): tokens, positions [T]; logit_rows [n_seq];
//   attn_pos: T blocks of kBufferAlign bytes (each sequence's positions at an aligned offset);
//   ple_rows [T x L*P] f32 (the PLE table stays on the host; its rows are gathered there).
// Host readback: logits_out [n_seq x V].
//
// Mixed GPU/CPU placements add host-visible buffers where activations cross (ScratchOptions):
//   from_host (the lowest layers run on the CPU): hidden_in [T x H] upload (the hidden state
//     after the host layers; ple_rows then carries the finished per-layer inputs); for models
//     with KV sharing also kv_in, the K then V rows [T x n_head_kv * head_dim] of every donor
//     layer (each part rounded up to kBufferAlign), so that a host donor's new K/V reach the
//     copy of its cache on the GPU where its sharers run;
//   host_experts (some GPU layer keeps its experts on the host): moe_x_out [T x H] (the expert
//     input), moe_ids_out (int32) and moe_weights_out [T x K] read back, moe_out_in [T x H]
//     upload (the weighted sum of the routed experts computed on the CPU).
struct ScratchOptions {
  bool from_host = false;
  bool host_experts = false;
};
std::vector<ScratchBuffer> ScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o,
                                         const ScratchOptions& s = {});
uint64_t ScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o,
                      const ScratchOptions& s = {});

// EXACTLY the host buffers the CPU layer code (engine/model/cpu_layers.h) allocates once for
// micro-batches of n_ubatch tokens, each rounded up to kBufferAlign, f32:
//   layers (the CPU runs whole layers: the CPU backend, or the host layers of a mixed plan):
//     x, a, o [T x H]; q, att [T x widest q]; k, v [T x widest kv]; rope [T x 1024];
//     ffn_gate, ffn_up [T x widest ffn]; PLE: ple [T x L*P], ple_gate [T x P];
//     MoE: moe_dense [T x H], router [T x E], moe_out [T x H], plus the expert buffers below;
//   expert buffers (also alone, when the CPU runs only routed experts of GPU layers):
//     moe_x [R x H], moe_gate_up [R x 2 Ie], moe_down [R x H], R = max(T, K) routed slots.
// Not counted: per-worker rows (attention scores of up to n_ctx floats, one PLE table row per
// task) and the routing lists (T x K entries).
std::vector<ScratchBuffer> HostScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o,
                                             bool layers);
uint64_t HostScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o, bool layers);

// What a weight tensor is, for placement.
enum class TensorClass : uint8_t {
  kTokenEmbd,  // token_embd: input gather and (tied) output head
  kPleTable,   // per_layer_token_embd: gathered L*P values per token, always on the host
  kGlobal,     // output_norm, rope_freqs, per_layer_model_proj, per_layer_proj_norm
  kLayer,      // blk.N.* used by the layer (attention, dense MLP, norms, router, PLE)
  kExperts,    // blk.N.ffn_{gate_up,gate,up,down}_exps.weight: the routed experts
  kUnused,     // present in the file but never read (K/V tensors of KV-shared layers)
};

struct WeightTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  uint64_t bytes = 0;
  int32_t layer = -1;  // -1 for global tensors
  TensorClass cls = TensorClass::kGlobal;
};

// Classifies every tensor of a Gemma 4 file. InvalidArgument names a tensor whose block index
// is malformed or out of range.
Result<std::vector<WeightTensor>> ClassifyTensors(const gguf::Model& model,
                                                  const gguf::Gemma4Params& p);
// Same, from a list of (name, type, bytes) — used for shapes with no file behind them.
Result<WeightTensor> ClassifyTensor(std::string_view name, GgmlType type, uint64_t bytes,
                                    const gguf::Gemma4Params& p);

// Backends place each buffer at an offset aligned to this many bytes, and the planner rounds
// every buffer up to it.
inline constexpr uint64_t kBufferAlign = 256;
inline uint64_t AlignUp(uint64_t v, uint64_t a = kBufferAlign) {
  return (v + a - 1) / a * a;
}

}  // namespace garnet::plan
