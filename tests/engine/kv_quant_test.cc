// The q8_0 KV cache format (model::KvQuantizeQ8_0 and its readers): what the CPU backend stores
// and what the Vulkan kv_store shaders must reproduce.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/model/kv_cache.h"
#include "engine/quant/fp16.h"

namespace garnet::model {
namespace {

float Scale(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return F16ToF32(h);
}

std::vector<float> Dequant(const std::vector<uint8_t>& q, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n), 0.0f);
  KvAxpyQ8_0(1.0f, q.data(), y.data(), n);
  return y;
}

TEST(KvQuantQ8_0, RoundTripsWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const int64_t n = 256;
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  x[5] = 0.0f;
  std::vector<uint8_t> q(KvBytes(KvType::kQ8_0, n));
  ASSERT_EQ(q.size(), 8u * 34u);
  KvQuantizeQ8_0(x.data(), q.data(), n);
  const std::vector<float> y = Dequant(q, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float d = Scale(q.data() + b * 34);
    EXPECT_EQ(d, RoundToF16(amax / 127.0f)) << b;
    for (int i = 0; i < 32; ++i) {
      const size_t e = static_cast<size_t>(b * 32 + i);
      EXPECT_LE(std::fabs(y[e] - x[e]), 0.5f * d * 1.0001f) << e;
    }
  }
  EXPECT_EQ(y[5], 0.0f);
  // dot reads the same values.
  std::vector<float> ones(n, 1.0f);
  double sum = 0;
  for (float v : y) sum += v;
  EXPECT_NEAR(KvDotQ8_0(q.data(), ones.data(), n), sum, 1e-3 * (1 + std::fabs(sum)));
}

TEST(KvQuantQ8_0, ZeroBlockHasZeroScale) {
  std::vector<float> x(32, 0.0f);
  std::vector<uint8_t> q(34, 0xff);
  KvQuantizeQ8_0(x.data(), q.data(), 32);
  EXPECT_EQ(Scale(q.data()), 0.0f);
  for (float v : Dequant(q, 32)) EXPECT_EQ(v, 0.0f);
}

TEST(KvQuantQ8_0, NonFiniteBlockReadsBackAsNaN) {
  std::vector<float> x(64, 1.0f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[40] = std::numeric_limits<float>::infinity();
  std::vector<uint8_t> q(68);
  KvQuantizeQ8_0(x.data(), q.data(), 64);
  const std::vector<float> y = Dequant(q, 64);
  for (int i = 0; i < 64; ++i) EXPECT_TRUE(std::isnan(y[static_cast<size_t>(i)])) << i;
}

TEST(KvQuantQ8_0, HugeValuesClampTheScale) {
  std::vector<float> x(32, 0.0f);
  x[0] = 1e30f;
  x[1] = -1e6f;
  std::vector<uint8_t> q(34);
  KvQuantizeQ8_0(x.data(), q.data(), 32);
  EXPECT_EQ(Scale(q.data()), 65504.0f);
  const std::vector<float> y = Dequant(q, 32);
  EXPECT_EQ(y[0], 127.0f * 65504.0f);
  EXPECT_EQ(y[1], -15.0f * 65504.0f);  // -1e6 / 65504 = -15.27 -> -15
}

TEST(KvQuantQ8_0, CacheRejectsHeadDimsThatAreNotBlocks) {
  gguf::Gemma4Params p;
  p.n_layer = 1;
  p.sliding_window = 4;
  gguf::Gemma4Layer ly;
  ly.kind = gguf::AttnKind::kFull;
  ly.head_dim = 48;
  ly.n_head = 2;
  ly.n_head_kv = 1;
  ly.kv_source = -1;
  p.layers.push_back(ly);
  auto c = KvCache::Create(p, 16, 4, KvType::kQ8_0);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("multiples of 32"), std::string::npos);
  EXPECT_TRUE(KvCache::Create(p, 16, 4, KvType::kF16).ok());
}

}  // namespace
}  // namespace garnet::model
