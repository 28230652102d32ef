#include "tools/mkmodel/spec.h"

#include <string>

namespace garnet::mkmodel {
namespace {

// Real variants: ../shared/docs/gemma4.md §1.1.
ModelSpec RealBase() {
  ModelSpec s;
  s.n_vocab = 262144;
  s.head_dim_swa = 256;
  s.head_dim_full = 512;
  s.swa_period = 6;
  s.context_length = 262144;
  s.sliding_window = 1024;
  s.weight_std = 0.02f;
  s.default_type = "q4_k_m";
  return s;
}

// Tiny test models: vocab 1024, H = 256 (so K-quants apply to every H-wide row), head dims 32
// sliding / 64 full, window 16, context 512, weight std 0.05 so logits are not flat.
ModelSpec TinyBase() {
  ModelSpec s;
  s.tiny = true;
  s.n_vocab = 1024;
  s.n_embd = 256;
  s.n_head = 4;
  s.head_dim_swa = 32;
  s.head_dim_full = 64;
  s.context_length = 512;
  s.sliding_window = 16;
  s.weight_std = 0.05f;
  s.default_type = "f32";
  return s;
}

ModelSpec MakePreset(std::string_view preset) {
  ModelSpec s;
  if (preset == "tiny") {
    // Dense, K=V full layers, different KV-head counts per layer type (like 31B).
    s = TinyBase();
    s.n_layer = 6;
    s.swa_period = 3;  // S S F S S F
    s.n_head_kv_swa = 2;
    s.n_head_kv_full = 1;
    s.k_eq_v = true;
    s.ffn_dim = 512;
  } else if (preset == "tiny-moe") {
    // Like 26B-A4B: K=V, dense MLP beside the experts; ffn widths not multiples of 256 so
    // K-quant types fall back (Q4_K -> Q5_0, Q6_K -> Q8_0) as on the real model.
    s = TinyBase();
    s.n_layer = 6;
    s.swa_period = 3;
    s.n_head_kv_swa = 2;
    s.n_head_kv_full = 1;
    s.k_eq_v = true;
    s.ffn_dim = 160;
    s.n_expert = 8;
    s.n_expert_used = 2;
    s.expert_ffn_dim = 64;
  } else if (preset == "tiny-ple") {
    // Like E2B: per-layer embeddings, the last 4 layers share KV (S->2, F->3), double-wide MLP on
    // shared layers, attn_v on full layers, equal KV-head counts per type.
    s = TinyBase();
    s.n_layer = 8;
    s.swa_period = 4;  // S S S F S S S F
    s.n_head_kv_swa = 2;
    s.n_head_kv_full = 2;
    s.ffn_dim = 256;
    s.double_wide_mlp = true;
    s.n_kv_shared = 4;
    s.shared_layers_have_kv = true;
    s.n_embd_per_layer = 64;
  } else if (preset == "e2b") {
    s = RealBase();
    s.n_embd = 1536;
    s.n_layer = 35;
    s.swa_period = 5;
    s.n_head = 8;
    s.n_head_kv_swa = s.n_head_kv_full = 1;
    s.ffn_dim = 6144;
    s.double_wide_mlp = true;
    s.n_kv_shared = 20;
    s.shared_layers_have_kv = true;
    s.n_embd_per_layer = 256;
    s.context_length = 131072;
    s.sliding_window = 512;
  } else if (preset == "e4b") {
    s = RealBase();
    s.n_embd = 2560;
    s.n_layer = 42;
    s.n_head = 8;
    s.n_head_kv_swa = s.n_head_kv_full = 2;
    s.ffn_dim = 10240;
    s.n_kv_shared = 18;
    s.shared_layers_have_kv = true;
    s.n_embd_per_layer = 256;
    s.context_length = 131072;
    s.sliding_window = 512;
  } else if (preset == "12b") {
    s = RealBase();
    s.n_embd = 3840;
    s.n_layer = 48;
    s.n_head = 16;
    s.n_head_kv_swa = 8;
    s.n_head_kv_full = 1;
    s.k_eq_v = true;
    s.ffn_dim = 15360;
  } else if (preset == "26b-a4b") {
    s = RealBase();
    s.n_embd = 2816;
    s.n_layer = 30;
    s.n_head = 16;
    s.n_head_kv_swa = 8;
    s.n_head_kv_full = 2;
    s.k_eq_v = true;
    s.ffn_dim = 2112;
    s.n_expert = 128;
    s.n_expert_used = 8;
    s.expert_ffn_dim = 704;
  } else if (preset == "31b") {
    s = RealBase();
    s.n_embd = 5376;
    s.n_layer = 60;
    s.n_head = 32;
    s.n_head_kv_swa = 16;
    s.n_head_kv_full = 4;
    s.k_eq_v = true;
    s.ffn_dim = 21504;
  } else {
    return s;  // empty preset name marks "unknown"
  }
  s.preset = std::string(preset);
  s.name = "gemma-4-" + s.preset + "-synthetic";
  return s;
}

Status Bad(std::string_view field, std::string_view detail) {
  return Status::InvalidArgument("model spec " + std::string(field), detail);
}

}  // namespace

uint32_t ModelSpec::RopePairsFull() const {
  // partial_rotary * head_dim / 2, truncated; the product is exact for the 0.25 every variant
  // uses (a power of two), so no rounding subtleties.
  return static_cast<uint32_t>(partial_rotary * static_cast<float>(head_dim_full) / 2.0f);
}

std::vector<std::string_view> PresetNames() {
  return {"tiny", "tiny-moe", "tiny-ple", "e2b", "e4b", "12b", "26b-a4b", "31b"};
}

Result<ModelSpec> PresetSpec(std::string_view preset) {
  ModelSpec s = MakePreset(preset);
  if (s.preset.empty()) {
    std::string names;
    for (auto n : PresetNames()) names += (names.empty() ? "" : ", ") + std::string(n);
    return Status::NotFound("preset \"" + std::string(preset) + "\"", "known presets: " + names);
  }
  return s;
}

Status SetLayerCount(ModelSpec& spec, uint32_t n_layer) {
  if (n_layer < 1 || n_layer > 1024) {
    return Bad("n_layer", std::to_string(n_layer) + " is outside 1..1024");
  }
  const uint32_t old_layers = spec.n_layer;
  const uint32_t old_shared = spec.n_kv_shared;
  spec.n_layer = n_layer;
  if (old_shared == 0) return Status::OK();
  // Keep the fraction of shared layers, then shrink until the donors exist: the last owning
  // layer must be full and the one before it sliding (§1.2).
  uint32_t shared = static_cast<uint32_t>(uint64_t{old_shared} * n_layer / old_layers);
  while (shared > 0) {
    const uint32_t first = n_layer - shared;
    if (first >= 2 && spec.IsFull(first - 1) && !spec.IsFull(first - 2)) break;
    --shared;
  }
  spec.n_kv_shared = shared;
  return Status::OK();
}

Status ValidateSpec(const ModelSpec& s) {
  if (s.n_embd == 0 || s.n_layer == 0 || s.n_head == 0)
    return Bad("dims", "H, L and heads must be > 0");
  if (s.n_vocab < 512) return Bad("n_vocab", "must be >= 512 (special ids, bytes, characters)");
  if (s.n_vocab > (1u << 24)) return Bad("n_vocab", "must be <= 2^24");
  if (s.swa_period == 0) return Bad("swa_period", "must be > 0");
  if (s.head_dim_swa == 0 || s.head_dim_full == 0 || s.head_dim_swa % 2 || s.head_dim_full % 2) {
    return Bad("head_dim", "head dims must be even and > 0");
  }
  if (s.n_head_kv_swa == 0 || s.n_head_kv_full == 0 || s.n_head % s.n_head_kv_swa != 0 ||
      s.n_head % s.n_head_kv_full != 0) {
    return Bad("n_head_kv", "KV-head counts must divide the query-head count");
  }
  if (s.ffn_dim == 0) return Bad("ffn_dim", "must be > 0");
  if (s.context_length == 0) return Bad("context_length", "must be > 0");
  if (s.sliding_window == 0) return Bad("sliding_window", "must be > 0");
  if (s.RopePairsFull() == 0 || s.RopePairsFull() > s.head_dim_full / 2) {
    return Bad("partial_rotary", "must rotate between 1 and head_dim_full/2 pairs");
  }
  if (s.n_kv_shared >= s.n_layer) return Bad("n_kv_shared", "must be below the layer count");
  if (s.n_kv_shared > 0) {
    const uint32_t first = s.FirstShared();
    if (first < 2 || !s.IsFull(first - 1) || s.IsFull(first - 2)) {
      return Bad("n_kv_shared", "the last owning layer must be full and the one before sliding");
    }
  }
  if (s.is_moe() &&
      (s.n_expert_used == 0 || s.n_expert_used > s.n_expert || s.expert_ffn_dim == 0)) {
    return Bad("experts", "need 0 < expert_used <= expert_count and expert_ffn_dim > 0");
  }
  if (!(s.weight_std > 0 && s.weight_std < 10)) return Bad("weight_std", "must be in (0, 10)");
  return Status::OK();
}

}  // namespace garnet::mkmodel
