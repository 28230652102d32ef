// The Gemma 4 layer math on the CPU (../shared/docs/gemma4.md §2), shared by the CPU backend
// (every layer) and the Vulkan backend's mixed placements (host layers, and routed experts kept
// in host memory): one implementation, two callers.
//
// Activations are fp32 in a scratch arena allocated once at Create for micro-batches of up to
// n_ubatch tokens; its buffer list is plan::HostScratchLayout, so the planner's host scratch
// figure is what is allocated (scratch_bytes()). Weights are used in place from the mapping.
//
// Numerics: RMSNorm/softmax reductions in double, fp32 elsewhere; embedding scale sqrt(H) in fp32
// (EmbedScale::kBf16 rounds it to bf16 as transformers does for bf16 weights).
//
// Thread-safety: one call at a time (the callers serialise forward passes); the work of each
// call is spread over the thread pool.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/base/status.h"
#include "engine/cpu/thread_pool.h"
#include "engine/gguf/gemma4.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"

namespace garnet::model {

enum class EmbedScale { kF32, kBf16 };

class CpuLayers {
 public:
  // One token row of a micro-batch: the cache it reads and writes, and its position.
  struct Row {
    KvCache* kv;
    int64_t pos;
  };
  // Per expert: the (token, weight) pairs routed to it.
  using Routes = std::vector<std::vector<std::pair<int64_t, float>>>;

  // `params`, `weights` and `pool` must outlive the object. `layers`: whole layers will run
  // (else only Experts). ResourceExhausted when the arena cannot be allocated.
  static Result<std::unique_ptr<CpuLayers>> Create(const gguf::Gemma4Params* params,
                                                   const ModelWeights* weights, int64_t n_ubatch,
                                                   bool layers, KvType kv_type,
                                                   EmbedScale embed_scale, cpu::ThreadPool* pool);
  CpuLayers(const CpuLayers&) = delete;
  CpuLayers& operator=(const CpuLayers&) = delete;

  // Bytes of the scratch arena (== plan::HostScratchBytes for the same shape).
  uint64_t scratch_bytes() const { return arena_.size() * sizeof(float); }
  // The hidden state [T x H] and (PLE models) the per-layer inputs [T x L*P].
  float* x() const { return x_; }
  float* ple() const { return ple_; }
  // K and V rows [T x n_head_kv * head_dim] the last RunLayer wrote into the cache (after the
  // norms and RoPE, before f16 rounding); meaningful only when that layer owns its KV.
  const float* k() const { return k_; }
  const float* v() const { return v_; }

  // x = embedding rows x sqrt(H); PLE models also compute the per-layer inputs (§2.0). Token ids
  // must be valid (the caller checks them); 1 <= T <= n_ubatch.
  void Embed(const int32_t* tokens, int64_t T);
  // Layer il on x: attention (writing its K/V into rows[t].kv), feed-forward, PLE injection and
  // the layer's output scale.
  void RunLayer(int il, const Row* rows, int64_t T);
  // Output norm, tied head and softcap for rows logit_rows[0..R) of x: R x n_vocab logits.
  void Head(const int64_t* logit_rows, int64_t R, float* logits);

  // The routed experts of MoE layer lw on inputs in [T x H] (already pre_ffw_norm_2-normed):
  // m[t] = sum of weight * expert(in[t]) over the experts routed to token t. Tokens are grouped
  // by expert, so each expert's matrices are read once per call; several experts' row blocks
  // share one parallel step. m is [T x H], overwritten.
  void Experts(const LayerWeights& lw, const float* in, const Routes& routes, int64_t T, float* m);

 private:
  CpuLayers(const gguf::Gemma4Params* p, const ModelWeights* w, KvType kv_type,
            EmbedScale embed_scale, cpu::ThreadPool* pool)
      : p_(*p), w_(*w), kv_type_(kv_type), embed_scale_(embed_scale), pool_(*pool) {}
  void Attention(int il, const Row* rows, const float* q, int64_t T, float* out);
  void DenseFfn(const LayerWeights& lw, int64_t ffn_dim, const float* in, int64_t T, float* out);
  void MoeFfn(const LayerWeights& lw, int64_t ffn_dim, const float* h, int64_t T, float* out);

  const gguf::Gemma4Params& p_;
  const ModelWeights& w_;
  KvType kv_type_;
  EmbedScale embed_scale_;
  cpu::ThreadPool& pool_;
  int64_t n_ubatch_ = 0;
  std::vector<float> arena_;
  // Parts of the arena (plan::HostScratchLayout's names); null when not in the layout.
  float *x_ = nullptr, *a_ = nullptr, *o_ = nullptr, *q_ = nullptr, *att_ = nullptr;
  float *k_ = nullptr, *v_ = nullptr, *rope_ = nullptr, *ffn_gate_ = nullptr, *ffn_up_ = nullptr;
  float *ple_ = nullptr, *ple_gate_ = nullptr;
  float *moe_dense_ = nullptr, *router_ = nullptr, *moe_out_ = nullptr;
  float *moe_x_ = nullptr, *moe_gate_up_ = nullptr, *moe_down_ = nullptr;
};

}  // namespace garnet::model
