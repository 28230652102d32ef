// Device listing on the real driver, selection errors through Device::Create, the fallback
// switches.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/vulkan/device.h"
#include "engine/vulkan/vk_error.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

TEST(Instance, ListsDevicesWithFacts) {
  GARNET_REQUIRE_VULKAN();
  auto inst = testing::VkTestEnv::Get()->instance();
  ASSERT_FALSE(inst->devices().empty());
  for (const DeviceInfo& d : inst->devices()) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_FALSE(d.heaps.empty());
    EXPECT_GT(d.DeviceLocalBytes(), 0u);
    if (!d.usable) continue;
    EXPECT_GT(d.subgroup_size, 0u);
    EXPECT_GE(d.max_workgroup_invocations, 256u);
    EXPECT_GE(d.max_push_constants, 128u);
    EXPECT_GT(d.max_storage_buffer_range, 0u);
    if (d.memory_budget) {
      for (const MemoryHeapInfo& h : d.heaps) EXPECT_TRUE(h.budget.has_value());
    }
    const std::string text = FormatDeviceInfo(d);
    EXPECT_NE(text.find(d.name), std::string::npos);
    EXPECT_NE(text.find("subgroup size"), std::string::npos);
    std::printf("%s", text.c_str());
  }
}

TEST(Instance, ValidationRequestWithoutTheLayerStillWorks) {
  GARNET_REQUIRE_VULKAN();
  InstanceOptions opts;
  opts.validate = true;  // as GARNET_VK_VALIDATE=1 would
  auto inst = Instance::Create(opts);
  ASSERT_TRUE(inst.ok()) << inst.status().ToString();
  EXPECT_FALSE((*inst)->devices().empty());
  // Whether the layer is installed decides validation_enabled(); either way no errors so far.
  EXPECT_EQ((*inst)->validation_errors(), 0u);
  std::printf("validation layer %s\n", (*inst)->validation_enabled() ? "enabled" : "not installed");
}

TEST(Device, BadSelectorIsACleanError) {
  GARNET_REQUIRE_VULKAN();
  auto inst = testing::VkTestEnv::Get()->instance();
  DeviceOptions opts;
  opts.pipeline_cache_path = "-";
  opts.selector = std::to_string(inst->devices().size());
  auto by_index = Device::Create(inst, opts);
  ASSERT_FALSE(by_index.ok());
  EXPECT_TRUE(by_index.status().IsNotFound()) << by_index.status().ToString();
  opts.selector = "no-such-gpu-xyz";
  auto by_name = Device::Create(inst, opts);
  ASSERT_FALSE(by_name.ok());
  EXPECT_TRUE(by_name.status().IsNotFound()) << by_name.status().ToString();
  auto no_instance = Device::Create(nullptr, opts);
  EXPECT_TRUE(no_instance.status().IsInvalidArgument());
}

TEST(Device, CapsFollowFactsAndSwitches) {
  GARNET_REQUIRE_VULKAN();
  auto* env = testing::VkTestEnv::Get();
  const Device& dev = *env->main().device;
  const DeviceInfo& info = dev.info();
  EXPECT_EQ(dev.caps().subgroup_arithmetic, info.subgroup_arithmetic);
  EXPECT_EQ(dev.caps().storage_16bit, info.storage_16bit);
  EXPECT_EQ(dev.caps().push_descriptors, info.push_descriptor);
  EXPECT_EQ(dev.QueryHeaps().size(), info.heaps.size());
  GARNET_ASSERT_OK_AND_ASSIGN(testing::VkTestDevice * fb, env->fallback());
  EXPECT_FALSE(fb->device->caps().subgroup_arithmetic);
  EXPECT_FALSE(fb->device->caps().storage_16bit);
  EXPECT_FALSE(fb->device->caps().push_descriptors);
  EXPECT_EQ(fb->device->info().uuid, info.uuid);
}

}  // namespace
}  // namespace garnet::vk
