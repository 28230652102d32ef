#include "engine/model/vulkan_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <vector>

#include "engine/cpu/thread_pool.h"
#include "engine/gguf/gguf.h"
#include "engine/model/cpu_layers.h"
#include "engine/model/kv_cache.h"
#include "engine/plan/memory.h"
#include "engine/quant/fp16.h"
#include "engine/vulkan/buffer.h"
#include "engine/vulkan/device.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/model_ops.h"
#include "engine/vulkan/recorder.h"
#include "engine/vulkan/transfer.h"

namespace garnet::model {
namespace {

using plan::AlignUp;
using plan::kBufferAlign;
using vk::BufferRange;
using vk::MemoryKind;

// How long the decode graph's wait polls its fence before blocking (Recorder::set_spin_wait).
constexpr uint64_t kDecodeSpinWaitNs = 50'000'000;

// Largest weight buffer: tensors are packed into buffers of at most this size (or the device's
// maxMemoryAllocationSize), so a model takes a few allocations, not one per tensor.
constexpr uint64_t kWeightBufferBytes = 1ull << 30;

// A tensor on the device.
struct WRef {
  const vk::Buffer* buf = nullptr;
  uint64_t off = 0;
  uint64_t bytes = 0;
  GgmlType type = GgmlType::kF32;
  std::string name;
  bool present() const { return buf != nullptr; }
  BufferRange r() const { return BufferRange(*buf, off, bytes); }
};

// The best k of each of n rows from Kernels::TopChunks' output with keep = k (`chunks` lists
// of kTopChunkBest (value bits, id) pairs per row, the first k written, each best first, padded
// with id 0xffffffff): a merge of the lists' heads, in sampling::TopCandidates' order; padded
// with (-inf, -1).
void MergeTopChunks(const uint32_t* pairs, uint32_t n, uint32_t chunks, uint32_t k,
                    std::pair<float, int32_t>* top) {
  constexpr uint32_t kBest = vk::Kernels::kTopChunkBest;
  struct Head {
    float v;
    uint32_t id, list, pos;
  };
  // A max-heap by "comes first": `later(a, b)` when a ranks after b.
  auto later = [](const Head& a, const Head& b) { return a.v != b.v ? a.v < b.v : a.id > b.id; };
  std::vector<Head> heap;
  for (uint32_t r = 0; r < n; ++r) {
    const uint32_t* row = pairs + uint64_t{r} * chunks * kBest * 2;
    auto at = [&](uint32_t list, uint32_t pos) {
      const uint32_t* e = row + (uint64_t{list} * kBest + pos) * 2;
      float v;
      std::memcpy(&v, &e[0], 4);
      return Head{v, e[1], list, pos};
    };
    heap.clear();
    for (uint32_t c = 0; c < chunks; ++c) {
      const Head h = at(c, 0);
      if (h.id != 0xffffffffu) heap.push_back(h);
    }
    std::make_heap(heap.begin(), heap.end(), later);
    std::pair<float, int32_t>* out = top + uint64_t{r} * k;
    uint32_t got = 0;
    for (; got < k && !heap.empty(); ++got) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Head h = heap.back();
      heap.pop_back();
      out[got] = {h.v, static_cast<int32_t>(h.id)};
      if (h.pos + 1 < std::min(k, kBest)) {
        const Head next = at(h.list, h.pos + 1);
        if (next.id != 0xffffffffu) {
          heap.push_back(next);
          std::push_heap(heap.begin(), heap.end(), later);
        }
      }
    }
    for (; got < k; ++got) out[got] = {-std::numeric_limits<float>::infinity(), -1};
  }
}

// A named part of a scratch buffer.
struct Region {
  const vk::Buffer* buf = nullptr;
  uint64_t off = 0;
  uint64_t size = 0;
  BufferRange r() const { return BufferRange(*buf, off, size); }
  // The part starting `at` bytes in, `n` bytes long.
  BufferRange sub(uint64_t at, uint64_t n) const { return BufferRange(*buf, off + at, n); }
};

struct LayerRefs {
  WRef attn_norm, wq, q_norm, wk, k_norm, wv, wo, post_attention_norm;
  WRef ffn_norm, ffn_gate, ffn_up, ffn_down, post_ffw_norm;
  WRef ple_gate, ple_proj, ple_post_norm;
  WRef router, router_scale, expert_scale, pre_ffw_norm_2, post_ffw_norm_1, post_ffw_norm_2;
  WRef router_norm;  // router_scale * H^-1/2, precomputed (the router's fused norm weight)
  WRef gate_up_exps, up_exps, down_exps;
  const vk::Buffer* theta = nullptr;
  uint32_t n_rot = 0;
};

// KV storage of n_seq sequences: per layer K then V (empty for KV-shared layers).
struct KvBlock {
  std::vector<vk::Buffer> layers;
  std::vector<bool> used;
};

struct KvPool {
  std::shared_ptr<vk::Device> dev;  // first: destroyed after the blocks
  std::mutex mu;
  std::list<KvBlock> blocks;  // guarded by mu (stable addresses)
  std::atomic<uint64_t> bytes{0};
  uint32_t n_seq = 1;
  std::vector<uint32_t> cells;      // per layer (0: shared)
  std::vector<uint64_t> row_bytes;  // per layer: n_head_kv * head_dim in the cache's type
  std::vector<uint64_t> seq_bytes;  // per layer: one sequence's K (= V), aligned
  std::vector<uint64_t> half;       // per layer: bytes of the K (= V) part, aligned
  KvType type = KvType::kF16;       // of the GPU caches and of the host layers' caches
  // Host layers of a mixed placement: each sequence's KvCache for them.
  std::atomic<uint64_t> host_bytes{0};
  std::vector<bool> host_kv_layers;  // empty: no host layers
  const gguf::Gemma4Params* params = nullptr;
  int64_t n_ctx = 0, n_ubatch = 0;
};

class VulkanSequence final : public BackendSequence {
 public:
  VulkanSequence(std::shared_ptr<KvPool> pool, KvBlock* block, uint32_t slot, uint64_t bytes,
                 std::unique_ptr<KvCache> host_kv)
      : pool_(std::move(pool)),
        block_(block),
        slot_(slot),
        bytes_(bytes),
        host_kv_(std::move(host_kv)),
        id_(NextId()) {}
  ~VulkanSequence() override {
    if (host_kv_) pool_->host_bytes -= host_kv_->bytes();
    std::lock_guard<std::mutex> lock(pool_->mu);
    block_->used[slot_] = false;
    if (std::none_of(block_->used.begin(), block_->used.end(), [](bool u) { return u; })) {
      for (auto it = pool_->blocks.begin(); it != pool_->blocks.end(); ++it) {
        if (&*it != block_) continue;
        uint64_t b = 0;
        for (const auto& l : it->layers) b += l.size();
        pool_->bytes -= b;
        pool_->blocks.erase(it);
        break;
      }
    }
  }
  uint64_t kv_bytes() const override { return bytes_ + (host_kv_ ? host_kv_->bytes() : 0); }
  // The host layers' cache (null without host layers).
  KvCache* host_kv() const { return host_kv_.get(); }

  // This sequence's K or V cache of owning layer `il`.
  BufferRange K(int il) const {
    return BufferRange(block_->layers[il], slot_ * pool_->seq_bytes[il], Bytes(il));
  }
  BufferRange V(int il) const {
    return BufferRange(block_->layers[il], pool_->half[il] + slot_ * pool_->seq_bytes[il],
                       Bytes(il));
  }
  const KvPool* pool() const { return pool_.get(); }
  // Unique over the process's life (a later sequence may reuse this one's address, never its id).
  uint64_t id() const { return id_; }

 private:
  static uint64_t NextId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }
  // The cache range's bytes: cells * row, rounded up to whole 32-bit words (a q8_0 scale plane
  // with an odd number of scales; seq_bytes is aligned, so the word is there).
  uint64_t Bytes(int il) const { return (pool_->cells[il] * pool_->row_bytes[il] + 3) / 4 * 4; }

  std::shared_ptr<KvPool> pool_;
  KvBlock* block_;
  uint32_t slot_;
  uint64_t bytes_;
  std::unique_ptr<KvCache> host_kv_;
  uint64_t id_;
};

std::string TensorError(const std::string& name, const std::string& what) {
  return "tensor " + name + ": " + what;
}

}  // namespace

struct VulkanBackend::Impl {
  Impl(const gguf::Gemma4Params& params, const ModelWeights& weights) : p(params), w(weights) {}

  const gguf::Gemma4Params& p;
  const ModelWeights& w;
  VulkanBackendOptions opt;
  plan::KvOptions kvo;
  vk::KvFormat kv_format = vk::KvFormat::kF16;  // opt.kv_type on the GPU
  std::shared_ptr<vk::Device> dev;              // first: outlives every buffer below
  std::unique_ptr<vk::Kernels> kern;
  std::unique_ptr<vk::Recorder> rec;
  // Decode graph (opt.decode_graph): the kept one-token pass of sequence graph_seq (an id; 0:
  // none), replayed while that sequence decodes. Recorded through `rec` swapped with it.
  std::unique_ptr<vk::Recorder> graph;
  uint64_t graph_seq = 0;
  // What a pass returns for its logit rows: the rows ("logits_out"), their greedy picks
  // (Kernels::ArgmaxRows into "picks") or their chunks' best candidates (Kernels::TopChunks
  // into "top_chunks").
  enum class HeadOut { kLogits, kPicks, kTop };
  HeadOut graph_out = HeadOut::kLogits;  // what the kept pass's head returns
  uint32_t graph_keep = 0;               // ... with kTop: how many of each chunk's best
  uint32_t top_keep = 0;                 // RecordHead's kTop: how many of each chunk's best
  bool recording_graph = false;  // kv_first comes from the positions buffer (AttentionDecode)
  // Decode with opt.prenorm: the "prenorm" region already holds attn_norm(hidden) for the layer
  // recorded next (its predecessor's last residual update wrote it); else that layer writes it.
  bool attn_prenormed = false;
  // Decode with opt.quantized_inputs (q8_inputs: the model has Q4_K matvecs that can read them):
  // the "prenorm_q8" copies (attention's, feed-forward's, experts') hold the inputs of the layer
  // recorded next (attn_q8, with attn_prenormed) and of this layer's feed-forward (ffn_q8).
  bool q8_inputs = false;
  bool attn_q8 = false;
  bool ffn_q8 = false;
  // Slot j of "prenorm_q8" (0 attention, 1 feed-forward, 2 experts; `n` slots from j).
  BufferRange Q8Slot(uint32_t j, uint32_t n = 1) {
    const uint64_t qb = vk::Kernels::Q8xBytes(p.n_embd);
    return R("prenorm_q8").sub(j * qb, n * qb);
  }
  std::vector<std::unique_ptr<vk::Buffer>> weight_bufs;
  std::map<std::string, WRef, std::less<>> tensors;
  WRef tok_embd, output_norm, ple_model_proj, ple_proj_norm;
  std::vector<LayerRefs> layers;
  std::vector<std::unique_ptr<vk::Buffer>> thetas;
  vk::Buffer one;            // a single 1.0f: Binary's b operand for "scale by a constant"
  vk::Buffer route_counter;  // MatvecNormRoute's workgroup counter (zero between dispatches)
  // AttentionDecode's split counters (zero between dispatches): one per (token, query head) of
  // a dispatch that splits, which needs tokens * heads < plan::kSplitTargetGroups.
  vk::Buffer attn_counter;
  vk::Buffer router_norm;  // MoE: per layer router_scale * H^-1/2 at kBufferAlign offsets
  vk::Buffer scratch_dev, scratch_up, scratch_rb;
  std::map<std::string, Region, std::less<>> regions;
  std::shared_ptr<KvPool> kv;
  uint64_t weight_bytes = 0, scratch_bytes = 0, other_bytes = 0;
  uint32_t logit_rows = 1;  // per pass (n_seq)
  // Mixed placement: layers [0, n_host) on the CPU; per layer, routed experts on the CPU.
  uint32_t n_host = 0;
  std::vector<bool> host_experts;
  bool any_host_experts = false;
  // Per layer: a host layer whose KV a GPU layer shares; its K/V rows cross in kv_in (at
  // kv_in_off[il]: K, then V one aligned [n_ubatch x row] part later) into a GPU copy of its cache.
  std::vector<bool> mirror;
  std::vector<uint64_t> kv_in_off;
  std::unique_ptr<cpu::ThreadPool> pool;  // before cpu, which uses it
  std::unique_ptr<CpuLayers> cpu;
  // GARNET_VULKAN_STATS set: one stderr line per pass (dispatches, barriers, host times).
  bool print_stats = false;

  // One token row of a pass.
  struct Row {
    VulkanSequence* seq;
    int64_t pos;
  };

