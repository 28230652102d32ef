// The fit planner's view of this machine's Vulkan devices: one plan::DeviceInfo per GPU with its
// name, type and the total and free bytes of its device-local memory.
//
// Which heap: a device may have several device-local heaps (e.g. a small host-visible BAR heap
// beside the main VRAM heap). Device-local buffers come from the largest one, so total and free
// are that heap's.
//
// Free bytes: with VK_EXT_memory_budget, the heap's budget minus its current usage (the driver's
// own account of what this process may still allocate, other processes included). Without it
// (lavapipe, old drivers) nothing tells us what others use, so free is the heap size minus
// kNoBudgetMargin, flagged free_is_estimate.
//
// Thread-safety: GpuInventory creates and destroys its own Vulkan instance; it may be called from
// any thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/base/status.h"
#include "engine/plan/inventory.h"
#include "engine/vulkan/device.h"

namespace garnet::vk {

// Margin kept off a heap whose budget is unknown: 10 % of it, at least 256 MiB. Drivers keep part
// of VRAM for themselves (NVIDIA reports a budget roughly 3-6 % below the heap on an idle card),
// a desktop compositor commonly holds a few hundred MiB, and a plan that claims the whole heap
// would fail at load time. Ten percent errs on the side of a plan that loads.
uint64_t NoBudgetMargin(uint64_t heap_bytes);

struct InventoryOptions {
  // Also list CPU-type devices (lavapipe/llvmpipe). Off by default: a software rasteriser is not
  // a GPU worth offloading to, and its "VRAM" is host RAM.
  bool include_cpu = false;
  // Also list devices garnet cannot use (Vulkan < 1.2, no compute queue). Off by default.
  bool include_unusable = false;
};

// Converts gathered device facts (pure: no Vulkan calls). Devices without a device-local heap
// are skipped.
std::vector<plan::DeviceInfo> InventoryFromDevices(std::span<const DeviceInfo> devices,
                                                   const InventoryOptions& options = {});

// The Vulkan devices of this machine, in enumeration order. An empty list (not an error) when no
// Vulkan driver or device exists; other instance-creation failures are returned.
Result<std::vector<plan::DeviceInfo>> GpuInventory(const InventoryOptions& options = {});

}  // namespace garnet::vk
