// Byte layouts of the ggml quantisation blocks garnet reads and writes.
//
// Facts from ggml-common.h, summarised in ../shared/docs/gemma4.md §6.2. Every struct is packed
// (only uint8_t/uint16_t members, no padding), little-endian, and its size is checked against
// the block table in types.h. Scale fields hold IEEE binary16 bits (see fp16.h). The decode
// formulas live beside the code in quant.cc; kernels may rely on these structs for layout.
#pragma once

#include <cstdint>

namespace garnet::quant {

inline constexpr int kQK = 32;           // elements per block of the "legacy" formats
inline constexpr int kQK_K = 256;        // elements per K-quant super-block
inline constexpr int kKScaleBytes = 12;  // packed 6-bit (scale, min) pairs of Q4_K/Q5_K

// w[i] = d * qs[i]
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// j < 16: w[j] = d * ((qs[j] & 15) - 8), w[j + 16] = d * ((qs[j] >> 4) - 8)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// same nibble order as Q4_0, w = d * q + m with q in 0..15
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};

// 5-bit q = nibble | (bit j (or j + 16) of the little-endian u32 qh) << 4; w = d * (q - 16)
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// as Q5_0 but w = d * q + m
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};

// 16 sub-blocks of 16; scales[j] = 4-bit scale | 4-bit min << 4. Output o (h = o / 128,
// j = o % 128 / 32) takes bits 2j..2j+1 of qs[32h + o % 32]; w = d * (sc & 15) * q - dmin * (sc >>
// 4) with sc = scales[o / 16].
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};

// 16 sub-blocks of 16 with 6-bit scales stored + 32: scale s has its low 4 bits in
// scales[s % 8] (low nibble for s < 8, high nibble for s >= 8) and its top 2 bits at bit
// 2 (s / 4) of scales[8 + s % 4]. Output o (h = o / 128, j = o % 128 / 32) has its low 2 bits at
// bit 2j of qs[32h + o % 32] and its high bit at bit 4h + j of hmask[o % 32];
// q = low + 4 high - 4 (in [-4, 3]) and w = d * (scale_{o / 16} - 32) * q.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;
};

// 8 sub-blocks of 32 with 6-bit (scale, min) pairs packed in `scales`:
//   k < 4: sc = scales[k] & 63, mn = scales[k + 4] & 63
//   k >= 4: sc = (scales[k + 4] & 15) | (scales[k - 4] >> 6) << 4,
//           mn = (scales[k + 4] >> 4) | (scales[k] >> 6) << 4
// Chunk c (0..3) of 64 outputs uses qs[32c .. 32c + 31]: low nibbles are sub-block 2c, high
// nibbles sub-block 2c + 1. w = d * sc * q - dmin * mn.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};

// as Q4_K plus a 5th bit: element l of chunk c takes qh[l] bit 2c (low-nibble half) or bit
// 2c + 1 (high-nibble half).
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};

// 16 sub-blocks of 16 with int8 scales; 6-bit q, w = d * scales[o / 16] * (q - 32). Half h
// (outputs 128h ..) uses ql + 64h and qh + 32h; for l < 32 the four quadrants are
//   out[l]      = ql[l] & 15      | (qh[l] >> 0 & 3) << 4
//   out[l + 32] = ql[l + 32] & 15 | (qh[l] >> 2 & 3) << 4
//   out[l + 64] = ql[l] >> 4      | (qh[l] >> 4 & 3) << 4
//   out[l + 96] = ql[l + 32] >> 4 | (qh[l] >> 6 & 3) << 4
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};

// Non-linear 4-bit codebook shared by IQ4_NL and IQ4_XS (ggml-common.h kvalues_iq4nl).
inline constexpr int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Q4_0's nibble order, w = d * kIQ4NLValues[nibble].
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// 8 sub-blocks of 32 with 6-bit scales ls_k = (scales_l[k / 2] >> 4 (k % 2)) & 15 |
// ((scales_h >> 2k) & 3) << 4; sub-block k uses qs[16k .. 16k + 15] in Q4_0's nibble order and
// w = d * (ls_k - 32) * kIQ4NLValues[nibble].
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};

static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockIQ4_XS) == 136);

// The stored 6-bit scale s (0..15, still offset by 32) of a Q3_K `scales` array.
inline int Q3KScale(const uint8_t* scales, int s) {
  const int low = s < 8 ? scales[s] & 15 : scales[s - 8] >> 4;
  const int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
  return low | high << 4;
}

// Unpacks the 6-bit (scale, min) pair k (0..7) of a Q4_K/Q5_K `scales` array.
inline void UnpackKScaleMin(const uint8_t* scales, int k, uint8_t* sc, uint8_t* mn) {
  if (k < 4) {
    *sc = scales[k] & 63;
    *mn = scales[k + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[k + 4] & 15) | ((scales[k - 4] >> 6) << 4));
    *mn = static_cast<uint8_t>((scales[k + 4] >> 4) | ((scales[k] >> 6) << 4));
  }
}

}  // namespace garnet::quant
