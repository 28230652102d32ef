// Gemma 4 weights, bound to a GGUF's tensors (../shared/docs/gemma4.md §3.3) with every shape
// checked against the hyper-parameters.
//
// Matrices stay in the file mapping in their stored type (cpu::WeightMatrix views: nothing is
// dequantised up front, the PLE table included). 1-D tensors (norms, scales, rope_freqs) are
// decoded to small fp32 vectors owned here.
//
// Lifetime: the views point into the gguf::Model, which must outlive the ModelWeights.
// Thread-safety: immutable after LoadWeights.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/base/status.h"
#include "engine/cpu/matmul.h"
#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"

namespace garnet::model {

// Experts of one MoE layer: E stacked [rows, cols] matrices.
struct ExpertStack {
  GgmlType type = GgmlType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;  // per expert
  int64_t cols = 0;
  uint64_t row_bytes = 0;
  int64_t n_expert = 0;
  // Rows [row0, row0 + n) of expert e.
  cpu::WeightMatrix Slice(int64_t e, int64_t row0, int64_t n) const {
    cpu::WeightMatrix w;
    w.type = type;
    w.rows = n;
    w.cols = cols;
    w.row_bytes = row_bytes;
    w.data = data + (static_cast<uint64_t>(e * rows + row0)) * row_bytes;
    return w;
  }
};

struct LayerWeights {
  std::vector<float> attn_norm, q_norm, k_norm, post_attention_norm;
  cpu::WeightMatrix wq, wk, wv, wo;  // wk/wv empty (rows 0) on KV-shared layers, wv when K=V
  std::vector<float> ffn_norm, post_ffw_norm;
  cpu::WeightMatrix ffn_gate, ffn_up, ffn_down;
  float output_scale = 1.0f;  // layer_output_scale (1 when absent)
  // Per-layer embeddings (PLE models).
  cpu::WeightMatrix ple_gate, ple_proj;  // inp_gate [P x H], proj [H x P]
  std::vector<float> ple_post_norm;
  // MoE (26B-A4B).
  cpu::WeightMatrix router;  // [E x H]
  std::vector<float> router_scale, expert_scale, pre_ffw_norm_2, post_ffw_norm_1, post_ffw_norm_2;
  bool fused_gate_up = true;
  ExpertStack gate_up_exps;  // fused: rows [0, I) gate, [I, 2I) up; else gate only
  ExpertStack up_exps;       // unfused only
  ExpertStack down_exps;     // [H x I] per expert
};

struct ModelWeights {
  cpu::WeightMatrix tok_embd;  // [V x H], also the output head (tied)
  std::vector<float> output_norm;
  std::vector<float> rope_freqs;     // empty: no frequency factors on full layers
  cpu::WeightMatrix ple_tok;         // [V x L*P]
  cpu::WeightMatrix ple_model_proj;  // [L*P x H]
  std::vector<float> ple_proj_norm;  // [P]
  std::vector<LayerWeights> layers;
};

// Binds and checks every tensor the forward pass uses. Errors (InvalidArgument/NotFound) name
// the tensor, the expected and the found shape or type. Unused tensors (attn_k/attn_v of
// KV-shared layers) are ignored.
Result<ModelWeights> LoadWeights(const gguf::Model& model, const gguf::Gemma4Params& params);

}  // namespace garnet::model
