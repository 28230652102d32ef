// Vulkan instance and device: the facts about each physical device (DeviceInfo, read-only, cheap
// to copy) are kept apart from the live logical device (Device, which owns the VkDevice, its one
// compute queue, the memory accounting and the pipeline cache).
//
// No window system, compute only. Nothing here calls exit() or aborts: a machine without a
// Vulkan driver (no ICD, or only devices older than Vulkan 1.2) gives an Unavailable Status, and
// the caller falls back to the CPU backend.
//
// Lifetimes: a Device keeps its Instance alive (shared_ptr). Buffers, Recorders, Transfers and
// pipelines made from a Device must be destroyed before it; they hold a plain Device*.
//
// Thread-safety: Instance and DeviceInfo are immutable after creation. Device's const accessors
// and accounting()/pipelines()/Submit() may be called from any thread (internally locked);
// a Buffer or Recorder is used from one thread at a time.
#pragma once

#include <vulkan/vulkan.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/vulkan/memory_kind.h"

namespace garnet::vk {

class PipelineCache;  // pipeline.h

enum class DeviceType : uint8_t { kOther, kIntegratedGpu, kDiscreteGpu, kVirtualGpu, kCpu };
std::string_view DeviceTypeName(DeviceType type);  // "discrete", "integrated", "cpu", ...

struct MemoryHeapInfo {
  uint64_t size = 0;
  bool device_local = false;
  // From VK_EXT_memory_budget, when the device has it: how much this process may use of the
  // heap now, and how much it (all of this process) uses.
  std::optional<uint64_t> budget;
  std::optional<uint64_t> usage;
};

// Read-only facts about one physical device, gathered when the Instance is created.
struct DeviceInfo {
  uint32_t index = 0;  // position in vkEnumeratePhysicalDevices order
  std::string name;
  DeviceType type = DeviceType::kOther;
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  uint32_t api_version = 0;  // VK_MAKE_API_VERSION encoding
  std::string driver_name;   // from VkPhysicalDeviceDriverProperties ("llvmpipe", "NVIDIA")
  std::string driver_info;
  std::array<uint8_t, 16> uuid{};  // pipelineCacheUUID-independent device UUID
  std::array<uint8_t, 16> pipeline_cache_uuid{};
  std::vector<MemoryHeapInfo> heaps;

  // Subgroups (compute stage).
  uint32_t subgroup_size = 0;
  bool subgroup_arithmetic = false;  // subgroupAdd & co. in compute shaders
  bool subgroup_clustered = false;   // subgroupClusteredAdd & co. in compute shaders
  bool subgroup_size_control = false;
  uint32_t min_subgroup_size = 0;
  uint32_t max_subgroup_size = 0;

  // Features.
  bool storage_16bit = false;  // storageBuffer16BitAccess
  bool storage_8bit = false;   // storageBuffer8BitAccess
  bool float16 = false;        // shaderFloat16
  bool int8 = false;           // shaderInt8
  bool int16 = false;          // shaderInt16
  bool integer_dot_product = false;
  // The packed 4 x 8-bit signed and mixed-signedness dot products run as native instructions
  // (VkPhysicalDeviceShaderIntegerDotProductProperties), not emulated by the driver.
  bool integer_dot_4x8_accelerated = false;
  bool timeline_semaphore = false;
  bool vulkan_memory_model = false;  // vulkanMemoryModel (the cooperative-matrix shaders need it)

  // Extensions.
  bool push_descriptor = false;           // VK_KHR_push_descriptor
  bool memory_budget = false;             // VK_EXT_memory_budget
  bool nv_cooperative_matrix = false;     // VK_NV_cooperative_matrix
  bool khr_cooperative_matrix = false;    // VK_KHR_cooperative_matrix
  bool pipeline_executable_info = false;  // VK_KHR_pipeline_executable_properties
  // Whether that extension lists the subgroup 16x16x16 f16 x f16 -> f32 shape matmul_coop.comp
  // multiplies (KHR: and has its cooperativeMatrix feature).
  bool nv_coopmat_f16_shape = false;
  bool khr_coopmat_f16_shape = false;

  // Limits.
  uint32_t max_shared_memory = 0;
  uint32_t max_workgroup_invocations = 0;
  std::array<uint32_t, 3> max_workgroup_count{};
  uint32_t max_push_constants = 0;
  uint64_t max_storage_buffer_range = 0;
  uint64_t max_allocation_size = 0;
  uint64_t min_storage_buffer_offset_alignment = 0;

  // Whether garnet can use it: needs Vulkan >= 1.2 and a compute-capable queue family.
  bool usable = false;
  std::string unusable_reason;  // empty when usable

