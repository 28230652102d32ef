// Vulkan backend: the Gemma 4 forward pass (../shared/docs/gemma4.md §2) on a GPU through the
// garnet::vk kernels, behind the same Backend seam as the CPU backend.
//
// Memory (every byte comes from the fit planner's size functions, engine/plan/memory.h, so
// plan::MakePlan's prediction equals what is allocated; tests/vulkan/vulkan_backend_test.cc):
//   weights  (vk::MemoryKind::kWeights): every tensor plan::ClassifyTensors places on the GPU
//            (all but the PLE table, which stays in the host mapping, and unused K/V tensors of
//            KV-shared layers), in their stored type, each at a kBufferAlign-aligned offset of a
//            few large device-local buffers, uploaded once through staging chunks;
//   KV       (kKv): f16 or q8_0 (vk::KvFormat), allocated in blocks of n_seq sequences
//            (plan::KvOptions::n_seq): per owning layer one buffer of K then V, each n_seq x
//            plan::KvSeqBytes (KvCells * row bytes, aligned), laid out [sequence][kv head][cell]
//            [head_dim] (q8_0: the sequence's quants, then its scales); sliding layers keep a ring
//            of min(n_ctx, W + ubatch) cells; KV-shared layers read their donor's. A block is
//            allocated when a sequence finds no free slot and freed with its last sequence;
//   scratch  (kScratch): plan::ScratchLayout exactly — device-local activations, a host-visible
//            input buffer (ids, positions, gathered PLE rows) and a host-readback logits buffer;
//   other    (kOther): the kernels' placeholder, RoPE angle tables, a constant and, for MoE,
//            the routers' norm weights premultiplied by H^-1/2 (n_layer x H floats).
// Staging buffers (kStaging) live only while the weights upload.
//
// Mixed placement (host_layers / host_experts): the host layers (a prefix) run first on the CPU,
// then the hidden state (and PLE inputs) are uploaded once and the GPU runs the rest in one
// command buffer; a GPU layer whose experts are on the host splits it: the GPU computes the
// dense branch, the routing and the expert input norm, the pass is submitted and waited for, the
// CPU runs the routed experts on the read-back rows and the combined output is uploaded into
// the next command buffer (one sync per such layer per pass). Only the tensors the GPU runs are
// uploaded. A host layer whose KV a GPU layer shares (E2B/E4B donors) keeps its cache on the
// host and a copy on the GPU: its new K/V rows cross with the hidden state and are stored there.
//
// A forward pass is one command buffer: every layer of every token of the micro-batch is
// recorded, submitted once and waited for. Prefill uses tiled matmuls, T == 1 matvecs; MoE
// experts run as MatmulId for T > 1 (slots grouped by expert) and MatvecId for T == 1; attention
// runs one dispatch per sequence of the batch. Logit rows beyond n_seq per pass (all_logits, or a
// batch with more than n_seq logit items) cost one extra small submission per n_seq rows.
//
// Numerics: activations fp32, K/V rounded to f16 (nearest even, as the CPU backend's f16 cache)
// or quantised to q8_0 (as the CPU backend's q8_0 cache),
// so logits match the CPU backend to ~1e-5 relative on the tiny presets (docs/CORRECTNESS.md).
//
// Diagnostics: with GARNET_VULKAN_STATS set in the environment at Create, every pass prints one
// stderr line (tokens, dispatches, barriers, transfers, host recording, submit-to-fence, the
// host's input writes before and logits copy after the pass, in us; "replay" for a decode graph).
//
// Decode graph (options.decode_graph): a one-token pass is recorded once into a kept command
// buffer (vk::Recorder kept mode) and resubmitted for the next tokens of that sequence; its
// inputs (token, position, PLE rows) live in the upload buffer and attention derives the
// oldest cached position from the position (vk::kKvFirstFromPositions). Its fence is polled,
// not slept on (vk::Recorder::set_spin_wait): one host thread is busy while a token runs.
//
// Thread-safety: calls are serialised by the caller (the Engine's forward mutex), as for every
// Backend; sequences may be created and destroyed from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/base/status.h"
#include "engine/gguf/gemma4.h"
#include "engine/model/backend.h"
#include "engine/model/cpu_backend.h"  // EmbedScale
#include "engine/model/weights.h"
#include "engine/plan/planner.h"