  Status Init(const gguf::Model& model);
  Status UploadWeights(const gguf::Model& model);
  // Whether the placement puts this tensor on the GPU (as the planner's accounting does): not the
  // PLE table, unused K/V, anything of a host layer, experts kept on the host, nor the PLE
  // projection when the first layer (which it feeds) runs on the host.
  bool OnGpu(const plan::WeightTensor& wt) const {
    switch (wt.cls) {
      case plan::TensorClass::kPleTable:
      case plan::TensorClass::kUnused:
        return false;
      case plan::TensorClass::kLayer:
        return wt.layer < 0 || static_cast<uint32_t>(wt.layer) >= n_host;
      case plan::TensorClass::kExperts:
        return wt.layer < 0 || (static_cast<uint32_t>(wt.layer) >= n_host &&
                                !host_experts[static_cast<size_t>(wt.layer)]);
      case plan::TensorClass::kGlobal:
        return n_host == 0 || wt.name.rfind("per_layer_", 0) != 0;
      case plan::TensorClass::kTokenEmbd:
        return true;
    }
    return true;
  }
  Result<WRef> Tensor(const std::string& name, bool required = true) const;
  // `xq`: x also as q8x (decode; vk::Kernels::Matvec uses it where it can).
  Status Mul(const WRef& wt, uint32_t in, uint32_t out, uint32_t T, const BufferRange& x,
             const BufferRange& y, const BufferRange* xq = nullptr);
  Status RmsNorm(uint32_t n, uint32_t rows, const BufferRange& x, const WRef* wt,
                 const BufferRange& y);
  // y = W . rmsnorm(x) * norm_w for T tokens: one fused dispatch when T == 1, else RmsNorm into
  // `tmp` and Mul.
  Status NormMul(const WRef& wt, const WRef& norm_w, uint32_t in, uint32_t out, uint32_t T,
                 const BufferRange& x, const BufferRange& tmp, const BufferRange& y);
  // Gemma's dense MLP on x (normalised by norm_w first): down(gelu(gate . x) * (up . x)) into y;
  // `gate` and `up` are scratch of T * I floats.
  Status DenseMlp(const LayerRefs& lr, const WRef& norm_w, uint32_t I, uint32_t T,
                  const BufferRange& x, const BufferRange& tmp, const BufferRange& gate,
                  const BufferRange& up, const BufferRange& y, const BufferRange* xn = nullptr,
                  const BufferRange* xq = nullptr);
  // DenseMlp's first half: gelu(gate . x') * (up . x') into `gate`. `xn`: x' already
  // normalised (decode, opt.prenorm), used where the fused decode kernel runs.
  Status DenseMlpUp(const LayerRefs& lr, const WRef& norm_w, uint32_t I, uint32_t T,
                    const BufferRange& x, const BufferRange& tmp, const BufferRange& gate,
                    const BufferRange& up, const BufferRange* xn = nullptr,
                    const BufferRange* xq = nullptr);
  // hidden = (hidden + rmsnorm(x) * norm_w) * scale for T rows of n_embd: one dispatch (`next`:
  // it also writes the next matvecs' normalised inputs).
  Status NormAdd(uint32_t T, const BufferRange& x, const WRef& norm_w, float scale,
                 const vk::Kernels::NextNorms* next = nullptr);
  Status RecordLayers(const Row* rows, uint32_t T);
  Status RecordLayer(int il, const Row* rows, uint32_t T, const std::vector<int64_t>& run_start,
                     const std::vector<uint32_t>& run_len);
  // The MoE feed-forward block, ending with the residual update of `hidden` (times `scale`;
  // `next`: that update also writes the next matvecs' normalised inputs).
  // `routed`: the router already ran beside the attention block's residual update (EarlyRoute).
  Status RecordMoe(int il, const LayerRefs& lr, uint32_t ffn_dim, uint32_t T, float scale,
                   const vk::Kernels::NextNorms* next, bool routed = false);
  // Whether layer il's decode pass routes beside the attention block's residual update
  // (VulkanBackendOptions::early_routing): decode, prenorm, the fused routing kernel with the
  // residual form for the router's type, and the fused expert matvecs on the GPU.
  bool EarlyRoute(int il, const LayerRefs& lr, uint32_t T) const;
  // The decode experts' matvecs with their inputs folded in (RecordExperts' `fused`).
  bool FuseExperts(int il, const LayerRefs& lr, uint32_t T) const;
  // Host experts of layer il: submits what is recorded, runs the routed experts on the CPU from
  // the read-back rows and uploads their combined output into moe_out.
  Status HostExperts(int il, uint32_t T);
  // The routed experts on the GPU (MatmulId for prefill, MatvecId for decode; `fused`: the decode
  // matvecs with pre_ffw_norm_2 and GeGLU folded in; with `xn`, the gate|up matvec reads that
  // already normalised input instead) into moe_down, one row per slot.
  // `part` (fused decode only): record only the gate|up or only the down matvecs.
  enum class ExpertsPart { kBoth, kGateUp, kDown };
  Status RecordExperts(const LayerRefs& lr, uint32_t T, bool fused, const BufferRange* xn,
                       const BufferRange* xq, ExpertsPart part = ExpertsPart::kBoth);
  // The MoE block's end (MoeTail): the experts' combine, the three post norms and the residual
  // update of `hidden`, times `scale`.
  Status MoeTailAdd(const LayerRefs& lr, uint32_t T, float scale,
                    const vk::Kernels::NextNorms* next);
  Status RecordHead(uint32_t T, uint32_t n_rows, HeadOut mode = HeadOut::kLogits);
  // A forward pass; the logit rows wanted go to `out.logits`, or only their greedy picks to
  // `out.picks`, or their best `out.k` candidates to `out.top`.
  struct RunOut {
    float* logits = nullptr;
    int32_t* picks = nullptr;
    std::pair<float, int32_t>* top = nullptr;
    uint32_t k = 0;
  };
  Status Run(const int32_t* tokens, const Row* rows, uint32_t T,
             const std::vector<uint32_t>& logit_rows, const RunOut& out);
  // ForwardBatch and its picks / candidates forms: checks `items`, then Run with their rows,
  // tokens and logit rows (none when `out` asks for nothing).
  Status RunBatch(std::span<const BatchItem> items, const RunOut& out);
  const Region& R(std::string_view name) const { return regions.find(name)->second; }
};

Result<WRef> VulkanBackend::Impl::Tensor(const std::string& name, bool required) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    if (!required) return WRef{};
    return Status::NotFound("vulkan backend", TensorError(name, "not uploaded"));
  }
  return it->second;
}

Status VulkanBackend::Impl::UploadWeights(const gguf::Model& model) {
  GARNET_ASSIGN_OR_RETURN(std::vector<plan::WeightTensor> all, plan::ClassifyTensors(model, p));
  const vk::DeviceInfo& info = dev->info();
  const uint64_t cap = std::min<uint64_t>(kWeightBufferBytes, info.max_allocation_size);
  // Pack the device-resident tensors, in file order, into buffers of at most `cap` bytes.
  struct Item {
    const gguf::TensorInfo* t;
    size_t buffer;
    uint64_t off;
  };
  std::vector<Item> items;
  std::vector<uint64_t> sizes;
  for (const auto& wt : all) {
    if (!OnGpu(wt)) continue;
    const gguf::TensorInfo* t = model.FindTensor(wt.name);
    if (t == nullptr || t->data == nullptr) {
      return Status::DataLoss("vulkan backend", TensorError(wt.name, "no data"));
    }
    if (t->n_dims == 1 && t->type != GgmlType::kF32) {
      return Status::FailedPrecondition(
          "vulkan backend",
          TensorError(wt.name, "1-D tensor of type " + std::string(TypeName(t->type)) +
                                   "; the Vulkan backend reads norms as F32"));
    }
    if (t->bytes > info.max_storage_buffer_range) {
      return Status::FailedPrecondition(
          "vulkan backend",
          TensorError(wt.name, std::to_string(t->bytes) +
                                   " bytes, above this device's storage buffer "
                                   "range of " +
                                   std::to_string(info.max_storage_buffer_range)));
    }
    const uint64_t need = AlignUp(t->bytes);
    if (sizes.empty() || (sizes.back() + need > cap && sizes.back() > 0)) sizes.push_back(0);
    items.push_back({t, sizes.size() - 1, sizes.back()});
    sizes.back() += need;
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    GARNET_ASSIGN_OR_RETURN(
        vk::Buffer b, vk::Buffer::Create(*dev, sizes[i], MemoryKind::kWeights,
                                         vk::Residency::kDevice, "weights " + std::to_string(i)));
    weight_bufs.push_back(std::make_unique<vk::Buffer>(std::move(b)));
    weight_bytes += sizes[i];
  }
  {
    GARNET_ASSIGN_OR_RETURN(auto transfer, vk::Transfer::Create(*dev));
    for (const Item& it : items) {
      const vk::Buffer& b = *weight_bufs[it.buffer];
      GARNET_RETURN_IF_ERROR(transfer->Upload(b, it.off, it.t->data, it.t->bytes)
                                 .WithContext("uploading " + std::string(it.t->name)));
      tensors[std::string(it.t->name)] = {&b, it.off, it.t->bytes, it.t->type,
                                          std::string(it.t->name)};
    }
  }  // staging freed here
  return Status::OK();
}

