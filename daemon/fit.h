// Fit planning for a pulled model (the Fit RPC and the catalog's "fits" column): reads the GGUF
// header of the model's files, builds the memory inventory (this machine, or the overrides of a
// request planning for another machine) and runs the planner.
//
// GPUs: without `vram` overrides the plan uses this machine's Vulkan GPUs (MachineGpus: the
// engine's Vulkan inventory, software rasterisers such as lavapipe excluded); with overrides
// those win. A build without Vulkan, or a machine without a GPU, plans for host memory only (said
// in the report).
//
// Thread-safety: every function may be called from any thread (reads the files, /proc/meminfo
// and the Vulkan driver).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/model_manager.h"
#include "engine/base/status.h"
#include "engine/plan/planner.h"

namespace garnet::daemon {

struct FitParams {
  uint32_t ctx = 0;       // 0: the model's default context (capped at its trained maximum)
  uint32_t parallel = 0;  // 0: 1
  uint32_t ubatch = 0;    // 0: plan::ChooseUbatch from 512 (2048 where it fits the GPUs cheaply)
  std::string kv_type;    // "", "f16", "q8_0", "f32"
  plan::PolicyMode policy = plan::PolicyMode::kAuto;
  uint32_t gpu_layers = 0;
  std::vector<uint64_t> vram_bytes;  // one per GPU to plan for; empty: this machine's GPUs
  uint64_t ram_bytes = 0;            // 0: this machine's available RAM
  bool cpu_only = false;
};

struct FitResult {
  plan::Plan plan;
  uint32_t ctx = 0;
  uint32_t n_layer = 0;
  std::string report;  // FormatPlan
};

// This machine's Vulkan GPUs, in enumeration order; empty when the build has no Vulkan support or
// no usable GPU exists (an inventory error is logged once and treated as no GPU). Cached for a
// few seconds: every query creates a Vulkan instance, and the catalog plans every entry in a row.
std::vector<plan::DeviceInfo> MachineGpus();

// InvalidArgument for impossible requests (context beyond the model's maximum, zero sizes,
// gpu_layers > layers, unknown kv type), the GGUF reader's errors for a bad file.
Result<FitResult> PlanFit(const ResolvedModel& model, const FitParams& params,
                          uint32_t default_ctx);

}  // namespace garnet::daemon
