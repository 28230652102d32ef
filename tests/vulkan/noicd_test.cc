// With no Vulkan driver reachable, creating the instance is a clean Unavailable error (the caller
// then uses the CPU backend), not a crash. Its own binary: the loader reads the driver list from
// the environment when the first instance is created.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/vulkan/device.h"

namespace garnet::vk {
namespace {

TEST(NoDriver, InstanceCreationIsUnavailable) {
  // Point the loader at a driver manifest that does not exist (both spellings of the variable).
  ::setenv("VK_ICD_FILENAMES", "/nonexistent/garnet-no-such-icd.json", 1);
  ::setenv("VK_DRIVER_FILES", "/nonexistent/garnet-no-such-icd.json", 1);
  auto inst = Instance::Create();
  ASSERT_FALSE(inst.ok());
  EXPECT_TRUE(inst.status().IsUnavailable()) << inst.status().ToString();
  EXPECT_NE(inst.status().message().find("CPU backend"), std::string::npos)
      << inst.status().ToString();
}

}  // namespace
}  // namespace garnet::vk
