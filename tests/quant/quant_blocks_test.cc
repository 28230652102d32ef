// Hand-built blocks, bytes written from the layout spec (gemma4.md §6.2), decoded to known values.
// Expected values are computed per output index from the spec, independently of quant.cc's loop
// structure; all scales are powers of two so every product is exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/quant/blocks.h"
#include "engine/quant/quant.h"

namespace garnet {
namespace {

std::vector<float> Decode(GgmlType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), -12345.0f);
  const Status s = DequantizeRow(type, bytes.data(), out.data(), n);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(QuantBlocksTest, Q8_0) {
  std::vector<uint8_t> b = {0x00, 0x38};  // d = 0.5
  for (int i = 0; i < 32; ++i) b.push_back(static_cast<uint8_t>(static_cast<int8_t>(i * 8 - 128)));
  const auto y = Decode(GgmlType::kQ8_0, b, 32);
  EXPECT_EQ(y[0], -64.0f);
  EXPECT_EQ(y[31], 0.5f * (31 * 8 - 128));
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * static_cast<float>(i * 8 - 128)) << i;
}

TEST(QuantBlocksTest, Q4_0) {
  std::vector<uint8_t> b = {0x00, 0x40};  // d = 2
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (15 - j) << 4));
  const auto y = Decode(GgmlType::kQ4_0, b, 32);
  EXPECT_EQ(y[0], -16.0f);  // (0 - 8) * 2
  EXPECT_EQ(y[16], 14.0f);  // (15 - 8) * 2, high nibble of byte 0
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.0f * (j - 8)) << j;
    EXPECT_EQ(y[j + 16], 2.0f * (15 - j - 8)) << j;
  }
}

TEST(QuantBlocksTest, Q4_1) {
  std::vector<uint8_t> b = {0x00, 0x38, 0x00, 0xbc};  // d = 0.5, m = -1
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>((j * 3) % 16 | j << 4));
  const auto y = Decode(GgmlType::kQ4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * ((j * 3) % 16) - 1.0f) << j;
    EXPECT_EQ(y[j + 16], 0.5f * j - 1.0f) << j;
  }
}

// qh = 0xA5C3F00F (bytes 0f f0 c3 a5, little endian): bit j is the 5th bit of element j.
constexpr uint32_t kQh = 0xA5C3F00Fu;

TEST(QuantBlocksTest, Q5_0) {
  std::vector<uint8_t> b = {0x00, 0x3c, 0x0f, 0xf0, 0xc3, 0xa5};  // d = 1
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (15 - j) << 4));
  const auto y = Decode(GgmlType::kQ5_0, b, 32);
  EXPECT_EQ(y[0], 0.0f + 16 - 16);   // low nibble 0, qh bit 0 = 1
  EXPECT_EQ(y[4], 4.0f - 16);        // qh bit 4 = 0
  EXPECT_EQ(y[31], 0.0f + 16 - 16);  // byte 15 high nibble 0, qh bit 31 = 1
  for (int i = 0; i < 32; ++i) {
    const int nib = i < 16 ? i : 15 - (i - 16);
    const int q = nib | static_cast<int>((kQh >> i) & 1u) << 4;
    EXPECT_EQ(y[i], static_cast<float>(q - 16)) << i;
  }
}

TEST(QuantBlocksTest, Q5_1) {
  std::vector<uint8_t> b = {0x00, 0x34, 0x00, 0x40, 0x0f, 0xf0, 0xc3, 0xa5};  // d = 0.25, m = 2
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (15 - j) << 4));
  const auto y = Decode(GgmlType::kQ5_1, b, 32);
  for (int i = 0; i < 32; ++i) {
    const int nib = i < 16 ? i : 15 - (i - 16);
    const int q = nib | static_cast<int>((kQh >> i) & 1u) << 4;
    EXPECT_EQ(y[i], 0.25f * q + 2.0f) << i;
  }
}

// Sub-block (scale, min) pairs used by the Q4_K/Q5_K tests and their packed form, worked out by
// hand: pairs 4..7 need the 6-bit split (low 4 bits in bytes 8..11, top 2 bits in the top of
// bytes 0..3 (scale) and 4..7 (min)).
constexpr uint8_t kSc[8] = {1, 2, 3, 4, 40, 50, 60, 63};
constexpr uint8_t kMn[8] = {0, 5, 10, 15, 20, 33, 47, 63};
const std::vector<uint8_t> kPackedScales = {0x81, 0xC2, 0xC3, 0xC4, 0x40, 0x85,
                                            0x8A, 0xCF, 0x48, 0x12, 0xFC, 0xFF};

