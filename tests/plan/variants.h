// Gemma 4 variant shapes for planner tests, typed in from the variant table in
// ../shared/docs/gemma4.md §1.1 (not read from a file, so the tests check the planner's arithmetic
// against independent hand-computed numbers).
#pragma once

#include "engine/gguf/gemma4.h"

namespace garnet::plan::testing {

struct VariantSpec {
  uint32_t n_embd, n_layer, period, n_head, kv_swa, kv_full, ffn, n_shared, window, ple;
  uint32_t n_expert, n_expert_used, expert_ffn, ctx;
  bool k_eq_v;
  bool double_wide_mlp = false;  // KV-shared layers use 2 * ffn (E2B: 6144 -> 12288 on 15-34)
};

inline constexpr VariantSpec kE2B{1536, 35,  5, 8, 1, 1,      6144,  20,
                                  512,  256, 0, 0, 0, 131072, false, true};
inline constexpr VariantSpec kE4B{2560, 42,  6, 8, 2, 2,      10240, 18,
                                  512,  256, 0, 0, 0, 131072, false};
inline constexpr VariantSpec k26B{2816, 30, 6,   16, 8,   2,      2112, 0,
                                  1024, 0,  128, 8,  704, 262144, true};
inline constexpr VariantSpec k31B{5376, 60, 6, 32, 16, 4, 21504, 0, 1024, 0, 0, 0, 0, 262144, true};

inline gguf::Gemma4Params MakeParams(const VariantSpec& v) {
  gguf::Gemma4Params p;
  p.architecture = "gemma4";
  p.n_embd = v.n_embd;
  p.n_layer = v.n_layer;
  p.n_vocab = 262144;
  p.context_length = v.ctx;
  p.sliding_window = v.window;
  p.n_kv_shared = v.n_shared;
  p.n_embd_per_layer = v.ple;
  p.n_expert = v.n_expert;
  p.n_expert_used = v.n_expert_used;
  p.expert_ffn_dim = v.expert_ffn;
  p.rope_dims_full = 512;
  p.rope_dims_swa = 256;
  p.final_logit_softcap = 30;
  const uint32_t first_shared = v.n_layer - v.n_shared;
  for (uint32_t il = 0; il < v.n_layer; ++il) {
    gguf::Gemma4Layer l;
    const bool full = (il % v.period) == v.period - 1;
    l.kind = full ? gguf::AttnKind::kFull : gguf::AttnKind::kSliding;
    l.head_dim = full ? 512 : 256;
    l.n_head = v.n_head;
    l.n_head_kv = full ? v.kv_full : v.kv_swa;
    l.ffn_dim = v.double_wide_mlp && il >= first_shared ? 2 * v.ffn : v.ffn;
    l.rope_base = full ? 1e6f : 1e4f;
    l.has_v = !(full && v.k_eq_v);
    if (il >= first_shared) {
      l.kv_source = static_cast<int32_t>(full ? first_shared - 1 : first_shared - 2);
    }
    p.layers.push_back(l);
  }
  return p;
}

}  // namespace garnet::plan::testing
