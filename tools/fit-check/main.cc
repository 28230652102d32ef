// garnet-fit-check: does loading a model on a Vulkan device allocate exactly what the fit planner
// predicted from the header? For full-size models on a real GPU (the unit tests do the same for
// the tiny presets on lavapipe).
//
//   garnet-fit-check --model PATH [--ctx 8192] [--seq 1] [--ubatch 512] [--device SEL]
//                    [--policy auto|experts-on-host|gpu-layers:N] [--vram SIZE]
//
// Plans the model for the selected device (its free memory from VK_EXT_memory_budget, or --vram;
// host RAM from /proc/meminfo) under the policy, loads it on that device with that placement and
// every sequence's KV cache, and prints per kind (weights, KV, scratch, and for what the plan puts
// on the host: host KV and CPU scratch): the plan's bytes, the bytes the backend requested, the
// driver's allocation sizes (VkMemoryRequirements) and, where the device reports it, the growth of
// the heap's usage seen by VK_EXT_memory_budget — which also covers what no buffer accounts for
// (the device context, pipelines, command and descriptor pools): the planner's fixed
// kGpuContextOverhead estimate is printed beside it. Exit status 1 when requested bytes differ
// from the plan, 2 on a usage error, 3 when loading fails.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"
#include "engine/model/vulkan_backend.h"
#include "engine/model/weights.h"
#include "engine/plan/planner.h"
#include "engine/vulkan/device.h"
#include "engine/vulkan/inventory.h"

namespace garnet {
namespace {

struct Args {
  std::string model;
  uint32_t ctx = 8192, seq = 1, ubatch = 512;
  std::string device;
  plan::Policy policy;
  std::string vram;
};

void Usage() {
  std::fprintf(stderr,
               "usage: garnet-fit-check --model PATH [--ctx 8192] [--seq 1] [--ubatch 512] "
               "[--device N|NAME]\n"
               "                        [--policy auto|experts-on-host|gpu-layers:N] "
               "[--vram SIZE]\n");
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    auto num = [&](uint32_t* out) {
      char* end = nullptr;
      const unsigned long x = std::strtoul(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || x == 0 || x > (1u << 30)) return false;
      *out = static_cast<uint32_t>(x);
      return true;
    };
    if (k == "--model") {
      a->model = v;
    } else if (k == "--ctx") {
      if (!num(&a->ctx)) return false;
    } else if (k == "--seq") {
      if (!num(&a->seq)) return false;
    } else if (k == "--ubatch") {
      if (!num(&a->ubatch)) return false;
    } else if (k == "--device") {
      a->device = v;
    } else if (k == "--vram") {
      a->vram = v;
    } else if (k == "--policy") {
      if (v == "auto") {
        a->policy.mode = plan::PolicyMode::kAuto;
      } else if (v == "experts-on-host") {
        a->policy.mode = plan::PolicyMode::kExpertsOnHost;
      } else if (v.rfind("gpu-layers:", 0) == 0) {
        a->policy.mode = plan::PolicyMode::kGpuLayers;
        char* end = nullptr;
        const char* n = v.c_str() + 11;
        const unsigned long x = std::strtoul(n, &end, 10);
        if (end == n || *end != '\0' || x > 4096) return false;
        a->policy.gpu_layers = static_cast<uint32_t>(x);
      } else {
        return false;
      }
    } else {
      return false;
    }
  }
  return !a->model.empty();
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Usage of the device-local heaps, summed; nullopt without VK_EXT_memory_budget.
std::optional<uint64_t> DeviceLocalUsage(const vk::Device& dev) {
  uint64_t sum = 0;
  for (const vk::MemoryHeapInfo& h : dev.QueryHeaps()) {
    if (!h.device_local) continue;
    if (!h.usage) return std::nullopt;
    sum += *h.usage;
  }
  return sum;
}

std::string Mib(uint64_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  return s;
}

int Run(const Args& a) {
  const auto t_open = std::chrono::steady_clock::now();
  auto model = gguf::Model::Open(a.model);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().ToString().c_str());
    return 3;
  }
  auto shape = plan::ShapeFromModel(**model);
  if (!shape.ok()) {
    std::fprintf(stderr, "error: %s\n", shape.status().ToString().c_str());
    return 3;
  }
  // The probe device only watches the heap: its own context is in place before the first
  // reading, so the usage growth below is the loading device's context plus its allocations.
  auto instance = vk::Instance::Create();
  if (!instance.ok()) {
    std::fprintf(stderr, "error: %s\n", instance.status().ToString().c_str());
    return 3;
  }
  vk::DeviceOptions dopt;
  dopt.selector = a.device;
  auto probe = vk::Device::Create(*instance, dopt);
  if (!probe.ok()) {
    std::fprintf(stderr, "error: %s\n", probe.status().ToString().c_str());
    return 3;
  }
  const vk::DeviceInfo& info = (*probe)->info();

