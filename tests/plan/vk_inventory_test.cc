// garnet::vk::GpuInventory on this machine's Vulkan driver (lavapipe in CI) and the pure
// conversion from gathered device facts.
#include "engine/vulkan/inventory.h"

#include <gtest/gtest.h>

namespace garnet::vk {
namespace {

constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

DeviceInfo Fake(std::string name, DeviceType type, std::vector<MemoryHeapInfo> heaps) {
  DeviceInfo d;
  d.name = std::move(name);
  d.type = type;
  d.usable = true;
  d.heaps = std::move(heaps);
  return d;
}

MemoryHeapInfo Heap(uint64_t size, bool local, std::optional<uint64_t> budget = std::nullopt,
                    std::optional<uint64_t> usage = std::nullopt) {
  MemoryHeapInfo h;
  h.size = size;
  h.device_local = local;
  h.budget = budget;
  h.usage = usage;
  return h;
}

TEST(InventoryFromDevices, BudgetMinusUsageOfTheLargestDeviceLocalHeap) {
  // A discrete card with a host heap, a 256 MiB BAR heap and 24 GiB of VRAM (budget extension).
  std::vector<DeviceInfo> devs = {Fake("card", DeviceType::kDiscreteGpu,
                                       {Heap(64 * GiB, false), Heap(256 * MiB, true, 200 * MiB, 0),
                                        Heap(24 * GiB, true, 23 * GiB, 3 * GiB)})};
  auto inv = InventoryFromDevices(devs);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].name, "card");
  EXPECT_EQ(inv[0].type, plan::GpuType::kDiscrete);
  EXPECT_EQ(inv[0].total_bytes, 24 * GiB);
  EXPECT_EQ(inv[0].free_bytes, 20 * GiB);
  EXPECT_FALSE(inv[0].free_is_estimate);
}

TEST(InventoryFromDevices, UsageAboveBudgetLeavesNothingFree) {
  std::vector<DeviceInfo> devs = {
      Fake("full", DeviceType::kDiscreteGpu, {Heap(8 * GiB, true, 7 * GiB, 7 * GiB + 1)})};
  EXPECT_EQ(InventoryFromDevices(devs)[0].free_bytes, 0u);
}

TEST(InventoryFromDevices, WithoutBudgetTheMarginIsTakenOff) {
  std::vector<DeviceInfo> devs = {Fake("igpu", DeviceType::kIntegratedGpu, {Heap(16 * GiB, true)}),
                                  Fake("small", DeviceType::kDiscreteGpu, {Heap(1 * GiB, true)})};
  auto inv = InventoryFromDevices(devs);
  ASSERT_EQ(inv.size(), 2u);
  EXPECT_EQ(inv[0].type, plan::GpuType::kIntegrated);
  EXPECT_EQ(inv[0].free_bytes, 16 * GiB - 16 * GiB / 10);  // 10 %
  EXPECT_TRUE(inv[0].free_is_estimate);
  EXPECT_EQ(inv[1].free_bytes, 1 * GiB - 256 * MiB);  // at least 256 MiB
  EXPECT_EQ(NoBudgetMargin(100 * MiB), 256 * MiB);
  std::vector<DeviceInfo> tiny = {Fake("tiny", DeviceType::kDiscreteGpu, {Heap(100 * MiB, true)})};
  EXPECT_EQ(InventoryFromDevices(tiny)[0].free_bytes, 0u);
}

TEST(InventoryFromDevices, SkipsCpuUnusableAndHeaplessDevicesUnlessAsked) {
  DeviceInfo old = Fake("old", DeviceType::kDiscreteGpu, {Heap(4 * GiB, true)});
  old.usable = false;
  std::vector<DeviceInfo> devs = {
      Fake("llvmpipe", DeviceType::kCpu, {Heap(2 * GiB, true)}), old,
      Fake("no local heap", DeviceType::kDiscreteGpu, {Heap(4 * GiB, false)}),
      Fake("gpu", DeviceType::kDiscreteGpu, {Heap(4 * GiB, true)})};
  auto inv = InventoryFromDevices(devs);
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].name, "gpu");
  InventoryOptions all;
  all.include_cpu = true;
  all.include_unusable = true;
  inv = InventoryFromDevices(devs, all);
  ASSERT_EQ(inv.size(), 3u);
  EXPECT_EQ(inv[0].type, plan::GpuType::kCpu);
  EXPECT_EQ(inv[1].name, "old");
}

// The real driver: lavapipe in CI reports one CPU device with a device-local heap and no memory
// budget extension.
TEST(GpuInventory, MatchesTheDriversDevices) {
  auto instance = Instance::Create();
  if (!instance.ok()) {
    auto empty = GpuInventory();
    ASSERT_TRUE(empty.ok()) << empty.status().ToString();
    EXPECT_TRUE(empty->empty());
    GTEST_SKIP() << "no Vulkan driver: " << instance.status().ToString();
  }
  InventoryOptions with_cpu;
  with_cpu.include_cpu = true;
  auto inv = GpuInventory(with_cpu);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  const auto& devs = (*instance)->devices();
  size_t k = 0;
  for (const DeviceInfo& d : devs) {
    if (!d.usable || d.DeviceLocalBytes() == 0) continue;
    ASSERT_LT(k, inv->size());
    const plan::DeviceInfo& g = (*inv)[k++];
    EXPECT_EQ(g.name, d.name);
    EXPECT_EQ(g.type == plan::GpuType::kCpu, d.type == DeviceType::kCpu);
    EXPECT_GT(g.total_bytes, 0u);
    EXPECT_LE(g.total_bytes, d.DeviceLocalBytes());
    EXPECT_LE(g.free_bytes, g.total_bytes);
    EXPECT_EQ(g.free_is_estimate, !d.memory_budget);
    if (!d.memory_budget) {
      EXPECT_EQ(g.free_bytes, g.total_bytes - NoBudgetMargin(g.total_bytes));
    }
  }
  EXPECT_EQ(k, inv->size());

  // Without the flag, CPU devices (lavapipe) are left out.
  auto gpus = GpuInventory();
  ASSERT_TRUE(gpus.ok());
  for (const auto& g : *gpus) EXPECT_NE(g.type, plan::GpuType::kCpu) << g.name;
  size_t non_cpu = 0;
  for (const auto& g : *inv) non_cpu += g.type != plan::GpuType::kCpu;
  EXPECT_EQ(gpus->size(), non_cpu);
}

}  // namespace
}  // namespace garnet::vk
