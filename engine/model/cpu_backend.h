// CPU backend: the Gemma 4 decoder on fp32 activations, weights used in place from the GGUF
// mapping, multi-threaded matmuls (engine/cpu), batched prefill (a ubatch of tokens is one
// matrix-matrix product per weight) and per-sequence KV caches (kv_cache.h). The layer math is
// CpuLayers (cpu_layers.h), which the Vulkan backend also runs for layers placed on the host.
//
// Numerics (../shared/docs/gemma4.md §2): RMSNorm/softmax reductions in double, fp32 elsewhere;
// embedding scale sqrt(H) in fp32 (llama.cpp's convention and what transformers computes for an
// fp32 model; EmbedScale::kBf16 rounds it to bf16 as transformers does for bf16 weights).
#pragma once

#include <memory>
#include <vector>

#include "engine/cpu/thread_pool.h"
#include "engine/gguf/gemma4.h"
#include "engine/model/backend.h"
#include "engine/model/cpu_layers.h"
#include "engine/model/kv_cache.h"
#include "engine/model/weights.h"

namespace garnet::model {

struct CpuBackendOptions {
  int64_t n_ctx = 4096;
  int64_t n_ubatch = 512;
  int n_threads = 0;  // 0: all cores
  KvType kv_type = KvType::kF32;
  EmbedScale embed_scale = EmbedScale::kF32;
  bool swa_full_cache = false;  // testing: no ring on sliding layers
};

class CpuBackend final : public Backend {
 public:
  // `params` and `weights` must outlive the backend (they point into the mapped model).
  static Result<std::unique_ptr<CpuBackend>> Create(const gguf::Gemma4Params* params,
                                                    const ModelWeights* weights,
                                                    const CpuBackendOptions& options);
  std::string_view name() const override { return "cpu"; }
  Result<std::unique_ptr<BackendSequence>> NewSequence() override;
  Status Forward(BackendSequence* seq, const int32_t* tokens, int64_t T, int64_t pos0,
                 bool all_logits, float* logits) override;
  Status ForwardBatch(std::span<const BatchItem> items, float* logits) override;
  Status ForwardBatchPicks(std::span<const BatchItem> items, int32_t* picks) override;
  Status ForwardBatchTop(std::span<const BatchItem> items, uint32_t k,
                         std::pair<float, int32_t>* top) override;

  uint64_t KvBytesPerSequence() const;
  // Bytes of the forward pass's scratch arena (plan::HostScratchBytes).
  uint64_t scratch_bytes() const { return layers_->scratch_bytes(); }

 private:
  CpuBackend(const gguf::Gemma4Params* p, const ModelWeights* w, const CpuBackendOptions& o)
      : p_(*p), w_(*w), opt_(o), pool_(o.n_threads) {}
  using Row = CpuLayers::Row;
  Status Run(const int32_t* tokens, const Row* rows, int64_t T, const int64_t* logit_rows,
             int64_t n_logits, float* logits);

  const gguf::Gemma4Params& p_;
  const ModelWeights& w_;
  CpuBackendOptions opt_;
  cpu::ThreadPool pool_;
  std::unique_ptr<CpuLayers> layers_;  // its scratch: plan::HostScratchLayout(.., layers=true)
  std::vector<float> pick_rows_;       // ForwardBatchPicks' logits rows, reused
};

}  // namespace garnet::model
