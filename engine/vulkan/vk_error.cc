#include "engine/vulkan/vk_error.h"

#include <string>

namespace garnet::vk {

std::string VkResultName(VkResult result) {
  switch (result) {
#define GARNET_VK_NAME(r) \
  case r:                 \
    return #r;
    GARNET_VK_NAME(VK_SUCCESS)
    GARNET_VK_NAME(VK_NOT_READY)
    GARNET_VK_NAME(VK_TIMEOUT)
    GARNET_VK_NAME(VK_EVENT_SET)
    GARNET_VK_NAME(VK_EVENT_RESET)
    GARNET_VK_NAME(VK_INCOMPLETE)
    GARNET_VK_NAME(VK_ERROR_OUT_OF_HOST_MEMORY)
    GARNET_VK_NAME(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    GARNET_VK_NAME(VK_ERROR_INITIALIZATION_FAILED)
    GARNET_VK_NAME(VK_ERROR_DEVICE_LOST)
    GARNET_VK_NAME(VK_ERROR_MEMORY_MAP_FAILED)
    GARNET_VK_NAME(VK_ERROR_LAYER_NOT_PRESENT)
    GARNET_VK_NAME(VK_ERROR_EXTENSION_NOT_PRESENT)
    GARNET_VK_NAME(VK_ERROR_FEATURE_NOT_PRESENT)
    GARNET_VK_NAME(VK_ERROR_INCOMPATIBLE_DRIVER)
    GARNET_VK_NAME(VK_ERROR_TOO_MANY_OBJECTS)
    GARNET_VK_NAME(VK_ERROR_FORMAT_NOT_SUPPORTED)
    GARNET_VK_NAME(VK_ERROR_FRAGMENTED_POOL)
    GARNET_VK_NAME(VK_ERROR_UNKNOWN)
    GARNET_VK_NAME(VK_ERROR_OUT_OF_POOL_MEMORY)
    GARNET_VK_NAME(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    GARNET_VK_NAME(VK_ERROR_FRAGMENTATION)
    GARNET_VK_NAME(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    GARNET_VK_NAME(VK_PIPELINE_COMPILE_REQUIRED)
#undef GARNET_VK_NAME
    default:
      return "VkResult(" + std::to_string(static_cast<int>(result)) + ")";
  }
}

Status VkError(std::string_view context, VkResult result) {
  if (result >= 0) return Status::OK();
  const std::string detail =
      VkResultName(result) + " (" + std::to_string(static_cast<int>(result)) + ")";
  switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_FRAGMENTATION:
    case VK_ERROR_TOO_MANY_OBJECTS:
      return Status::ResourceExhausted(context, detail);
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_DEVICE_LOST:
      return Status::Unavailable(context, detail);
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return Status::FailedPrecondition(context, detail);
    default:
      return Status::Internal(context, detail);
  }
}

}  // namespace garnet::vk