TEST(QuantBlocksTest, Q2_K) {
  std::vector<uint8_t> b;
  // scales[j] = scale j % 16 | min (15 - j) << 4
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (15 - j) << 4));
  for (int i = 0; i < 64; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));  // qs
  b.insert(b.end(), {0x00, 0x38, 0x00, 0x34});  // d = 0.5, dmin = 0.25
  ASSERT_EQ(b.size(), 84u);
  const auto y = Decode(GgmlType::kQ2_K, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int h = o / 128, j = o % 128 / 32;
    const int q = (b[16 + 32 * h + o % 32] >> (2 * j)) & 3;
    const int sc = o / 16, mn = 15 - o / 16;
    EXPECT_EQ(y[o], 0.5f * sc * q - 0.25f * mn) << o;
  }
  // o = 0: qs[0] = 11 = 0b1011 -> q 3; scale 0, min 15 -> -3.75.
  EXPECT_EQ(y[0], -3.75f);
  // o = 32 (j = 1): bits 2..3 of qs[0] = 0b10 -> q 2; scale 2, min 13 -> 0.5*2*2 - 3.25.
  EXPECT_EQ(y[32], 2.0f - 3.25f);
}

TEST(QuantBlocksTest, Q3_K) {
  // Stored 6-bit scales (value + 32) for the 16 sub-blocks, packed by hand below.
  const int stored[16] = {0, 1, 15, 16, 31, 32, 33, 47, 48, 63, 62, 5, 40, 20, 10, 32};
  uint8_t scales[12] = {};
  for (int s = 0; s < 16; ++s) {
    scales[s % 8] |= static_cast<uint8_t>((stored[s] & 15) << (s < 8 ? 0 : 4));
    scales[8 + s % 4] |= static_cast<uint8_t>((stored[s] >> 4) << (2 * (s / 4)));
  }
  // Worked out by hand: low nibbles 0 1 F 0 F 0 1 F | 0 F E 5 8 4 A 0 -> bytes 0..7 =
  // 00 F1 EF 50 8F 40 A1 0F; top bits per s: 0 0 0 1 | 1 2 2 2 | 3 3 3 0 | 2 1 0 2.
  const uint8_t want[12] = {0x00, 0xF1, 0xEF, 0x50, 0x8F, 0x40, 0xA1, 0x0F, 0xB4, 0x78, 0x38, 0x89};
  for (int k = 0; k < 12; ++k) EXPECT_EQ(scales[k], want[k]) << k;
  for (int s = 0; s < 16; ++s) EXPECT_EQ(quant::Q3KScale(want, s), stored[s]) << s;
  std::vector<uint8_t> b;
  for (int i = 0; i < 32; ++i) b.push_back(static_cast<uint8_t>(i * 29 + 3));   // hmask
  for (int i = 0; i < 64; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));  // qs
  b.insert(b.end(), want, want + 12);
  b.insert(b.end(), {0x00, 0x34});  // d = 0.25
  ASSERT_EQ(b.size(), 110u);
  const auto y = Decode(GgmlType::kQ3_K, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int h = o / 128, j = o % 128 / 32;
    const int low = (b[32 + 32 * h + o % 32] >> (2 * j)) & 3;
    const int high = (b[o % 32] >> (4 * h + j)) & 1;
    EXPECT_EQ(y[o], 0.25f * (stored[o / 16] - 32) * (low + 4 * high - 4)) << o;
  }
  // o = 0: qs[0] = 11 -> low 3; hmask[0] = 3 -> bit 0 set -> q = 3; scale 0 - 32 -> -24.
  EXPECT_EQ(y[0], -24.0f);
}

TEST(QuantBlocksTest, KScaleMinUnpack) {
  for (int k = 0; k < 8; ++k) {
    uint8_t sc = 0, mn = 0;
    quant::UnpackKScaleMin(kPackedScales.data(), k, &sc, &mn);
    EXPECT_EQ(sc, kSc[k]) << k;
    EXPECT_EQ(mn, kMn[k]) << k;
  }
}

