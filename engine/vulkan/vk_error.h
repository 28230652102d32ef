// VkResult -> Status, translated once at the Vulkan boundary (like PosixError for errno).
//
// Mapping: OUT_OF_HOST/DEVICE_MEMORY, OUT_OF_POOL_MEMORY, FRAGMENTED_POOL, TOO_MANY_OBJECTS ->
// ResourceExhausted; INCOMPATIBLE_DRIVER, INITIALIZATION_FAILED, DEVICE_LOST -> Unavailable;
// LAYER/EXTENSION/FEATURE_NOT_PRESENT -> FailedPrecondition; everything else -> Internal. The
// detail names the VkResult ("VK_ERROR_DEVICE_LOST (-4)").
//
// Thread-safety: pure functions.
#pragma once

#include <vulkan/vulkan.h>

#include <string_view>

#include "engine/base/status.h"

namespace garnet::vk {

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" etc.; "VkResult(<n>)" for values this build does not know.
std::string VkResultName(VkResult result);

// OK for VK_SUCCESS (and other non-negative results); otherwise the mapped error, with `context`
// (what was being done) first: "vkAllocateMemory for 4096 bytes: VK_ERROR_OUT_OF_DEVICE_MEMORY
// (-2)".
Status VkError(std::string_view context, VkResult result);

}  // namespace garnet::vk

// Evaluates a Vulkan call; on failure returns VkError(context, result) from the caller.
#define GARNET_VK_RETURN_IF_ERROR(context, call)                                           \
  do {                                                                                     \
    const VkResult garnet_vk_result_ = (call);                                             \
    if (garnet_vk_result_ < 0) return ::garnet::vk::VkError((context), garnet_vk_result_); \
  } while (0)
