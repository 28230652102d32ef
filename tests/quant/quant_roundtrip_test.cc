// Quantise -> dequantise round trips: error bounds per format, edge-case rows, and a golden hash
// that pins the quantisers' exact output (garnet-mkmodel files depend on it being stable).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "engine/quant/quant.h"

namespace garnet {
namespace {

// Deterministic approximately-N(0,1) data: sum of 12 uniforms from a 64-bit LCG, minus 6. Every
// step is exact integer arithmetic or an exact conversion, so the data is the same everywhere.
std::vector<float> NormalData(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed;
  for (auto& x : v) {
    float sum = 0;
    for (int k = 0; k < 12; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<float>(static_cast<uint32_t>(s >> 40)) / 16777216.0f;  // 24 bits, exact
    }
    x = sum - 6.0f;
  }
  return v;
}

std::vector<float> RoundTrip(GgmlType type, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  auto bytes = RowBytes(type, x.size());
  EXPECT_TRUE(bytes.ok());
  std::vector<uint8_t> q(*bytes, 0xAA);
  Status s = QuantizeRow(type, x.data(), q.data(), n);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<float> y(x.size());
  s = DequantizeRow(type, q.data(), y.data(), n);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return y;
}

double RelRms(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
    den += double(x[i]) * x[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Bound {
  GgmlType type;
  double max_rel_rms;
};

constexpr Bound kBounds[] = {
    {GgmlType::kF32, 0.0},    {GgmlType::kF16, 1e-3},  {GgmlType::kBF16, 5e-3},
    {GgmlType::kQ8_0, 0.01},  {GgmlType::kQ6_K, 0.02}, {GgmlType::kQ5_0, 0.05},
    {GgmlType::kQ5_1, 0.05},  {GgmlType::kQ5_K, 0.05}, {GgmlType::kQ4_0, 0.1},
    {GgmlType::kQ4_1, 0.1},   {GgmlType::kQ4_K, 0.1},  {GgmlType::kIQ4_NL, 0.1},
    {GgmlType::kIQ4_XS, 0.1}, {GgmlType::kQ3_K, 0.2},  {GgmlType::kQ2_K, 0.4},
};

TEST(QuantRoundTripTest, ErrorWithinBoundOnNormalData) {
  const auto x = NormalData(256 * 64, 1);
  for (const Bound& b : kBounds) {
    const auto y = RoundTrip(b.type, x);
    const double err = RelRms(x, y);
    std::printf("  %-5s rel rms %.5f (bound %.3g)\n", std::string(TypeName(b.type)).c_str(), err,
                b.max_rel_rms);
    EXPECT_LE(err, b.max_rel_rms) << TypeName(b.type);
  }
}

// Scaled data (weights are ~N(0, 0.02)) must round-trip just as well: nothing depends on the
// absolute magnitude except binary16 scale precision.
TEST(QuantRoundTripTest, SmallMagnitudeData) {
  auto x = NormalData(256 * 16, 2);
  for (auto& v : x) v *= 0.02f;
  for (const Bound& b : kBounds) {
    EXPECT_LE(RelRms(x, RoundTrip(b.type, x)), b.max_rel_rms) << TypeName(b.type);
  }
}

// A row mixing ranges block to block, an outlier, all-positive and all-negative sub-blocks.
TEST(QuantRoundTripTest, AwkwardRows) {
  auto x = NormalData(512, 3);
  for (int i = 0; i < 32; ++i) x[i] = 5.0f + 0.01f * i;   // all positive, offset
  for (int i = 32; i < 64; ++i) x[i] = -3.0f - 0.1f * i;  // all negative
  for (int i = 64; i < 96; ++i) x[i] = 0.0f;              // zeros
  x[200] = 40.0f;                                         // outlier
  for (int i = 256; i < 288; ++i) x[i] = 1.5f;            // constant
  for (const Bound& b : kBounds) {
    const auto y = RoundTrip(b.type, x);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << TypeName(b.type);
    // Blocks of exact zeros decode to exact zeros in every format.
    for (int i = 64; i < 96; ++i) EXPECT_EQ(y[i], 0.0f) << TypeName(b.type) << " " << i;
    EXPECT_NEAR(y[200], 40.0f, 40.0f * 0.1) << TypeName(b.type);
  }
}

TEST(QuantRoundTripTest, ZeroAndConstantRows) {
  const std::vector<float> zeros(256, 0.0f);
  const std::vector<float> ones(256, 1.0f);
  const std::vector<float> neg(256, -0.75f);
  for (const Bound& b : kBounds) {
    for (float v : RoundTrip(b.type, zeros)) EXPECT_EQ(v, 0.0f) << TypeName(b.type);
    for (float v : RoundTrip(b.type, ones)) EXPECT_NEAR(v, 1.0f, 0.07) << TypeName(b.type);
    for (float v : RoundTrip(b.type, neg)) EXPECT_NEAR(v, -0.75f, 0.06) << TypeName(b.type);
  }
}

TEST(QuantRoundTripTest, ExtremeMagnitudesStayFinite) {
  std::vector<float> huge(256), tiny(256);
  for (int i = 0; i < 256; ++i) {
    huge[i] = (i % 2 ? 1e30f : -3e29f) * static_cast<float>(i + 1);
    tiny[i] = (i % 3 ? 1e-30f : -2e-31f) * static_cast<float>(i + 1);
  }
  for (const Bound& b : kBounds) {
    if (b.type == GgmlType::kF16) continue;  // stores infinities as is
    for (float v : RoundTrip(b.type, huge)) EXPECT_TRUE(std::isfinite(v)) << TypeName(b.type);
    for (float v : RoundTrip(b.type, tiny)) {
      EXPECT_TRUE(std::isfinite(v)) << TypeName(b.type);
      EXPECT_LE(std::fabs(v), 1e-27f) << TypeName(b.type);
    }
  }
}

// Rows may start at any byte (GGUF only aligns tensors, and rows of odd-sized blocks follow
// each other): odd addresses must decode the same as aligned ones.
TEST(QuantRoundTripTest, UnalignedBuffers) {
  const auto x = NormalData(512, 5);
  for (const Bound& b : kBounds) {
    const uint64_t bytes = *RowBytes(b.type, x.size());
    std::vector<uint8_t> aligned(bytes), odd(bytes + 1);
    ASSERT_TRUE(QuantizeRow(b.type, x.data(), aligned.data(), 512).ok());
    ASSERT_TRUE(QuantizeRow(b.type, x.data(), odd.data() + 1, 512).ok());
    EXPECT_TRUE(std::equal(aligned.begin(), aligned.end(), odd.begin() + 1)) << TypeName(b.type);
    std::vector<float> ya(512), yo(513);
    ASSERT_TRUE(DequantizeRow(b.type, aligned.data(), ya.data(), 512).ok());
    ASSERT_TRUE(DequantizeRow(b.type, odd.data() + 1, yo.data() + 1, 512).ok());
    EXPECT_TRUE(std::equal(ya.begin(), ya.end(), yo.begin() + 1)) << TypeName(b.type);
  }
}

TEST(QuantRoundTripTest, RejectsNonFiniteInput) {
  std::vector<float> x(256, 0.5f);
  std::vector<uint8_t> out(1024);
  x[77] = std::numeric_limits<float>::quiet_NaN();
  const Status s = QuantizeRow(GgmlType::kQ4_K, x.data(), out.data(), 256);
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("77"), std::string::npos) << s.message();
  x[77] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(QuantizeRow(GgmlType::kQ8_0, x.data(), out.data(), 256).IsInvalidArgument());
  EXPECT_TRUE(QuantizeRow(GgmlType::kBF16, x.data(), out.data(), 256).ok());
}

uint64_t Fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 1099511628211ull;
  }
  return h;
}

// Pins the exact bytes each quantiser produces for a fixed input. If a quantiser is changed on
// purpose, update the constants (and note that garnet-mkmodel output changes with them).
TEST(QuantRoundTripTest, GoldenOutput) {
  const auto x = NormalData(1024, 42);
  struct Golden {
    GgmlType type;
    uint64_t hash;
  };
  const Golden kGolden[] = {
      {GgmlType::kF16, 0xf686619916578663ull},    {GgmlType::kBF16, 0x9ad217528aa1a2f5ull},
      {GgmlType::kQ8_0, 0xb984c331ed7cf2a3ull},   {GgmlType::kQ4_0, 0xa06863579b2f8fd6ull},
      {GgmlType::kQ4_1, 0xc8f422009c794b75ull},   {GgmlType::kQ5_0, 0x9728ffb55edbc14cull},
      {GgmlType::kQ5_1, 0x1e9f13013731012cull},   {GgmlType::kQ4_K, 0x6ccd270aae01a7e6ull},
      {GgmlType::kQ5_K, 0x62d142586a6cec42ull},   {GgmlType::kQ6_K, 0x8522a61d489cd1b7ull},
      {GgmlType::kIQ4_NL, 0xd45c5f370eec6b26ull}, {GgmlType::kIQ4_XS, 0x6075915c42251abfull},
      {GgmlType::kQ2_K, 0xadf8554e3314e716ull},   {GgmlType::kQ3_K, 0x3aa64fc807d06a9bull},
  };
  for (const Golden& g : kGolden) {
    std::vector<uint8_t> q(*RowBytes(g.type, x.size()));
    ASSERT_TRUE(QuantizeRow(g.type, x.data(), q.data(), static_cast<int64_t>(x.size())).ok());
    const uint64_t h = Fnv1a(q);
    EXPECT_EQ(h, g.hash) << TypeName(g.type) << " now hashes to 0x" << std::hex << h;
  }
}

}  // namespace
}  // namespace garnet