  plan::KvOptions kv;
  kv.n_ctx = a.ctx;
  kv.n_seq = a.seq;
  kv.n_ubatch = std::min(a.ubatch, a.ctx);
  kv.type = plan::KvType::kF16;
  plan::Inventory inv;
  inv.gpus = vk::InventoryFromDevices(std::span<const vk::DeviceInfo>(&info, 1),
                                      vk::InventoryOptions{.include_cpu = true});
  auto host = plan::HostInventory();
  if (!host.ok()) {
    std::fprintf(stderr, "error: %s\n", host.status().ToString().c_str());
    return 3;
  }
  inv.host = *host;
  if (!a.vram.empty()) {
    auto over = plan::ApplyOverrides(inv, a.vram, "");
    if (!over.ok()) {
      std::fprintf(stderr, "error: %s\n", over.status().ToString().c_str());
      return 2;
    }
    inv = *over;
  }
  auto pl = plan::MakePlan(*shape, kv, inv, a.policy);
  if (!pl.ok()) {
    std::fprintf(stderr, "error: %s\n", pl.status().ToString().c_str());
    return 3;
  }
  std::printf("%s\n", plan::FormatPlan(*pl).c_str());
  if (pl->verdict == plan::Verdict::kDoesNotFit) {
    std::fprintf(stderr, "error: nothing to load: %s\n", pl->reason.c_str());
    return 3;
  }
  if (pl->layers_on_host() == (*shape).params.n_layer) {
    std::fprintf(stderr, "error: the plan puts every layer on the host; nothing to check\n");
    return 3;
  }
  const plan::MemoryUse& want = pl->devices[0].use;
  const plan::MemoryUse& want_host = pl->devices.back().use;

  const std::optional<uint64_t> usage0 = DeviceLocalUsage(**probe);
  auto params = gguf::ReadGemma4Params(**model);
  if (!params.ok()) {
    std::fprintf(stderr, "error: %s\n", params.status().ToString().c_str());
    return 3;
  }
  auto weights = model::LoadWeights(**model, *params);
  if (!weights.ok()) {
    std::fprintf(stderr, "error: %s\n", weights.status().ToString().c_str());
    return 3;
  }
  auto dev = vk::Device::Create(*instance, dopt);
  if (!dev.ok()) {
    std::fprintf(stderr, "error: %s\n", dev.status().ToString().c_str());
    return 3;
  }
  model::VulkanBackendOptions vo;
  vo.n_ctx = a.ctx;
  vo.n_ubatch = kv.n_ubatch;
  vo.n_seq = a.seq;
  if (Status st = model::PlacementFromPlan(*pl, *params, &vo); !st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 3;
  }
  const auto t_load = std::chrono::steady_clock::now();
  auto backend = model::VulkanBackend::Create(model->get(), &*params, &*weights, vo, dev->get());
  if (!backend.ok()) {
    std::fprintf(stderr, "error: %s\n", backend.status().ToString().c_str());
    return 3;
  }
  std::vector<std::unique_ptr<model::BackendSequence>> seqs;
  for (uint32_t i = 0; i < a.seq; ++i) {
    auto s = (*backend)->NewSequence();
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", s.status().ToString().c_str());
      return 3;
    }
    seqs.push_back(std::move(*s));
  }
  const double load_s = Seconds(t_load);
  const std::optional<uint64_t> usage1 = DeviceLocalUsage(**probe);
  const model::VulkanAllocation got = (*backend)->allocated();
  const vk::MemoryAccounting acct = (*dev)->accounting();

  std::printf(
      "device: %s (%s), model %s, ctx %u x %u sequences, ubatch %u; open+plan %.2f s, "
      "load %.2f s\n",
      info.name.c_str(), info.driver_name.c_str(), a.model.c_str(), a.ctx, a.seq, a.ubatch,
      Seconds(t_open) - load_s, load_s);
  std::printf("%-9s %16s %16s %16s %8s\n", "kind", "plan", "requested", "driver", "equal");
  bool ok = true;
  auto row = [&](const char* kind, uint64_t planned, uint64_t requested, uint64_t driver) {
    const bool eq = planned == requested;
    ok = ok && eq;
    std::printf("%-9s %16llu %16llu %16llu %8s\n", kind, static_cast<unsigned long long>(planned),
                static_cast<unsigned long long>(requested), static_cast<unsigned long long>(driver),
                eq ? "yes" : "NO");
  };
  row("weights", want.weights, got.weights, acct.Bytes(vk::MemoryKind::kWeights));
  row("kv", want.kv, got.kv, acct.Bytes(vk::MemoryKind::kKv));
  row("scratch", want.scratch, got.scratch, acct.Bytes(vk::MemoryKind::kScratch));
  if (pl->layers_on_host() > 0 || pl->expert_sets_on_host() > 0) {
    // Host weights stay in the file mapping (plan: the host's weight bytes; not allocated).
    row("host kv", want_host.kv, got.host_kv, got.host_kv);
    row("host scr", want_host.scratch, got.host_scratch, got.host_scratch);
  }
  const uint64_t planned = want.weights + want.kv + want.scratch;
  const uint64_t driver_total = acct.TotalBytes();
  std::printf("other (RoPE tables, constants; not planned): %llu requested, %llu driver\n",
              static_cast<unsigned long long>(got.other),
              static_cast<unsigned long long>(acct.Bytes(vk::MemoryKind::kOther)));
  std::printf("planned weights+kv+scratch %s; driver allocations, all kinds %s\n",
              Mib(planned).c_str(), Mib(driver_total).c_str());
  if (usage0 && usage1) {
    const uint64_t grew = *usage1 - *usage0;
    std::printf(
        "heap usage growth (VK_EXT_memory_budget) %s = allocations + %s unaccounted "
        "(device context, pipelines, pools); planner's fixed estimate %s\n",
        Mib(grew).c_str(),
        grew >= driver_total ? Mib(grew - driver_total).c_str()
                             : ("-" + Mib(driver_total - grew)).c_str(),
        Mib(plan::kGpuContextOverhead).c_str());
  } else {
    std::printf("heap usage: the device has no VK_EXT_memory_budget\n");
  }
  std::printf("%s\n", ok ? "plan == allocation" : "MISMATCH between plan and allocation");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace garnet

int main(int argc, char** argv) {
  garnet::Args a;
  if (!garnet::ParseArgs(argc, argv, &a)) {
    garnet::Usage();
    return 2;
  }
  return garnet::Run(a);
}
