// Gemma 4 hyper-parameters and tensor names, read from a GGUF's `gemma4.*` keys.
//
// Keys and names: ../shared/docs/gemma4.md §3.2 (metadata) and §3.3 (tensors). Everything the
// engine, the fit planner and the registry need about a model's shape comes from here; nothing
// downstream assumes one head_dim or one KV-head count.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gguf.h"

namespace garnet::gguf {

enum class AttnKind : uint8_t { kSliding, kFull };

struct Gemma4Layer {
  AttnKind kind = AttnKind::kSliding;
  uint32_t head_dim = 0;   // 256 sliding / 512 full (from key_length[_swa])
  uint32_t n_head = 0;     // query heads
  uint32_t n_head_kv = 0;  // per layer (attention.head_count_kv scalar or array)
  uint32_t ffn_dim = 0;    // dense MLP width (feed_forward_length scalar or array)
  float rope_base = 0;     // rope.freq_base (full) / rope.freq_base_swa (sliding)
  bool has_v = true;       // false: K reused as V (full layers of 31B/26B/12B). From the
                           // presence of blk.N.attn_v.weight; a KV-shared layer copies its donor's.
  int32_t kv_source = -1;  // -1: owns its KV cache; else the donor layer it reads (KV sharing)
  bool owns_kv() const { return kv_source < 0; }
};

struct Gemma4Params {
  std::string architecture;       // "gemma4"
  uint32_t n_embd = 0;            // H
  uint32_t n_layer = 0;           // L
  uint32_t n_vocab = 0;           // rows of token_embd
  uint32_t context_length = 0;    // trained maximum
  uint32_t sliding_window = 0;    // W
  uint32_t n_kv_shared = 0;       // attention.shared_kv_layers
  uint32_t n_embd_per_layer = 0;  // P (0 when no per-layer embeddings)
  uint32_t n_expert = 0;          // 0 for dense models
  uint32_t n_expert_used = 0;
  uint32_t expert_ffn_dim = 0;
  uint32_t rope_dims_full = 0;  // rope.dimension_count
  uint32_t rope_dims_swa = 0;   // rope.dimension_count_swa
  float rms_eps = 1e-6f;
  float final_logit_softcap = 0;    // 0 = none
  std::vector<Gemma4Layer> layers;  // size n_layer

  bool is_moe() const { return n_expert > 0; }
  bool has_ple() const { return n_embd_per_layer > 0; }
  uint32_t first_shared_layer() const { return n_layer - n_kv_shared; }
};

// Reads and validates the hyper-parameters: required keys present with sane values (non-zero
// dims, per-layer arrays of length n_layer, head dims consistent with q/k norm tensor shapes,
// shared-layer count below n_layer, expert_used <= expert_count), has_v from the presence of
// blk.N.attn_v.weight, donor layers per §1.2. Errors name the key or tensor.
//
// Required: general.architecture == "gemma4", gemma4.{embedding_length, block_count,
// context_length, attention.head_count, attention.head_count_kv, feed_forward_length,
// attention.key_length, attention.key_length_swa, attention.sliding_window_pattern (bool array,
// or the older integer period), rope.freq_base, rope.freq_base_swa} and token_embd.weight.
// Optional with defaults: value_length[_swa] (= key_length[_swa], must match), rope.dimension_count
// [_swa] (= head dim), layer_norm_rms_epsilon (1e-6), final_logit_softcapping (0),
// sliding_window (required when any layer slides), shared_kv_layers (0),
// embedding_length_per_layer_input (0), expert_count / expert_used_count /
// expert_feed_forward_length (0). Shared layers must match their donor's head_dim and n_head_kv.
// Where present, blk.N.{attn_q_norm, attn_k_norm} must hold head_dim elements and blk.N.{attn_q,
// attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down}.weight must have the 2-D shapes the
// hyper-parameters imply (K/V of KV-shared layers are not checked: they are unused).
Result<Gemma4Params> ReadGemma4Params(const Model& model);

// Tensor names exactly as llama.cpp writes them.
std::string BlockTensorName(uint32_t layer, std::string_view suffix);  // "blk.3.attn_q.weight"

}  // namespace garnet::gguf
