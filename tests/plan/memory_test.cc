#include "engine/plan/memory.h"

#include <gtest/gtest.h>

#include "tests/plan/variants.h"

namespace garnet::plan {
namespace {

using testing::MakeParams;
constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// Bytes per token of all full-attention owning layers (K and V, F16): gemma4.md §5.3 table.
uint64_t FullBytesPerToken(const gguf::Gemma4Params& p) {
  KvOptions o;
  o.n_ctx = 1;
  uint64_t s = 0;
  for (uint32_t il = 0; il < p.n_layer; ++il) {
    if (p.layers[il].kind == gguf::AttnKind::kFull && p.layers[il].owns_kv()) {
      s += 2 * KvRowBytes(p, il, KvType::kF16);
    }
  }
  return s;
}

TEST(KvCache, FullLayerBytesPerTokenMatchTheHandComputedTable) {
  EXPECT_EQ(FullBytesPerToken(MakeParams(testing::kE2B)), 6 * KiB);   // 3 full x 2 x 1 x 512 x 2
  EXPECT_EQ(FullBytesPerToken(MakeParams(testing::kE4B)), 16 * KiB);  // 4 x 2 x 2 x 512 x 2
  EXPECT_EQ(FullBytesPerToken(MakeParams(testing::k26B)), 20 * KiB);  // 5 x 2 x 2 x 512 x 2
  EXPECT_EQ(FullBytesPerToken(MakeParams(testing::k31B)), 80 * KiB);  // 10 x 2 x 4 x 512 x 2
}

TEST(KvCache, SharedLayersOwnNothing) {
  auto p = MakeParams(testing::kE2B);
  KvOptions o;
  for (uint32_t il = 15; il < 35; ++il) EXPECT_EQ(KvLayerBytes(p, il, o), 0u) << il;
  EXPECT_GT(KvLayerBytes(p, 14, o), 0u);
  // E2B donors (§1.2): sliding -> 13, full -> 14.
  EXPECT_EQ(p.layers[15].kv_source, 13);
  EXPECT_EQ(p.layers[19].kv_source, 14);
}

TEST(KvCache, SlidingLayersAreCappedAtWindowPlusUbatch) {
  auto p = MakeParams(testing::k31B);
  KvOptions o;
  o.n_ctx = 32768;
  o.n_ubatch = 512;
  EXPECT_EQ(KvCells(p, 0, o), 1024u + 512u);
  EXPECT_EQ(KvCells(p, 5, o), 32768u);
  o.n_ctx = 700;  // shorter than the ring: never more cells than the context
  EXPECT_EQ(KvCells(p, 0, o), 700u);
}

TEST(KvCache, TotalsForRealShapes) {
  KvOptions o;
  o.n_ubatch = 512;
  // 31B at 32k, F16: full 80 KiB x 32768 = 2.5 GiB; sliding 50 x 2 x 16 x 256 x 2 B = 800 KiB per
  // cell x 1536 cells = 1.171875 GiB.
  o.n_ctx = 32768;
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::k31B), o), 5 * GiB / 2 + 800 * KiB * 1536);
  // 26B at 262144: full 20 KiB x 262144 = 5 GiB; sliding 25 x 2 x 8 x 256 x 2 = 200 KiB x 1536.
  o.n_ctx = 262144;
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::k26B), o), 5 * GiB + 200 * KiB * 1536);
  // E4B at 131072: full 16 KiB x 131072 = 2 GiB; sliding 20 x 2 x 2 x 256 x 2 = 40 KiB x 1024.
  o.n_ctx = 131072;
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::kE4B), o), 2 * GiB + 40 * KiB * 1024);
  // E2B at 131072: 6 KiB x 131072 = 0.75 GiB; sliding 12 x 2 x 1 x 256 x 2 = 12 KiB x 1024.
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::kE2B), o), 768 * MiB + 12 * KiB * 1024);
  // Two sequences double it; a q8_0 cache is 34/32 of f16's half.
  o.n_seq = 2;
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::kE2B), o), 2 * (768 * MiB + 12 * KiB * 1024));
  o.n_seq = 1;
  o.type = KvType::kQ8_0;
  EXPECT_EQ(KvTotalBytes(MakeParams(testing::kE2B), o),
            (768 * MiB + 12 * KiB * 1024) / 2 / 32 * 34);
}

TEST(KvType, NamesRoundTrip) {
  for (auto t : {KvType::kF32, KvType::kF16, KvType::kQ8_0}) {
    EXPECT_EQ(ParseKvType(KvTypeName(t)), t);
  }
  EXPECT_FALSE(ParseKvType("q4_k").has_value());
}

TEST(Scratch, GrowsWithUbatchAndIncludesMoeAndPle) {
  auto moe = MakeParams(testing::k26B);
  KvOptions o;
  o.n_ubatch = 256;
  const uint64_t small = ScratchBytes(moe, o);
  o.n_ubatch = 512;
  EXPECT_GT(ScratchBytes(moe, o), small);
  bool has_router = false;
  for (const auto& b : ScratchLayout(moe, o)) {
    has_router |= b.name == "router";
    EXPECT_EQ(b.bytes % kBufferAlign, 0u) << b.name;
  }
  EXPECT_TRUE(has_router);
  bool has_ple = false;
  for (const auto& b : ScratchLayout(MakeParams(testing::kE2B), o)) has_ple |= b.name == "ple";
  EXPECT_TRUE(has_ple);
}

TEST(Classify, TensorClasses) {
  auto p = MakeParams(testing::kE2B);
  auto c = [&](const char* name) { return ClassifyTensor(name, GgmlType::kF32, 4, p); };
  EXPECT_EQ(c("token_embd.weight")->cls, TensorClass::kTokenEmbd);
  EXPECT_EQ(c("per_layer_token_embd.weight")->cls, TensorClass::kPleTable);
  EXPECT_EQ(c("output_norm.weight")->cls, TensorClass::kGlobal);
  EXPECT_EQ(c("blk.3.attn_q.weight")->cls, TensorClass::kLayer);
  EXPECT_EQ(c("blk.3.attn_q.weight")->layer, 3);
  EXPECT_EQ(c("blk.20.attn_k.weight")->cls, TensorClass::kUnused);  // KV-shared layer
  EXPECT_EQ(c("blk.20.attn_q.weight")->cls, TensorClass::kLayer);
  EXPECT_EQ(c("blk.2.ffn_gate_up_exps.weight")->cls, TensorClass::kExperts);
  EXPECT_TRUE(c("blk.35.attn_q.weight").status().IsInvalidArgument());
  EXPECT_TRUE(c("blk.x.attn_q.weight").status().IsInvalidArgument());
  EXPECT_TRUE(c("blk.3").status().IsInvalidArgument());
  EXPECT_TRUE(c("blk.99999999999999999999.a").status().IsInvalidArgument());
}

}  // namespace
}  // namespace garnet::plan
