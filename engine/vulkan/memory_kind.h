// What the Vulkan backend allocates memory for, and the running totals per kind.
//
// Every VkDeviceMemory the backend allocates is counted here, under exactly one kind, from the
// moment vkAllocateMemory succeeds until vkFreeMemory. The fit planner predicts these numbers
// from the GGUF header; a test holds prediction and accounting equal.
//
// Thread-safety: MemoryAccounting is a plain value (a snapshot).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace garnet::vk {

enum class MemoryKind : uint8_t {
  kWeights = 0,  // model tensors, uploaded once
  kKv = 1,       // KV cache
  kScratch = 2,  // activations and other per-forward temporaries
  kStaging = 3,  // host-visible upload/download bounce buffers
  kOther = 4,    // everything else (logits readback, test buffers, ...)
};
inline constexpr int kMemoryKindCount = 5;
std::string_view MemoryKindName(MemoryKind kind);  // "weights", "kv", "scratch", "staging", "other"

struct MemoryAccounting {
  // Bytes of VkDeviceMemory currently allocated per kind (the driver's VkMemoryRequirements
  // size, i.e. including its alignment padding, not the requested buffer size).
  std::array<uint64_t, kMemoryKindCount> bytes{};
  // Bytes callers asked for per kind (sum of live Buffer::size()).
  std::array<uint64_t, kMemoryKindCount> requested{};
  // Live buffers per kind.
  std::array<uint64_t, kMemoryKindCount> buffers{};
  // Highest total of `bytes` ever reached on this device.
  uint64_t peak_total = 0;

  uint64_t Bytes(MemoryKind k) const { return bytes[static_cast<int>(k)]; }
  uint64_t Requested(MemoryKind k) const { return requested[static_cast<int>(k)]; }
  uint64_t Buffers(MemoryKind k) const { return buffers[static_cast<int>(k)]; }
  uint64_t TotalBytes() const {
    uint64_t t = 0;
    for (uint64_t b : bytes) t += b;
    return t;
  }
};

}  // namespace garnet::vk