  uint64_t DeviceLocalBytes() const;  // sum of device-local heap sizes
};

// Multi-line human-readable description (what `garnet-vkinfo` prints).
std::string FormatDeviceInfo(const DeviceInfo& info);
// "6d657361-3232-2e33-2e36-000000000000"
std::string UuidString(const std::array<uint8_t, 16>& uuid);

// Which cooperative-matrix extension the tensor-core kernels go through: none, the NV form that
// glslc writes (NVIDIA), or the KHR form rewritten from it at build time (AMD, Intel; NVIDIA's
// drivers list both).
enum class CoopmatForm : uint8_t { kNone, kNv, kKhr };
std::string_view CoopmatFormName(CoopmatForm form);  // "none", "nv", "khr"

enum class Validation : uint8_t {
  kOff,
  kStandard,         // VK_LAYER_KHRONOS_validation's default checks
  kSynchronization,  // + synchronization validation (missing/incorrect barriers)
  kGpuAssisted,      // + GPU-assisted validation (out-of-bounds shader accesses)
};

struct InstanceOptions {
  // Enable VK_LAYER_KHRONOS_validation and print its messages to stderr. Default from the
  // environment: GARNET_VK_VALIDATE=1 (standard), =sync (synchronization), =gpu (GPU-assisted),
  // anything else off. When the layer is not installed the instance is still created (without
  // it), a note goes to stderr and validation_enabled() says so.
  std::optional<Validation> validate;
};

class Instance {
 public:
  // Unavailable when the loader finds no driver (VK_ERROR_INCOMPATIBLE_DRIVER or
  // INITIALIZATION_FAILED) or the driver lists no physical device; the message says how to fix it.
  static Result<std::shared_ptr<Instance>> Create(const InstanceOptions& options = {});
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance handle() const { return instance_; }
  uint32_t api_version() const { return api_version_; }
  // Every physical device, usable or not, in enumeration order.
  const std::vector<DeviceInfo>& devices() const { return devices_; }
  VkPhysicalDevice physical_device(uint32_t index) const { return physical_[index]; }
  bool validation_enabled() const { return messenger_ != VK_NULL_HANDLE; }
  Validation validation_mode() const { return validation_enabled() ? mode_ : Validation::kOff; }
  // Validation-layer errors seen so far (0 when validation is off).
  uint64_t validation_errors() const { return validation_errors_->load(); }

