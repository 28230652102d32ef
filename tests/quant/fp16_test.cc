#include "engine/quant/fp16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace garnet {
namespace {

float Bits(uint32_t b) {
  return std::bit_cast<float>(b);
}
uint32_t BitsOf(float f) {
  return std::bit_cast<uint32_t>(f);
}
bool IsF16Nan(uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
}

TEST(Fp16Test, DecodesKnownValues) {
  EXPECT_EQ(F16ToF32(0x0000), 0.0f);
  EXPECT_EQ(BitsOf(F16ToF32(0x8000)), 0x80000000u);  // -0
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x3555), 0x155 / 1024.0f * 0.25f + 0.25f);  // 0.333251953125
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(F16ToF32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToF32(0x8200), -std::ldexp(512.0f, -24));
  EXPECT_EQ(F16ToF32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToF32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7c01)));
  EXPECT_TRUE(std::signbit(F16ToF32(0xfe00)));
}

TEST(Fp16Test, EncodesWithRoundToNearestEven) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to the even mantissa (1.0).
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, rounds up to even
  EXPECT_EQ(F32ToF16(Bits(BitsOf(1.0f + std::ldexp(1.0f, -11)) + 1)), 0x3c01);  // just above
  // Overflow: 65520 is halfway between 65504 and 65536 (= infinity): ties to even -> inf.
  EXPECT_EQ(F32ToF16(65519.996f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);
  EXPECT_EQ(F32ToF16(1e10f), 0x7c00);
  EXPECT_EQ(F32ToF16(-1e10f), 0xfc00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  // Subnormals.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);            // tie -> even (0)
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);  // just above the tie
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);            // 1.5 units: tie -> 2
  EXPECT_EQ(F32ToF16(std::ldexp(5.0f, -25)), 0x0002);            // 2.5 units: tie -> 2
  EXPECT_EQ(F32ToF16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(F32ToF16(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(F32ToF16(std::ldexp(2047.0f, -25)), 0x0400);  // rounds up into the smallest normal
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // NaN stays NaN with its sign.
  const uint16_t qnan = F32ToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(IsF16Nan(qnan));
  EXPECT_TRUE(IsF16Nan(F32ToF16(Bits(0x7f800001u))));  // payload only in the low bits
  EXPECT_EQ(F32ToF16(Bits(0xff800001u)) & 0x8000u, 0x8000u);
}

TEST(Fp16Test, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t half = static_cast<uint16_t>(h);
    if (IsF16Nan(half)) {
      EXPECT_TRUE(IsF16Nan(F32ToF16(F16ToF32(half)))) << h;
    } else {
      ASSERT_EQ(F32ToF16(F16ToF32(half)), half) << h;
    }
  }
}

// Every float between two adjacent halves rounds to the nearer one (ties to even): checked at
// the midpoints and their neighbours for all finite positive halves.
TEST(Fp16Test, MidpointsRoundCorrectly) {
  for (uint32_t h = 0; h < 0x7bffu; ++h) {
    const float lo = F16ToF32(static_cast<uint16_t>(h));
    const float hi = F16ToF32(static_cast<uint16_t>(h + 1));
    const float mid = lo + (hi - lo) / 2;  // exact: both are representable with spare bits
    const uint16_t even = (h & 1u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    ASSERT_EQ(F32ToF16(mid), even) << h;
    ASSERT_EQ(F32ToF16(Bits(BitsOf(mid) - 1)), h) << h;
    ASSERT_EQ(F32ToF16(Bits(BitsOf(mid) + 1)), h + 1) << h;
    ASSERT_EQ(F32ToF16(-mid), even | 0x8000u) << h;
  }
}

#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__aarch64__))
// Cross-check against the compiler's own conversion on a sweep of binary32 bit patterns.
TEST(Fp16Test, MatchesCompilerConversion) {
  uint32_t x = 12345;
  for (int i = 0; i < 2000000; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = Bits(x);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    ASSERT_EQ(F32ToF16(f), std::bit_cast<uint16_t>(ref)) << std::hex << x;
  }
}
#endif

TEST(Bf16Test, ConvertsWithRoundToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToF32(0xc0a0), -5.0f);
  EXPECT_EQ(F32ToBf16(Bits(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(F32ToBf16(Bits(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(F32ToBf16(Bits(0x3f808001u)), 0x3f81);  // above the tie
  EXPECT_EQ(F32ToBf16(Bits(0x3f807fffu)), 0x3f80);  // below the tie
  EXPECT_EQ(F32ToBf16(Bits(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to infinity
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(F32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBf16(Bits(0x00000001u)), 0x0000);  // smallest subnormal -> 0
  EXPECT_EQ(F32ToBf16(Bits(0x00018000u)), 0x0002);  // subnormal tie -> even
}

TEST(Bf16Test, NanStaysNan) {
  for (uint32_t bits : {0x7f800001u, 0x7fc00000u, 0x7fffffffu, 0xff800001u, 0x7f80ffffu}) {
    const uint16_t b = F32ToBf16(Bits(bits));
    EXPECT_TRUE(std::isnan(Bf16ToF32(b))) << std::hex << bits;
    EXPECT_EQ(b & 0x8000u, (bits >> 16) & 0x8000u);
  }
}

TEST(Bf16Test, EveryBf16RoundTrips) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToBf16(f), h);
  }
}

}  // namespace
}  // namespace garnet