namespace garnet::gguf {
class Model;
}
namespace garnet::vk {
class Device;
}

namespace garnet::model {

struct VulkanBackendOptions {
  int64_t n_ctx = 4096;
  int64_t n_ubatch = 512;
  // Sequences sharing one KV allocation and logit rows computed per pass: the plan's n_seq.
  int64_t n_seq = 1;
  // KV cache storage: f16 or q8_0 (head dims multiples of 32; vk::KvFormat). Host layers of a
  // mixed placement keep theirs in the same type. f32 is InvalidArgument.
  KvType kv_type = KvType::kF16;
  EmbedScale embed_scale = EmbedScale::kF32;
  // vk::SelectDevice selector: "" the best device, "<digits>" an index, else a name substring.
  std::string device;
  // Dense prefill matmuls run on tensor cores where the device has them (VK_NV_ or
  // VK_KHR_cooperative_matrix: dequantised weights and activations rounded to f16, fp32 sums) for
  // quantised weight types always; for f32 / f16 / bf16 weights only with f16_matmul. On the tiny
  // float presets it moved logits up to 14% from the CPU backend on an H100 (fp32 tiled matmuls:
  // <= 2.4e-3), so for float weights it is opt-in (docs/CORRECTNESS.md). coop_matmul = false
  // keeps every prefill matmul on the fp32 tiled kernel (comparisons, exactness).
  bool coop_matmul = true;
  bool f16_matmul = false;
  // A sequence's run of at least this many tokens in one pass takes the flash-attention style
  // prefill kernel (vk::Kernels::AttentionPrefill: keys read once per tile of 16 query rows);
  // shorter runs (decode, small batches) take the per-query kernel, which splits long key ranges
  // across workgroups. 0 (the default): never the prefill kernel — on the H200 it measured
  // 0.43-0.92x the per-query kernel's speed once that one read keys 16 bytes at a time
  // (docs/PERF.md). Head dims it has no tile for (not a multiple of 4, above 512) always take
  // the per-query kernel.
  int64_t attn_prefill_min_tokens = 0;
  // A sequence's run of at least this many tokens in one pass takes the tensor-core attention
  // kernel (vk::Kernels::AttentionCoop) where the device has one for the layer's head dim and the
  // cache is f16; it comes before attn_prefill_min_tokens. 0: never.
  int64_t attn_coop_min_tokens = 32;
  // Decode graph: a one-token pass (one sequence, its logits wanted, every layer and expert on
  // the GPU) is recorded once into a kept command buffer and replayed for the next tokens of the
  // same sequence, its token, position and PLE rows rewritten in the input buffer; the host
  // records nothing per token. Re-recorded when another sequence decodes. false: every pass is
  // recorded (comparisons).
  bool decode_graph = true;
  // MoE decode: the router matvec routes in its last workgroup (vk::Kernels::MatvecNormRoute)
  // where the router's type has that kernel, so routing takes no dispatch or barrier interval
  // of its own. false: a separate MoeRoute dispatch (comparisons, or a driver that misbehaves
  // with the fused form's cross-workgroup counter).
  bool fused_routing = true;
  // Decode: the kernels that end a residual update (norm_add, moe_tail) also write the
  // normalised inputs of the next matvecs (vk::Kernels::NextNorms: the q/k/v projections' from
  // the layer's end, the feed-forward's and the routed experts' from the attention block's), so
  // those are plain matvecs without a norm of their own. false: the matvecs fold the norm in
  // (comparisons).
  bool prenorm = true;
  // MoE decode with prenorm and fused_routing: the router runs beside the attention block's
  // residual update, forming that update itself (vk::Kernels::MatvecNormRoute with a ResidSpec),
  // so the routed experts' gate|up shares the dense gate*up's barrier interval: one interval
  // fewer per layer. Where the router's type has that kernel (F32, F16, BF16). false: the router
  // reads the updated residual stream after the update (comparisons).
  bool early_routing = true;
  // Decode with prenorm: the residual updates that write the next matvecs' inputs also write
  // them quantised to int8 (vk::Kernels::NextNorms::q8), and the integer-dot Q4_K matvecs read
  // that copy instead of rounding x again in every workgroup (vk::Kernels::MatvecXqAvailable).
  // false: each matvec rounds its float input itself (comparisons).
  bool quantized_inputs = true;
  // Mixed GPU/CPU placement (a plan::Plan for one GPU; engine.h turns a plan into these). Empty
  // vectors: everything on the GPU.
  //   host_layers[il]:  layer il runs on the CPU (CpuLayers) with its weights in the mapping and
  //                     its KV in host memory per sequence. Only a prefix [0, h) may be on the
  //                     host (the planner offloads the lowest layers), and not every layer.
  //   host_experts[il]: MoE layer il (on the GPU) keeps its routed experts in the mapping; the
  //                     CPU computes them for the tokens routed to them.
  std::vector<bool> host_layers;
  std::vector<bool> host_experts;
  int n_threads = 0;  // CPU threads for host layers/experts (0: all cores)
};

// Fills options->host_layers / host_experts from a plan for one GPU (device 0 of the plan, the
// host last). InvalidArgument when the plan's layer count is not the model's; Unimplemented
// when it puts layers on a second GPU. Every layer on the host is not an error here (the caller
// then runs the CPU backend).
Status PlacementFromPlan(const plan::Plan& plan, const gguf::Gemma4Params& params,
                         VulkanBackendOptions* options);

// Bytes (as requested from the device, i.e. vk::MemoryAccounting::requested) the backend and
// its live sequences hold, per kind.
struct VulkanAllocation {
  uint64_t weights = 0;
  uint64_t kv = 0;
  uint64_t scratch = 0;
  uint64_t other = 0;
  // Host memory the mixed placement allocates: KV of host layers (live sequences) and the CPU
  // scratch arena (plan::HostScratchLayout). Host weights are the file mapping, not counted.
  uint64_t host_kv = 0;
  uint64_t host_scratch = 0;
};

class VulkanBackend final : public Backend {
 public:
  // `model`, `params` and `weights` must outlive the backend. With `device` null the backend
  // creates its own Vulkan instance and device (options.device selects it); otherwise it uses
  // `device`, which must outlive the backend and every sequence it made.
  // Errors: Unavailable when there is no Vulkan driver/device (the caller may fall back to the
  // CPU); NotFound when the selector matches no device; FailedPrecondition naming the tensor for
  // a weight type without a Vulkan kernel, a 1-D tensor that is not F32, or a tensor larger
  // than the device can bind; InvalidArgument for bad shapes/options; ResourceExhausted when
  // the device memory does not suffice. Nothing stays allocated after an error.
  static Result<std::unique_ptr<VulkanBackend>> Create(const gguf::Model* model,
                                                       const gguf::Gemma4Params* params,
                                                       const ModelWeights* weights,
                                                       const VulkanBackendOptions& options,
                                                       vk::Device* device = nullptr);
  // The same on a device shared with the caller (kept alive by the backend and its sequences).
  static Result<std::unique_ptr<VulkanBackend>> Create(const gguf::Model* model,
                                                       const gguf::Gemma4Params* params,
                                                       const ModelWeights* weights,
                                                       const VulkanBackendOptions& options,
                                                       std::shared_ptr<vk::Device> device);
  ~VulkanBackend() override;
  VulkanBackend(const VulkanBackend&) = delete;
  VulkanBackend& operator=(const VulkanBackend&) = delete;

  std::string_view name() const override { return "vulkan"; }
  // Takes a free slot of a KV block, allocating a block of n_seq sequences when none is free
  // (ResourceExhausted when the device memory does not suffice).
  Result<std::unique_ptr<BackendSequence>> NewSequence() override;
  Status Forward(BackendSequence* seq, const int32_t* tokens, int64_t T, int64_t pos0,
                 bool all_logits, float* logits) override;
  Status ForwardBatch(std::span<const BatchItem> items, float* logits) override;
  Status ForwardBatchPicks(std::span<const BatchItem> items, int32_t* picks) override;
  Status ForwardBatchTop(std::span<const BatchItem> items, uint32_t k,
                         std::pair<float, int32_t>* top) override;

  // K and V bytes of one sequence (its share of a GPU block, without alignment padding, plus
  // its host layers' cache).
  uint64_t KvBytesPerSequence() const;
  VulkanAllocation allocated() const;
  // "NVIDIA H100 80GB HBM3" etc.
  const std::string& device_name() const;
  const vk::Device& device() const;

  struct Impl;

 private:
  explicit VulkanBackend(std::unique_ptr<Impl> impl);
  uint64_t GpuKvBytesPerSequence() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace garnet::model
