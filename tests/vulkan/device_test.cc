// Device listing and selection, VkResult translation, and the fallback switches.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/vulkan/device.h"
#include "engine/vulkan/vk_error.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

DeviceInfo Fake(uint32_t index, std::string name, DeviceType type, bool usable = true) {
  DeviceInfo d;
  d.index = index;
  d.name = std::move(name);
  d.type = type;
  d.usable = usable;
  if (!usable) d.unusable_reason = "Vulkan 1.1 device; garnet needs Vulkan 1.2";
  return d;
}

TEST(SelectDevice, PrefersDiscreteThenIntegratedThenCpu) {
  std::vector<DeviceInfo> devs = {Fake(0, "llvmpipe", DeviceType::kCpu),
                                  Fake(1, "Intel UHD", DeviceType::kIntegratedGpu),
                                  Fake(2, "NVIDIA H100", DeviceType::kDiscreteGpu)};
  EXPECT_EQ(*SelectDevice(devs, ""), 2u);
  devs.pop_back();
  EXPECT_EQ(*SelectDevice(devs, ""), 1u);
  devs.pop_back();
  EXPECT_EQ(*SelectDevice(devs, ""), 0u);
}

TEST(SelectDevice, SkipsUnusableWhenChoosing) {
  std::vector<DeviceInfo> devs = {Fake(0, "old discrete", DeviceType::kDiscreteGpu, false),
                                  Fake(1, "llvmpipe", DeviceType::kCpu)};
  EXPECT_EQ(*SelectDevice(devs, ""), 1u);
  auto only_old = SelectDevice(std::span(devs).first(1), "");
  ASSERT_FALSE(only_old.ok());
  EXPECT_TRUE(only_old.status().IsFailedPrecondition()) << only_old.status().ToString();
}

TEST(SelectDevice, ByIndexAndByName) {
  std::vector<DeviceInfo> devs = {Fake(0, "llvmpipe (LLVM 15)", DeviceType::kCpu),
                                  Fake(1, "NVIDIA H100 80GB HBM3", DeviceType::kDiscreteGpu)};
  EXPECT_EQ(*SelectDevice(devs, "0"), 0u);
  EXPECT_EQ(*SelectDevice(devs, "1"), 1u);
  EXPECT_EQ(*SelectDevice(devs, "h100"), 1u);  // case-insensitive substring
  EXPECT_EQ(*SelectDevice(devs, "LLVMPIPE"), 0u);
}

TEST(SelectDevice, BadIndexOrNameIsNotFoundAndListsDevices) {
  std::vector<DeviceInfo> devs = {Fake(0, "llvmpipe", DeviceType::kCpu)};
  for (const char* sel : {"1", "7", "99999999999999999999", "radeon"}) {
    auto r = SelectDevice(devs, sel);
    ASSERT_FALSE(r.ok()) << sel;
    EXPECT_TRUE(r.status().IsNotFound()) << r.status().ToString();
    EXPECT_NE(r.status().message().find(sel), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("0: llvmpipe (cpu)"), std::string::npos)
        << r.status().ToString();
  }
}

TEST(SelectDevice, ExplicitUnusableDeviceIsFailedPrecondition) {
  std::vector<DeviceInfo> devs = {Fake(0, "old", DeviceType::kDiscreteGpu, false)};
  auto r = SelectDevice(devs, "0");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsFailedPrecondition());
  EXPECT_NE(r.status().message().find("Vulkan 1.2"), std::string::npos);
}

TEST(VkError, MapsResultsToCodes) {
  EXPECT_TRUE(VkError("x", VK_SUCCESS).ok());
  EXPECT_TRUE(VkError("x", VK_INCOMPLETE).ok());
  EXPECT_TRUE(VkError("x", VK_ERROR_OUT_OF_DEVICE_MEMORY).IsResourceExhausted());
  EXPECT_TRUE(VkError("x", VK_ERROR_OUT_OF_HOST_MEMORY).IsResourceExhausted());
  EXPECT_TRUE(VkError("x", VK_ERROR_DEVICE_LOST).IsUnavailable());
  EXPECT_TRUE(VkError("x", VK_ERROR_INCOMPATIBLE_DRIVER).IsUnavailable());
  EXPECT_TRUE(VkError("x", VK_ERROR_EXTENSION_NOT_PRESENT).IsFailedPrecondition());
  EXPECT_TRUE(VkError("x", VK_ERROR_UNKNOWN).IsInternal());
  const Status s = VkError("vkAllocateMemory", VK_ERROR_OUT_OF_DEVICE_MEMORY);
  EXPECT_EQ(s.message(), "vkAllocateMemory: VK_ERROR_OUT_OF_DEVICE_MEMORY (-2)");
  EXPECT_EQ(VkResultName(static_cast<VkResult>(-12345)), "VkResult(-12345)");
}

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
