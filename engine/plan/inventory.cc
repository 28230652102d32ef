#include "engine/plan/inventory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace garnet::plan {

std::string_view GpuTypeName(GpuType t) {
  switch (t) {
    case GpuType::kDiscrete:
      return "discrete";
    case GpuType::kIntegrated:
      return "integrated";
    case GpuType::kVirtual:
      return "virtual";
    case GpuType::kCpu:
      return "cpu";
    case GpuType::kOther:
      return "other";
  }
  return "other";
}

Result<DeviceInfo> HostInventory() {
  std::ifstream in("/proc/meminfo");
  if (!in) return Status::Unavailable("host memory", "cannot read /proc/meminfo");
  DeviceInfo host;
  host.name = "host";
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemTotal:") host.total_bytes = kib * 1024;
    if (key == "MemAvailable:") host.free_bytes = kib * 1024;
  }
  if (host.total_bytes == 0) {
    return Status::Unavailable("host memory", "no MemTotal in /proc/meminfo");
  }
  return host;
}

Inventory ApplyOverrides(Inventory measured, const std::optional<std::vector<uint64_t>>& vram,
                         std::optional<uint64_t> ram) {
  if (vram) {
    std::vector<DeviceInfo> gpus;
    for (size_t i = 0; i < vram->size(); ++i) {
      DeviceInfo d;
      if (i < measured.gpus.size()) {
        d.name = measured.gpus[i].name + " (--vram)";
        d.type = measured.gpus[i].type;
      } else {
        d.name = "GPU " + std::to_string(i) + " (--vram)";
        d.type = GpuType::kDiscrete;
      }
      d.total_bytes = d.free_bytes = (*vram)[i];
      gpus.push_back(std::move(d));
    }
    measured.gpus = std::move(gpus);
  }
  if (ram) {
    if (measured.host.name.empty()) measured.host.name = "host";
    measured.host.total_bytes = measured.host.free_bytes = *ram;
    measured.host.free_is_estimate = false;
  }
  return measured;
}

Result<Inventory> ApplyOverrides(Inventory measured, std::string_view vram, std::string_view ram) {
  std::optional<std::vector<uint64_t>> v;
  std::optional<uint64_t> r;
  if (!vram.empty()) {
    auto list = ParseByteSizeList(vram);
    if (!list.ok()) return list.status().WithContext("--vram");
    v = std::move(*list);
  }
  if (!ram.empty()) {
    auto size = ParseByteSize(ram);
    if (!size.ok()) return size.status().WithContext("--ram");
    r = *size;
  }
  return ApplyOverrides(std::move(measured), v, r);
}

}  // namespace garnet::plan
