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

std::string FormatBytes(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1ull << 30));
  } else if (bytes >= (1ull << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1ull << 20));
  } else if (bytes >= (1ull << 10)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1ull << 10));
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  }
  return buf;
}

Result<uint64_t> ParseByteSize(std::string_view text) {
  const std::string s(text);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string num = s.substr(0, i);
  std::string unit = s.substr(i);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (num.empty() || num == "." || std::count(num.begin(), num.end(), '.') > 1) {
    return Status::InvalidArgument("size '" + s + "'", "expected a number such as 16GiB");
  }
  double mult = 0;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kib") {
    mult = 1024.0;
  } else if (unit == "m" || unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "t" || unit == "tib") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else if (unit == "kb") {
    mult = 1e3;
  } else if (unit == "mb") {
    mult = 1e6;
  } else if (unit == "gb") {
    mult = 1e9;
  } else if (unit == "tb") {
    mult = 1e12;
  } else {
    return Status::InvalidArgument("size '" + s + "'", "unknown unit '" + unit + "'");
  }
  const double v = std::strtod(num.c_str(), nullptr) * mult;
  if (!(v >= 0) || v > 1.8e19) return Status::InvalidArgument("size '" + s + "'", "out of range");
  return static_cast<uint64_t>(std::llround(v));
}

Result<std::vector<uint64_t>> ParseByteSizeList(std::string_view text) {
  std::vector<uint64_t> out;
  if (text == "0" || text == "none") return out;
  size_t start = 0;
  for (;;) {
    const size_t comma = text.find(',', start);
    const std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) {
      return Status::InvalidArgument("size list '" + std::string(text) + "'", "has an empty item");
    }
    GARNET_ASSIGN_OR_RETURN(uint64_t v, ParseByteSize(item));
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
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
