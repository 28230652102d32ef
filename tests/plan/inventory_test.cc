#include "engine/plan/inventory.h"

#include <gtest/gtest.h>

namespace garnet::plan {
namespace {

constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

Inventory Measured() {
  Inventory inv;
  inv.gpus.push_back({"RTX 4090", 24 * GiB, 20 * GiB, GpuType::kDiscrete, false});
  inv.host = {"host", 64 * GiB, 40 * GiB, GpuType::kOther, false};
  return inv;
}

TEST(ByteSize, ParsesUnits) {
  EXPECT_EQ(*ParseByteSize("16GiB"), 16 * GiB);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512 * MiB);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000u);
  EXPECT_EQ(*ParseByteSize("123"), 123u);
  EXPECT_EQ(*ParseByteSize("8g"), 8 * GiB);
  EXPECT_EQ(*ParseByteSize("0.5gib"), GiB / 2);
  EXPECT_TRUE(ParseByteSize("").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize(".").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize("GiB").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize("-1GiB").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize("12 parsecs").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize("1.2.3G").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSize("99999999999TiB").status().IsInvalidArgument());
  EXPECT_EQ(FormatBytes(21 * GiB + 300 * MiB), "21.3 GiB");
  EXPECT_EQ(FormatBytes(17), "17 B");
}

TEST(ByteSize, ParsesPerDeviceLists) {
  EXPECT_EQ(*ParseByteSizeList("24GiB,8GiB"), (std::vector<uint64_t>{24 * GiB, 8 * GiB}));
  EXPECT_EQ(*ParseByteSizeList("16GiB"), (std::vector<uint64_t>{16 * GiB}));
  EXPECT_TRUE(ParseByteSizeList("0")->empty());
  EXPECT_TRUE(ParseByteSizeList("none")->empty());
  EXPECT_TRUE(ParseByteSizeList("").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSizeList("8GiB,").status().IsInvalidArgument());
  EXPECT_TRUE(ParseByteSizeList(",8GiB").status().IsInvalidArgument());
  auto bad = ParseByteSizeList("8GiB,lots");
  ASSERT_TRUE(bad.status().IsInvalidArgument());
  EXPECT_NE(bad.status().message().find("lots"), std::string::npos) << bad.status().ToString();
}

TEST(Overrides, SingleVramReplacesTheMeasuredGpu) {
  auto inv = ApplyOverrides(Measured(), "16GiB", "");
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->gpus.size(), 1u);
  EXPECT_EQ(inv->gpus[0].name, "RTX 4090 (--vram)");
  EXPECT_EQ(inv->gpus[0].type, GpuType::kDiscrete);
  EXPECT_EQ(inv->gpus[0].total_bytes, 16 * GiB);
  EXPECT_EQ(inv->gpus[0].free_bytes, 16 * GiB);  // a planned machine is taken as idle
  EXPECT_EQ(inv->host.free_bytes, 40 * GiB);     // host as measured
}

TEST(Overrides, ListDescribesEveryGpuOfAnotherMachine) {
  auto inv = ApplyOverrides(Measured(), "24GiB,8GiB", "64GiB");
  ASSERT_TRUE(inv.ok());
  ASSERT_EQ(inv->gpus.size(), 2u);
  EXPECT_EQ(inv->gpus[0].name, "RTX 4090 (--vram)");
  EXPECT_EQ(inv->gpus[1].name, "GPU 1 (--vram)");
  EXPECT_EQ(inv->gpus[1].type, GpuType::kDiscrete);
  EXPECT_EQ(inv->gpus[1].free_bytes, 8 * GiB);
  EXPECT_EQ(inv->host.total_bytes, 64 * GiB);
  EXPECT_EQ(inv->host.free_bytes, 64 * GiB);
}

TEST(Overrides, OnAMachineWithoutGpusAndToNoGpu) {
  Inventory none;
  none.host = {"host", 16 * GiB, 8 * GiB, GpuType::kOther, false};
  auto inv = ApplyOverrides(none, "12GiB", "");
  ASSERT_TRUE(inv.ok());
  ASSERT_EQ(inv->gpus.size(), 1u);
  EXPECT_EQ(inv->gpus[0].name, "GPU 0 (--vram)");
  auto cpu = ApplyOverrides(Measured(), "0", "");
  ASSERT_TRUE(cpu.ok());
  EXPECT_TRUE(cpu->gpus.empty());
  auto same = ApplyOverrides(Measured(), "", "");
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->gpus[0].free_bytes, 20 * GiB);
}

TEST(Overrides, ErrorsNameTheFlag) {
  auto v = ApplyOverrides(Measured(), "16 GiB", "");
  ASSERT_TRUE(v.status().IsInvalidArgument());
  EXPECT_NE(v.status().message().find("--vram"), std::string::npos) << v.status().ToString();
  auto r = ApplyOverrides(Measured(), "", "lots");
  ASSERT_TRUE(r.status().IsInvalidArgument());
  EXPECT_NE(r.status().message().find("--ram"), std::string::npos) << r.status().ToString();
}

TEST(HostInventory, ReadsProcMeminfo) {
  auto h = HostInventory();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_GT(h->total_bytes, 0u);
  EXPECT_LE(h->free_bytes, h->total_bytes);
}

}  // namespace
}  // namespace garnet::plan