 private:
  Instance() = default;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  uint32_t api_version_ = 0;
  Validation mode_ = Validation::kOff;
  std::vector<VkPhysicalDevice> physical_;
  std::vector<DeviceInfo> devices_;
  std::unique_ptr<std::atomic<uint64_t>> validation_errors_ =
      std::make_unique<std::atomic<uint64_t>>(0);
};

// Picks a device. `selector`:
//   ""          the best usable device: discrete > integrated > virtual > cpu > other, first wins;
//   "<digits>"  that index;
//   otherwise   the first usable device whose name contains `selector` (case-insensitive).
// NotFound when nothing matches (the message lists the devices), FailedPrecondition when the
// chosen device is not usable (with the reason).
Result<uint32_t> SelectDevice(std::span<const DeviceInfo> devices, std::string_view selector);

struct DeviceOptions {
  std::string selector;  // see SelectDevice
  // Turn features off even when present, to run (and test) the fallback paths. Push descriptors
  // are also off under GPU-assisted validation: the 1.3.239 layer reports every pushed
  // descriptor as uninitialized (the same shaders through descriptor sets validate clean).
  bool disable_push_descriptors = false;
  bool disable_subgroup_arithmetic = false;
  bool disable_16bit_storage = false;
  bool disable_8bit_storage = false;
  bool disable_float16 = false;
  bool disable_cooperative_matrix = false;
  // The integer-dot decode matvecs (DeviceCaps::integer_dot_product): true wherever the device
  // has shaderIntegerDotProduct, false never. Unset: from GARNET_VULKAN_INTEGER_DOT (0: off,
  // anything else: on wherever the feature is); without it, only where the driver runs the packed
  // 4 x 8-bit dot products natively (DeviceInfo::integer_dot_4x8_accelerated; lavapipe emulates
  // them), as llama.cpp's Vulkan backend decides.
  std::optional<bool> integer_dot_product;
  // The cooperative-matrix form to prefer where the device can use both: kNv or kKhr (the other
  // is still taken where the preferred one is not usable); kNone is disable_cooperative_matrix.
  // Unset: from the environment, GARNET_VULKAN_COOPMAT=khr, =nv or =none; otherwise kKhr (the
  // cross-vendor form, which also measured faster than NV on an H200). Lets an NVIDIA GPU run
  // (and test) either form.
  std::optional<CoopmatForm> cooperative_matrix;
  // Pipeline cache file. Empty: $XDG_CACHE_HOME/garnet/vk-<device uuid>.bin (or
  // ~/.cache/garnet/...). "-": no file, in-memory cache only.
  std::string pipeline_cache_path;
  // Compile statistics of every pipeline (the driver's own: registers, shared memory, instruction
  // counts, whatever it reports) through VK_KHR_pipeline_executable_properties, kept in
  // Pipeline::statistics and printed to stderr as each pipeline is created. Off where the device
  // lacks the extension. Unset: on when GARNET_VULKAN_PIPELINE_STATS is set and not "0".
  std::optional<bool> pipeline_statistics;
};

// What a Device actually enabled (features present and not disabled by DeviceOptions).
struct DeviceCaps {
  bool push_descriptors = false;
  bool subgroup_arithmetic = false;
  bool subgroup_clustered = false;  // with subgroup_arithmetic (and off with it)
  bool storage_16bit = false;
  bool storage_8bit = false;
  bool float16 = false;
  bool int8 = false;
  bool memory_budget = false;
  uint32_t subgroup_size = 0;
  // shaderIntegerDotProduct (Vulkan 1.3 or VK_KHR_shader_integer_dot_product) enabled, as
  // DeviceOptions::integer_dot_product decides: the Q4_K, Q6_K, Q8_0 and Q5_0 decode matvecs use
  // OpSDotKHR / OpSUDotKHR (the _idot variants).
  bool integer_dot_product = false;
  bool pipeline_statistics = false;  // DeviceOptions::pipeline_statistics, where available
  // The cooperative-matrix extension enabled for matmul_coop.comp (kNone: none). Either one needs
  // the 16x16x16 f16 x f16 -> f32 subgroup shape, float16, 16-bit storage, the Vulkan memory model
  // and a subgroup size of 32 (what matmul_coop.comp assumes); which one, when both are usable,
  // is DeviceOptions::cooperative_matrix.
  CoopmatForm coopmat = CoopmatForm::kNone;
};

class Device {
 public:
  // Selects (options.selector), then creates the logical device with one compute queue and the
  // pipeline cache. Errors: those of SelectDevice; VkError of vkCreateDevice.
  static Result<std::unique_ptr<Device>> Create(std::shared_ptr<Instance> instance,
                                                const DeviceOptions& options = {});
  // Waits for the device to go idle, saves the pipeline cache (best effort), destroys all.
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const DeviceInfo& info() const { return info_; }
  const DeviceCaps& caps() const { return caps_; }
  const Instance& instance() const { return *instance_; }
  VkDevice handle() const { return device_; }
  VkPhysicalDevice physical() const { return physical_; }
  uint32_t queue_family() const { return queue_family_; }
  const VkPhysicalDeviceMemoryProperties& memory_properties() const { return memory_; }
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_fn() const { return push_descriptor_fn_; }

  // Heaps with the current budget/usage (VK_EXT_memory_budget) when the device has it.
  std::vector<MemoryHeapInfo> QueryHeaps() const;

  // Memory type index with all `required` flags among `type_bits`, preferring one that also has
  // all `preferred` flags; nullopt when none.
  std::optional<uint32_t> FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags required,
                                         VkMemoryPropertyFlags preferred) const;

  // Snapshot of the per-kind totals of live allocations.
  MemoryAccounting accounting() const;

  PipelineCache& pipelines() { return *pipelines_; }

  // vkQueueSubmit on the one queue, serialised across threads.
  Status Submit(const VkSubmitInfo& submit, VkFence fence);
  // vkQueueWaitIdle.
  Status WaitIdle();

  // For buffer.cc: record an allocation of `bytes` (driver size) for `requested` bytes.
  void AccountAllocation(MemoryKind kind, uint64_t bytes, uint64_t requested);
  void AccountFree(MemoryKind kind, uint64_t bytes, uint64_t requested);

 private:
  Device() = default;
  std::shared_ptr<Instance> instance_;
  DeviceInfo info_;
  DeviceCaps caps_;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkPhysicalDeviceMemoryProperties memory_{};
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_fn_ = nullptr;
  std::unique_ptr<PipelineCache> pipelines_;

  std::mutex queue_mu_;
  mutable std::mutex accounting_mu_;
  MemoryAccounting accounting_;  // guarded by accounting_mu_
};

}  // namespace garnet::vk
