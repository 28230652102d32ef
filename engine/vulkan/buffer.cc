#include "engine/vulkan/buffer.h"

#include <string>
#include <utility>

#include "engine/vulkan/device.h"
#include "engine/vulkan/vk_error.h"

namespace garnet::vk {
namespace {

std::string Mib(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%llu bytes (%.1f MiB)", static_cast<unsigned long long>(bytes),
                bytes / 1048576.0);
  return buf;
}

std::string What(std::string_view label, MemoryKind kind, uint64_t size) {
  std::string s = "allocating " + std::string(MemoryKindName(kind)) + " buffer";
  if (!label.empty()) s += " \"" + std::string(label) + "\"";
  return s + " of " + Mib(size);
}

}  // namespace

Result<Buffer> Buffer::Create(Device& device, uint64_t size, MemoryKind kind, Residency residency,
                              std::string_view label) {
  if (size == 0) return Status::InvalidArgument(What(label, kind, size), "size must be > 0");
  const DeviceInfo& info = device.info();
  if (info.max_allocation_size != 0 && size > info.max_allocation_size) {
    return Status::ResourceExhausted(
        What(label, kind, size),
        "exceeds the device's largest single allocation (" + Mib(info.max_allocation_size) + ")");
  }
  Buffer b;
  b.device_ = &device;
  b.size_ = size;
  b.padded_size_ = (size + 3) & ~uint64_t{3};
  b.kind_ = kind;
  b.residency_ = residency;
  b.label_ = std::string(label);

  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = (size + 3) & ~uint64_t{3};  // see padded_size()
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
              VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  GARNET_VK_RETURN_IF_ERROR(What(label, kind, size) + ": vkCreateBuffer",
                            vkCreateBuffer(device.handle(), &bci, nullptr, &b.buffer_));
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(device.handle(), b.buffer_, &req);

  VkMemoryPropertyFlags required = 0;
  VkMemoryPropertyFlags preferred = 0;
  switch (residency) {
    case Residency::kDevice:
      preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
      break;
    case Residency::kHostUpload:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
    case Residency::kHostReadback:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
  }
  std::optional<uint32_t> type = device.FindMemoryType(req.memoryTypeBits, required, preferred);
  if (!type && residency == Residency::kHostReadback) {
    type = device.FindMemoryType(req.memoryTypeBits, required, VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  }
  if (!type) {
    return Status::FailedPrecondition(What(label, kind, size), "no suitable memory type");
  }
  const VkMemoryType& mt = device.memory_properties().memoryTypes[*type];
  const uint64_t heap_size = device.memory_properties().memoryHeaps[mt.heapIndex].size;
  if (req.size > heap_size) {
    return Status::ResourceExhausted(
        What(label, kind, size),
        "larger than memory heap " + std::to_string(mt.heapIndex) + " (" + Mib(heap_size) + ")");
  }
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = *type;
  const VkResult r = vkAllocateMemory(device.handle(), &mai, nullptr, &b.memory_);
  if (r != VK_SUCCESS) {
    b.memory_ = VK_NULL_HANDLE;
    const MemoryAccounting acc = device.accounting();
    return VkError(What(label, kind, size) + " (driver size " + Mib(req.size) + ", heap " +
                       Mib(heap_size) + ", already allocated by garnet " + Mib(acc.TotalBytes()) +
                       "): vkAllocateMemory",
                   r);
  }
  b.allocated_ = req.size;
  device.AccountAllocation(kind, b.allocated_, b.size_);
  GARNET_VK_RETURN_IF_ERROR(What(label, kind, size) + ": vkBindBufferMemory",
                            vkBindBufferMemory(device.handle(), b.buffer_, b.memory_, 0));
  b.coherent_ = mt.propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  if (residency != Residency::kDevice) {
    void* p = nullptr;
    GARNET_VK_RETURN_IF_ERROR(What(label, kind, size) + ": vkMapMemory",
                              vkMapMemory(device.handle(), b.memory_, 0, VK_WHOLE_SIZE, 0, &p));
    b.mapped_ = static_cast<uint8_t*>(p);
  }
  return b;
}

void Buffer::Release() {
  if (!device_) return;
  VkDevice dev = device_->handle();
  if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(dev, buffer_, nullptr);
  if (memory_ != VK_NULL_HANDLE) {
    if (mapped_) vkUnmapMemory(dev, memory_);
    vkFreeMemory(dev, memory_, nullptr);
    device_->AccountFree(kind_, allocated_, size_);
  }
  device_ = nullptr;
  buffer_ = VK_NULL_HANDLE;
  memory_ = VK_NULL_HANDLE;
  mapped_ = nullptr;
  size_ = padded_size_ = allocated_ = 0;
}

Buffer::~Buffer() {
  Release();
}

Buffer::Buffer(Buffer&& o) noexcept {
  *this = std::move(o);
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this == &o) return *this;
  Release();
  device_ = std::exchange(o.device_, nullptr);
  buffer_ = std::exchange(o.buffer_, VK_NULL_HANDLE);
  memory_ = std::exchange(o.memory_, VK_NULL_HANDLE);
  size_ = std::exchange(o.size_, 0);
  padded_size_ = std::exchange(o.padded_size_, 0);
  allocated_ = std::exchange(o.allocated_, 0);
  kind_ = o.kind_;
  residency_ = o.residency_;
  mapped_ = std::exchange(o.mapped_, nullptr);
  coherent_ = o.coherent_;
  label_ = std::move(o.label_);
  return *this;
}

Status Buffer::FlushHostWrites(uint64_t offset, uint64_t size) const {
  if (coherent_ || !mapped_) return Status::OK();
  (void)offset;
  (void)size;
  // Whole-allocation flush: always a multiple of nonCoherentAtomSize.
  VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  range.memory = memory_;
  range.size = VK_WHOLE_SIZE;
  GARNET_VK_RETURN_IF_ERROR("vkFlushMappedMemoryRanges",
                            vkFlushMappedMemoryRanges(device_->handle(), 1, &range));
  return Status::OK();
}

Status Buffer::InvalidateForHostReads(uint64_t offset, uint64_t size) const {
  if (coherent_ || !mapped_) return Status::OK();
  (void)offset;
  (void)size;
  VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  range.memory = memory_;
  range.size = VK_WHOLE_SIZE;
  GARNET_VK_RETURN_IF_ERROR("vkInvalidateMappedMemoryRanges",
                            vkInvalidateMappedMemoryRanges(device_->handle(), 1, &range));
  return Status::OK();
}

}  // namespace garnet::vk
