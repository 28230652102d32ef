// The shape of a synthetic Gemma 4 model: presets (tiny test models and the real variants'
// shapes) and the per-layer rules derived from them.
//
// Real shapes follow ../shared/docs/gemma4.md §1.1 exactly. The tiny presets are test models for
// the engine; their shapes are a contract (tests elsewhere rely on them) — see README.md before
// changing one.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"

namespace garnet::mkmodel {

struct ModelSpec {
  std::string preset;  // "tiny", "e2b", ...
  std::string name;    // general.name
  bool tiny = false;   // test model: router / per_layer_model_proj stay F32 whatever the type

  uint32_t n_vocab = 0;
  uint32_t n_embd = 0;  // H
  uint32_t n_layer = 0;
  uint32_t n_head = 0;
  uint32_t n_head_kv_swa = 0;
  uint32_t n_head_kv_full = 0;
  uint32_t head_dim_swa = 0;
  uint32_t head_dim_full = 0;
  // Layer i is full attention iff (i + 1) % swa_period == 0; the last layer is always full.
  uint32_t swa_period = 0;
  bool k_eq_v = false;  // full layers have no attn_v (V = K projection)
  uint32_t ffn_dim = 0;
  bool double_wide_mlp = false;        // KV-shared layers use 2 * ffn_dim (E2B)
  uint32_t n_kv_shared = 0;            // the last n layers reuse earlier layers' KV
  bool shared_layers_have_kv = false;  // write (unused) attn_k/attn_v/attn_k_norm there anyway
  uint32_t n_embd_per_layer = 0;       // PLE width P; 0 = no per-layer embeddings
  uint32_t n_expert = 0;               // 0 = dense
  uint32_t n_expert_used = 0;
  uint32_t expert_ffn_dim = 0;
  uint32_t context_length = 0;
  uint32_t sliding_window = 0;
  float rope_base_full = 1e6f;
  float rope_base_swa = 1e4f;
  float partial_rotary = 0.25f;  // fraction of the full-layer head rotated
  float rms_eps = 1e-6f;
  float final_logit_softcap = 30.0f;
  float weight_std = 0.02f;  // std of matrix weights
  std::string default_type;  // weight type when --type is not given

  bool IsFull(uint32_t layer) const {
    return layer + 1 == n_layer || (layer + 1) % swa_period == 0;
  }
  uint32_t HeadDim(uint32_t layer) const { return IsFull(layer) ? head_dim_full : head_dim_swa; }
  uint32_t NHeadKv(uint32_t layer) const { return IsFull(layer) ? n_head_kv_full : n_head_kv_swa; }
  uint32_t FirstShared() const { return n_layer - n_kv_shared; }
  bool OwnsKv(uint32_t layer) const { return layer < FirstShared(); }
  bool HasV(uint32_t layer) const { return !(k_eq_v && IsFull(layer)); }
  uint32_t FfnDim(uint32_t layer) const {
    return double_wide_mlp && !OwnsKv(layer) ? 2 * ffn_dim : ffn_dim;
  }
  // Pairs rotated on full layers: int(partial_rotary * head_dim_full / 2).
  uint32_t RopePairsFull() const;
  bool is_moe() const { return n_expert > 0; }
  bool has_ple() const { return n_embd_per_layer > 0; }
};

// Names of all presets, tiny ones first.
std::vector<std::string_view> PresetNames();

// The preset's spec. NotFound (listing the valid names) for an unknown name.
Result<ModelSpec> PresetSpec(std::string_view preset);

// Changes the layer count keeping the preset's rules: the period pattern (last layer full), the
// fraction of KV-shared layers (reduced until the last owning layer is full and the one before
// it sliding, or none), PLE and double-wide MLP. InvalidArgument for n_layer < 1 or > 1024.
Status SetLayerCount(ModelSpec& spec, uint32_t n_layer);

// Checks that the spec describes a model the format and the engine can represent: non-zero
// dims, head_dim even, vocab large enough for the special token ids, K=V only where allowed,
// KV sharing donors valid (§1.2), expert counts consistent. InvalidArgument naming the field.
Status ValidateSpec(const ModelSpec& spec);

}  // namespace garnet::mkmodel