Status VulkanBackend::Impl::Init(const gguf::Model& model) {
  print_stats = std::getenv("GARNET_VULKAN_STATS") != nullptr;
  const vk::DeviceInfo& info = dev->info();
  const uint64_t align = std::max<uint64_t>(info.min_storage_buffer_offset_alignment, 1);
  if (kBufferAlign % align != 0) {
    return Status::FailedPrecondition(
        "vulkan backend",
        "device needs storage buffer offsets aligned to " + std::to_string(align) + " bytes");
  }
  for (size_t il = 0; il < p.layers.size(); ++il) {
    const auto& ly = p.layers[il];
    const std::string where = "layer " + std::to_string(il);
    if (ly.n_head_kv == 0 || ly.n_head % ly.n_head_kv != 0 || ly.head_dim % 2 != 0 ||
        ly.head_dim == 0 || ly.head_dim > 1024) {
      return Status::InvalidArgument(where, "unsupported attention shape");
    }
    if (kv_format == vk::KvFormat::kQ8_0 && ly.head_dim % 32 != 0) {
      return Status::InvalidArgument(where,
                                     "a q8_0 KV cache needs head dims that are multiples "
                                     "of 32, not " +
                                         std::to_string(ly.head_dim));
    }
    if (!ly.owns_kv()) {
      const auto& donor = p.layers.at(static_cast<size_t>(ly.kv_source));
      if (!donor.owns_kv() || donor.head_dim != ly.head_dim || donor.n_head_kv != ly.n_head_kv) {
        return Status::InvalidArgument(where, "KV donor of another shape");
      }
    }
    // Per-sequence runs of a batch start at token offsets; those must stay aligned. (The
    // sequences of a KV block start at plan::KvSeqBytes multiples, aligned by construction.)
    if ((uint64_t{ly.n_head} * ly.head_dim * 4) % align != 0 ||
        (uint64_t{ly.n_head_kv} * ly.head_dim * 4) % align != 0) {
      return Status::FailedPrecondition(where, "row sizes are not multiples of the device's " +
                                                   std::to_string(align) +
                                                   "-byte offset alignment");
    }
  }
  if (p.has_ple() && w.ple_tok.rows == 0) {
    return Status::InvalidArgument("vulkan backend", "PLE model without PLE tensors");
  }
  GARNET_RETURN_IF_ERROR(UploadWeights(model));

  // Resolve the tensors the forward pass reads, checking that a kernel exists for each type.
  auto mat = [&](const std::string& name, WRef* out, bool required = true) -> Status {
    GARNET_ASSIGN_OR_RETURN(*out, Tensor(name, required));
    if (out->present() && !vk::Kernels::SupportsWeightType(out->type)) {
      return Status::FailedPrecondition(
          "vulkan backend", TensorError(name, "weight type " + std::string(TypeName(out->type)) +
                                                  " has no Vulkan kernel yet"));
    }
    return Status::OK();
  };
  GARNET_RETURN_IF_ERROR(mat("token_embd.weight", &tok_embd));
  GARNET_RETURN_IF_ERROR(mat("output_norm.weight", &output_norm));
  if (p.has_ple() && n_host == 0) {
    GARNET_RETURN_IF_ERROR(mat("per_layer_model_proj.weight", &ple_model_proj));
    GARNET_RETURN_IF_ERROR(mat("per_layer_proj_norm.weight", &ple_proj_norm));
  }
  layers.resize(p.layers.size());
  std::map<std::string, const vk::Buffer*> theta_by_key;
  for (uint32_t il = n_host; il < p.n_layer; ++il) {
    const auto& ly = p.layers[il];
    const LayerWeights& lw = w.layers[il];
    LayerRefs& lr = layers[il];
    auto n = [il](const char* s) { return gguf::BlockTensorName(il, s); };
    GARNET_RETURN_IF_ERROR(mat(n("attn_norm.weight"), &lr.attn_norm));
    GARNET_RETURN_IF_ERROR(mat(n("attn_q.weight"), &lr.wq));
    GARNET_RETURN_IF_ERROR(mat(n("attn_q_norm.weight"), &lr.q_norm));
    if (ly.owns_kv()) {
      GARNET_RETURN_IF_ERROR(mat(n("attn_k.weight"), &lr.wk));
      GARNET_RETURN_IF_ERROR(mat(n("attn_k_norm.weight"), &lr.k_norm));
      if (ly.has_v) GARNET_RETURN_IF_ERROR(mat(n("attn_v.weight"), &lr.wv));
    }
    GARNET_RETURN_IF_ERROR(mat(n("attn_output.weight"), &lr.wo));
    GARNET_RETURN_IF_ERROR(mat(n("post_attention_norm.weight"), &lr.post_attention_norm));
    GARNET_RETURN_IF_ERROR(mat(n("ffn_norm.weight"), &lr.ffn_norm));
    GARNET_RETURN_IF_ERROR(mat(n("ffn_gate.weight"), &lr.ffn_gate));
    GARNET_RETURN_IF_ERROR(mat(n("ffn_up.weight"), &lr.ffn_up));
    GARNET_RETURN_IF_ERROR(mat(n("ffn_down.weight"), &lr.ffn_down));
    GARNET_RETURN_IF_ERROR(mat(n("post_ffw_norm.weight"), &lr.post_ffw_norm));
    if (p.has_ple()) {
      GARNET_RETURN_IF_ERROR(mat(n("inp_gate.weight"), &lr.ple_gate));
      GARNET_RETURN_IF_ERROR(mat(n("proj.weight"), &lr.ple_proj));
      GARNET_RETURN_IF_ERROR(mat(n("post_norm.weight"), &lr.ple_post_norm));
    }
    if (p.is_moe()) {
      GARNET_RETURN_IF_ERROR(mat(n("ffn_gate_inp.weight"), &lr.router));
      GARNET_RETURN_IF_ERROR(mat(n("ffn_gate_inp.scale"), &lr.router_scale));
      GARNET_RETURN_IF_ERROR(mat(n("ffn_down_exps.scale"), &lr.expert_scale, false));
      GARNET_RETURN_IF_ERROR(mat(n("pre_ffw_norm_2.weight"), &lr.pre_ffw_norm_2));
      GARNET_RETURN_IF_ERROR(mat(n("post_ffw_norm_1.weight"), &lr.post_ffw_norm_1));
      GARNET_RETURN_IF_ERROR(mat(n("post_ffw_norm_2.weight"), &lr.post_ffw_norm_2));
    }
    if (p.is_moe() && !host_experts[il]) {
      if (lw.fused_gate_up) {
        GARNET_RETURN_IF_ERROR(mat(n("ffn_gate_up_exps.weight"), &lr.gate_up_exps));
      } else {
        GARNET_RETURN_IF_ERROR(mat(n("ffn_gate_exps.weight"), &lr.gate_up_exps));
        GARNET_RETURN_IF_ERROR(mat(n("ffn_up_exps.weight"), &lr.up_exps));
        if ((uint64_t{p.expert_ffn_dim} * 4) % align != 0) {
          return Status::FailedPrecondition(n("ffn_up_exps.weight"),
                                            "unfused expert width not aligned for this device");
        }
      }
      GARNET_RETURN_IF_ERROR(mat(n("ffn_down_exps.weight"), &lr.down_exps));
    }
    // RoPE angle table, one per distinct (rotated dims, base, frequency factors).
    const bool full = ly.kind == gguf::AttnKind::kFull;
    uint32_t rd = full ? p.rope_dims_full : p.rope_dims_swa;
    if (rd == 0 || rd > ly.head_dim) rd = ly.head_dim;
    lr.n_rot = rd;
    const bool ff = full && !w.rope_freqs.empty();
    const std::string key =
        std::to_string(rd) + "/" + std::to_string(ly.rope_base) + (ff ? "/ff" : "");
    auto it = theta_by_key.find(key);
    if (it == theta_by_key.end()) {
      GARNET_ASSIGN_OR_RETURN(
          std::vector<float> table,
          vk::RopeThetaTable(rd, ly.rope_base,
                             ff ? std::span<const float>(w.rope_freqs) : std::span<const float>()));
      GARNET_ASSIGN_OR_RETURN(vk::Buffer b,
                              vk::Buffer::Create(*dev, table.size() * 4, MemoryKind::kOther,
                                                 vk::Residency::kDevice, "rope"));
      GARNET_ASSIGN_OR_RETURN(auto transfer, vk::Transfer::Create(*dev, 1 << 20));
      GARNET_RETURN_IF_ERROR(transfer->Upload(b, 0, table.data(), table.size() * 4));
      other_bytes += b.size();
      thetas.push_back(std::make_unique<vk::Buffer>(std::move(b)));
      it = theta_by_key.emplace(key, thetas.back().get()).first;
    }
    lr.theta = it->second;
  }
  if (p.is_moe()) {
    // The router input is rmsnorm(h) * router_scale * H^-1/2: with the constant folded into the
    // norm weight it is one fused MatvecNorm at decode (and RmsNorm + matmul at prefill).
    const uint32_t H = p.n_embd;
    const uint64_t stride = AlignUp(uint64_t{H} * 4);
    std::vector<float> host(stride / 4 * p.n_layer, 0.0f);
    const float inv = 1.0f / std::sqrt(static_cast<float>(H));
    for (uint32_t il = 0; il < p.n_layer; ++il) {
      const std::string name = gguf::BlockTensorName(il, "ffn_gate_inp.scale");
      const gguf::TensorInfo* t = model.FindTensor(name);
      if (t == nullptr || t->data == nullptr || t->type != GgmlType::kF32 ||
          t->bytes != uint64_t{H} * 4) {
        return Status::FailedPrecondition(
            "vulkan backend", TensorError(name, "expected " + std::to_string(H) + " F32 values"));
      }
      float* dst = host.data() + il * (stride / 4);
      std::memcpy(dst, t->data, uint64_t{H} * 4);
      for (uint32_t i = 0; i < H; ++i) dst[i] *= inv;
    }
    GARNET_ASSIGN_OR_RETURN(router_norm,
                            vk::Buffer::Create(*dev, host.size() * 4, MemoryKind::kOther,
                                               vk::Residency::kDevice, "router norm"));
    GARNET_ASSIGN_OR_RETURN(auto transfer, vk::Transfer::Create(*dev, 1 << 20));
    GARNET_RETURN_IF_ERROR(transfer->Upload(router_norm, 0, host.data(), host.size() * 4));
    other_bytes += router_norm.size();
    for (uint32_t il = 0; il < p.n_layer; ++il) {
      layers[il].router_norm = {&router_norm, il * stride, uint64_t{H} * 4, GgmlType::kF32,
                                gguf::BlockTensorName(il, "ffn_gate_inp.scale") + "/sqrt(H)"};
    }
  }
  {
    GARNET_ASSIGN_OR_RETURN(
        one, vk::Buffer::Create(*dev, 4, MemoryKind::kOther, vk::Residency::kDevice, "constant 1"));
    const float v = 1.0f;
    GARNET_ASSIGN_OR_RETURN(auto transfer, vk::Transfer::Create(*dev, 4096));
    GARNET_RETURN_IF_ERROR(transfer->Upload(one, 0, &v, 4));
    other_bytes += 4;
    if (p.is_moe()) {  // one decoded token at a time: one counter
      GARNET_ASSIGN_OR_RETURN(
          route_counter, vk::Buffer::Create(*dev, 4, MemoryKind::kOther, vk::Residency::kDevice,
                                            "routing counter"));
      const uint32_t zero = 0;
      GARNET_RETURN_IF_ERROR(transfer->Upload(route_counter, 0, &zero, 4));
      other_bytes += 4;
    }
    const std::vector<uint32_t> zeros(plan::kSplitTargetGroups, 0u);
    GARNET_ASSIGN_OR_RETURN(attn_counter,
                            vk::Buffer::Create(*dev, zeros.size() * 4, MemoryKind::kOther,
                                               vk::Residency::kDevice, "attention split counters"));
    GARNET_RETURN_IF_ERROR(transfer->Upload(attn_counter, 0, zeros.data(), zeros.size() * 4));
    other_bytes += zeros.size() * 4;
  }

  // Scratch: plan::ScratchLayout, one buffer per place, parts at aligned offsets.
  const auto layout = plan::ScratchLayout(p, kvo, {n_host > 0, any_host_experts});
  uint64_t place_bytes[3] = {0, 0, 0};
  for (const auto& b : layout) {
    Region r;
    const int pl = static_cast<int>(b.place);
    r.off = place_bytes[pl];
    r.size = b.bytes;
    place_bytes[pl] += b.bytes;
    regions[b.name] = r;
  }
  const vk::Residency res[3] = {vk::Residency::kDevice, vk::Residency::kHostUpload,
                                vk::Residency::kHostReadback};
  vk::Buffer* bufs[3] = {&scratch_dev, &scratch_up, &scratch_rb};
  const char* labels[3] = {"scratch", "inputs", "logits readback"};
  for (int i = 0; i < 3; ++i) {
    if (place_bytes[i] == 0) continue;
    GARNET_ASSIGN_OR_RETURN(*bufs[i], vk::Buffer::Create(*dev, place_bytes[i], MemoryKind::kScratch,
                                                         res[i], labels[i]));
    scratch_bytes += place_bytes[i];
  }
  for (const auto& b : layout) regions[b.name].buf = bufs[static_cast<int>(b.place)];
  // kv_in parts in plan::ScratchLayout's order: every donor layer, K then V.
  kv_in_off.assign(p.n_layer, 0);
  uint64_t kv_in = 0;
  for (uint32_t il = 0; il < p.n_layer; ++il) {
    if (!plan::IsKvDonor(p, il)) continue;
    kv_in_off[il] = kv_in;
    kv_in += 2 * AlignUp(uint64_t{kvo.n_ubatch} * plan::KvRowBytes(p, il, plan::KvType::kF32));
  }

  // KV geometry.
  kv = std::make_shared<KvPool>();
  kv->dev = dev;
  kv->n_seq = kvo.n_seq;
  kv->params = &p;
  kv->n_ctx = opt.n_ctx;
  kv->n_ubatch = opt.n_ubatch;
  kv->type = opt.kv_type;
  if (n_host > 0) {
    kv->host_kv_layers.assign(p.n_layer, false);
    for (uint32_t il = 0; il < n_host; ++il) kv->host_kv_layers[il] = true;
  }
  for (uint32_t il = 0; il < p.n_layer; ++il) {
    const uint32_t cells = il < n_host && !mirror[il] ? 0 : plan::KvCells(p, il, kvo);
    const uint64_t row = plan::KvRowBytes(p, il, kvo.type);
    const uint64_t seq = cells == 0 ? 0 : plan::KvSeqBytes(p, il, kvo);
    kv->cells.push_back(cells);
    kv->row_bytes.push_back(row);
    kv->seq_bytes.push_back(seq);
    kv->half.push_back(seq * kvo.n_seq);
  }
  GARNET_ASSIGN_OR_RETURN(kern, vk::Kernels::Create(*dev));
  kern->SetMatmulCooperative(opt.coop_matmul);
  kern->SetMatmulCooperativeFloat(opt.f16_matmul);
  if (info.type == vk::DeviceType::kCpu) {
    // CPU implementations (lavapipe) run a workgroup's invocations as coroutines, so the
    // cross-invocation reduction dominates small matvecs: 32 invocations, one row per group
    // took ~30% off a tiny-model decode there (GPUs keep the 64 x 4 default).
    GARNET_RETURN_IF_ERROR(kern->SetMatvecLaunch(32, 1));
  }
  other_bytes += 256;  // the kernels' placeholder
  // Quantised decode inputs only where a matvec reads them: a Q4_K projection of the layers.
  bool any_q4k = false;
  for (const LayerRefs& lr : layers) {
    for (const WRef* wr : {&lr.wq, &lr.wk, &lr.wv, &lr.ffn_gate, &lr.gate_up_exps}) {
      any_q4k = any_q4k || (wr->present() && wr->type == GgmlType::kQ4_K);
    }
  }
  // The copies lie back to back in "prenorm_q8", each bound on its own: their offsets must be
  // storage-buffer aligned.
  q8_inputs = opt.quantized_inputs && opt.prenorm && any_q4k &&
              vk::Kernels::Q8xBytes(p.n_embd) % align == 0 &&
              kern->MatvecXqAvailable(GgmlType::kQ4_K) && kern->NextNormsQ8Available(p.n_embd, 1);
  GARNET_ASSIGN_OR_RETURN(rec, vk::Recorder::Create(*dev));
  if (n_host > 0 || any_host_experts) {
    pool = std::make_unique<cpu::ThreadPool>(opt.n_threads);
    GARNET_ASSIGN_OR_RETURN(cpu, CpuLayers::Create(&p, &w, opt.n_ubatch, n_host > 0, opt.kv_type,
                                                   opt.embed_scale, pool.get()));
  }
  return Status::OK();
}

