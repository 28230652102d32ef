// The memory the fit planner may use: GPUs and host RAM, measured on this machine or given on the
// command line to plan for another one.
//
// GPUs are measured by garnet::vk::GpuInventory() (engine/vulkan/inventory.h), host RAM by
// HostInventory() here. Overrides ("--vram 24GiB,8GiB", "--ram 64GiB") replace what was measured:
// an overridden device is taken as empty (free == total), since a machine being planned for has
// no other process using it that we could know of.
//
// Thread-safety: plain values and pure functions, except HostInventory() which reads
// /proc/meminfo.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/bytes.h"
#include "engine/base/status.h"

namespace garnet::plan {

// What kind of Vulkan device a GPU entry is (VkPhysicalDeviceType). Integrated and CPU devices
// take their "device-local" memory from host RAM.
enum class GpuType : uint8_t { kOther, kDiscrete, kIntegrated, kVirtual, kCpu };
std::string_view GpuTypeName(GpuType t);  // "discrete", "integrated", "virtual", "cpu", "other"

struct DeviceInfo {
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;         // budget before the policy's reserve
  GpuType type = GpuType::kOther;  // meaningless for the host entry
  // Where free_bytes came from: false when measured (VK_EXT_memory_budget, /proc/meminfo
  // MemAvailable) or given by an override, true when estimated (heap size minus a margin).
  bool free_is_estimate = false;
};

struct Inventory {
  std::vector<DeviceInfo> gpus;  // empty: CPU only
  DeviceInfo host;
};

// Host RAM from /proc/meminfo (MemTotal, MemAvailable). Unavailable when the file is unreadable
// or has no MemTotal.
Result<DeviceInfo> HostInventory();

// Byte sizes in and out (engine/base/bytes.h), also reachable as plan::.
using garnet::FormatBytes;
using garnet::ParseByteSize;
using garnet::ParseByteSizeList;

// Replaces parts of a measured inventory.
//   vram: when set, exactly these GPUs (one per entry, free == total == the size). Entry i keeps
//         the name and type of measured GPU i when there is one ("<name> (--vram)"), else it is
//         "GPU i (--vram)", discrete. An empty list plans for a machine without GPUs.
//   ram:  when set, host total == free == the size.
// Never fails: every combination is a valid machine.
Inventory ApplyOverrides(Inventory measured, const std::optional<std::vector<uint64_t>>& vram,
                         std::optional<uint64_t> ram);
// The same from command-line text; an empty string leaves that part as measured. Errors are
// ParseByteSize's / ParseByteSizeList's, with the flag name added.
Result<Inventory> ApplyOverrides(Inventory measured, std::string_view vram, std::string_view ram);

}  // namespace garnet::plan
