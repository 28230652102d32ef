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
// Bytes of layer il's K and V for all sequences (0 for a KV-shared layer).
uint64_t KvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o);
uint64_t KvTotalBytes(const gguf::Gemma4Params& p, const KvOptions& o);

// One named activation buffer a backend allocates per device for a forward pass.
struct ScratchBuffer {
  std::string name;
  uint64_t bytes;
};
// The activation buffers (f32) for a micro-batch of n_ubatch tokens: hidden state, norm output,
// Q/K/V/attention output at the widest layer, the dense MLP at the widest layer, the MoE router,
// expert activations and output, PLE inputs, and last-position logits for n_seq sequences.
std::vector<ScratchBuffer> ScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o);
uint64_t ScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o);

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
