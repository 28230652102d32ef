#include "engine/vulkan/transfer.h"

#include <cstring>
#include <string>

#include "engine/vulkan/device.h"

namespace garnet::vk {
namespace {

Status CheckRange(const Buffer& b, uint64_t offset, uint64_t size, const char* what) {
  if (b.empty()) return Status::InvalidArgument(what, "empty buffer");
  if (offset > b.size() || size > b.size() - offset) {
    return Status::InvalidArgument(what, "range [" + std::to_string(offset) + ", +" +
                                             std::to_string(size) + ") is outside buffer \"" +
                                             b.label() + "\" of " + std::to_string(b.size()) +
                                             " bytes");
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Transfer>> Transfer::Create(Device& device, uint64_t chunk_bytes) {
  if (chunk_bytes == 0) return Status::InvalidArgument("vulkan transfer", "chunk size 0");
  chunk_bytes = (chunk_bytes + 3) & ~uint64_t{3};
  std::unique_ptr<Transfer> t(new Transfer(device, chunk_bytes));
  for (auto& r : t->rec_) {
    GARNET_ASSIGN_OR_RETURN(r, Recorder::Create(device));
  }
  return t;
}

Status Transfer::Upload(const Buffer& dst, uint64_t dst_offset, const void* src, uint64_t size) {
  GARNET_RETURN_IF_ERROR(CheckRange(dst, dst_offset, size, "upload"));
  const auto* bytes = static_cast<const uint8_t*>(src);
  for (uint64_t done = 0, i = 0; done < size; ++i) {
    const int slot = static_cast<int>(i & 1);
    GARNET_RETURN_IF_ERROR(rec_[slot]->Wait());  // its staging chunk is free again
    if (upload_[slot].empty()) {
      GARNET_ASSIGN_OR_RETURN(upload_[slot],
                              Buffer::Create(device_, chunk_, MemoryKind::kStaging,
                                             Residency::kHostUpload, "upload staging"));
    }
    const uint64_t n = std::min(chunk_, size - done);
    std::memcpy(upload_[slot].mapped(), bytes + done, n);
    GARNET_RETURN_IF_ERROR(upload_[slot].FlushHostWrites(0, n));
    GARNET_RETURN_IF_ERROR(rec_[slot]->Copy(upload_[slot], 0, dst, dst_offset + done, n));
    GARNET_RETURN_IF_ERROR(rec_[slot]->Submit());
    ++chunks_;
    done += n;
  }
  GARNET_RETURN_IF_ERROR(rec_[0]->Wait());
  return rec_[1]->Wait();
}

Status Transfer::Download(const Buffer& src, uint64_t src_offset, void* dst, uint64_t size) {
  GARNET_RETURN_IF_ERROR(CheckRange(src, src_offset, size, "download"));
  auto* bytes = static_cast<uint8_t*>(dst);
  for (uint64_t done = 0; done < size;) {
    if (readback_.empty()) {
      GARNET_ASSIGN_OR_RETURN(
          readback_, Buffer::Create(device_, chunk_, MemoryKind::kStaging, Residency::kHostReadback,
                                    "readback staging"));
    }
    const uint64_t n = std::min(chunk_, size - done);
    GARNET_RETURN_IF_ERROR(rec_[0]->Copy(src, src_offset + done, readback_, 0, n));
    GARNET_RETURN_IF_ERROR(rec_[0]->SubmitAndWait());
    GARNET_RETURN_IF_ERROR(readback_.InvalidateForHostReads(0, n));
    std::memcpy(bytes + done, readback_.mapped(), n);
    ++chunks_;
    done += n;
  }
  return Status::OK();
}

}  // namespace garnet::vk
