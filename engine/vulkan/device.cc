#include "engine/vulkan/device.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/vulkan/pipeline.h"
#include "engine/vulkan/vk_error.h"

namespace garnet::vk {
namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

bool HasExtension(const std::vector<VkExtensionProperties>& exts, const char* name) {
  for (const auto& e : exts) {
    if (std::strcmp(e.extensionName, name) == 0) return true;
  }
  return false;
}

VKAPI_ATTR VkBool32 VKAPI_CALL OnValidationMessage(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                   VkDebugUtilsMessageTypeFlagsEXT /*types*/,
                                                   const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                   void* user) {
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    static_cast<std::atomic<uint64_t>*>(user)->fetch_add(1);
  }
  std::fprintf(stderr, "garnet vulkan validation: %s\n",
               data && data->pMessage ? data->pMessage : "(no message)");
  return VK_FALSE;
}

DeviceType ToDeviceType(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return DeviceType::kIntegratedGpu;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return DeviceType::kDiscreteGpu;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return DeviceType::kVirtualGpu;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return DeviceType::kCpu;
    default:
      return DeviceType::kOther;
  }
}

std::vector<VkExtensionProperties> DeviceExtensions(VkPhysicalDevice pd) {
  uint32_t n = 0;
  if (vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr) != VK_SUCCESS) return {};
  std::vector<VkExtensionProperties> exts(n);
  if (vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data()) < 0) return {};
  exts.resize(n);
  return exts;
}

std::optional<uint32_t> ComputeQueueFamily(VkPhysicalDevice pd) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, families.data());
  for (uint32_t i = 0; i < n; ++i) {
    if ((families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && families[i].queueCount > 0) return i;
  }
  return std::nullopt;
}

// Heaps, with the budget numbers when the device has VK_EXT_memory_budget.
std::vector<MemoryHeapInfo> ReadHeaps(VkPhysicalDevice pd, bool has_budget) {
  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  VkPhysicalDeviceMemoryProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
  if (has_budget) props.pNext = &budget;
  vkGetPhysicalDeviceMemoryProperties2(pd, &props);
  std::vector<MemoryHeapInfo> heaps;
  for (uint32_t i = 0; i < props.memoryProperties.memoryHeapCount; ++i) {
    MemoryHeapInfo h;
    h.size = props.memoryProperties.memoryHeaps[i].size;
    h.device_local = props.memoryProperties.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
    if (has_budget) {
      h.budget = budget.heapBudget[i];
      h.usage = budget.heapUsage[i];
    }
    heaps.push_back(h);
  }
  return heaps;
}

// VK_KHR_cooperative_matrix, which Debian 12's Vulkan headers (1.3.239) predate: the structure
// types and the two structures garnet uses, laid out as the Vulkan registry defines them
// (VkPhysicalDeviceCooperativeMatrixFeaturesKHR, VkCooperativeMatrixPropertiesKHR; the enums are
// 32-bit, and VkComponentTypeKHR / VkScopeKHR share the NV values).
constexpr auto kStructCoopmatFeaturesKhr = static_cast<VkStructureType>(1000506000);
constexpr auto kStructCoopmatPropertiesKhr = static_cast<VkStructureType>(1000506001);
struct CoopmatFeaturesKhr {
  VkStructureType sType;
  void* pNext;
  VkBool32 cooperativeMatrix;
  VkBool32 cooperativeMatrixRobustBufferAccess;
};
struct CoopmatPropertiesKhr {
  VkStructureType sType;
  void* pNext;
  uint32_t MSize, NSize, KSize;
  uint32_t AType, BType, CType, ResultType;  // VkComponentTypeKHR
  VkBool32 saturatingAccumulation;
  uint32_t scope;  // VkScopeKHR
};
using PfnCoopmatPropertiesKhr = VkResult(VKAPI_PTR*)(VkPhysicalDevice, uint32_t*,
                                                     CoopmatPropertiesKhr*);