Status PlacementFromPlan(const plan::Plan& pl, const gguf::Gemma4Params& params,
                         VulkanBackendOptions* o) {
  const uint32_t L = params.n_layer;
  const int host = pl.host_index();
  if (pl.layer_device.size() != L ||
      (!pl.experts_on_host.empty() && pl.experts_on_host.size() != L) || host < 0) {
    return Status::InvalidArgument("placement", "the plan has " +
                                                    std::to_string(pl.layer_device.size()) +
                                                    " layers, the model " + std::to_string(L));
  }
  o->host_layers.assign(L, false);
  o->host_experts.assign(L, false);
  for (uint32_t il = 0; il < L; ++il) {
    const int d = pl.layer_device[il];
    if (d == host) {
      o->host_layers[il] = true;
    } else if (d != 0) {
      return Status::Unimplemented(
          "placement", "the plan spreads layers over several GPUs (layer " + std::to_string(il) +
                           " on device " + std::to_string(d) +
                           "); one GPU plus the host is supported");
    }
    o->host_experts[il] =
        params.is_moe() && !pl.experts_on_host.empty() && pl.experts_on_host[il] && d != host;
  }
  return Status::OK();
}

VulkanBackend::VulkanBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VulkanBackend::~VulkanBackend() = default;

Result<std::unique_ptr<VulkanBackend>> VulkanBackend::Create(const gguf::Model* model,
                                                             const gguf::Gemma4Params* params,
                                                             const ModelWeights* weights,
                                                             const VulkanBackendOptions& options,
                                                             vk::Device* device) {
  if (device == nullptr) {
    return Create(model, params, weights, options, std::shared_ptr<vk::Device>());
  }
  return Create(model, params, weights, options,
                std::shared_ptr<vk::Device>(device, [](vk::Device*) {}));
}

Result<std::unique_ptr<VulkanBackend>> VulkanBackend::Create(const gguf::Model* model,
                                                             const gguf::Gemma4Params* params,
                                                             const ModelWeights* weights,
                                                             const VulkanBackendOptions& options,
                                                             std::shared_ptr<vk::Device> device) {
  if (model == nullptr || params == nullptr || weights == nullptr) {
    return Status::InvalidArgument("vulkan backend", "no model");
  }
  if (options.n_ctx <= 0 || options.n_ubatch <= 0 || options.n_seq <= 0 ||
      options.n_ctx > (1 << 30) || options.n_ubatch > 65535 || options.n_seq > 4096) {
    return Status::InvalidArgument("vulkan backend",
                                   "context, ubatch and sequences must be positive (ubatch <= "
                                   "65535, sequences <= 4096)");
  }
  auto impl = std::make_unique<Impl>(*params, *weights);
  impl->opt = options;
  impl->kvo.n_ctx = static_cast<uint32_t>(options.n_ctx);
  impl->kvo.n_ubatch = static_cast<uint32_t>(options.n_ubatch);
  impl->kvo.n_seq = static_cast<uint32_t>(options.n_seq);
  if (options.kv_type == KvType::kF32) {
    return Status::InvalidArgument("vulkan backend", "the KV cache is f16 or q8_0, not f32");
  }
  impl->kvo.type = PlanKvType(options.kv_type);
  impl->kv_format = options.kv_type == KvType::kQ8_0 ? vk::KvFormat::kQ8_0 : vk::KvFormat::kF16;
  impl->logit_rows = static_cast<uint32_t>(options.n_seq);
  // The placement: a prefix of host layers, experts on the host per GPU layer.
  const uint32_t L = params->n_layer;
  if ((!options.host_layers.empty() && options.host_layers.size() != L) ||
      (!options.host_experts.empty() && options.host_experts.size() != L)) {
    return Status::InvalidArgument("vulkan backend",
                                   "placement vectors must have one entry per "
                                   "layer (" +
                                       std::to_string(L) + ")");
  }
  for (uint32_t il = 0; il < options.host_layers.size(); ++il) {
    if (!options.host_layers[il]) continue;
    if (il != impl->n_host) {
      return Status::InvalidArgument(
          "vulkan backend", "host layers must be the lowest ones (layer " + std::to_string(il) +
                                " is on the host, layer " + std::to_string(impl->n_host) +
                                " on the GPU)");
    }
    ++impl->n_host;
  }
  if (impl->n_host == L) {
    return Status::InvalidArgument("vulkan backend",
                                   "every layer is on the host: use the CPU backend");
  }
  impl->host_experts.assign(L, false);
  for (uint32_t il = impl->n_host; il < options.host_experts.size(); ++il) {
    if (!options.host_experts[il]) continue;
    if (!params->is_moe()) {
      return Status::InvalidArgument("vulkan backend", "experts on the host for a dense model");
    }
    impl->host_experts[il] = true;
    impl->any_host_experts = true;
  }
  // Host donors whose cache a GPU layer shares get a copy of that cache on the GPU.
  impl->mirror.assign(L, false);
  for (uint32_t il = impl->n_host; il < L; ++il) {
    const int32_t src = params->layers[il].kv_source;
    if (src >= 0 && static_cast<uint32_t>(src) < impl->n_host) impl->mirror[src] = true;
  }
  if (device != nullptr) {
    impl->dev = std::move(device);
  } else {
    GARNET_ASSIGN_OR_RETURN(auto instance, vk::Instance::Create());
    vk::DeviceOptions dopt;
    dopt.selector = options.device;
    GARNET_ASSIGN_OR_RETURN(auto d, vk::Device::Create(std::move(instance), dopt));
    impl->dev = std::shared_ptr<vk::Device>(std::move(d));
  }
  GARNET_RETURN_IF_ERROR(
      impl->Init(*model).WithContext("vulkan backend on " + impl->dev->info().name));
  return std::unique_ptr<VulkanBackend>(new VulkanBackend(std::move(impl)));
}

uint64_t VulkanBackend::GpuKvBytesPerSequence() const {
  uint64_t total = 0;
  for (size_t il = 0; il < impl_->kv->cells.size(); ++il) {
    total += 2ull * impl_->kv->cells[il] * impl_->kv->row_bytes[il];
  }
  return total;
}

uint64_t VulkanBackend::KvBytesPerSequence() const {
  const KvPool& k = *impl_->kv;
  const uint64_t host = k.host_kv_layers.empty() ? 0
                                                 : KvCache::Bytes(*k.params, k.n_ctx, k.n_ubatch,
                                                                  k.type, false, k.host_kv_layers);
  return GpuKvBytesPerSequence() + host;
}

VulkanAllocation VulkanBackend::allocated() const {
  VulkanAllocation a;
  a.weights = impl_->weight_bytes;
  a.kv = impl_->kv->bytes.load();
  a.scratch = impl_->scratch_bytes;
  a.other = impl_->other_bytes;
  a.host_kv = impl_->kv->host_bytes.load();
  a.host_scratch = impl_->cpu ? impl_->cpu->scratch_bytes() : 0;
  return a;
}

const std::string& VulkanBackend::device_name() const {
  return impl_->dev->info().name;
}

const vk::Device& VulkanBackend::device() const {
  return *impl_->dev;
}

Result<std::unique_ptr<BackendSequence>> VulkanBackend::NewSequence() {
  KvPool& pool = *impl_->kv;
  std::lock_guard<std::mutex> lock(pool.mu);
  KvBlock* block = nullptr;
  uint32_t slot = 0;
  for (auto& b : pool.blocks) {
    for (uint32_t s = 0; s < b.used.size(); ++s) {
      if (!b.used[s]) {
        block = &b;
        slot = s;
        break;
      }
    }
    if (block) break;
  }
  if (block == nullptr) {
    KvBlock nb;
    nb.used.assign(pool.n_seq, false);
    nb.layers.resize(pool.cells.size());
    uint64_t bytes = 0;
    for (size_t il = 0; il < pool.cells.size(); ++il) {
      if (pool.cells[il] == 0) continue;
      GARNET_ASSIGN_OR_RETURN(
          nb.layers[il],
          vk::Buffer::Create(*pool.dev, 2 * pool.half[il], MemoryKind::kKv, vk::Residency::kDevice,
                             "kv layer " + std::to_string(il)));
      bytes += 2 * pool.half[il];
    }
    pool.blocks.push_back(std::move(nb));
    pool.bytes += bytes;
    block = &pool.blocks.back();
    slot = 0;
  }
  std::unique_ptr<KvCache> host_kv;
  if (!pool.host_kv_layers.empty()) {
    GARNET_ASSIGN_OR_RETURN(KvCache c, KvCache::Create(*pool.params, pool.n_ctx, pool.n_ubatch,
                                                       pool.type, false, pool.host_kv_layers));
    host_kv = std::make_unique<KvCache>(std::move(c));
    pool.host_bytes += host_kv->bytes();
  }
  block->used[slot] = true;
  return std::unique_ptr<BackendSequence>(
      new VulkanSequence(impl_->kv, block, slot, GpuKvBytesPerSequence(), std::move(host_kv)));
}

// ---------------------------------------------------------------------------------------------
// Recording helpers.

Status VulkanBackend::Impl::Mul(const WRef& wt, uint32_t in, uint32_t out, uint32_t T,
                                const BufferRange& x, const BufferRange& y, const BufferRange* xq) {
  if (T == 1) {
    vk::MatvecShape s;
    s.in = in;
    s.out = out;
    return kern->Matvec(*rec, wt.type, s, wt.r(), x, y, xq).WithContext(wt.name);
  }
  vk::MatmulShape s;
  s.m = out;
  s.n = T;
  s.k = in;
  return kern->Matmul(*rec, wt.type, s, wt.r(), x, y).WithContext(wt.name);
}

Status VulkanBackend::Impl::RmsNorm(uint32_t n, uint32_t rows, const BufferRange& x, const WRef* wt,
                                    const BufferRange& y) {
  vk::RmsNormShape s;
  s.n = n;
  s.rows = rows;
  s.eps = p.rms_eps;
  if (wt == nullptr) return kern->RmsNorm(*rec, s, x, nullptr, y);
  const BufferRange wr = wt->r();
  return kern->RmsNorm(*rec, s, x, &wr, y).WithContext(wt->name);
}

Status VulkanBackend::Impl::NormMul(const WRef& wt, const WRef& norm_w, uint32_t in, uint32_t out,
                                    uint32_t T, const BufferRange& x, const BufferRange& tmp,
                                    const BufferRange& y) {
  if (T == 1) {
    vk::MatvecShape s;
    s.in = in;
    s.out = out;
    const BufferRange nw = norm_w.r();
    return kern->MatvecNorm(*rec, wt.type, s, wt.r(), x, &nw, p.rms_eps, y).WithContext(wt.name);
  }
  GARNET_RETURN_IF_ERROR(RmsNorm(in, T, x, &norm_w, tmp));
  return Mul(wt, in, out, T, tmp, y);
}

Status VulkanBackend::Impl::DenseMlpUp(const LayerRefs& lr, const WRef& norm_w, uint32_t I,
                                       uint32_t T, const BufferRange& x, const BufferRange& tmp,
                                       const BufferRange& gate, const BufferRange& up,
                                       const BufferRange* xn, const BufferRange* xq) {
  const uint32_t H = p.n_embd;
  const WRef &g = lr.ffn_gate, &u = lr.ffn_up;
  const bool fuse = T == 1 && g.buf == u.buf && g.type == u.type &&
                    (std::max(g.off, u.off) - std::min(g.off, u.off)) % 4 == 0;
  if (fuse) {  // decode: norm, gate, up and GELU in one dispatch
    vk::MatvecShape s;
    s.in = H;
    s.out = I;
    const BufferRange nw = norm_w.r();
    vk::Kernels::NormSpec ns{&nw, p.rms_eps};
    GARNET_RETURN_IF_ERROR(kern->MatvecGeglu(*rec, g.type, s, g.r(), u.r(), xn ? *xn : x,
                                             xn ? nullptr : &ns, gate, xn ? xq : nullptr)
                               .WithContext(g.name));
  } else {
    GARNET_RETURN_IF_ERROR(RmsNorm(H, T, x, &norm_w, tmp));
    GARNET_RETURN_IF_ERROR(Mul(g, H, I, T, tmp, gate));
    GARNET_RETURN_IF_ERROR(Mul(u, H, I, T, tmp, up));
    GARNET_RETURN_IF_ERROR(kern->GeluMul(*rec, T * I, gate, up, gate));
  }
  return Status::OK();
}

Status VulkanBackend::Impl::DenseMlp(const LayerRefs& lr, const WRef& norm_w, uint32_t I,
                                     uint32_t T, const BufferRange& x, const BufferRange& tmp,
                                     const BufferRange& gate, const BufferRange& up,
                                     const BufferRange& y, const BufferRange* xn,
                                     const BufferRange* xq) {
  GARNET_RETURN_IF_ERROR(DenseMlpUp(lr, norm_w, I, T, x, tmp, gate, up, xn, xq));
  return Mul(lr.ffn_down, I, p.n_embd, T, gate, y);
}

Status VulkanBackend::Impl::NormAdd(uint32_t T, const BufferRange& x, const WRef& norm_w,
                                    float scale, const vk::Kernels::NextNorms* next) {
  vk::Kernels::NormAddShape s;
  s.n = p.n_embd;
  s.rows = T;
  s.eps = p.rms_eps;
  s.scale = scale;
  return kern->RmsNormAdd(*rec, s, R("hidden").r(), x, norm_w.r(), next).WithContext(norm_w.name);
}

