#include "engine/vulkan/inventory.h"

#include <algorithm>
#include <memory>

namespace garnet::vk {
namespace {

plan::GpuType ToPlanType(DeviceType t) {
  switch (t) {
    case DeviceType::kDiscreteGpu:
      return plan::GpuType::kDiscrete;
    case DeviceType::kIntegratedGpu:
      return plan::GpuType::kIntegrated;
    case DeviceType::kVirtualGpu:
      return plan::GpuType::kVirtual;
    case DeviceType::kCpu:
      return plan::GpuType::kCpu;
    case DeviceType::kOther:
      return plan::GpuType::kOther;
  }
  return plan::GpuType::kOther;
}

}  // namespace

uint64_t NoBudgetMargin(uint64_t heap_bytes) {
  return std::max<uint64_t>(heap_bytes / 10, 256ull << 20);
}

std::vector<plan::DeviceInfo> InventoryFromDevices(std::span<const DeviceInfo> devices,
                                                   const InventoryOptions& options) {
  std::vector<plan::DeviceInfo> out;
  for (const DeviceInfo& d : devices) {
    if (d.type == DeviceType::kCpu && !options.include_cpu) continue;
    if (!d.usable && !options.include_unusable) continue;
    const MemoryHeapInfo* heap = nullptr;
    for (const MemoryHeapInfo& h : d.heaps) {
      if (h.device_local && (heap == nullptr || h.size > heap->size)) heap = &h;
    }
    if (heap == nullptr) continue;
    plan::DeviceInfo g;
    g.name = d.name;
    g.type = ToPlanType(d.type);
    g.total_bytes = heap->size;
    if (heap->budget && heap->usage) {
      const uint64_t budget = std::min(*heap->budget, heap->size);
      g.free_bytes = budget > *heap->usage ? budget - *heap->usage : 0;
    } else {
      const uint64_t margin = NoBudgetMargin(heap->size);
      g.free_bytes = heap->size > margin ? heap->size - margin : 0;
      g.free_is_estimate = true;
    }
    out.push_back(std::move(g));
  }
  return out;
}

Result<std::vector<plan::DeviceInfo>> GpuInventory(const InventoryOptions& options) {
  InstanceOptions io;
  io.validate = Validation::kOff;
  auto instance = Instance::Create(io);
  if (!instance.ok()) {
    if (instance.status().IsUnavailable()) return std::vector<plan::DeviceInfo>{};
    return instance.status();
  }
  return InventoryFromDevices((*instance)->devices(), options);
}

}  // namespace garnet::vk
