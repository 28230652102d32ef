#include "engine/plan/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace garnet::plan {
namespace {

struct Placement {
  std::vector<int> layer_device;
  std::vector<bool> experts_on_host;
  int output_device = 0;
};

uint64_t SaturatingSub(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

// Bytes of a group of tensors on a GPU (each buffer rounded up to kBufferAlign) and on the host
// (used in place from the mapped file: exact sizes).
struct Bytes {
  uint64_t gpu = 0;
  uint64_t host = 0;
  void Add(uint64_t b) {
    gpu += AlignUp(b);
    host += b;
  }
  uint64_t On(bool is_host) const { return is_host ? host : gpu; }
};

// The weights grouped by what decides their device, summed once per plan so that costing a
// placement is O(layers), not O(tensors).
struct WeightSums {
  Bytes output;  // token_embd (input gather and tied head), output_norm, other globals
  Bytes first;   // per_layer_model_proj / per_layer_proj_norm: with the first layer
  Bytes every;   // rope_freqs: on every device that runs layers
  Bytes ple;     // per_layer_token_embd: always on the host
  std::vector<Bytes> layer;
  std::vector<Bytes> experts;

  explicit WeightSums(const ModelShape& shape)
      : layer(shape.params.n_layer), experts(shape.params.n_layer) {
    for (const auto& t : shape.tensors) {
      switch (t.cls) {
        case TensorClass::kTokenEmbd:
          output.Add(t.bytes);
          break;
        case TensorClass::kPleTable:
          ple.Add(t.bytes);
          break;
        case TensorClass::kGlobal:
          if (t.name.rfind("per_layer_", 0) == 0) {
            first.Add(t.bytes);
          } else if (t.name == "rope_freqs.weight") {
            every.Add(t.bytes);
          } else {
            output.Add(t.bytes);
          }
          break;
        case TensorClass::kLayer:
          if (t.layer >= 0 && static_cast<size_t>(t.layer) < layer.size())
            layer[t.layer].Add(t.bytes);
          break;
        case TensorClass::kExperts:
          if (t.layer >= 0 && static_cast<size_t>(t.layer) < experts.size()) {
            experts[t.layer].Add(t.bytes);
          }
          break;
        case TensorClass::kUnused:
          break;
      }
    }
  }
};

// Scratch sizes of one KvOptions for every kind of placement, computed once per KvOptions by the
// caller (costing a placement then stays O(layers)).
struct ScratchSizes {
  uint64_t gpu[2][2] = {};  // [from_host][host_experts]: ScratchBytes
  uint64_t host[2] = {};    // [runs layers]: HostScratchBytes
  ScratchSizes(const gguf::Gemma4Params& p, const KvOptions& kv) {
    for (int a = 0; a < 2; ++a) {
      for (int b = 0; b < 2; ++b) gpu[a][b] = ScratchBytes(p, kv, {a == 1, b == 1});
      host[a] = HostScratchBytes(p, kv, a == 1);
    }
  }
};

// Bytes on every device for a placement.
std::vector<DeviceUse> Account(const ModelShape& shape, const WeightSums& w, const KvOptions& kv,
                               const ScratchSizes& scratch, const Inventory& inv,
                               const Policy& policy, const Placement& pl) {
  const int n_dev = static_cast<int>(inv.gpus.size()) + 1;
  const int host = n_dev - 1;
  std::vector<DeviceUse> d(n_dev);
  for (size_t g = 0; g < inv.gpus.size(); ++g) {
    d[g].name = inv.gpus[g].name;
    d[g].budget = SaturatingSub(inv.gpus[g].free_bytes, policy.gpu_reserve);
  }
  d[host].name = inv.host.name.empty() ? "host" : inv.host.name;
  d[host].is_host = true;
  d[host].budget = SaturatingSub(inv.host.free_bytes, policy.host_reserve);

  auto add = [&](int dev, const Bytes& b) { d[dev].use.weights += b.On(dev == host); };
  std::vector<bool> has_layers(n_dev, false);
  for (int dev : pl.layer_device) has_layers[dev] = true;
  has_layers[pl.output_device] = true;
  const int first_device = pl.layer_device.empty() ? host : pl.layer_device[0];

  add(pl.output_device, w.output);
  add(host, w.ple);
  add(first_device, w.first);
  for (int dev = 0; dev < n_dev; ++dev) {
    if (has_layers[dev]) add(dev, w.every);
  }
  for (uint32_t il = 0; il < shape.params.n_layer; ++il) {
    const int dev = pl.layer_device[il];
    add(dev, w.layer[il]);
    add(pl.experts_on_host[il] ? host : dev, w.experts[il]);
    d[dev].use.kv +=
        dev == host ? HostKvLayerBytes(shape.params, il, kv) : KvLayerBytes(shape.params, il, kv);
  }
  // A GPU layer that shares the KV of a layer on another device reads a copy of that cache on
  // its own GPU (the donor's device writes both), once per donor and GPU.
  std::vector<bool> mirrored(static_cast<size_t>(n_dev) * shape.params.n_layer, false);
  for (uint32_t il = 0; il < shape.params.n_layer; ++il) {
    const int dev = pl.layer_device[il];
    const int32_t src = shape.params.layers[il].kv_source;
    if (dev == host || src < 0 || pl.layer_device[static_cast<size_t>(src)] == dev) continue;
    const size_t key = static_cast<size_t>(dev) * shape.params.n_layer + static_cast<size_t>(src);
    if (mirrored[key]) continue;
    mirrored[key] = true;
    d[dev].use.kv += KvLayerBytes(shape.params, static_cast<uint32_t>(src), kv);
  }
  // A GPU's scratch gains upload/readback buffers where activations cross: the GPU that takes
  // over from host layers (from_host), and any GPU with layers whose experts run on the host.
  std::vector<bool> from_host(n_dev, false), host_experts(n_dev, false);
  bool host_runs_experts = false;
  for (uint32_t il = 0; il < shape.params.n_layer; ++il) {
    const int dev = pl.layer_device[il];
    if (dev != host && il > 0 && pl.layer_device[il - 1] == host) from_host[dev] = true;
    if (pl.experts_on_host[il] && dev != host) {
      host_experts[dev] = true;
      host_runs_experts = true;
    }
  }
  for (int dev = 0; dev < n_dev; ++dev) {
    if (dev == host) {
      if (has_layers[dev] || host_runs_experts) d[dev].use.scratch = scratch.host[has_layers[dev]];
      continue;
    }
    if (!has_layers[dev]) continue;
    d[dev].use.scratch = scratch.gpu[from_host[dev]][host_experts[dev] && shape.params.is_moe()];
    d[dev].use.overhead = kGpuContextOverhead;
  }
  return d;
}

bool GpusFit(const std::vector<DeviceUse>& d) {
  for (const auto& u : d) {
    if (!u.is_host && !u.fits()) return false;
  }
  return true;
}

bool AllFit(const std::vector<DeviceUse>& d) {
  return std::all_of(d.begin(), d.end(), [](const DeviceUse& u) { return u.fits(); });
}

// The last `n_gpu` layers go to the GPUs in contiguous ranges proportional to their budgets; the
// rest to the host. The output head follows the last layer.
void SplitLayers(uint32_t n_layer, uint32_t n_gpu, const Inventory& inv, const Policy& policy,
                 Placement* pl) {
  const int host = static_cast<int>(inv.gpus.size());
  pl->layer_device.assign(n_layer, host);
  if (n_gpu > 0 && !inv.gpus.empty()) {
    std::vector<uint64_t> budget;
    uint64_t sum = 0;
    for (const auto& g : inv.gpus) {
      budget.push_back(SaturatingSub(g.free_bytes, policy.gpu_reserve));
      sum += budget.back();
    }
    uint32_t start = n_layer - n_gpu;
    uint64_t acc = 0;
    for (size_t g = 0; g < inv.gpus.size(); ++g) {
      acc += budget[g];
      const uint32_t end =
          g + 1 == inv.gpus.size()
              ? n_layer
              : n_layer - n_gpu +
                    static_cast<uint32_t>(sum ? (static_cast<long double>(acc) / sum) * n_gpu
                                              : static_cast<long double>(g + 1) * n_gpu /
                                                    inv.gpus.size());
      for (uint32_t il = start; il < end && il < n_layer; ++il) pl->layer_device[il] = int(g);
      start = std::max(start, end);
    }
  }
  pl->output_device = n_layer ? pl->layer_device[n_layer - 1] : host;
}

uint32_t MaxContext(const ModelShape& shape, const WeightSums& w, KvOptions kv,
                    const Inventory& inv, const Policy& policy, const Placement& pl) {
  uint32_t lo = 0, hi = shape.params.context_length;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo + 1) / 2;
    kv.n_ctx = mid;
    if (AllFit(Account(shape, w, kv, ScratchSizes(shape.params, kv), inv, policy, pl))) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

uint64_t GpuNeed(const std::vector<DeviceUse>& d) {
  uint64_t s = 0;
  for (const auto& u : d) {
    if (!u.is_host) s += u.use.total();
  }
  return s;
}
uint64_t GpuBudget(const std::vector<DeviceUse>& d) {
  uint64_t s = 0;
  for (const auto& u : d) {
    if (!u.is_host) s += u.budget;
  }
  return s;
}

// The placement a policy chooses for one KvOptions, with its costs.
struct Outcome {
  Placement pl;
  std::vector<DeviceUse> use;
  bool cpu_only = false;
  bool moved_experts = false;  // the auto policy moved expert sets to make the GPUs fit
  bool moved_layers = false;   // ... or whole layers
  uint64_t need_all_gpu = 0;   // GPU bytes of the policy's starting placement
  uint64_t gpu_budget = 0;
};

Outcome Place(const ModelShape& shape, const WeightSums& w, const KvOptions& kv,
              const Inventory& inv, const Policy& policy) {
  const auto& p = shape.params;
  const ScratchSizes scratch(p, kv);
  const int host = static_cast<int>(inv.gpus.size());
  Outcome o;
  o.cpu_only = inv.gpus.empty() || policy.mode == PolicyMode::kCpuOnly;
  Placement& pl = o.pl;
  pl.experts_on_host.assign(p.n_layer, false);
  uint32_t n_gpu = o.cpu_only ? 0 : p.n_layer;
  if (policy.mode == PolicyMode::kGpuLayers) n_gpu = policy.gpu_layers;
  SplitLayers(p.n_layer, n_gpu, inv, policy, &pl);
  if (p.is_moe() && (o.cpu_only || policy.mode == PolicyMode::kExpertsOnHost)) {
    pl.experts_on_host.assign(p.n_layer, true);
  }
  o.use = Account(shape, w, kv, scratch, inv, policy, pl);
  o.need_all_gpu = GpuNeed(o.use);
  o.gpu_budget = GpuBudget(o.use);
  if (o.cpu_only ||
      (policy.mode != PolicyMode::kAuto && policy.mode != PolicyMode::kExpertsOnHost)) {
    return o;
  }
  // 1. Expert sets, lowest layer first, from whichever GPU is over budget.
  if (p.is_moe()) {
    for (uint32_t il = 0; il < p.n_layer && !GpusFit(o.use); ++il) {
      const int dev = pl.layer_device[il];
      if (dev == host || pl.experts_on_host[il] || o.use[dev].fits()) continue;
      pl.experts_on_host[il] = true;
      o.moved_experts = true;
      o.use = Account(shape, w, kv, scratch, inv, policy, pl);
    }
  }
  // 2. Whole layers: fewer layers on the GPUs until every GPU fits.
  while (!GpusFit(o.use) && n_gpu > 0) {
    --n_gpu;
    o.moved_layers = true;
    SplitLayers(p.n_layer, n_gpu, inv, policy, &pl);
    o.use = Account(shape, w, kv, scratch, inv, policy, pl);
  }
  return o;
}

// The largest context for which the policy finds a placement that fits (0: none, not even 1).
// `known` is a context known to fit (0: none known): kv.n_ctx when it fits, with its placement's
// own maximum. Searched above `known` when kv.n_ctx fits, below kv.n_ctx when it does not.
uint32_t PolicyMaxContext(const ModelShape& shape, const WeightSums& w, KvOptions kv,
                          const Inventory& inv, const Policy& policy, uint32_t known) {
  const uint32_t top = shape.params.context_length ? shape.params.context_length : kv.n_ctx;
  uint32_t lo = known;
  uint32_t hi = known > 0 ? top : kv.n_ctx - 1;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo + 1) / 2;
    kv.n_ctx = mid;
    if (AllFit(Place(shape, w, kv, inv, policy).use)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace

std::string_view VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kFits:
      return "fits";
    case Verdict::kFitsExpertOffload:
      return "fits with expert offload";
    case Verdict::kFitsLayerOffload:
      return "fits with layer offload";
    case Verdict::kDoesNotFit:
      return "does not fit";
  }
  return "does not fit";
}

uint32_t Plan::layers_on_host() const {
  return static_cast<uint32_t>(std::count(layer_device.begin(), layer_device.end(), host_index()));
}

uint32_t Plan::expert_sets_on_host() const {
  return static_cast<uint32_t>(std::count(experts_on_host.begin(), experts_on_host.end(), true));
}

Result<ModelShape> ShapeFromModel(const gguf::Model& model) {
  ModelShape shape;
  GARNET_ASSIGN_OR_RETURN(shape.params, gguf::ReadGemma4Params(model));
  GARNET_ASSIGN_OR_RETURN(shape.tensors, ClassifyTensors(model, shape.params));
  return shape;
}

Result<Plan> MakePlan(const ModelShape& shape, const KvOptions& kv, const Inventory& inv,
                      const Policy& policy) {
  const auto& p = shape.params;
  if (p.n_layer == 0 || p.layers.size() != p.n_layer) {
    return Status::InvalidArgument("plan", "model has no layers");
  }
  if (kv.n_ctx == 0 || kv.n_seq == 0 || kv.n_ubatch == 0) {
    return Status::InvalidArgument("plan", "context, sequences and micro-batch must be positive");
  }
  if (p.context_length && kv.n_ctx > p.context_length) {
    return Status::InvalidArgument("plan", "context " + std::to_string(kv.n_ctx) +
                                               " exceeds the model's maximum " +
                                               std::to_string(p.context_length));
  }
  if (policy.mode == PolicyMode::kGpuLayers && policy.gpu_layers > p.n_layer) {
    return Status::InvalidArgument("plan", "gpu_layers " + std::to_string(policy.gpu_layers) +
                                               " exceeds the model's " + std::to_string(p.n_layer) +
                                               " layers");
  }
  const WeightSums w(shape);
  const Outcome o = Place(shape, w, kv, inv, policy);
  const int host = static_cast<int>(inv.gpus.size());
  const std::vector<DeviceUse>& use = o.use;

  Plan plan;
  plan.kv = kv;
  plan.devices = use;
  plan.layer_device = o.pl.layer_device;
  plan.experts_on_host = o.pl.experts_on_host;
  plan.output_device = o.pl.output_device;
  const bool fits = AllFit(use);
  plan.max_ctx = fits ? MaxContext(shape, w, kv, inv, policy, o.pl) : 0;
  const uint32_t top = p.context_length ? p.context_length : kv.n_ctx;
  plan.policy_max_ctx =
      plan.max_ctx == top ? top : PolicyMaxContext(shape, w, kv, inv, policy, plan.max_ctx);

  const DeviceUse& h = use[host];
  const std::string device_has = inv.gpus.size() > 1 ? "devices have " : "device has ";
  std::ostringstream why;
  if (!fits) {
    plan.verdict = Verdict::kDoesNotFit;
    if (!h.fits()) {
      why << "needs " << FormatBytes(h.use.total()) << " of host RAM for what runs on the CPU, "
          << h.name << " has " << FormatBytes(h.budget) << " free";
    } else {
      for (const DeviceUse& d : use) {
        if (d.fits()) continue;
        why << "needs " << FormatBytes(d.use.total()) << " on " << d.name << ", which has "
            << FormatBytes(d.budget) << " free, with " << (p.n_layer - plan.layers_on_host())
            << " of " << p.n_layer << " layers on the GPU by policy";
        break;
      }
    }
    why << " \u2192 does not fit at " << kv.n_ctx;
    if (plan.policy_max_ctx > 0) why << " (fits at up to " << plan.policy_max_ctx << ")";
  } else if (o.cpu_only) {
    plan.verdict = Verdict::kFits;
    why << "needs " << FormatBytes(h.use.total()) << " of host RAM, " << h.name << " has "
        << FormatBytes(h.budget) << " free \u2192 fits at " << kv.n_ctx;
  } else {
    const bool layers = plan.layers_on_host() > 0;
    const bool experts = plan.expert_sets_on_host() > 0;
    plan.verdict = layers    ? Verdict::kFitsLayerOffload
                   : experts ? Verdict::kFitsExpertOffload
                             : Verdict::kFits;
    why << "needs " << FormatBytes(o.need_all_gpu) << ", " << device_has
        << FormatBytes(o.gpu_budget) << " free";
    if (experts || layers) {
      why << ": ";
      if (experts) {
        why << plan.expert_sets_on_host() << " of " << p.n_layer << " expert sets";
        if (layers) why << " and ";
      }
      if (layers) why << plan.layers_on_host() << " of " << p.n_layer << " layers";
      why << " to host";
      if (!o.moved_experts && !o.moved_layers) why << " by policy";
    }
    why << " \u2192 fits at " << kv.n_ctx;
  }
  if (fits) {
    why << " (max context " << plan.max_ctx;
    if (plan.policy_max_ctx > plan.max_ctx) {
      why << "; " << plan.policy_max_ctx << " with more offload";
    }
    why << ")";
  }
  plan.reason = why.str();
  return plan;
}

Result<uint32_t> ChooseUbatch(const ModelShape& shape, const KvOptions& kv, const Inventory& inv,
                              const Policy& policy) {
  GARNET_ASSIGN_OR_RETURN(const Plan base, MakePlan(shape, kv, inv, policy));
  const uint32_t large = std::min(kLargeUbatch, kv.n_ctx);
  if (inv.gpus.empty() || policy.mode == PolicyMode::kCpuOnly || large <= kv.n_ubatch) {
    return kv.n_ubatch;
  }
  KvOptions big = kv;
  big.n_ubatch = large;
  GARNET_ASSIGN_OR_RETURN(const Plan bigger, MakePlan(shape, big, inv, policy));
  if (bigger.verdict != Verdict::kFits) return kv.n_ubatch;
  uint64_t extra = 0, budget = 0;
  for (size_t g = 0; g < inv.gpus.size(); ++g) {
    const uint64_t a = bigger.devices[g].use.total(), b = base.devices[g].use.total();
    extra += a > b ? a - b : 0;
    budget += bigger.devices[g].budget;
  }
  return extra <= budget / 20 ? large : kv.n_ubatch;
}

std::string FormatPlan(const Plan& plan) {
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%-24s %11s %11s %11s %11s %11s %11s\n", "device", "weights",
                "kv cache", "scratch", "overhead", "total", "budget");
  o << line;
  for (const auto& d : plan.devices) {
    if (d.use.total() == 0 && !d.is_host) continue;
    std::snprintf(line, sizeof line, "%-24.24s %11s %11s %11s %11s %11s %11s%s\n", d.name.c_str(),
                  FormatBytes(d.use.weights).c_str(), FormatBytes(d.use.kv).c_str(),
                  FormatBytes(d.use.scratch).c_str(), FormatBytes(d.use.overhead).c_str(),
                  FormatBytes(d.use.total()).c_str(), FormatBytes(d.budget).c_str(),
                  d.fits() ? "" : "  OVER");
    o << line;
  }
  const uint32_t n = static_cast<uint32_t>(plan.layer_device.size());
  o << "layers: " << (n - plan.layers_on_host()) << " of " << n << " on GPU";
  if (!plan.experts_on_host.empty() && plan.expert_sets_on_host()) {
    o << ", expert sets on host: " << plan.expert_sets_on_host() << " of " << n;
  }
  o << "; context " << plan.kv.n_ctx << " x " << plan.kv.n_seq << " sequence"
    << (plan.kv.n_seq > 1 ? "s" : "") << ", kv " << KvTypeName(plan.kv.type) << ", ubatch "
    << plan.kv.n_ubatch << "\n";
  o << VerdictName(plan.verdict) << ": " << plan.reason << "\n";
  return o.str();
}

}  // namespace garnet::plan