bool VulkanBackend::Impl::FuseExperts(int il, const LayerRefs& lr, uint32_t T) const {
  return T == 1 && !host_experts[static_cast<size_t>(il)] && !lr.up_exps.present() &&
         kern->MatvecIdFusedAvailable(lr.gate_up_exps.type) &&
         kern->MatvecIdFusedAvailable(lr.down_exps.type);
}

bool VulkanBackend::Impl::EarlyRoute(int il, const LayerRefs& lr, uint32_t T) const {
  return T == 1 && p.is_moe() && opt.prenorm && opt.fused_routing && opt.early_routing &&
         FuseExperts(il, lr, T) && kern->MatvecNormRouteAvailable(lr.router.type, true);
}

Status VulkanBackend::Impl::RecordMoe(int il, const LayerRefs& lr, uint32_t I, uint32_t T,
                                      float scale, const vk::Kernels::NextNorms* next,
                                      bool routed) {
  const uint32_t H = p.n_embd, E = p.n_expert, K = p.n_expert_used;
  const Region &hidden = R("hidden"), &norm = R("norm"), &branch = R("branch");
  const Region &gate = R("ffn_gate"), &up = R("ffn_up"), &router = R("router");
  const Region &ids = R("moe_ids"), &wts = R("moe_weights"), &mo = R("moe_out");
  // Recorded in dependency stages so independent dispatches share a barrier interval:
  // (dense gate*up, router logits, expert input norm), (dense down, routing), (post norm, ...).
  // Dense branch: post_ffw_norm_1(mlp(ffn_norm(h))). Router: W_r . (rmsnorm(h) * router_scale *
  // H^-1/2), softmax top-k with per-expert scale. Experts on pre_ffw_norm_2(h): slot t*K + i
  // runs expert ids[t, i] on token t's row.
  // Decode with opt.prenorm: the attention block's residual update wrote ffn_norm(h) and
  // pre_ffw_norm_2(h) into the "prenorm" region after the attention's input.
  const bool pre = T == 1 && opt.prenorm;
  const uint64_t hb = uint64_t{H} * 4;
  const BufferRange xn_ffn = R("prenorm").sub(hb, hb), xn_exp = R("prenorm").sub(2 * hb, hb);
  const bool q8 = pre && ffn_q8;
  const BufferRange xq_ffn = q8 ? Q8Slot(1) : BufferRange(one), xq_exp = q8 ? Q8Slot(2) : xq_ffn;
  GARNET_RETURN_IF_ERROR(DenseMlpUp(lr, lr.ffn_norm, I, T, hidden.r(), norm.r(), gate.r(), up.r(),
                                    pre ? &xn_ffn : nullptr, q8 ? &xq_ffn : nullptr));
  if (routed) {
    // Routed beside the residual update: the experts' gate|up joins the dense gate*up's
    // interval, then both down projections share the next one.
    GARNET_RETURN_IF_ERROR(
        RecordExperts(lr, T, true, &xn_exp, q8 ? &xq_exp : nullptr, ExpertsPart::kGateUp));
    GARNET_RETURN_IF_ERROR(Mul(lr.ffn_down, I, H, T, gate.r(), branch.r()));
    GARNET_RETURN_IF_ERROR(RecordExperts(lr, T, true, &xn_exp, nullptr, ExpertsPart::kDown));
    return MoeTailAdd(lr, T, scale, next);
  }
  // The router (E rows, a few hundred KB) as a normalising matvec over the T tokens, also for
  // prefill: the tiled matmul ran it on E/64 x T/64 workgroups (16 for 512 tokens), and its
  // RmsNorm into `norm` forced a barrier against the dense branch's readers of `norm`.
  // Decode: the routing happens in the router matvec's last workgroup (MatvecNormRoute), so the
  // routed experts' gate|up runs beside the dense down projection, one barrier interval sooner.
  const BufferRange es = lr.expert_scale.present() ? lr.expert_scale.r() : BufferRange(one);
  const bool route_in_router =
      T == 1 && opt.fused_routing && kern->MatvecNormRouteAvailable(lr.router.type);
  if (route_in_router) {
    vk::MatvecShape rs;
    rs.in = H;
    rs.out = E;
    const BufferRange rnw = lr.router_norm.r();
    GARNET_RETURN_IF_ERROR(kern->MatvecNormRoute(*rec, lr.router.type, rs, K, lr.router.r(),
                                                 hidden.r(), &rnw, p.rms_eps,
                                                 lr.expert_scale.present() ? &es : nullptr,
                                                 router.r(), ids.r(), wts.r(), route_counter)
                               .WithContext(lr.router.name));
  } else if (T <= dev->info().max_workgroup_count[2]) {
    vk::MatvecShape rs;
    rs.in = H;
    rs.out = E;
    rs.n_vecs = T;
    const BufferRange rnw = lr.router_norm.r();
    GARNET_RETURN_IF_ERROR(kern->MatvecNorm(*rec, lr.router.type, rs, lr.router.r(), hidden.r(),
                                            &rnw, p.rms_eps, router.r())
                               .WithContext(lr.router.name));
  } else {
    GARNET_RETURN_IF_ERROR(
        NormMul(lr.router, lr.router_norm, H, E, T, hidden.r(), norm.r(), router.r()));
  }
  // Decode with fused gate_up rows: pre_ffw_norm_2 folds into the gate_up expert matvec and the
  // GeGLU into the down expert matvec (two dispatches and barriers fewer).
  const bool fuse_experts = FuseExperts(il, lr, T);
  if (!fuse_experts) {
    GARNET_RETURN_IF_ERROR(RmsNorm(H, T, hidden.r(), &lr.pre_ffw_norm_2, norm.r()));
  }
  GARNET_RETURN_IF_ERROR(Mul(lr.ffn_down, I, H, T, gate.r(), branch.r()));
  if (!route_in_router) {
    GARNET_RETURN_IF_ERROR(kern->MoeRoute(
        *rec, E, K, T, router.r(), lr.expert_scale.present() ? &es : nullptr, ids.r(), wts.r()));
  }
  if (host_experts[static_cast<size_t>(il)]) {
    GARNET_RETURN_IF_ERROR(HostExperts(il, T));
    // The CPU's weighted expert sum is in moe_out: h += post_ffw_norm(post_ffw_norm_1(dense) +
    // post_ffw_norm_2(experts)), times the layer's output scale.
    GARNET_RETURN_IF_ERROR(RmsNorm(H, T, branch.r(), &lr.post_ffw_norm_1, branch.r()));
    GARNET_RETURN_IF_ERROR(RmsNorm(H, T, mo.r(), &lr.post_ffw_norm_2, mo.r()));
    GARNET_RETURN_IF_ERROR(kern->Binary(*rec, vk::Kernels::BinaryOp::kAdd, T * H, T * H, 1.0f,
                                        branch.r(), mo.r(), branch.r()));
    return NormAdd(T, branch.r(), lr.post_ffw_norm, scale, next);
  }
  GARNET_RETURN_IF_ERROR(
      RecordExperts(lr, T, fuse_experts, pre ? &xn_exp : nullptr, q8 ? &xq_exp : nullptr));
  return MoeTailAdd(lr, T, scale, next);
}

Status VulkanBackend::Impl::MoeTailAdd(const LayerRefs& lr, uint32_t T, float scale,
                                       const vk::Kernels::NextNorms* next) {
  const uint32_t H = p.n_embd, K = p.n_expert_used;
  const Region &hidden = R("hidden"), &branch = R("branch");
  const Region &wts = R("moe_weights"), &mo = R("moe_out");
  // One dispatch: combine the experts, h += post_ffw_norm(post_ffw_norm_1(dense) +
  // post_ffw_norm_2(experts)), times the layer's output scale.
  vk::Kernels::MoeTailShape ts;
  ts.n = H;
  ts.k = K;
  ts.n_tokens = T;
  ts.eps = p.rms_eps;
  ts.scale = scale;
  return kern->MoeTail(*rec, ts, hidden.r(), branch.r(), R("moe_down").r(), wts.r(), mo.r(),
                       lr.post_ffw_norm_1.r(), lr.post_ffw_norm_2.r(), lr.post_ffw_norm.r(), next);
}

Status VulkanBackend::Impl::HostExperts(int il, uint32_t T) {
  const uint32_t H = p.n_embd, E = p.n_expert, K = p.n_expert_used;
  const Region &norm = R("norm"), &ids = R("moe_ids"), &wts = R("moe_weights"), &mo = R("moe_out");
  const Region &x_out = R("moe_x_out"), &ids_out = R("moe_ids_out");
  const Region &wts_out = R("moe_weights_out"), &in = R("moe_out_in");
  const uint64_t row_bytes = uint64_t{T} * H * 4, slot_bytes = uint64_t{T} * K * 4;
  GARNET_RETURN_IF_ERROR(rec->Copy(*norm.buf, norm.off, *x_out.buf, x_out.off, row_bytes));
  GARNET_RETURN_IF_ERROR(rec->Copy(*ids.buf, ids.off, *ids_out.buf, ids_out.off, slot_bytes));
  GARNET_RETURN_IF_ERROR(rec->Copy(*wts.buf, wts.off, *wts_out.buf, wts_out.off, slot_bytes));
  GARNET_RETURN_IF_ERROR(rec->SubmitAndWait());
  GARNET_RETURN_IF_ERROR(scratch_rb.InvalidateForHostReads(0, scratch_rb.size()));
  const uint8_t* rb = scratch_rb.mapped();
  const auto* id = reinterpret_cast<const int32_t*>(rb + ids_out.off);
  const auto* wt = reinterpret_cast<const float*>(rb + wts_out.off);
  CpuLayers::Routes routes(E);
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t i = 0; i < K; ++i) {
      const int32_t e = id[uint64_t{t} * K + i];
      if (e < 0 || static_cast<uint32_t>(e) >= E) {
        return Status::Internal(
            "moe", "routing produced expert id " + std::to_string(e) + " of " + std::to_string(E));
      }
      routes[static_cast<size_t>(e)].push_back({t, wt[uint64_t{t} * K + i]});
    }
  }
  auto* out = reinterpret_cast<float*>(scratch_up.mapped() + in.off);
  cpu->Experts(w.layers[static_cast<size_t>(il)], reinterpret_cast<const float*>(rb + x_out.off),
               routes, T, out);
  GARNET_RETURN_IF_ERROR(scratch_up.FlushHostWrites(in.off, row_bytes));
  return rec->Copy(*in.buf, in.off, *mo.buf, mo.off, row_bytes);
}

