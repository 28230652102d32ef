// With no Vulkan driver the GPU inventory is empty, not an error: the planner then plans for the
// CPU. Its own binary: the loader reads the driver list when the first instance is created.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/vulkan/inventory.h"

namespace garnet::vk {
namespace {

TEST(GpuInventoryNoDriver, IsAnEmptyList) {
  ::setenv("VK_ICD_FILENAMES", "/nonexistent/garnet-no-such-icd.json", 1);
  ::setenv("VK_DRIVER_FILES", "/nonexistent/garnet-no-such-icd.json", 1);
  InventoryOptions all;
  all.include_cpu = true;
  auto inv = GpuInventory(all);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  EXPECT_TRUE(inv->empty());
}

}  // namespace
}  // namespace garnet::vk
