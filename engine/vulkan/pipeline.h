// Compute pipelines, created once per (shader variant, specialisation) and kept for the life of
// the Device, plus the VkPipelineCache that is persisted on disk between runs.
//
// Binding model (every shader follows it; see the comment at the top of each .comp):
//   set 0, bindings 0..n-1: storage buffers, in the order the kernel's header lists them;
//   push constants: one block of `push_bytes` bytes (shapes, offsets, scalars);
//   specialisation constants: ids 0..k-1, 32-bit each (sizes fixed per pipeline; the workgroup
//   size is one of them where the shader says so).
// With VK_KHR_push_descriptor the set layout is a push-descriptor layout and the Recorder pushes
// bindings inline; otherwise the Recorder allocates sets from its own descriptor pool.
//
// Disk cache file format (ours, wrapping the driver's opaque blob so a truncated, corrupt or
// foreign file is detected before the driver sees it):
//   u32 magic "GVKC" | u32 format version (1) | u64 payload bytes | u64 FNV-1a-64 of payload |
//   payload = the bytes vkGetPipelineCacheData returned.
// The payload is given to the driver only when the checksum matches and its own header names
// this device's vendor, device id and pipelineCacheUUID; anything else is ignored (and noted in
// load_note()). The file is written atomically (temp file + rename) by Save() and on destruction.
//
// Thread-safety: Get() may be called from several threads (locked). A Pipeline is immutable and
// lives as long as its PipelineCache.
#pragma once

#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/base/status.h"

namespace garnet::vk {

class Device;

struct PipelineDesc {
  std::string shader;               // variant name in the embedded table (shaders.h)
  uint32_t n_bindings = 0;          // storage buffers at bindings 0..n-1
  uint32_t write_mask = 0;          // bit i set: the shader writes binding i (for barriers)
  uint32_t push_bytes = 0;          // size of the push-constant block (multiple of 4, <= 128)
  std::vector<uint32_t> spec;       // specialisation constants 0..k-1
  std::array<uint32_t, 3> local{};  // the workgroup size, for dispatch math (not sent to Vulkan)

  std::string Key() const;  // shader, bindings, write mask, push size, spec values: the cache key
};

struct Pipeline {
  PipelineDesc desc;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  bool push_descriptors = false;  // set_layout is a push-descriptor layout
  // The driver's compile statistics, "name=value" pairs separated by ", " (one group per
  // executable), when DeviceCaps::pipeline_statistics; empty otherwise.
  std::string statistics;
};

class PipelineCache {
 public:
  // Loads `path` when it exists and is valid for this device (see above); an empty path means
  // no file. A missing or rejected file is not an error. Errors: VkError of
  // vkCreatePipelineCache.
  static Result<std::unique_ptr<PipelineCache>> Create(Device& device, std::string path);
  // Saves (best effort) and destroys every pipeline.
  ~PipelineCache();
  PipelineCache(const PipelineCache&) = delete;
  PipelineCache& operator=(const PipelineCache&) = delete;

  // The pipeline for `desc`, created on first use. Errors: NotFound for an unknown shader name;
  // InvalidArgument for a bad desc (too many bindings, push block too large for the device);
  // VkError of shader module / pipeline creation. A failed creation is not cached.
  Result<const Pipeline*> Get(const PipelineDesc& desc);

  // Writes the cache file now (temp + rename). OK without a path. Errors: PosixError.
  Status Save();

  const std::string& path() const { return path_; }
  // What happened to the file at load: "loaded N bytes", "no file", "ignored: <why>".
  const std::string& load_note() const { return load_note_; }
  bool loaded_from_disk() const { return loaded_; }
  size_t size() const;  // pipelines created so far

 private:
  PipelineCache(Device& device, std::string path) : device_(device), path_(std::move(path)) {}
  Device& device_;
  const std::string path_;
  VkPipelineCache cache_ = VK_NULL_HANDLE;
  std::string load_note_;
  bool loaded_ = false;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Pipeline>> pipelines_;  // guarded by mu_
  // The same pipelines by a hash of their desc (the allocation-free lookup); guarded by mu_.
  std::unordered_multimap<uint64_t, const Pipeline*> by_hash_;
};

}  // namespace garnet::vk