Status VulkanBackend::Impl::RecordExperts(const LayerRefs& lr, uint32_t T, bool fused,
                                          const BufferRange* xn, const BufferRange* xq,
                                          ExpertsPart part) {
  if (part != ExpertsPart::kBoth && !(fused && T == 1)) {
    return Status::Internal("moe", "expert matvecs recorded in parts only for fused decode");
  }
  const uint32_t H = p.n_embd, E = p.n_expert, K = p.n_expert_used, Ie = p.expert_ffn_dim;
  const uint32_t TK = T * K;
  const Region &hidden = R("hidden"), &norm = R("norm"), &ids = R("moe_ids");
  const Region &gu = R("moe_gate_up"), &down = R("moe_down");
  vk::GluShape g;
  g.n = Ie;
  g.rows = TK;
  g.g_stride = g.u_stride = g.y_stride = 2 * Ie;
  g.u_off = Ie;
  // Decode's down projection: slot i reads its [gate | up] row (2 Ie apart), writes H values.
  vk::MatvecIdShape down_shape;
  down_shape.in = Ie;
  down_shape.out = H;
  down_shape.n_experts = E;
  down_shape.n_slots = TK;
  down_shape.x_stride = 2 * Ie;
  down_shape.y_stride = H;
  if (T > 1) {
    // Prefill: slots grouped by expert (MatmulId), so each routed expert's matrix is read once
    // per 64 of its slots instead of once per slot.
    const Region& grp = R("moe_group");
    const uint64_t need = vk::MatmulIdScratchBytes(E, TK);
    if (need > grp.size) {
      return Status::Internal("moe", "scratch layout holds " + std::to_string(grp.size) +
                                         " bytes for expert grouping, MatmulId needs " +
                                         std::to_string(need));
    }
    vk::MatmulIdShape s;
    s.k = H;
    s.n_experts = E;
    s.n_tokens = T;
    s.k_slots = K;
    s.y_stride = 2 * Ie;
    if (lr.up_exps.present()) {  // separate gate and up stacks
      s.m = Ie;
      GARNET_RETURN_IF_ERROR(kern->MatmulId(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(),
                                            norm.r(), ids.r(), grp.r(), gu.r())
                                 .WithContext(lr.gate_up_exps.name));
      GARNET_RETURN_IF_ERROR(kern->MatmulId(*rec, lr.up_exps.type, s, lr.up_exps.r(), norm.r(),
                                            ids.r(), grp.r(),
                                            gu.sub(uint64_t{Ie} * 4, gu.size - uint64_t{Ie} * 4))
                                 .WithContext(lr.up_exps.name));
    } else {  // fused rows: [0, Ie) gate, [Ie, 2 Ie) up
      s.m = 2 * Ie;
      GARNET_RETURN_IF_ERROR(kern->MatmulId(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(),
                                            norm.r(), ids.r(), grp.r(), gu.r())
                                 .WithContext(lr.gate_up_exps.name));
    }
    GARNET_RETURN_IF_ERROR(vk::GluStrided(*dev, *rec, g, gu.r(), gu.r(), gu.r()));
    vk::MatmulIdShape d;
    d.m = H;
    d.k = Ie;
    d.n_experts = E;
    d.n_tokens = T;
    d.k_slots = K;
    d.x_stride = K * 2 * Ie;
    d.x_slot_stride = 2 * Ie;
    d.y_stride = H;
    GARNET_RETURN_IF_ERROR(kern->MatmulId(*rec, lr.down_exps.type, d, lr.down_exps.r(), gu.r(),
                                          ids.r(), grp.r(), down.r())
                               .WithContext(lr.down_exps.name));
  } else if (fused) {
    vk::MatvecIdShape s;
    s.in = H;
    s.out = 2 * Ie;
    s.n_experts = E;
    s.n_slots = TK;
    s.y_stride = 2 * Ie;
    const BufferRange nw = lr.pre_ffw_norm_2.r();
    if (part == ExpertsPart::kDown) {
      // recorded earlier (kGateUp)
    } else if (xn) {
      GARNET_RETURN_IF_ERROR(kern->MatvecId(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(), *xn,
                                            ids.r(), gu.r(), xq)
                                 .WithContext(lr.gate_up_exps.name));
    } else {
      GARNET_RETURN_IF_ERROR(kern->MatvecIdNorm(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(),
                                                hidden.r(), ids.r(), &nw, p.rms_eps, gu.r())
                                 .WithContext(lr.gate_up_exps.name));
    }
    if (part == ExpertsPart::kGateUp) return Status::OK();
    const vk::MatvecIdShape d = down_shape;
    GARNET_RETURN_IF_ERROR(kern->MatvecIdGeglu(*rec, lr.down_exps.type, d, lr.down_exps.r(), gu.r(),
                                               ids.r(), Ie, down.r())
                               .WithContext(lr.down_exps.name));
  } else {
    vk::MatvecIdShape s;
    s.in = H;
    s.n_experts = E;
    s.n_slots = TK;
    s.y_stride = 2 * Ie;
    if (lr.up_exps.present()) {  // separate gate and up stacks
      s.out = Ie;
      GARNET_RETURN_IF_ERROR(kern->MatvecId(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(),
                                            norm.r(), ids.r(), gu.r())
                                 .WithContext(lr.gate_up_exps.name));
      GARNET_RETURN_IF_ERROR(kern->MatvecId(*rec, lr.up_exps.type, s, lr.up_exps.r(), norm.r(),
                                            ids.r(),
                                            gu.sub(uint64_t{Ie} * 4, gu.size - uint64_t{Ie} * 4))
                                 .WithContext(lr.up_exps.name));
    } else {  // fused rows: [0, Ie) gate, [Ie, 2 Ie) up
      s.out = 2 * Ie;
      GARNET_RETURN_IF_ERROR(kern->MatvecId(*rec, lr.gate_up_exps.type, s, lr.gate_up_exps.r(),
                                            norm.r(), ids.r(), gu.r())
                                 .WithContext(lr.gate_up_exps.name));
    }
    GARNET_RETURN_IF_ERROR(vk::GluStrided(*dev, *rec, g, gu.r(), gu.r(), gu.r()));
    const vk::MatvecIdShape d = down_shape;
    GARNET_RETURN_IF_ERROR(
        kern->MatvecId(*rec, lr.down_exps.type, d, lr.down_exps.r(), gu.r(), ids.r(), down.r())
            .WithContext(lr.down_exps.name));
  }
  return Status::OK();
}

Status VulkanBackend::Impl::RecordLayer(int il, const Row* rows, uint32_t T,
                                        const std::vector<int64_t>& run_start,
                                        const std::vector<uint32_t>& run_len) {
  const gguf::Gemma4Layer& ly = p.layers[static_cast<size_t>(il)];
  const LayerRefs& lr = layers[static_cast<size_t>(il)];
  const uint32_t H = p.n_embd, hd = ly.head_dim, nh = ly.n_head, nkvh = ly.n_head_kv;
  const uint32_t nq = nh * hd, nkv = nkvh * hd, I = ly.ffn_dim;
  const bool full = ly.kind == gguf::AttnKind::kFull;
  const int owner = ly.owns_kv() ? il : ly.kv_source;
  const Region &hidden = R("hidden"), &norm = R("norm"), &branch = R("branch");
  const Region &q = R("q"), &k = R("k"), &v = R("v"), &attn = R("attn");
  const Region &pos = R("positions"), &apos = R("attn_pos");

  // Hand recorded layers to the device while the host records the rest: after layer 0, then
  // every third layer. Recording takes ~47 us per layer, the GPU ~200 us per decode layer on an
  // H200; with parts only before layers 1 and 4 the device ran out of work after layer 3 and
  // waited for the rest of the recording (GARNET_VULKAN_STATS, 26b-a4b: 5.85 -> 5.2 ms from the
  // last submit to the fence with this cadence).
  if (il == 1 || (il > 1 && il % 3 == 0)) GARNET_RETURN_IF_ERROR(rec->Flush());

  // --- attention ---
  // Recorded in dependency stages (projections, then per-head norms, then RoPE) so that the
  // Recorder, which inserts a barrier only before a conflicting command, runs each stage's
  // independent dispatches without barriers between them.
  // Decode with opt.prenorm: q, k and v read attn_norm(h) from the "prenorm" region, written by
  // the previous layer's last residual update (or here, for the first layer on the GPU).
  const bool pre = T == 1 && opt.prenorm;
  const uint64_t hb = uint64_t{H} * 4;
  const BufferRange xn_attn = R("prenorm").sub(0, hb);
  // The quantised copy of xn_attn (slot 0), if the previous layer's update wrote it.
  const BufferRange xq_attn = q8_inputs ? Q8Slot(0) : BufferRange(one);
  const BufferRange* xq_in = pre && attn_prenormed && attn_q8 ? &xq_attn : nullptr;
  if (pre && !attn_prenormed) {
    GARNET_RETURN_IF_ERROR(RmsNorm(H, 1, hidden.r(), &lr.attn_norm, xn_attn));
  }
  attn_prenormed = false;
  attn_q8 = false;
  // Routing beside the attention block's residual update: the router reads the residual stream
  // as it was before the update, kept in the fourth "prenorm" slot (copied beside the
  // projections, no interval of its own), since the update rewrites "hidden" in place. The copy
  // is a dispatch (h * 1), not a transfer command: a transfer's barrier costs more.
  const bool early_route = EarlyRoute(il, lr, T);
  const BufferRange h_before = early_route ? R("prenorm").sub(3 * hb, hb) : BufferRange(one);
  if (early_route) {
    GARNET_RETURN_IF_ERROR(kern->Binary(*rec, vk::Kernels::BinaryOp::kMul, H, 1, 1.0f, hidden.r(),
                                        BufferRange(one), h_before));
  }
  if (pre) {
    GARNET_RETURN_IF_ERROR(Mul(lr.wq, H, nq, T, xn_attn, q.r(), xq_in));
  } else {
    GARNET_RETURN_IF_ERROR(NormMul(lr.wq, lr.attn_norm, H, nq, T, hidden.r(), norm.r(), q.r()));
  }
  // K and V: norms, RoPE and the f16 cache store in one dispatch per run (kv_norm_store), which
  // reads V straight from the K projection on K = V layers.
  const bool fuse_kv = hd <= vk::kKvNormStoreMaxHeadDim;
  if (ly.owns_kv()) {
    // (For T > 1 norm already holds attn_norm(h) from the q projection.)
    if (pre) {
      GARNET_RETURN_IF_ERROR(Mul(lr.wk, H, nkv, T, xn_attn, k.r(), xq_in));
    } else if (T == 1) {
      GARNET_RETURN_IF_ERROR(NormMul(lr.wk, lr.attn_norm, H, nkv, T, hidden.r(), norm.r(), k.r()));
    } else {
      GARNET_RETURN_IF_ERROR(Mul(lr.wk, H, nkv, T, norm.r(), k.r()));
    }
    if (lr.wv.present() && pre) {
      GARNET_RETURN_IF_ERROR(Mul(lr.wv, H, nkv, T, xn_attn, v.r(), xq_in));
    } else if (lr.wv.present() && T == 1) {
      GARNET_RETURN_IF_ERROR(NormMul(lr.wv, lr.attn_norm, H, nkv, T, hidden.r(), norm.r(), v.r()));
    } else if (lr.wv.present()) {
      GARNET_RETURN_IF_ERROR(Mul(lr.wv, H, nkv, T, norm.r(), v.r()));
    } else if (!fuse_kv) {  // K = V: V is the raw K projection
      GARNET_RETURN_IF_ERROR(rec->Copy(*k.buf, k.off, *v.buf, v.off, uint64_t{T} * nkv * 4));
    }
  }
  // Per-head norms with RoPE folded in (q_norm + RoPE, k_norm + RoPE: one dispatch each).
  vk::RopeShape rs;
  rs.head_dim = hd;
  rs.n_rot = lr.n_rot;
  rs.n_heads = nh;
  rs.n_tokens = T;
  const BufferRange qn = lr.q_norm.r();
  GARNET_RETURN_IF_ERROR(
      kern->NormRope(*rec, rs, &qn, p.rms_eps, q.r(), pos.r(), *lr.theta, q.r()));
  if (ly.owns_kv() && !fuse_kv) {
    rs.n_heads = nkvh;
    const BufferRange kn = lr.k_norm.r();
    GARNET_RETURN_IF_ERROR(
        kern->NormRope(*rec, rs, &kn, p.rms_eps, k.r(), pos.r(), *lr.theta, k.r()));
    GARNET_RETURN_IF_ERROR(RmsNorm(hd, T * nkvh, v.r(), nullptr, v.r()));
  }
  if (ly.owns_kv()) {
    const Region& vsrc = lr.wv.present() || !fuse_kv ? v : k;
    uint64_t pos_off = 0;
    for (size_t r = 0; r < run_start.size(); ++r) {
      const uint32_t t0 = static_cast<uint32_t>(run_start[r]), n = run_len[r];
      const VulkanSequence* seq = rows[t0].seq;
      vk::KvStoreShape ks;
      ks.head_dim = hd;
      ks.n_kv_heads = nkvh;
      ks.n_tokens = n;
      ks.ring_size = seq->pool()->cells[static_cast<size_t>(il)];
      ks.format = kv_format;
      const BufferRange kr = k.sub(uint64_t{t0} * nkv * 4, uint64_t{n} * nkv * 4);
      const BufferRange vr = vsrc.sub(uint64_t{t0} * nkv * 4, uint64_t{n} * nkv * 4);
      const BufferRange pr = apos.sub(pos_off, uint64_t{n} * 4);
      if (fuse_kv) {
        GARNET_RETURN_IF_ERROR(vk::KvNormRopeStore(*dev, *rec, ks, lr.n_rot ? lr.n_rot : hd,
                                                   p.rms_eps, kr, vr, pr, *lr.theta, lr.k_norm.r(),
                                                   seq->K(il), seq->V(il)));
      } else {
        GARNET_RETURN_IF_ERROR(vk::KvStore(*dev, *rec, ks, kr, vr, pr, seq->K(il), seq->V(il)));
      }
      pos_off += AlignUp(uint64_t{n} * 4);
    }
  }
  uint64_t pos_off = 0;
  const uint32_t max_keys = plan::AttentionMaxKeys(p, static_cast<uint32_t>(il), kvo);
  const Region& split = R("attn_split");
  for (size_t r = 0; r < run_start.size(); ++r) {
    const uint32_t t0 = static_cast<uint32_t>(run_start[r]), n = run_len[r];
    const VulkanSequence* seq = rows[t0].seq;
    // The newest position this sequence holds after the batch (its items are consecutive).
    int64_t last = 0;
    for (uint32_t t = 0; t < T; ++t) {
      if (rows[t].seq == seq) last = std::max(last, rows[t].pos);
    }
    vk::AttentionShape as;
    as.head_dim = hd;
    as.n_q_heads = nh;
    as.n_kv_heads = nkvh;
    as.n_tokens = n;
    as.ring_size = seq->pool()->cells[static_cast<size_t>(owner)];
    as.kv_first = recording_graph
                      ? vk::kKvFirstFromPositions
                      : static_cast<uint32_t>(std::max<int64_t>(0, last + 1 - as.ring_size));
    as.window = full ? 0 : p.sliding_window;
    as.scale = 1.0f;
    as.kv = kv_format;
    // This run's queries, positions and outputs.
    const BufferRange qr = q.sub(uint64_t{t0} * nq * 4, uint64_t{n} * nq * 4);
    const BufferRange pr = apos.sub(pos_off, uint64_t{n} * 4);
    const BufferRange orr = attn.sub(uint64_t{t0} * nq * 4, uint64_t{n} * nq * 4);
    pos_off += AlignUp(uint64_t{n} * 4);
    if (kv_format == vk::KvFormat::kF16 && opt.attn_coop_min_tokens > 0 &&
        n >= opt.attn_coop_min_tokens && kern->AttentionCoopAvailable(hd)) {
      GARNET_RETURN_IF_ERROR(
          kern->AttentionCoop(*rec, as, qr, seq->K(owner), seq->V(owner), pr, orr));
      continue;
    }
    if (kv_format == vk::KvFormat::kF16 && opt.attn_prefill_min_tokens > 0 &&
        n >= opt.attn_prefill_min_tokens && kern->AttentionPrefillTile(hd).rows > 0) {
      GARNET_RETURN_IF_ERROR(
          kern->AttentionPrefill(*rec, as, qr, seq->K(owner), seq->V(owner), pr, orr));
      continue;
    }
    const uint32_t splits = plan::AttentionSplitCount(n, nh, max_keys);
    as.split_keys = splits > 1 ? (max_keys + splits - 1) / splits : std::max<uint32_t>(max_keys, 1);
    const uint64_t need = vk::AttentionScratchBytes(as);
    if (need > split.size) {
      return Status::Internal("attention", "scratch layout holds " + std::to_string(split.size) +
                                               " bytes, the dispatch needs " +
                                               std::to_string(need));
    }
    const BufferRange scratch = need ? split.r() : BufferRange(one);
    // The splits merged by the attention kernel itself where its counters reach.
    const BufferRange counter(attn_counter);
    const bool merge = uint64_t{n} * nh * 4 <= attn_counter.size();
    GARNET_RETURN_IF_ERROR(kern->AttentionDecode(*rec, as, qr, seq->K(owner), seq->V(owner), pr,
                                                 orr, need ? &scratch : nullptr,
                                                 merge ? &counter : nullptr));
  }
  GARNET_RETURN_IF_ERROR(Mul(lr.wo, nq, H, T, attn.r(), branch.r()));
  // With prenorm the residual update also writes the feed-forward's input, ffn_norm(h), and
  // (MoE) the routed experts', pre_ffw_norm_2(h), after the attention's in "prenorm".
  const BufferRange ffn_w = lr.ffn_norm.r();
  const BufferRange exp_w = p.is_moe() ? lr.pre_ffw_norm_2.r() : ffn_w;
  const BufferRange xn_ffn = R("prenorm").sub(hb, 2 * hb);
  const BufferRange xq_ffn_out = q8_inputs ? Q8Slot(1, p.is_moe() ? 2 : 1) : BufferRange(one);
  const vk::Kernels::NextNorms ffn_next{
      {&ffn_w, &exp_w}, p.is_moe() ? 2u : 1u, &xn_ffn, q8_inputs ? &xq_ffn_out : nullptr};
  if (early_route) {
    // The router first: it and the update below read the projection's output, so they share
    // one barrier interval.
    vk::MatvecShape rs;
    rs.in = H;
    rs.out = p.n_expert;
    const BufferRange rnw = lr.router_norm.r();
    const BufferRange es = lr.expert_scale.present() ? lr.expert_scale.r() : BufferRange(one);
    const vk::Kernels::ResidSpec resid{branch.r(), lr.post_attention_norm.r()};
    GARNET_RETURN_IF_ERROR(kern->MatvecNormRoute(*rec, lr.router.type, rs, p.n_expert_used,
                                                 lr.router.r(), h_before, &rnw, p.rms_eps,
                                                 lr.expert_scale.present() ? &es : nullptr,
                                                 R("router").r(), R("moe_ids").r(),
                                                 R("moe_weights").r(), route_counter, &resid)
                               .WithContext(lr.router.name));
  }
  GARNET_RETURN_IF_ERROR(
      NormAdd(T, branch.r(), lr.post_attention_norm, 1.0f, pre ? &ffn_next : nullptr));
  ffn_q8 = pre && q8_inputs;

  // The layer's output scale rides on its last residual update (fused norm + add kernels).
  const float scale = w.layers[static_cast<size_t>(il)].output_scale;
  const float ffn_scale = p.has_ple() ? 1.0f : scale;
  // With prenorm the layer's last residual update also writes the next layer's attention input.
  const bool next_pre = pre && il + 1 < static_cast<int>(p.n_layer);
  const BufferRange next_w =
      next_pre ? layers[static_cast<size_t>(il) + 1].attn_norm.r() : BufferRange(one);
  const vk::Kernels::NextNorms attn_next{
      {&next_w, nullptr}, 1, &xn_attn, q8_inputs ? &xq_attn : nullptr};
  const vk::Kernels::NextNorms* end_next = next_pre ? &attn_next : nullptr;
  // --- feed-forward ---
  if (p.is_moe()) {
    GARNET_RETURN_IF_ERROR(
        RecordMoe(il, lr, I, T, ffn_scale, p.has_ple() ? nullptr : end_next, early_route));
  } else {
    const Region &gate = R("ffn_gate"), &up = R("ffn_up");
    const BufferRange xq_ffn = q8_inputs ? Q8Slot(1) : BufferRange(one);
    GARNET_RETURN_IF_ERROR(DenseMlp(lr, lr.ffn_norm, I, T, hidden.r(), norm.r(), gate.r(), up.r(),
                                    branch.r(), pre ? &xn_ffn : nullptr,
                                    pre && ffn_q8 ? &xq_ffn : nullptr));
    GARNET_RETURN_IF_ERROR(
        NormAdd(T, branch.r(), lr.post_ffw_norm, ffn_scale, p.has_ple() ? nullptr : end_next));
  }

  // --- per-layer embedding injection ---
  if (p.has_ple()) {
    const uint32_t P = p.n_embd_per_layer, LP = p.n_layer * P;
    const Region &pg = R("ple_gate"), &ple = R("ple");
    GARNET_RETURN_IF_ERROR(Mul(lr.ple_gate, H, P, T, hidden.r(), pg.r()));
    vk::GluShape g;
    g.n = P;
    g.rows = T;
    g.g_stride = g.y_stride = P;
    g.u_stride = LP;
    g.u_off = static_cast<uint32_t>(il) * P;
    GARNET_RETURN_IF_ERROR(vk::GluStrided(*dev, *rec, g, pg.r(), ple.r(), pg.r()));
    GARNET_RETURN_IF_ERROR(Mul(lr.ple_proj, P, H, T, pg.r(), branch.r()));
    GARNET_RETURN_IF_ERROR(NormAdd(T, branch.r(), lr.ple_post_norm, scale, end_next));
  }
  attn_prenormed = end_next != nullptr;
  attn_q8 = attn_prenormed && q8_inputs;
  ffn_q8 = false;
  return Status::OK();
}