// Whether the driver lists a subgroup-scope 16x16x16 cooperative matrix shape with f16 A/B and
// f32 C/D (the one matmul_coop.comp uses).
bool HasNvCoopmatF16(VkInstance instance, VkPhysicalDevice pd) {
  auto fn = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
      vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
  if (!fn) return false;
  uint32_t n = 0;
  if (fn(pd, &n, nullptr) != VK_SUCCESS || n == 0) return false;
  std::vector<VkCooperativeMatrixPropertiesNV> props(
      n, VkCooperativeMatrixPropertiesNV{VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV});
  if (fn(pd, &n, props.data()) != VK_SUCCESS) return false;
  for (uint32_t i = 0; i < n; ++i) {
    const VkCooperativeMatrixPropertiesNV& p = props[i];
    if (p.MSize == 16 && p.NSize == 16 && p.KSize == 16 &&
        p.AType == VK_COMPONENT_TYPE_FLOAT16_NV && p.BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
        p.CType == VK_COMPONENT_TYPE_FLOAT32_NV && p.DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
        p.scope == VK_SCOPE_SUBGROUP_NV) {
      return true;
    }
  }
  return false;
}

// The same for VK_KHR_cooperative_matrix. The shape must not require the SaturatingAccumulation
// multiply-add operand, which the rewritten shaders do not carry.
bool HasKhrCoopmatF16(VkInstance instance, VkPhysicalDevice pd) {
  auto fn = reinterpret_cast<PfnCoopmatPropertiesKhr>(
      vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR"));
  if (!fn) return false;
  uint32_t n = 0;
  if (fn(pd, &n, nullptr) != VK_SUCCESS || n == 0) return false;
  std::vector<CoopmatPropertiesKhr> props(n, CoopmatPropertiesKhr{kStructCoopmatPropertiesKhr});
  if (fn(pd, &n, props.data()) != VK_SUCCESS) return false;
  for (uint32_t i = 0; i < n; ++i) {
    const CoopmatPropertiesKhr& p = props[i];
    if (p.MSize == 16 && p.NSize == 16 && p.KSize == 16 &&
        p.AType == VK_COMPONENT_TYPE_FLOAT16_NV && p.BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
        p.CType == VK_COMPONENT_TYPE_FLOAT32_NV && p.ResultType == VK_COMPONENT_TYPE_FLOAT32_NV &&
        !p.saturatingAccumulation && p.scope == VK_SCOPE_SUBGROUP_NV) {
      return true;
    }
  }
  return false;
}

DeviceInfo Describe(VkInstance instance, VkPhysicalDevice pd, uint32_t index) {
  DeviceInfo info;
  info.index = index;
  VkPhysicalDeviceProperties base{};
  vkGetPhysicalDeviceProperties(pd, &base);
  info.name = base.deviceName;
  info.type = ToDeviceType(base.deviceType);
  info.vendor_id = base.vendorID;
  info.device_id = base.deviceID;
  info.api_version = base.apiVersion;
  std::memcpy(info.pipeline_cache_uuid.data(), base.pipelineCacheUUID, VK_UUID_SIZE);
  if (VK_API_VERSION_MAJOR(base.apiVersion) == 1 && VK_API_VERSION_MINOR(base.apiVersion) < 2) {
    info.unusable_reason = "Vulkan " + std::to_string(VK_API_VERSION_MAJOR(base.apiVersion)) + "." +
                           std::to_string(VK_API_VERSION_MINOR(base.apiVersion)) +
                           " device; garnet needs Vulkan 1.2";
    return info;
  }
  const bool v13 =
      VK_API_VERSION_MINOR(base.apiVersion) >= 3 || VK_API_VERSION_MAJOR(base.apiVersion) > 1;
  const std::vector<VkExtensionProperties> exts = DeviceExtensions(pd);
  info.push_descriptor = HasExtension(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  info.memory_budget = HasExtension(exts, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  info.nv_cooperative_matrix = HasExtension(exts, "VK_NV_cooperative_matrix");
  info.khr_cooperative_matrix = HasExtension(exts, "VK_KHR_cooperative_matrix");
  info.pipeline_executable_info =
      HasExtension(exts, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  const bool has_dot_ext = HasExtension(exts, "VK_KHR_shader_integer_dot_product");
  const bool has_sgsc_ext = HasExtension(exts, "VK_EXT_subgroup_size_control");

  // Properties.
  VkPhysicalDeviceVulkan11Properties p11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES};
  VkPhysicalDeviceVulkan12Properties p12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties psg{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  VkPhysicalDeviceShaderIntegerDotProductProperties pdot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props.pNext = &p11;
  p11.pNext = &p12;
  void** tail = &p12.pNext;
  if (v13 || has_sgsc_ext) {
    *tail = &psg;
    tail = &psg.pNext;
  }
  if (v13 || has_dot_ext) *tail = &pdot;
  vkGetPhysicalDeviceProperties2(pd, &props);
  info.integer_dot_4x8_accelerated = pdot.integerDotProduct4x8BitPackedSignedAccelerated &&
                                     pdot.integerDotProduct4x8BitPackedMixedSignednessAccelerated;
  std::memcpy(info.uuid.data(), p11.deviceUUID, VK_UUID_SIZE);
  info.driver_name = p12.driverName;
  info.driver_info = p12.driverInfo;
  info.subgroup_size = p11.subgroupSize;
  info.subgroup_arithmetic = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  info.subgroup_clustered = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                            (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_CLUSTERED_BIT);
  info.max_allocation_size = p11.maxMemoryAllocationSize;
  if (v13 || has_sgsc_ext) {
    info.min_subgroup_size = psg.minSubgroupSize;
    info.max_subgroup_size = psg.maxSubgroupSize;
  }
  const VkPhysicalDeviceLimits& lim = base.limits;
  info.max_shared_memory = lim.maxComputeSharedMemorySize;
  info.max_workgroup_invocations = lim.maxComputeWorkGroupInvocations;
  for (int i = 0; i < 3; ++i) info.max_workgroup_count[i] = lim.maxComputeWorkGroupCount[i];
  info.max_push_constants = lim.maxPushConstantsSize;
  info.max_storage_buffer_range = lim.maxStorageBufferRange;
  info.min_storage_buffer_offset_alignment = lim.minStorageBufferOffsetAlignment;

  // Features.
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceVulkan13Features f13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  CoopmatFeaturesKhr fkhr{kStructCoopmatFeaturesKhr};
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR fpe{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
  VkPhysicalDeviceFeatures2 feats{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  feats.pNext = &f11;
  f11.pNext = &f12;
  if (info.pipeline_executable_info) {  // first in the chain: the others append after f12
    fpe.pNext = &f12;
    f11.pNext = &fpe;
  }
  if (v13) {
    f12.pNext = &f13;
    if (info.khr_cooperative_matrix) f13.pNext = &fkhr;
  } else if (has_dot_ext) {
    f12.pNext = &fdot;
    if (info.khr_cooperative_matrix) fdot.pNext = &fkhr;
  } else if (info.khr_cooperative_matrix) {
    f12.pNext = &fkhr;
  }
  vkGetPhysicalDeviceFeatures2(pd, &feats);
  info.storage_16bit = f11.storageBuffer16BitAccess;
  info.storage_8bit = f12.storageBuffer8BitAccess;
  info.float16 = f12.shaderFloat16;
  info.int8 = f12.shaderInt8;
  info.int16 = feats.features.shaderInt16;
  info.timeline_semaphore = f12.timelineSemaphore;
  info.vulkan_memory_model = f12.vulkanMemoryModel;
  info.integer_dot_product = v13 ? f13.shaderIntegerDotProduct : fdot.shaderIntegerDotProduct;
  info.subgroup_size_control = v13 ? f13.subgroupSizeControl : false;
  info.pipeline_executable_info = info.pipeline_executable_info && fpe.pipelineExecutableInfo;
  info.nv_coopmat_f16_shape = info.nv_cooperative_matrix && HasNvCoopmatF16(instance, pd);
  info.khr_coopmat_f16_shape =
      info.khr_cooperative_matrix && fkhr.cooperativeMatrix && HasKhrCoopmatF16(instance, pd);

  info.heaps = ReadHeaps(pd, info.memory_budget);
  if (!ComputeQueueFamily(pd)) {
    info.unusable_reason = "no queue family with compute";
    return info;
  }
  info.usable = true;
  return info;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// DeviceOptions::cooperative_matrix when unset: GARNET_VULKAN_COOPMAT (khr, nv, none), else
// kKhr: on the H200 (driver 580.159.04) the KHR variants ran 26b-a4b prefill 4-8 % faster than
// the NV ones from the same shader source, with the same tokens (docs/PERF.md, round 5).
CoopmatForm CoopmatFromEnvironment() {
  const char* v = std::getenv("GARNET_VULKAN_COOPMAT");
  if (v == nullptr || *v == 0) return CoopmatForm::kKhr;
  const std::string e = Lower(v);
  if (e == "nv") return CoopmatForm::kNv;
  if (e == "none" || e == "off" || e == "0") return CoopmatForm::kNone;
  if (e != "khr") {
    std::fprintf(stderr,
                 "garnet vulkan: GARNET_VULKAN_COOPMAT=%s is not khr, nv or none; using khr\n", v);
  }
  return CoopmatForm::kKhr;
}

bool PipelineStatsFromEnvironment() {
  const char* v = std::getenv("GARNET_VULKAN_PIPELINE_STATS");
  return v != nullptr && *v != 0 && std::strcmp(v, "0") != 0;
}

// DeviceOptions::integer_dot_product when unset: GARNET_VULKAN_INTEGER_DOT=0 (off) or any other
// value (on wherever the feature is); not set: nullopt (on where the driver runs it natively).
std::optional<bool> IntegerDotFromEnvironment() {
  const char* v = std::getenv("GARNET_VULKAN_INTEGER_DOT");
  if (v == nullptr || *v == 0) return std::nullopt;
  return std::strcmp(v, "0") != 0;
}

std::string DeviceList(std::span<const DeviceInfo> devices) {
  std::string s;
  for (const DeviceInfo& d : devices) {
    if (!s.empty()) s += ", ";
    s += std::to_string(d.index) + ": " + d.name + " (" + std::string(DeviceTypeName(d.type)) + ")";
  }
  return s.empty() ? "none" : s;
}

int TypeRank(DeviceType t) {
  switch (t) {
    case DeviceType::kDiscreteGpu:
      return 0;
    case DeviceType::kIntegratedGpu:
      return 1;
    case DeviceType::kVirtualGpu:
      return 2;
    case DeviceType::kCpu:
      return 3;
    default:
      return 4;
  }
}

std::string DefaultPipelineCachePath(const DeviceInfo& info) {
  std::string base;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') {
    base = xdg;
  } else if (const char* home = std::getenv("HOME"); home && *home == '/') {
    base = std::string(home) + "/.cache";
  } else {
    return "";  // nowhere sensible: in-memory only
  }
  return base + "/garnet/vk-" + UuidString(info.uuid) + ".bin";
}

}  // namespace

std::string_view DeviceTypeName(DeviceType type) {
  switch (type) {
    case DeviceType::kIntegratedGpu:
      return "integrated";
    case DeviceType::kDiscreteGpu:
      return "discrete";
    case DeviceType::kVirtualGpu:
      return "virtual";
    case DeviceType::kCpu:
      return "cpu";
    default:
      return "other";
  }
}

std::string_view CoopmatFormName(CoopmatForm form) {
  switch (form) {
    case CoopmatForm::kNv:
      return "nv";
    case CoopmatForm::kKhr:
      return "khr";
    default:
      return "none";
  }
}

uint64_t DeviceInfo::DeviceLocalBytes() const {
  uint64_t total = 0;
  for (const MemoryHeapInfo& h : heaps) {
    if (h.device_local) total += h.size;
  }
  return total;
}

std::string UuidString(const std::array<uint8_t, 16>& uuid) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += kHex[uuid[i] >> 4];
    s += kHex[uuid[i] & 15];
  }
  return s;
}

std::string FormatDeviceInfo(const DeviceInfo& d) {
  char buf[256];
  std::string s;
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::snprintf(buf, sizeof buf, "device %u: %s (%s)\n", d.index, d.name.c_str(),
                std::string(DeviceTypeName(d.type)).c_str());
  s += buf;
  std::snprintf(buf, sizeof buf, "  vendor 0x%04x device 0x%04x, Vulkan %u.%u.%u, driver %s %s\n",
                d.vendor_id, d.device_id, VK_API_VERSION_MAJOR(d.api_version),
                VK_API_VERSION_MINOR(d.api_version), VK_API_VERSION_PATCH(d.api_version),
                d.driver_name.c_str(), d.driver_info.c_str());
  s += buf;
  s += "  uuid " + UuidString(d.uuid) + "\n";
  for (size_t i = 0; i < d.heaps.size(); ++i) {
    const MemoryHeapInfo& h = d.heaps[i];
    std::snprintf(buf, sizeof buf, "  heap %zu: %.1f MiB%s", i, h.size / 1048576.0,
                  h.device_local ? " device-local" : "");
    s += buf;
    if (h.budget) {
      std::snprintf(buf, sizeof buf, ", budget %.1f MiB, used %.1f MiB", *h.budget / 1048576.0,
                    h.usage.value_or(0) / 1048576.0);
      s += buf;
    }
    s += "\n";
  }
  std::snprintf(
      buf, sizeof buf,
      "  subgroup size %u (min %u max %u), arithmetic %s, clustered %s, size control %s\n",
      d.subgroup_size, d.min_subgroup_size, d.max_subgroup_size, yes(d.subgroup_arithmetic),
      yes(d.subgroup_clustered), yes(d.subgroup_size_control));
  s += buf;
  std::snprintf(buf, sizeof buf,
                "  16-bit storage %s, 8-bit storage %s, float16 %s, int8 %s, int16 %s, "
                "integer dot product %s%s, timeline semaphore %s\n",
                yes(d.storage_16bit), yes(d.storage_8bit), yes(d.float16), yes(d.int8),
                yes(d.int16), yes(d.integer_dot_product),
                d.integer_dot_product && !d.integer_dot_4x8_accelerated ? " (not accelerated)" : "",
                yes(d.timeline_semaphore));
  s += buf;
  auto coop = [&](bool ext, bool shape) { return !ext ? "no" : shape ? "yes" : "no f16 16x16x16"; };
  std::snprintf(buf, sizeof buf,
                "  push descriptors %s, memory budget %s, NV cooperative matrix %s, KHR "
                "cooperative matrix %s, pipeline statistics %s\n",
                yes(d.push_descriptor), yes(d.memory_budget),
                coop(d.nv_cooperative_matrix, d.nv_coopmat_f16_shape),
                coop(d.khr_cooperative_matrix, d.khr_coopmat_f16_shape),
                yes(d.pipeline_executable_info));
  s += buf;
  std::snprintf(buf, sizeof buf,
                "  shared memory %u B, workgroup invocations %u, push constants %u B, storage "
                "range %llu B, max allocation %llu B\n",
                d.max_shared_memory, d.max_workgroup_invocations, d.max_push_constants,
                static_cast<unsigned long long>(d.max_storage_buffer_range),
                static_cast<unsigned long long>(d.max_allocation_size));
  s += buf;
  if (!d.usable) s += "  NOT USABLE: " + d.unusable_reason + "\n";
  return s;
}

Result<std::shared_ptr<Instance>> Instance::Create(const InstanceOptions& options) {
  Validation mode = Validation::kOff;
  if (options.validate) {
    mode = *options.validate;
  } else if (const char* v = std::getenv("GARNET_VK_VALIDATE"); v != nullptr) {
    const std::string_view e(v);
    mode = e == "1"      ? Validation::kStandard
           : e == "sync" ? Validation::kSynchronization
           : e == "gpu"  ? Validation::kGpuAssisted
                         : Validation::kOff;
  }
  const bool validate = mode != Validation::kOff;
  uint32_t loader_version = VK_API_VERSION_1_0;
  if (vkEnumerateInstanceVersion(&loader_version) != VK_SUCCESS)
    loader_version = VK_API_VERSION_1_0;
  if (VK_API_VERSION_MAJOR(loader_version) == 1 && VK_API_VERSION_MINOR(loader_version) < 2) {
    return Status::Unavailable("vulkan instance", "the Vulkan loader is older than 1.2");
  }
  std::shared_ptr<Instance> inst(new Instance());
  inst->mode_ = mode;
  inst->api_version_ = std::min(loader_version, static_cast<uint32_t>(VK_API_VERSION_1_3));

  std::vector<const char*> layers;
  std::vector<const char*> extensions;
  if (validate) {
    uint32_t n = 0;
    vkEnumerateInstanceLayerProperties(&n, nullptr);
    std::vector<VkLayerProperties> props(n);
    vkEnumerateInstanceLayerProperties(&n, props.data());
    const bool have = std::any_of(props.begin(), props.end(), [](const VkLayerProperties& p) {
      return std::strcmp(p.layerName, kValidationLayer) == 0;
    });
    if (have) {
      layers.push_back(kValidationLayer);
      extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    } else {
      std::fprintf(stderr,
                   "garnet vulkan: GARNET_VK_VALIDATE is set but %s is not installed "
                   "(Debian: vulkan-validationlayers); running without validation\n",
                   kValidationLayer);
    }
  }

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "garnet";
  app.pEngineName = "garnet";
  app.apiVersion = inst->api_version_;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  ci.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ci.ppEnabledLayerNames = layers.data();
  ci.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  ci.ppEnabledExtensionNames = extensions.data();
  VkValidationFeatureEnableEXT enables[2] = {};
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  if (!layers.empty() && mode == Validation::kSynchronization) {
    enables[0] = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
    features.enabledValidationFeatureCount = 1;
  } else if (!layers.empty() && mode == Validation::kGpuAssisted) {
    enables[0] = VK_VALIDATION_FEATURE_ENABLE_GPU_ASSISTED_EXT;
    enables[1] = VK_VALIDATION_FEATURE_ENABLE_GPU_ASSISTED_RESERVE_BINDING_SLOT_EXT;
    features.enabledValidationFeatureCount = 2;
  }
  if (features.enabledValidationFeatureCount > 0) {
    features.pEnabledValidationFeatures = enables;
    ci.pNext = &features;
  }
  const VkResult r = vkCreateInstance(&ci, nullptr, &inst->instance_);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
    return Status::Unavailable("vulkan instance",
                               "no Vulkan driver found (" + VkResultName(r) +
                                   "); install a Vulkan ICD such as mesa-vulkan-drivers or the "
                                   "GPU vendor's driver, or use the CPU backend");
  }
  GARNET_VK_RETURN_IF_ERROR("vkCreateInstance", r);

  if (!layers.empty()) {
    auto create_messenger = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(inst->instance_, "vkCreateDebugUtilsMessengerEXT"));
    if (create_messenger) {
      VkDebugUtilsMessengerCreateInfoEXT mci{
          VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
      mci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                            VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
      mci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                        VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                        VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
      mci.pfnUserCallback = OnValidationMessage;
      mci.pUserData = inst->validation_errors_.get();
      GARNET_VK_RETURN_IF_ERROR(
          "vkCreateDebugUtilsMessengerEXT",
          create_messenger(inst->instance_, &mci, nullptr, &inst->messenger_));
    }
  }

  uint32_t n = 0;
  GARNET_VK_RETURN_IF_ERROR("vkEnumeratePhysicalDevices",
                            vkEnumeratePhysicalDevices(inst->instance_, &n, nullptr));
  inst->physical_.resize(n);
  GARNET_VK_RETURN_IF_ERROR(
      "vkEnumeratePhysicalDevices",
      vkEnumeratePhysicalDevices(inst->instance_, &n, inst->physical_.data()));
  inst->physical_.resize(n);
  if (n == 0) {
    return Status::Unavailable("vulkan instance",
                               "the Vulkan driver lists no physical device; use the CPU backend");
  }
  for (uint32_t i = 0; i < n; ++i) {
    inst->devices_.push_back(Describe(inst->instance_, inst->physical_[i], i));
  }
  return inst;
}

Instance::~Instance() {
  if (messenger_ != VK_NULL_HANDLE) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    if (destroy) destroy(instance_, messenger_, nullptr);
  }
  if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
}

Result<uint32_t> SelectDevice(std::span<const DeviceInfo> devices, std::string_view selector) {
  if (devices.empty()) return Status::Unavailable("vulkan device selection", "no Vulkan device");
  const DeviceInfo* pick = nullptr;
  if (selector.empty()) {
    for (const DeviceInfo& d : devices) {
      if (d.usable && (!pick || TypeRank(d.type) < TypeRank(pick->type))) pick = &d;
    }
    if (!pick) {
      return Status::FailedPrecondition(
          "vulkan device selection",
          "no usable device: " + devices[0].name + ": " + devices[0].unusable_reason);
    }
    return pick->index;
  }
  const bool numeric =
      std::all_of(selector.begin(), selector.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (numeric) {
    if (selector.size() > 9 || std::stoul(std::string(selector)) >= devices.size()) {
      return Status::NotFound("vulkan device " + std::string(selector),
                              "no such index; devices: " + DeviceList(devices));
    }
    pick = &devices[std::stoul(std::string(selector))];
  } else {
    const std::string want = Lower(selector);
    for (const DeviceInfo& d : devices) {
      if (Lower(d.name).find(want) != std::string::npos && (!pick || (!pick->usable && d.usable))) {
        pick = &d;
      }
    }
    if (!pick) {
      return Status::NotFound("vulkan device \"" + std::string(selector) + "\"",
                              "no device name contains it; devices: " + DeviceList(devices));
    }
  }
  if (!pick->usable) {
    return Status::FailedPrecondition(
        "vulkan device " + std::to_string(pick->index) + " (" + pick->name + ")",
        pick->unusable_reason);
  }
  return pick->index;
}

Result<std::unique_ptr<Device>> Device::Create(std::shared_ptr<Instance> instance,
                                               const DeviceOptions& options) {
  if (!instance) return Status::InvalidArgument("vulkan device", "null instance");
  GARNET_ASSIGN_OR_RETURN(const uint32_t index,
                          SelectDevice(instance->devices(), options.selector));
  std::unique_ptr<Device> dev(new Device());
  dev->instance_ = instance;
  dev->info_ = instance->devices()[index];
  dev->physical_ = instance->physical_device(index);
  dev->queue_family_ = *ComputeQueueFamily(dev->physical_);
  vkGetPhysicalDeviceMemoryProperties(dev->physical_, &dev->memory_);
  const DeviceInfo& info = dev->info_;
  DeviceCaps& caps = dev->caps_;
  caps.push_descriptors = info.push_descriptor && !options.disable_push_descriptors &&
                          instance->validation_mode() != Validation::kGpuAssisted;
  caps.subgroup_arithmetic = info.subgroup_arithmetic && !options.disable_subgroup_arithmetic;
  caps.subgroup_clustered = caps.subgroup_arithmetic && info.subgroup_clustered;
  caps.storage_16bit = info.storage_16bit && !options.disable_16bit_storage;
  caps.storage_8bit = info.storage_8bit && info.int8 && !options.disable_8bit_storage;
  caps.float16 = info.float16 && !options.disable_float16;
  caps.int8 = info.int8 && !options.disable_8bit_storage;
  caps.memory_budget = info.memory_budget;
  caps.subgroup_size = info.subgroup_size;
  caps.integer_dot_product =
      info.integer_dot_product &&
      (options.integer_dot_product ? options.integer_dot_product : IntegerDotFromEnvironment())
          .value_or(info.integer_dot_4x8_accelerated);
  // The 1.3 feature struct needs the instance at 1.3 too; otherwise the extension's.
  const bool dot_13 = VK_API_VERSION_MINOR(info.api_version) >= 3 &&
                      VK_API_VERSION_MINOR(instance->api_version()) >= 3;
  caps.pipeline_statistics = info.pipeline_executable_info &&
                             options.pipeline_statistics.value_or(PipelineStatsFromEnvironment());
  const CoopmatForm prefer = options.cooperative_matrix.value_or(CoopmatFromEnvironment());
  const bool coop_ok = !options.disable_cooperative_matrix && prefer != CoopmatForm::kNone &&
                       caps.float16 && caps.storage_16bit && info.vulkan_memory_model &&
                       info.subgroup_size == 32;
  const bool nv_ok = coop_ok && info.nv_coopmat_f16_shape;
  const bool khr_ok = coop_ok && info.khr_coopmat_f16_shape;
  if (prefer == CoopmatForm::kKhr) {
    caps.coopmat = khr_ok ? CoopmatForm::kKhr : nv_ok ? CoopmatForm::kNv : CoopmatForm::kNone;
  } else {
    caps.coopmat = nv_ok ? CoopmatForm::kNv : khr_ok ? CoopmatForm::kKhr : CoopmatForm::kNone;
  }

  std::vector<const char*> extensions;
  if (caps.push_descriptors) extensions.push_back(VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  if (caps.memory_budget) extensions.push_back(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  if (caps.coopmat == CoopmatForm::kNv) {
    extensions.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
  } else if (caps.coopmat == CoopmatForm::kKhr) {
    extensions.push_back("VK_KHR_cooperative_matrix");
  }
  if (caps.pipeline_statistics) {
    extensions.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  }
  if (caps.integer_dot_product && !dot_13) {
    extensions.push_back("VK_KHR_shader_integer_dot_product");
  }

  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  f11.storageBuffer16BitAccess = caps.storage_16bit;
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f12.storageBuffer8BitAccess = caps.storage_8bit;
  f12.shaderFloat16 = caps.float16;
  f12.shaderInt8 = caps.int8;
  f12.timelineSemaphore = info.timeline_semaphore;
  f12.vulkanMemoryModel = caps.coopmat != CoopmatForm::kNone;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV fcm{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  fcm.cooperativeMatrix = VK_TRUE;
  CoopmatFeaturesKhr fkhr{kStructCoopmatFeaturesKhr};
  fkhr.cooperativeMatrix = VK_TRUE;
  VkPhysicalDeviceFeatures2 feats{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  feats.features.shaderInt16 = info.int16;
  feats.pNext = &f11;
  f11.pNext = &f12;
  if (caps.coopmat == CoopmatForm::kNv) f12.pNext = &fcm;
  if (caps.coopmat == CoopmatForm::kKhr) f12.pNext = &fkhr;
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR fpe{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
  fpe.pipelineExecutableInfo = VK_TRUE;
  if (caps.pipeline_statistics) {
    fpe.pNext = f11.pNext;
    f11.pNext = &fpe;
  }
  VkPhysicalDeviceVulkan13Features f13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
  f13.shaderIntegerDotProduct = VK_TRUE;
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  fdot.shaderIntegerDotProduct = VK_TRUE;
  if (caps.integer_dot_product) {
    void* const next = f11.pNext;
    if (dot_13) {
      f13.pNext = next;
      f11.pNext = &f13;
    } else {
      fdot.pNext = next;
      f11.pNext = &fdot;
    }
  }

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = dev->queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &feats;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  dci.ppEnabledExtensionNames = extensions.data();
  GARNET_VK_RETURN_IF_ERROR("vkCreateDevice for " + info.name,
                            vkCreateDevice(dev->physical_, &dci, nullptr, &dev->device_));
  vkGetDeviceQueue(dev->device_, dev->queue_family_, 0, &dev->queue_);
  if (caps.push_descriptors) {
    dev->push_descriptor_fn_ = reinterpret_cast<PFN_vkCmdPushDescriptorSetKHR>(
        vkGetDeviceProcAddr(dev->device_, "vkCmdPushDescriptorSetKHR"));
    if (!dev->push_descriptor_fn_) caps.push_descriptors = false;
  }
  std::string cache_path = options.pipeline_cache_path;
  if (cache_path.empty()) cache_path = DefaultPipelineCachePath(info);
  if (cache_path == "-") cache_path.clear();
  GARNET_ASSIGN_OR_RETURN(dev->pipelines_, PipelineCache::Create(*dev, cache_path));
  return dev;
}

Device::~Device() {
  if (device_ == VK_NULL_HANDLE) return;
  vkDeviceWaitIdle(device_);
  pipelines_.reset();  // saves the cache file, destroys pipelines
  vkDestroyDevice(device_, nullptr);
}

std::vector<MemoryHeapInfo> Device::QueryHeaps() const {
  return ReadHeaps(physical_, caps_.memory_budget);
}

std::optional<uint32_t> Device::FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags required,
                                               VkMemoryPropertyFlags preferred) const {
  std::optional<uint32_t> fallback;
  for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
    if (!(type_bits & (1u << i))) continue;
    const VkMemoryPropertyFlags f = memory_.memoryTypes[i].propertyFlags;
    if ((f & required) != required) continue;
    if ((f & preferred) == preferred) return i;
    if (!fallback) fallback = i;
  }
  return fallback;
}

MemoryAccounting Device::accounting() const {
  std::lock_guard<std::mutex> lock(accounting_mu_);
  return accounting_;
}

void Device::AccountAllocation(MemoryKind kind, uint64_t bytes, uint64_t requested) {
  std::lock_guard<std::mutex> lock(accounting_mu_);
  const int k = static_cast<int>(kind);
  accounting_.bytes[k] += bytes;
  accounting_.requested[k] += requested;
  accounting_.buffers[k] += 1;
  accounting_.peak_total = std::max(accounting_.peak_total, accounting_.TotalBytes());
}

void Device::AccountFree(MemoryKind kind, uint64_t bytes, uint64_t requested) {
  std::lock_guard<std::mutex> lock(accounting_mu_);
  const int k = static_cast<int>(kind);
  accounting_.bytes[k] -= bytes;
  accounting_.requested[k] -= requested;
  accounting_.buffers[k] -= 1;
}

Status Device::Submit(const VkSubmitInfo& submit, VkFence fence) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  GARNET_VK_RETURN_IF_ERROR("vkQueueSubmit", vkQueueSubmit(queue_, 1, &submit, fence));
  return Status::OK();
}

Status Device::WaitIdle() {
  std::lock_guard<std::mutex> lock(queue_mu_);
  GARNET_VK_RETURN_IF_ERROR("vkQueueWaitIdle", vkQueueWaitIdle(queue_));
  return Status::OK();
}

std::string_view MemoryKindName(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kWeights:
      return "weights";
    case MemoryKind::kKv:
      return "kv";
    case MemoryKind::kScratch:
      return "scratch";
    case MemoryKind::kStaging:
      return "staging";
    default:
      return "other";
  }
}

}  // namespace garnet::vk
