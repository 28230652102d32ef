// Host-side functions of the Vulkan backend (device selection, VkResult translation, kernel
// parameter tables): no Vulkan device needed, so these never skip.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/vulkan/device.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/vk_error.h"

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

TEST(RopeThetaTable, RejectsBadInputs) {
  const std::vector<float> ok(4, 1.0f);
  EXPECT_TRUE(RopeThetaTable(8, 1e4, ok).ok());
  EXPECT_TRUE(RopeThetaTable(8, 1e4, {}).ok());
  EXPECT_TRUE(RopeThetaTable(7, 1e4, {}).status().IsInvalidArgument());
  EXPECT_TRUE(RopeThetaTable(0, 1e4, {}).status().IsInvalidArgument());
  EXPECT_TRUE(RopeThetaTable(8, 0.0, {}).status().IsInvalidArgument());
  EXPECT_TRUE(RopeThetaTable(8, 1e4, std::vector<float>(3, 1.0f)).status().IsInvalidArgument());
  for (float bad : {0.0f, -1.0f, INFINITY, NAN}) {
    std::vector<float> f = ok;
    f[2] = bad;
    EXPECT_TRUE(RopeThetaTable(8, 1e4, f).status().IsInvalidArgument()) << bad;
  }
  // hi + lo carries theta beyond fp32.
  auto t = RopeThetaTable(8, 1e4, {});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)[0], 1.0f);
  EXPECT_EQ((*t)[1], 0.0f);
  EXPECT_NEAR(double((*t)[2]) + (*t)[3], std::pow(1e4, -0.25), 1e-15);
}

TEST(AttentionSplits, FollowWindowRingAndSplitKeys) {
  AttentionShape s;
  s.head_dim = 256;
  s.n_q_heads = 8;
  s.n_tokens = 2;
  s.ring_size = 512;
  EXPECT_EQ(AttentionSplits(s), 1u);
  EXPECT_EQ(AttentionScratchBytes(s), 0u);
  s.ring_size = 8192;
  EXPECT_EQ(AttentionSplits(s), 16u);
  EXPECT_EQ(AttentionScratchBytes(s), 2ull * 8 * 16 * (256 + 2) * 4);
  s.window = 1024;  // a sliding layer never sees more than the window
  EXPECT_EQ(AttentionSplits(s), 2u);
  s.window = 0;
  s.ring_size = 1u << 20;
  EXPECT_EQ(AttentionSplits(s), 64u);  // capped
  s.split_keys = 1;
  s.ring_size = 10;
  EXPECT_EQ(AttentionSplits(s), 10u);
}

}  // namespace
}  // namespace garnet::vk