Status VulkanBackend::Impl::RecordLayers(const Row* rows, uint32_t T) {
  const uint32_t H = p.n_embd;
  float emb_scale = std::sqrt(static_cast<float>(H));
  if (opt.embed_scale == EmbedScale::kBf16) emb_scale = RoundToBf16(emb_scale);
  const Region& hidden = R("hidden");
  if (n_host > 0) {  // the host layers' output arrives by upload
    const Region& in = R("hidden_in");
    GARNET_RETURN_IF_ERROR(
        rec->Copy(*in.buf, in.off, *hidden.buf, hidden.off, uint64_t{T} * H * 4));
    if (p.has_ple()) {
      const Region &src = R("ple_rows"), &dst = R("ple");
      GARNET_RETURN_IF_ERROR(rec->Copy(*src.buf, src.off, *dst.buf, dst.off,
                                       uint64_t{T} * p.n_layer * p.n_embd_per_layer * 4));
    }
  } else {
    GARNET_RETURN_IF_ERROR(kern->GetRows(*rec, tok_embd.type, H, p.n_vocab, T, 0, emb_scale,
                                         tok_embd.r(), R("tokens").r(), hidden.r()));
  }
  if (p.has_ple() && n_host == 0) {
    const uint32_t P = p.n_embd_per_layer, LP = p.n_layer * P;
    const Region& ple = R("ple");
    GARNET_RETURN_IF_ERROR(Mul(ple_model_proj, H, LP, T, hidden.r(), ple.r()));
    GARNET_RETURN_IF_ERROR(kern->Binary(*rec, vk::Kernels::BinaryOp::kMul, T * LP, 1,
                                        1.0f / std::sqrt(static_cast<float>(H)), ple.r(), one,
                                        ple.r()));
    GARNET_RETURN_IF_ERROR(RmsNorm(P, T * p.n_layer, ple.r(), &ple_proj_norm, ple.r()));
    GARNET_RETURN_IF_ERROR(kern->Binary(*rec, vk::Kernels::BinaryOp::kAdd, T * LP, T * LP,
                                        1.0f / std::sqrt(2.0f), ple.r(), R("ple_rows").r(),
                                        ple.r()));
  }
  // Runs: maximal stretches of consecutive rows of one sequence (one attention dispatch each).
  std::vector<int64_t> run_start;
  std::vector<uint32_t> run_len;
  for (uint32_t t = 0; t < T; ++t) {
    if (t > 0 && rows[t].seq == rows[t - 1].seq) {
      ++run_len.back();
    } else {
      run_start.push_back(t);
      run_len.push_back(1);
    }
  }
  // Host donors' new K/V into their GPU copies (the GPU rounds to f16 exactly as the CPU did).
  for (uint32_t il = 0; il < n_host; ++il) {
    if (!mirror[il]) continue;
    const gguf::Gemma4Layer& ly = p.layers[il];
    const uint32_t nkv = ly.n_head_kv * ly.head_dim;
    const Region &in = R("kv_in"), &apos = R("attn_pos");
    const uint64_t k_off = kv_in_off[il];
    const uint64_t v_off = k_off + AlignUp(uint64_t{kvo.n_ubatch} * nkv * 4);
    uint64_t pos_off = 0;
    for (size_t r = 0; r < run_start.size(); ++r) {
      const uint32_t t0 = static_cast<uint32_t>(run_start[r]), n = run_len[r];
      const VulkanSequence* seq = rows[t0].seq;
      vk::KvStoreShape ks;
      ks.head_dim = ly.head_dim;
      ks.n_kv_heads = ly.n_head_kv;
      ks.n_tokens = n;
      ks.ring_size = seq->pool()->cells[il];
      ks.format = kv_format;
      const uint64_t at = uint64_t{t0} * nkv * 4, len = uint64_t{n} * nkv * 4;
      GARNET_RETURN_IF_ERROR(vk::KvStore(*dev, *rec, ks, in.sub(k_off + at, len),
                                         in.sub(v_off + at, len),
                                         apos.sub(pos_off, uint64_t{n} * 4),
                                         seq->K(static_cast<int>(il)), seq->V(static_cast<int>(il)))
                                 .WithContext("KV copy of host layer " + std::to_string(il)));
      pos_off += AlignUp(uint64_t{n} * 4);
    }
  }
  attn_prenormed = false;
  for (int il = static_cast<int>(n_host); il < static_cast<int>(p.n_layer); ++il) {
    GARNET_RETURN_IF_ERROR(
        RecordLayer(il, rows, T, run_start, run_len).WithContext("layer " + std::to_string(il)));
  }
  return Status::OK();
}

Status VulkanBackend::Impl::RecordHead(uint32_t T, uint32_t n_rows, HeadOut mode) {
  const uint32_t H = p.n_embd, V = p.n_vocab;
  const Region &norm = R("norm"), &lg = R("logits"), &out = R("logits_out");
  GARNET_RETURN_IF_ERROR(kern->GetRows(*rec, GgmlType::kF32, H, T, n_rows, 0, 1.0f, R("hidden").r(),
                                       R("logit_rows").r(), norm.r()));
  GARNET_RETURN_IF_ERROR(RmsNorm(H, n_rows, norm.r(), &output_norm, norm.r()));
  GARNET_RETURN_IF_ERROR(Mul(tok_embd, H, V, n_rows, norm.r(), lg.r()));
  const uint64_t bytes = uint64_t{n_rows} * V * 4;
  if (mode != HeadOut::kLogits) {
    // Picks and candidates over the values the host would see: soft-capped in place first (the
    // cap can round distinct logits to equal values, and ties go to the lower id).
    if (p.final_logit_softcap > 0) {
      GARNET_RETURN_IF_ERROR(kern->Softcap(*rec, n_rows * V, p.final_logit_softcap,
                                           lg.sub(0, bytes), lg.sub(0, bytes)));
    }
    if (mode == HeadOut::kTop) {
      return kern->TopChunks(*rec, V, n_rows, top_keep, lg.sub(0, bytes), R("top_chunks").r());
    }
    return kern->ArgmaxRows(*rec, V, n_rows, lg.sub(0, bytes), R("pick_part").r(), R("picks").r());
  }
  if (p.final_logit_softcap > 0) {
    return kern->Softcap(*rec, n_rows * V, p.final_logit_softcap, lg.sub(0, bytes),
                         out.sub(0, bytes));
  }
  return rec->Copy(*lg.buf, lg.off, *out.buf, out.off, bytes);
}