TEST(QuantBlocksTest, Q4_K) {
  std::vector<uint8_t> b = {0x00, 0x3c, 0x00, 0x38};  // d = 1, dmin = 0.5
  b.insert(b.end(), kPackedScales.begin(), kPackedScales.end());
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));
  ASSERT_EQ(b.size(), 144u);
  const auto y = Decode(GgmlType::kQ4_K, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int c = o / 64, r = o % 64, sub = o / 32;
    const uint8_t byte = b[16 + 32 * c + r % 32];
    const int q = r < 32 ? (byte & 15) : (byte >> 4);
    EXPECT_EQ(y[o], 1.0f * kSc[sub] * q - 0.5f * kMn[sub]) << o;
  }
  // Spot values worked out by hand: o = 0: byte 11 -> q 11, sc 1, mn 0 -> 11.
  EXPECT_EQ(y[0], 11.0f);
  // o = 255: sub-block 7 (sc 63, mn 63), byte qs[127] = (127*37+11) & 255 = 102 = 0x66 -> q 6.
  EXPECT_EQ(y[255], 63.0f * 6 - 31.5f);
}

TEST(QuantBlocksTest, Q5_K) {
  std::vector<uint8_t> b = {0x00, 0x3c, 0x00, 0x38};  // d = 1, dmin = 0.5
  b.insert(b.end(), kPackedScales.begin(), kPackedScales.end());
  for (int i = 0; i < 32; ++i) b.push_back(static_cast<uint8_t>(i * 29 + 3));  // qh
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));
  ASSERT_EQ(b.size(), 176u);
  const auto y = Decode(GgmlType::kQ5_K, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int c = o / 64, r = o % 64, sub = o / 32, l = o % 32;
    const uint8_t byte = b[48 + 32 * c + l];
    const int hbit = (b[16 + l] >> sub) & 1;  // qh[l] bit 2c (low half) / 2c+1 (high half)
    const int q = (r < 32 ? (byte & 15) : (byte >> 4)) | hbit << 4;
    EXPECT_EQ(y[o], 1.0f * kSc[sub] * q - 0.5f * kMn[sub]) << o;
  }
  // o = 0: qs 11, qh[0] = 3 -> bit 0 set -> q 27, sc 1, mn 0.
  EXPECT_EQ(y[0], 27.0f);
}

TEST(QuantBlocksTest, Q6_K) {
  std::vector<uint8_t> b;
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>(i * 53 + 7));   // ql
  for (int i = 0; i < 64; ++i) b.push_back(static_cast<uint8_t>(i * 101 + 60));  // qh
  const int8_t scales[16] = {-128, -1, 0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 127, -7, -64};
  for (int8_t s : scales) b.push_back(static_cast<uint8_t>(s));
  b.push_back(0x00);  // d = 0.25
  b.push_back(0x34);
  ASSERT_EQ(b.size(), 210u);
  const auto y = Decode(GgmlType::kQ6_K, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int h = o / 128, r = o % 128, quadrant = r / 32, l = r % 32;
    const uint8_t lbyte = b[64 * h + l + (quadrant & 1 ? 32 : 0)];
    const int low = quadrant >= 2 ? lbyte >> 4 : lbyte & 15;
    const int high = (b[128 + 32 * h + l] >> (2 * quadrant)) & 3;
    const int q = (low | high << 4) - 32;
    EXPECT_EQ(y[o], 0.25f * scales[o / 16] * q) << o;
  }
  // o = 0: ql[0] = 7, qh[0] = 60 = 0b00111100 -> bits 0..1 = 0 -> q = 7 - 32 = -25; scale -128.
  EXPECT_EQ(y[0], 0.25f * -128 * -25);
  // o = 96 (quadrant 3 of half 0, l = 0): ql[32] = (32*53+7)&255 = 167 = 0xA7 -> high nibble 10,
  // qh[0] bits 6..7 = 0 -> q = 10 - 32 = -22; scale index 6 = 5.
  EXPECT_EQ(y[96], 0.25f * 5 * -22);
}

constexpr int kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

TEST(QuantBlocksTest, IQ4_NL) {
  std::vector<uint8_t> b = {0x00, 0xb8};  // d = -0.5
  for (int j = 0; j < 16; ++j) b.push_back(static_cast<uint8_t>(j | (15 - j) << 4));
  const auto y = Decode(GgmlType::kIQ4_NL, b, 32);
  EXPECT_EQ(y[0], 63.5f);    // -0.5 * -127
  EXPECT_EQ(y[16], -56.5f);  // -0.5 * 113 (high nibble 15 of byte 0)
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], -0.5f * kIq4[j]) << j;
    EXPECT_EQ(y[j + 16], -0.5f * kIq4[15 - j]) << j;
  }
}

