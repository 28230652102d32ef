// The fit planner: from a model's header alone, decide where every byte goes before anything
// loads, and say in words whether the model fits.
//
// Input: the model's shape (Gemma4Params + classified weight tensors), the context, micro-batch,
// parallel sequences and KV type (KvOptions), the memory inventory (GPUs and host RAM, measured or
// overridden for planning another machine) and a policy. Output: a Plan — bytes per device split
// into weights / KV / scratch / overhead, the device of every layer, which MoE layers keep their
// experts in host memory, the largest context the placement allows, and a verdict with a reason.
//
// Order of offload under the auto policy: first MoE expert sets (lowest layers first; each expert
// set is equally large, and experts on the host cost only the routed tokens' FLOPs on the CPU),
// then whole layers (lowest first, as llama.cpp's -ngl keeps the last layers on the GPU). The PLE
// table always stays on the host: only L*P values per token are gathered from it.
//
// Pure computation: thread-safe, no I/O. The inventory types live in inventory.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/base/status.h"
#include "engine/plan/inventory.h"
#include "engine/plan/memory.h"

namespace garnet::plan {

enum class PolicyMode : uint8_t {
  kAuto,           // everything on the GPUs if it fits, else experts to host, else layers to host
  kCpuOnly,        // every layer on the host
  kExpertsOnHost,  // all routed experts on the host, the rest as kAuto
  kGpuLayers,      // exactly the last `gpu_layers` layers on the GPUs (llama.cpp's -ngl)
};

struct Policy {
  PolicyMode mode = PolicyMode::kAuto;
  uint32_t gpu_layers = 0;              // for kGpuLayers
  uint64_t gpu_reserve = 512ull << 20;  // kept free on every GPU
  uint64_t host_reserve = 1ull << 30;   // kept free in host RAM
};

// Fixed cost of using a GPU that no buffer accounts for: driver context, command buffers,
// descriptor and pipeline objects. An estimate until measured on each driver; reported separately
// from allocated bytes, so predicted == allocated holds for weights, KV and scratch exactly.
inline constexpr uint64_t kGpuContextOverhead = 256ull << 20;

struct ModelShape {
  gguf::Gemma4Params params;
  std::vector<WeightTensor> tensors;
};
// Reads the shape from an opened file (header only).
Result<ModelShape> ShapeFromModel(const gguf::Model& model);

struct MemoryUse {
  uint64_t weights = 0;
  uint64_t kv = 0;
  uint64_t scratch = 0;
  uint64_t overhead = 0;
  uint64_t total() const { return weights + kv + scratch + overhead; }
};

struct DeviceUse {
  std::string name;
  bool is_host = false;
  uint64_t budget = 0;  // free bytes minus the policy's reserve
  MemoryUse use;
  bool fits() const { return use.total() <= budget; }
};

enum class Verdict : uint8_t { kFits, kFitsExpertOffload, kFitsLayerOffload, kDoesNotFit };
std::string_view VerdictName(Verdict v);

struct Plan {
  KvOptions kv;
  std::vector<DeviceUse> devices;     // the GPUs in inventory order, then the host (always last)
  std::vector<int> layer_device;      // per layer: index into devices
  std::vector<bool> experts_on_host;  // per layer (all false for dense models)
  int output_device = 0;              // where output_norm and the (tied) output head live
  uint32_t max_ctx = 0;               // largest context per sequence this placement fits
  // Largest context per sequence for which the policy finds a placement that fits (it may move
  // more experts or layers to the host than this plan does); 0 when none fits.
  uint32_t policy_max_ctx = 0;
  Verdict verdict = Verdict::kDoesNotFit;
  std::string reason;  // one sentence, e.g. "... 26 of 30 expert sets to host ..."

  int host_index() const { return static_cast<int>(devices.size()) - 1; }
  uint32_t layers_on_host() const;
  uint32_t expert_sets_on_host() const;
};

// Plans `shape` under `kv` options and `policy` for `inventory`. InvalidArgument for impossible
// requests (zero context, context above the model's maximum, gpu_layers > n_layer).
Result<Plan> MakePlan(const ModelShape& shape, const KvOptions& kv, const Inventory& inventory,
                      const Policy& policy);

// The prefill micro-batch for a GPU plan: kLargeUbatch (capped at the context) when `policy`
// places everything on the GPUs with it (verdict kFits) and it costs at most 1/20 of the GPUs'
// budget more than `kv.n_ubatch` (bigger scratch, and sliding-window rings of W + ubatch cells);
// otherwise kv.n_ubatch. A larger ubatch makes long prompts faster on a GPU (fewer passes, larger
// matmuls: 26b-a4b on an H200, 2048-token prompt, 6528 -> 9150 tok/s, docs/PERF.md round 6) and
// changes nothing for decode. Without GPUs, or with a policy that keeps layers or experts on the
// host at the large ubatch, it is kv.n_ubatch. Errors: MakePlan's.
inline constexpr uint32_t kLargeUbatch = 2048;
Result<uint32_t> ChooseUbatch(const ModelShape& shape, const KvOptions& kv,
                              const Inventory& inventory, const Policy& policy);

// Human-readable report: one row per device (weights, KV, scratch, overhead, total, budget),
// placement summary, max context and the verdict's reason.
std::string FormatPlan(const Plan& plan);

}  // namespace garnet::plan