Status VulkanBackend::Impl::Run(const int32_t* tokens, const Row* rows, uint32_t T,
                                const std::vector<uint32_t>& logit_rows_wanted, const RunOut& ro) {
  const HeadOut head = ro.top != nullptr     ? HeadOut::kTop
                       : ro.picks != nullptr ? HeadOut::kPicks
                                             : HeadOut::kLogits;
  float* logits = ro.logits;
  const bool want = ro.logits != nullptr || ro.picks != nullptr || ro.top != nullptr;
  top_keep = head == HeadOut::kTop ? ro.k : 0;
  const auto t_inputs = std::chrono::steady_clock::now();
  for (uint32_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= static_cast<int32_t>(p.n_vocab)) {
      return Status::InvalidArgument("forward", "token id " + std::to_string(tokens[t]) +
                                                    " outside the vocabulary of " +
                                                    std::to_string(p.n_vocab));
    }
  }
  // Inputs: ids, positions, per-run positions at aligned offsets, PLE rows.
  uint8_t* up = scratch_up.mapped();
  auto ints = [&](std::string_view name) { return reinterpret_cast<int32_t*>(up + R(name).off); };
  int32_t* tok = ints("tokens");
  int32_t* pos = ints("positions");
  for (uint32_t t = 0; t < T; ++t) {
    tok[t] = tokens[t];
    pos[t] = static_cast<int32_t>(rows[t].pos);
  }
  {
    uint8_t* apos = up + R("attn_pos").off;
    uint64_t off = 0;
    for (uint32_t t = 0; t < T;) {
      uint32_t n = 1;
      while (t + n < T && rows[t + n].seq == rows[t].seq) ++n;
      auto* dst = reinterpret_cast<int32_t*>(apos + off);
      for (uint32_t i = 0; i < n; ++i) dst[i] = static_cast<int32_t>(rows[t + i].pos);
      off += AlignUp(uint64_t{n} * 4);
      t += n;
    }
  }
  if (n_host > 0) {
    // The host layers, then their output (and the PLE inputs) into the upload buffer.
    std::vector<CpuLayers::Row> crows(T);
    for (uint32_t t = 0; t < T; ++t) crows[t] = {rows[t].seq->host_kv(), rows[t].pos};
    cpu->Embed(tokens, T);
    for (uint32_t il = 0; il < n_host; ++il) {
      cpu->RunLayer(static_cast<int>(il), crows.data(), T);
      if (!mirror[il]) continue;
      const uint64_t row = plan::KvRowBytes(p, il, plan::KvType::kF32);
      uint8_t* dst = up + R("kv_in").off + kv_in_off[il];
      std::memcpy(dst, cpu->k(), uint64_t{T} * row);
      std::memcpy(dst + AlignUp(uint64_t{kvo.n_ubatch} * row), cpu->v(), uint64_t{T} * row);
    }
    std::memcpy(up + R("hidden_in").off, cpu->x(), uint64_t{T} * p.n_embd * 4);
    if (p.has_ple()) {
      std::memcpy(up + R("ple_rows").off, cpu->ple(),
                  uint64_t{T} * p.n_layer * p.n_embd_per_layer * 4);
    }
  } else if (p.has_ple()) {
    const uint64_t LP = uint64_t{p.n_layer} * p.n_embd_per_layer;
    const float tok_scale = std::sqrt(static_cast<float>(p.n_embd_per_layer));
    std::vector<float> row(LP);
    auto* dst = reinterpret_cast<float*>(up + R("ple_rows").off);
    for (uint32_t t = 0; t < T; ++t) {
      cpu::DecodeRow(w.ple_tok, tokens[t], row.data());
      for (float& x : row) x *= tok_scale;
      std::memcpy(dst + t * LP, row.data(), LP * 4);
    }
  }
  const uint32_t n_logits = static_cast<uint32_t>(logit_rows_wanted.size());
  const uint32_t first = std::min(n_logits, logit_rows);
  int32_t* lrows = ints("logit_rows");
  for (uint32_t i = 0; i < first; ++i) lrows[i] = static_cast<int32_t>(logit_rows_wanted[i]);
  GARNET_RETURN_IF_ERROR(scratch_up.FlushHostWrites(0, scratch_up.size()));

  // The decode graph: one token of one sequence, its logits, everything on the GPU, no kernel
  // whose parameters would change from token to token (only AttentionDecode derives kv_first).
  const bool use_graph = opt.decode_graph && T == 1 && n_host == 0 && !any_host_experts &&
                         n_logits == 1 && want && !rec->profiling() &&
                         opt.attn_prefill_min_tokens != 1 && opt.attn_coop_min_tokens != 1;
  const auto t_record = std::chrono::steady_clock::now();
  auto t_submit = t_record;
  auto us = [](auto a, auto b) { return std::chrono::duration<double, std::micro>(b - a).count(); };
  vk::Recorder::Stats rs;
  const char* mode = "";
  if (use_graph && graph_seq == rows[0].seq->id() && graph_out == head && graph_keep == top_keep &&
      graph->kept()) {
    mode = " replay";
    rs = graph->stats();
    Status s = graph->Replay();
    if (!s.ok()) {
      graph_seq = 0;
      return s;
    }
  } else if (use_graph) {
    if (!graph) {
      GARNET_ASSIGN_OR_RETURN(graph, vk::Recorder::Create(*dev));
      graph->set_keep(true);
      // A decoded token's pass is a few ms and the next one follows at once: poll its fence
      // instead of sleeping on it (a blocked wait returned late; docs/PERF.md round 7). Not on
      // a CPU device (lavapipe): there the poll would take a core from the device's own threads.
      if (dev->info().type != vk::DeviceType::kCpu) graph->set_spin_wait(kDecodeSpinWaitNs);
    }
    graph->Discard();
    graph_seq = 0;
    mode = " recorded for replay";
    std::swap(rec, graph);
    recording_graph = true;
    Status s = RecordLayers(rows, T);
    if (s.ok()) s = RecordHead(T, 1, head);
    recording_graph = false;
    std::swap(rec, graph);
    if (!s.ok()) {
      graph->Discard();
      return s;
    }
    rs = graph->stats();
    t_submit = std::chrono::steady_clock::now();
    GARNET_RETURN_IF_ERROR(graph->SubmitAndWait());
    graph_seq = rows[0].seq->id();
    graph_out = head;
    graph_keep = top_keep;
  } else {
    if (rec->profiling()) rec->set_profile_tag(T == 1 ? "T=1" : "T=" + std::to_string(T));
    Status s = RecordLayers(rows, T);
    if (s.ok() && first > 0 && want) s = RecordHead(T, first, head);
    if (!s.ok()) {
      (void)rec->SubmitAndWait();  // drops what was recorded
      return s;
    }
    rs = rec->stats();
    t_submit = std::chrono::steady_clock::now();
    GARNET_RETURN_IF_ERROR(rec->SubmitAndWait());
  }
  const auto t_done = std::chrono::steady_clock::now();
  // GARNET_VULKAN_STATS: host times around the pass too (inputs before it, logits after it).
  auto print = [&] {
    if (!print_stats) return;
    std::fprintf(stderr,
                 "vulkan pass: T=%u dispatches=%u barriers=%u transfers=%u record=%.0fus "
                 "submit+wait=%.0fus inputs=%.0fus logits=%.0fus%s\n",
                 T, rs.dispatches, rs.barriers, rs.transfers, us(t_record, t_submit),
                 us(t_submit, t_done), us(t_inputs, t_record),
                 us(t_done, std::chrono::steady_clock::now()), mode);
  };
  if (!want) {
    print();
    return Status::OK();
  }
  const uint64_t V = p.n_vocab;
  const uint8_t* rb = scratch_rb.mapped();
  const auto* out = reinterpret_cast<const float*>(rb + R("logits_out").off);
  for (uint32_t done = 0; done < n_logits;) {
    const uint32_t n = std::min(logit_rows, n_logits - done);
    if (done > 0) {  // further rows: the head alone, in another small submission
      for (uint32_t i = 0; i < n; ++i) {
        lrows[i] = static_cast<int32_t>(logit_rows_wanted[done + i]);
      }
      GARNET_RETURN_IF_ERROR(scratch_up.FlushHostWrites(0, scratch_up.size()));
      Status hs = RecordHead(T, n, head);
      if (!hs.ok()) {
        (void)rec->SubmitAndWait();
        return hs;
      }
      GARNET_RETURN_IF_ERROR(rec->SubmitAndWait());
    }
    GARNET_RETURN_IF_ERROR(scratch_rb.InvalidateForHostReads(0, scratch_rb.size()));
    if (head == HeadOut::kPicks) {
      std::memcpy(ro.picks + done, rb + R("picks").off, uint64_t{n} * 4);
    } else if (head == HeadOut::kTop) {
      MergeTopChunks(reinterpret_cast<const uint32_t*>(rb + R("top_chunks").off), n,
                     vk::Kernels::TopChunkCount(p.n_vocab), ro.k, ro.top + uint64_t{done} * ro.k);
    } else {
      std::memcpy(logits + uint64_t{done} * V, out, uint64_t{n} * V * 4);
    }
    done += n;
  }
  print();
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------

Status VulkanBackend::Forward(BackendSequence* bseq, const int32_t* tokens, int64_t T, int64_t pos0,
                              bool all_logits, float* logits) {
  if (bseq == nullptr || tokens == nullptr) {
    return Status::InvalidArgument("forward", "no sequence or tokens");
  }
  auto* seq = static_cast<VulkanSequence*>(bseq);
  const int64_t ub = impl_->opt.n_ubatch, ctx = impl_->opt.n_ctx;
  if (T <= 0 || T > ub) {
    return Status::InvalidArgument(
        "forward", "batch of " + std::to_string(T) + " tokens (ubatch " + std::to_string(ub) + ")");
  }
  if (pos0 < 0 || pos0 + T > ctx) {
    return Status::OutOfRange("forward", "positions " + std::to_string(pos0) + ".." +
                                             std::to_string(pos0 + T - 1) +
                                             " exceed the context of " + std::to_string(ctx));
  }
  std::vector<Impl::Row> rows(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) rows[static_cast<size_t>(t)] = {seq, pos0 + t};
  std::vector<uint32_t> out_rows;
  if (logits != nullptr) {
    for (int64_t t = all_logits ? 0 : T - 1; t < T; ++t) out_rows.push_back(uint32_t(t));
  }
  return impl_->Run(tokens, rows.data(), static_cast<uint32_t>(T), out_rows, {.logits = logits});
}

Status VulkanBackend::Impl::RunBatch(std::span<const BatchItem> items, const RunOut& out) {
  const int64_t T = static_cast<int64_t>(items.size());
  const int64_t ub = opt.n_ubatch, ctx = opt.n_ctx;
  if (T <= 0 || T > ub) {
    return Status::InvalidArgument(
        "forward batch",
        "batch of " + std::to_string(T) + " tokens (ubatch " + std::to_string(ub) + ")");
  }
  std::vector<Row> rows(static_cast<size_t>(T));
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  std::vector<uint32_t> out_rows;
  for (int64_t t = 0; t < T; ++t) {
    const BatchItem& it = items[static_cast<size_t>(t)];
    if (it.seq == nullptr) return Status::InvalidArgument("forward batch", "item without sequence");
    auto* seq = static_cast<VulkanSequence*>(it.seq);
    if (it.pos < 0 || it.pos >= ctx) {
      return Status::OutOfRange(
          "forward batch",
          "position " + std::to_string(it.pos) + " outside the context of " + std::to_string(ctx));
    }
    for (int64_t u = t - 1; u >= 0; --u) {
      if (rows[static_cast<size_t>(u)].seq == seq) {
        if (rows[static_cast<size_t>(u)].pos != it.pos - 1) {
          return Status::InvalidArgument("forward batch",
                                         "a sequence's items must have consecutive positions");
        }
        break;
      }
    }
    rows[static_cast<size_t>(t)] = {seq, it.pos};
    tokens[static_cast<size_t>(t)] = it.token;
    if (it.logits) out_rows.push_back(static_cast<uint32_t>(t));
  }
  if (out.logits == nullptr && out.picks == nullptr && out.top == nullptr) out_rows.clear();
  return Run(tokens.data(), rows.data(), static_cast<uint32_t>(T), out_rows, out);
}

Status VulkanBackend::ForwardBatch(std::span<const BatchItem> items, float* logits) {
  return impl_->RunBatch(items, {.logits = logits});
}

Status VulkanBackend::ForwardBatchPicks(std::span<const BatchItem> items, int32_t* picks) {
  return impl_->RunBatch(items, {.picks = picks});
}

Status VulkanBackend::ForwardBatchTop(std::span<const BatchItem> items, uint32_t k,
                                      std::pair<float, int32_t>* top) {
  if (k == 0 || k > kMaxTopCandidates || k > vk::Kernels::kTopChunkBest) {
    return Status::InvalidArgument("forward batch", "top " + std::to_string(k) + " candidates");
  }
  return impl_->RunBatch(items, {.top = top, .k = k});
}

}  // namespace garnet::model
