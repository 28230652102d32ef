// Host <-> device copies through staging buffers, in large chunks.
//
// Upload: the host data is copied into a host-visible staging chunk, then a vkCmdCopyBuffer
// moves it to the device buffer. Two chunks alternate, so the CPU fills one while the GPU copies
// the other. Download is the reverse (one readback chunk). Staging memory is allocated on first
// use, counted under MemoryKind::kStaging, and kept until the Transfer is destroyed.
//
// Errors: InvalidArgument when a range is outside the buffer (nothing copied); VkError /
// ResourceExhausted from the staging allocation or the submissions. After an error part of an
// upload may have landed.
//
// Thread-safety: one thread at a time per Transfer.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/base/status.h"
#include "engine/vulkan/buffer.h"
#include "engine/vulkan/recorder.h"

namespace garnet::vk {

class Device;

class Transfer {
 public:
  static constexpr uint64_t kDefaultChunkBytes = 64ull << 20;

  // `chunk_bytes` (> 0, rounded up to a multiple of 4) bounds each staging buffer.
  static Result<std::unique_ptr<Transfer>> Create(Device& device,
                                                  uint64_t chunk_bytes = kDefaultChunkBytes);
  ~Transfer() = default;  // members wait for in-flight copies before releasing memory

  // Copies src[0..size) to dst[dst_offset..) and waits until it has landed.
  Status Upload(const Buffer& dst, uint64_t dst_offset, const void* src, uint64_t size);
  // Copies src[src_offset..+size) to dst[0..size) on the host.
  Status Download(const Buffer& src, uint64_t src_offset, void* dst, uint64_t size);

  uint64_t chunk_bytes() const { return chunk_; }
  uint64_t chunks_copied() const { return chunks_; }  // total chunk copies submitted

 private:
  Transfer(Device& device, uint64_t chunk) : device_(device), chunk_(chunk) {}
  Device& device_;
  const uint64_t chunk_;
  uint64_t chunks_ = 0;
  // Declared before the recorders so they are destroyed after them (a recorder's destructor
  // waits for its copy).
  Buffer upload_[2];
  Buffer readback_;
  std::unique_ptr<Recorder> rec_[2];
};

}  // namespace garnet::vk
