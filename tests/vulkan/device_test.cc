// Device listing on the real driver, selection errors through Device::Create, the fallback
// switches.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/vulkan/device.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/recorder.h"
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
  opts.validate = Validation::kStandard;  // as GARNET_VK_VALIDATE=1 would
  auto inst = Instance::Create(opts);
  ASSERT_TRUE(inst.ok()) << inst.status().ToString();
  EXPECT_FALSE((*inst)->devices().empty());
  // Whether the layer is installed decides validation_enabled(); either way no errors so far.
  EXPECT_EQ((*inst)->validation_errors(), 0u);
  std::printf("validation layer %s\n", (*inst)->validation_enabled() ? "enabled" : "not installed");
}

// The Recorder's barriers pass synchronization validation, and the same commands without
// barriers (recorded by hand) do not: proof that the validation mode works and that the
// Recorder's barriers are what keeps it quiet.
TEST(Validation, SynchronizationValidationSeesRecorderBarriersAndMissingOnes) {
  GARNET_REQUIRE_VULKAN();
  InstanceOptions io;
  io.validate = Validation::kSynchronization;
  GARNET_ASSERT_OK_AND_ASSIGN(std::shared_ptr<Instance> inst, Instance::Create(io));
  if (!inst->validation_enabled()) GTEST_SKIP() << "VK_LAYER_KHRONOS_validation is not installed";
  DeviceOptions opts;
  opts.pipeline_cache_path = "-";
  GARNET_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Device> dev, Device::Create(inst, opts));
  {
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer a, Buffer::Create(*dev, 4096, MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*dev, 4096, MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(auto kernels, Kernels::Create(*dev));
    GARNET_ASSERT_OK_AND_ASSIGN(auto rec, Recorder::Create(*dev));
    GARNET_ASSERT_OK(rec->Fill(a, 0, 4096, 0x3f800000u));
    GARNET_ASSERT_OK(rec->Copy(a, 0, b, 0, 4096));
    GARNET_ASSERT_OK(kernels->Softcap(*rec, 1024, 30.0f, b, a));
    GARNET_ASSERT_OK(kernels->Softcap(*rec, 1024, 30.0f, a, a));
    GARNET_ASSERT_OK(rec->Copy(a, 0, b, 0, 4096));
    GARNET_ASSERT_OK(rec->SubmitAndWait());
    EXPECT_EQ(inst->validation_errors(), 0u);

    // By hand, no barrier between a fill and a copy reading what it wrote.
    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.queueFamilyIndex = dev->queue_family();
    VkCommandPool pool = VK_NULL_HANDLE;
    ASSERT_EQ(vkCreateCommandPool(dev->handle(), &pci, nullptr, &pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    ASSERT_EQ(vkAllocateCommandBuffers(dev->handle(), &cai, &cmd), VK_SUCCESS);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(cmd, &bi);
    vkCmdFillBuffer(cmd, a.handle(), 0, 4096, 0);
    const VkBufferCopy region{0, 0, 4096};
    vkCmdCopyBuffer(cmd, a.handle(), b.handle(), 1, &region);
    vkEndCommandBuffer(cmd);
    vkDestroyCommandPool(dev->handle(), pool, nullptr);
    EXPECT_GT(inst->validation_errors(), 0u) << "synchronization validation missed a hazard";
  }
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
  EXPECT_EQ(dev.caps().push_descriptors,
            info.push_descriptor && dev.instance().validation_mode() != Validation::kGpuAssisted);
  EXPECT_EQ(dev.QueryHeaps().size(), info.heaps.size());
  GARNET_ASSERT_OK_AND_ASSIGN(testing::VkTestDevice * fb, env->fallback());
  EXPECT_FALSE(fb->device->caps().subgroup_arithmetic);
  EXPECT_FALSE(fb->device->caps().storage_16bit);
  EXPECT_FALSE(fb->device->caps().push_descriptors);
  EXPECT_EQ(fb->device->info().uuid, info.uuid);
}

}  // namespace
}  // namespace garnet::vk
