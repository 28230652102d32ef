// GPU buffers: one VkBuffer with its own VkDeviceMemory, counted in the Device's accounting under
// one MemoryKind for its whole life.
//
// Where the memory lives:
//   kDevice        device-local; weights, KV, activations. Filled through a Transfer (staging)
//                  or by shaders; never mapped.
//   kHostUpload    host-visible, coherent when the device offers it; staging for uploads.
//   kHostReadback  host-visible, cached when the device offers it; logits and downloads.
// Host buffers are persistently mapped; mapped() points at size() bytes.
//
// Allocation failure is a ResourceExhausted Status naming the kind, the size and what the device
// has (heap size, bytes already allocated); the device is left as it was (nothing leaks, the
// accounting is unchanged). Requests larger than the device's maxMemoryAllocationSize or its
// heap are refused before any driver call.
//
// Every buffer may be bound as a storage buffer and used as a transfer source/destination.
//
// Thread-safety: a Buffer is a move-only value; use one from one thread at a time. Creating
// and destroying buffers from several threads is safe (the accounting is locked).
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/base/status.h"
#include "engine/vulkan/memory_kind.h"

namespace garnet::vk {

class Device;

enum class Residency : uint8_t { kDevice, kHostUpload, kHostReadback };

class Buffer {
 public:
  // A buffer of `size` bytes (> 0). InvalidArgument for size 0; ResourceExhausted as above.
  // `label` names the buffer in error messages ("blk.3.attn_q.weight", "kv layer 7").
  static Result<Buffer> Create(Device& device, uint64_t size, MemoryKind kind,
                               Residency residency = Residency::kDevice,
                               std::string_view label = {});

  Buffer() = default;  // empty: handle() is VK_NULL_HANDLE
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  bool empty() const { return buffer_ == VK_NULL_HANDLE; }
  VkBuffer handle() const { return buffer_; }
  uint64_t size() const { return size_; }  // what was asked for
  // The VkBuffer's size: size() rounded up to a multiple of 4, so shaders that read 32-bit words
  // (the fallback for 16-bit data) may load the last, partial word. Bytes past size() are
  // unspecified.
  uint64_t padded_size() const { return padded_size_; }
  uint64_t allocated_bytes() const { return allocated_; }  // what the driver allocated
  MemoryKind kind() const { return kind_; }
  Residency residency() const { return residency_; }
  const std::string& label() const { return label_; }
  // Host pointer for kHostUpload/kHostReadback buffers, nullptr for kDevice.
  uint8_t* mapped() const { return mapped_; }
  // True when host writes need no flush (and device writes no invalidate).
  bool coherent() const { return coherent_; }

  // For non-coherent host buffers: make host writes in [offset, offset+size) visible to the
  // device / device writes visible to the host. No-ops for coherent memory.
  Status FlushHostWrites(uint64_t offset, uint64_t size) const;
  Status InvalidateForHostReads(uint64_t offset, uint64_t size) const;

 private:
  void Release();
  Device* device_ = nullptr;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  uint64_t size_ = 0;
  uint64_t padded_size_ = 0;
  uint64_t allocated_ = 0;
  MemoryKind kind_ = MemoryKind::kOther;
  Residency residency_ = Residency::kDevice;
  uint8_t* mapped_ = nullptr;
  bool coherent_ = true;
  std::string label_;
};

}  // namespace garnet::vk
