// Buffers: per-kind accounting, clean errors for impossible allocations, staged transfers.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/vulkan/buffer.h"
#include "engine/vulkan/device.h"
#include "engine/vulkan/transfer.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

using testing::VkTestEnv;

TEST(Memory, AccountingFollowsEveryBufferPerKind) {
  GARNET_REQUIRE_VULKAN();
  Device& dev = *VkTestEnv::Get()->main().device;
  const MemoryAccounting before = dev.accounting();
  std::vector<Buffer> live;
  const struct {
    MemoryKind kind;
    uint64_t size;
    Residency res;
  } asks[] = {{MemoryKind::kWeights, 1000, Residency::kDevice},
              {MemoryKind::kWeights, 1 << 20, Residency::kDevice},
              {MemoryKind::kKv, 12345, Residency::kDevice},
              {MemoryKind::kScratch, 4096, Residency::kDevice},
              {MemoryKind::kStaging, 777, Residency::kHostUpload},
              {MemoryKind::kOther, 4, Residency::kHostReadback}};
  uint64_t want_bytes[kMemoryKindCount] = {};
  uint64_t want_req[kMemoryKindCount] = {};
  for (const auto& a : asks) {
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(dev, a.size, a.kind, a.res, "acct"));
    EXPECT_EQ(b.size(), a.size);
    EXPECT_GE(b.allocated_bytes(), a.size);
    EXPECT_EQ(b.mapped() != nullptr, a.res != Residency::kDevice);
    want_bytes[static_cast<int>(a.kind)] += b.allocated_bytes();
    want_req[static_cast<int>(a.kind)] += a.size;
    live.push_back(std::move(b));
  }
  MemoryAccounting now = dev.accounting();
  uint64_t live_total = 0;
  for (const Buffer& b : live) live_total += b.allocated_bytes();
  EXPECT_EQ(now.TotalBytes() - before.TotalBytes(), live_total);
  for (int k = 0; k < kMemoryKindCount; ++k) {
    EXPECT_EQ(now.bytes[k] - before.bytes[k], want_bytes[k]) << MemoryKindName(MemoryKind(k));
    EXPECT_EQ(now.requested[k] - before.requested[k], want_req[k]);
  }
  EXPECT_GE(now.peak_total, now.TotalBytes());

  // Moving a buffer moves ownership, not the count; destroying one decrements its kind.
  Buffer moved = std::move(live[1]);
  EXPECT_TRUE(live[1].empty());
  EXPECT_EQ(dev.accounting().TotalBytes(), now.TotalBytes());
  const uint64_t freed = moved.allocated_bytes();
  moved = Buffer();
  now = dev.accounting();
  EXPECT_EQ(now.Bytes(MemoryKind::kWeights) - before.Bytes(MemoryKind::kWeights),
            want_bytes[0] - freed);
  EXPECT_EQ(now.Buffers(MemoryKind::kWeights) - before.Buffers(MemoryKind::kWeights), 1u);
  live.clear();
  const MemoryAccounting after = dev.accounting();
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.requested, before.requested);
  EXPECT_EQ(after.buffers, before.buffers);
}

TEST(Memory, ImpossibleAllocationIsResourceExhausted) {
  GARNET_REQUIRE_VULKAN();
  Device& dev = *VkTestEnv::Get()->main().device;
  const MemoryAccounting before = dev.accounting();
  const uint64_t huge = dev.info().DeviceLocalBytes() * 4 + (uint64_t{1} << 40);
  auto r = Buffer::Create(dev, huge, MemoryKind::kWeights, Residency::kDevice, "blk.0.huge");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsResourceExhausted()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("weights"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("blk.0.huge"), std::string::npos);
  EXPECT_NE(r.status().message().find(std::to_string(huge)), std::string::npos);
  auto zero = Buffer::Create(dev, 0, MemoryKind::kScratch);
  EXPECT_TRUE(zero.status().IsInvalidArgument());
  const MemoryAccounting after = dev.accounting();
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.buffers, before.buffers);
}

TEST(Memory, ChunkedUploadAndDownloadRoundTrip) {
  GARNET_REQUIRE_VULKAN();
  Device& dev = *VkTestEnv::Get()->main().device;
  const MemoryAccounting before = dev.accounting();
  {
    // 4 KiB chunks so a 50 001-byte upload takes 13 chunks through both staging buffers.
    GARNET_ASSERT_OK_AND_ASSIGN(auto t, Transfer::Create(dev, 4096));
    const std::vector<uint8_t> data = testing::RandomBytes(50001, 7);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(dev, 60000, MemoryKind::kWeights));
    GARNET_ASSERT_OK(t->Upload(b, 999, data.data(), data.size()));
    EXPECT_EQ(t->chunks_copied(), 13u);
    // Staging is counted as staging while the Transfer lives.
    EXPECT_EQ(dev.accounting().Buffers(MemoryKind::kStaging) - before.Buffers(MemoryKind::kStaging),
              2u);
    std::vector<uint8_t> back(data.size());
    GARNET_ASSERT_OK(t->Download(b, 999, back.data(), back.size()));
    EXPECT_EQ(back, data);
    // Out-of-range transfers are refused before anything is copied.
    EXPECT_TRUE(t->Upload(b, 59999, data.data(), 2).IsInvalidArgument());
    EXPECT_TRUE(t->Download(b, 1, back.data(), 60000).IsInvalidArgument());
  }
  EXPECT_EQ(dev.accounting().bytes, before.bytes);
}

TEST(Memory, ReadbackBufferSeesShaderWritesAfterSubmit) {
  GARNET_REQUIRE_VULKAN();
  auto& d = VkTestEnv::Get()->main();
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer logits, Buffer::Create(*d.device, 64 * 4, MemoryKind::kOther,
                                                            Residency::kHostReadback, "logits"));
  GARNET_ASSERT_OK(d.recorder->Fill(logits, 0, 64 * 4, 0x3f800000u));  // 1.0f
  GARNET_ASSERT_OK(d.recorder->SubmitAndWait());
  GARNET_ASSERT_OK(logits.InvalidateForHostReads(0, 64 * 4));
  float v[64];
  std::memcpy(v, logits.mapped(), sizeof v);
  for (float x : v) EXPECT_EQ(x, 1.0f);
}

}  // namespace
}  // namespace garnet::vk
