#include "daemon/fit.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>

#include "engine/gguf/gguf.h"
#include "engine/plan/memory.h"
#if GARNET_DAEMON_HAVE_GPU_INVENTORY
#include "engine/vulkan/inventory.h"
#endif

namespace garnet::daemon {

std::vector<plan::DeviceInfo> MachineGpus() {
#if GARNET_DAEMON_HAVE_GPU_INVENTORY
  using Clock = std::chrono::steady_clock;
  static std::mutex mu;
  static std::vector<plan::DeviceInfo> cached;
  static Clock::time_point taken;
  static bool have = false, warned = false;
  std::lock_guard lock(mu);
  if (have && Clock::now() - taken < std::chrono::seconds(5)) return cached;
  auto gpus = vk::GpuInventory();
  if (gpus.ok()) {
    cached = std::move(gpus).value();
  } else {
    if (!warned) {
      std::fprintf(stderr, "garnetd: no GPU inventory: %s\n", gpus.status().message().c_str());
      warned = true;
    }
    cached.clear();
  }
  taken = Clock::now();
  have = true;
  return cached;
#else
  return {};
#endif
}

Result<FitResult> PlanFit(const ResolvedModel& model, const FitParams& p, uint32_t default_ctx) {
  if (model.paths.empty()) return Status::Internal("model " + model.name, "has no files");
  GARNET_ASSIGN_OR_RETURN(auto header, gguf::Model::OpenParts(model.paths));
  GARNET_ASSIGN_OR_RETURN(plan::ModelShape shape, plan::ShapeFromModel(*header));
  header.reset();

  FitResult r;
  r.n_layer = shape.params.n_layer;
  const uint32_t trained = shape.params.context_length;
  uint32_t ctx = p.ctx;
  if (ctx == 0) {
    ctx = model.default_ctx ? model.default_ctx : default_ctx;
    if (trained != 0) ctx = std::min(ctx, trained);
  }
  if (p.parallel > 256) return Status::InvalidArgument("fit parallel", "exceeds 256");
  if (p.ubatch > 65536) return Status::InvalidArgument("fit ubatch", "exceeds 65536");
  if (p.vram_bytes.size() > 16) return Status::InvalidArgument("fit vram", "more than 16 GPUs");

  plan::KvOptions kv;
  kv.n_ctx = ctx;
  kv.n_seq = p.parallel ? p.parallel : 1;
  kv.n_ubatch = p.ubatch ? p.ubatch : 512;
  if (!p.kv_type.empty()) {
    auto t = plan::ParseKvType(p.kv_type);
    if (!t) {
      return Status::InvalidArgument("fit kv_type",
                                     "\"" + p.kv_type + "\" is not one of f16, q8_0, f32");
    }
    kv.type = *t;
  }

  plan::Inventory inv;
  GARNET_ASSIGN_OR_RETURN(inv.host, plan::HostInventory());
  if (p.ram_bytes != 0) inv.host.total_bytes = inv.host.free_bytes = p.ram_bytes;
  if (!p.cpu_only) {
    for (size_t i = 0; i < p.vram_bytes.size(); ++i) {
      plan::DeviceInfo d;
      d.name = "GPU" + std::to_string(i);
      d.total_bytes = d.free_bytes = p.vram_bytes[i];
      inv.gpus.push_back(d);
    }
    // No overrides: this machine's GPUs.
    if (p.vram_bytes.empty()) inv.gpus = MachineGpus();
  }
  plan::Policy policy;
  policy.mode = p.cpu_only ? plan::PolicyMode::kCpuOnly : p.policy;
  policy.gpu_layers = p.gpu_layers;
  // ubatch 0: 512, or plan::kLargeUbatch where the model fits the GPUs with it (what a load
  // with the Vulkan backend picks: ModelManager::LoadWith).
  if (p.ubatch == 0) {
    GARNET_ASSIGN_OR_RETURN(kv.n_ubatch, plan::ChooseUbatch(shape, kv, inv, policy));
  }
  GARNET_ASSIGN_OR_RETURN(r.plan, plan::MakePlan(shape, kv, inv, policy));
  r.ctx = ctx;
  r.report = plan::FormatPlan(r.plan);
  if (inv.gpus.empty() && !p.cpu_only && p.policy != plan::PolicyMode::kCpuOnly) {
    r.report += "note: no Vulkan GPU found on this machine; pass --vram to plan for a GPU\n";
  }
  return r;
}

}  // namespace garnet::daemon