TEST(QuantBlocksTest, IQ4_XS) {
  // d = 0.25; sub-block scales ls_k = {0, 1, 31, 32, 33, 47, 62, 63}: low nibbles in scales_l
  // (two per byte, even k in the low half), top 2 bits in scales_h (2 bits per k).
  const int ls[8] = {0, 1, 31, 32, 33, 47, 62, 63};
  uint16_t scales_h = 0;
  uint8_t scales_l[4] = {};
  for (int k = 0; k < 8; ++k) {
    scales_l[k / 2] |= static_cast<uint8_t>((ls[k] & 15) << (4 * (k % 2)));
    scales_h |= static_cast<uint16_t>((ls[k] >> 4) << (2 * k));
  }
  // Worked out by hand: scales_l = 10 0F F1 FE, scales_h = 0b11'11'10'10'10'01'00'00 = 0xFA90.
  EXPECT_EQ(scales_l[0], 0x10);
  EXPECT_EQ(scales_l[1], 0x0F);
  EXPECT_EQ(scales_l[2], 0xF1);
  EXPECT_EQ(scales_l[3], 0xFE);
  EXPECT_EQ(scales_h, 0xFA90);
  std::vector<uint8_t> b = {0x00, 0x34, 0x90, 0xFA, 0x10, 0x0F, 0xF1, 0xFE};
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));
  ASSERT_EQ(b.size(), 136u);
  const auto y = Decode(GgmlType::kIQ4_XS, b, 256);
  for (int o = 0; o < 256; ++o) {
    const int k = o / 32, r = o % 32;
    const uint8_t byte = b[8 + 16 * k + r % 16];
    const int nib = r < 16 ? (byte & 15) : (byte >> 4);
    EXPECT_EQ(y[o], 0.25f * (ls[k] - 32) * kIq4[nib]) << o;
  }
  // o = 0: ls 0 -> step -32 * 0.25 = -8; byte 11 -> low nibble 11 -> 38: -304.
  EXPECT_EQ(y[0], -304.0f);
  EXPECT_EQ(y[96 + 5], 0.0f);  // sub-block 3 has ls = 32: a zero step
}

TEST(QuantBlocksTest, PlainFloatTypes) {
  const std::vector<uint8_t> f16 = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c};
  const auto a = Decode(GgmlType::kF16, f16, 4);
  EXPECT_EQ(a[0], 1.0f);
  EXPECT_EQ(a[1], -2.0f);
  EXPECT_EQ(a[2], 5.9604644775390625e-08f);
  EXPECT_TRUE(std::isinf(a[3]));
  const std::vector<uint8_t> bf16 = {0x80, 0x3f, 0xa0, 0xc0};
  const auto b = Decode(GgmlType::kBF16, bf16, 2);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -5.0f);
  const std::vector<uint8_t> f32 = {0x00, 0x00, 0x80, 0x3f};
  EXPECT_EQ(Decode(GgmlType::kF32, f32, 1)[0], 1.0f);
}

TEST(QuantBlocksTest, RejectsBadLengthsAndTypes) {
  std::vector<uint8_t> buf(1024);
  std::vector<float> out(1024);
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ8_0, buf.data(), out.data(), 33).IsInvalidArgument());
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ4_K, buf.data(), out.data(), 128).IsInvalidArgument());
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ6_K, buf.data(), out.data(), -256).IsInvalidArgument());
  EXPECT_TRUE(QuantizeRow(GgmlType::kQ5_0, out.data(), buf.data(), 48).IsInvalidArgument());
  EXPECT_TRUE(QuantizeRow(GgmlType::kQ5_K, out.data(), buf.data(), 300).IsInvalidArgument());
  const Status s = DequantizeRow(GgmlType::kIQ2_XXS, buf.data(), out.data(), 256);
  EXPECT_TRUE(s.IsUnimplemented()) << s.ToString();
  EXPECT_NE(s.message().find("iq2_xxs"), std::string::npos) << s.message();
  EXPECT_TRUE(QuantizeRow(GgmlType::kIQ2_XXS, out.data(), buf.data(), 256).IsUnimplemented());
  EXPECT_TRUE(DequantizeRow(GgmlType::kIQ4_XS, buf.data(), out.data(), 32).IsInvalidArgument());
  const Status len = DequantizeRow(GgmlType::kQ4_0, buf.data(), out.data(), 40);
  EXPECT_NE(len.message().find("40"), std::string::npos) << len.message();
  // Zero length is a valid empty row.
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ4_K, buf.data(), out.data(), 0).ok());
  EXPECT_TRUE(IsQuantSupported(GgmlType::kQ6_K));
  EXPECT_FALSE(IsQuantSupported(GgmlType::kQ8_1));
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ3_K, buf.data(), out.data(), 100).IsInvalidArgument());
}

}  // namespace
}  // namespace garnet
