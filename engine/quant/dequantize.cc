// Block decoders: the formulas of blocks.h, in ggml's order of operations (d * sc first, then
// times q, then minus the min), so results equal ggml's scalar reference wherever neither side
// fuses multiply-adds (garnet_quant is built with -ffp-contract=off).
#include <bit>
#include <cstring>

#include "engine/quant/blocks.h"
#include "engine/quant/codec.h"
#include "engine/quant/fp16.h"

// Blocks are copied with memcpy into the structs of blocks.h, whose multi-byte fields are then
// read natively: correct only on little-endian hosts (every target garnet supports).
static_assert(std::endian::native == std::endian::little, "dequantize.cc assumes little-endian");

namespace garnet::quant {
namespace {

uint32_t LoadQh(const uint8_t* qh) {
  return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
         static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}

}  // namespace

void DequantQ8_0(const uint8_t* src, float* y) {
  quant::BlockQ8_0 b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int i = 0; i < kQK; ++i) y[i] = d * static_cast<float>(b.qs[i]);
}

void DequantQ4_0(const uint8_t* src, float* y) {
  quant::BlockQ4_0 b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 15) - 8);
    y[j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

void DequantQ4_1(const uint8_t* src, float* y) {
  quant::BlockQ4_1 b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d), m = F16ToF32(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(b.qs[j] & 15) + m;
    y[j + kQK / 2] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
}

void DequantQ5_0(const uint8_t* src, float* y) {
  quant::BlockQ5_0 b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  const uint32_t qh = LoadQh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = d * static_cast<float>(((b.qs[j] & 15) | h0) - 16);
    y[j + kQK / 2] = d * static_cast<float>(((b.qs[j] >> 4) | h1) - 16);
  }
}

void DequantQ5_1(const uint8_t* src, float* y) {
  quant::BlockQ5_1 b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d), m = F16ToF32(b.m);
  const uint32_t qh = LoadQh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = d * static_cast<float>((b.qs[j] & 15) | h0) + m;
    y[j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) | h1) + m;
  }
}

void DequantQ2_K(const uint8_t* src, float* y) {
  BlockQ2_K b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d), dmin = F16ToF32(b.dmin);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = b.qs + 32 * h;
    for (int j = 0; j < 4; ++j) {
      for (int g = 0; g < 2; ++g) {
        const uint8_t sc = b.scales[8 * h + 2 * j + g];
        const float dl = d * static_cast<float>(sc & 15), ml = dmin * static_cast<float>(sc >> 4);
        float* out = y + 128 * h + 32 * j + 16 * g;
        for (int l = 0; l < 16; ++l) {
          out[l] = dl * static_cast<float>((q[16 * g + l] >> (2 * j)) & 3) - ml;
        }
      }
    }
  }
}

void DequantQ3_K(const uint8_t* src, float* y) {
  BlockQ3_K b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = b.qs + 32 * h;
    for (int j = 0; j < 4; ++j) {
      const uint8_t m = static_cast<uint8_t>(1u << (4 * h + j));
      for (int g = 0; g < 2; ++g) {
        const float dl = d * static_cast<float>(Q3KScale(b.scales, 8 * h + 2 * j + g) - 32);
        float* out = y + 128 * h + 32 * j + 16 * g;
        for (int l = 0; l < 16; ++l) {
          const int low = (q[16 * g + l] >> (2 * j)) & 3;
          out[l] = dl * static_cast<float>(low - ((b.hmask[16 * g + l] & m) ? 0 : 4));
        }
      }
    }
  }
}

void DequantQ4_K(const uint8_t* src, float* y) {
  quant::BlockQ4_K b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d), dmin = F16ToF32(b.dmin);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    quant::UnpackKScaleMin(b.scales, 2 * c, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    quant::UnpackKScaleMin(b.scales, 2 * c + 1, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    const uint8_t* q = b.qs + 32 * c;
    for (int l = 0; l < 32; ++l) {
      y[64 * c + l] = d1 * static_cast<float>(q[l] & 15) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void DequantQ5_K(const uint8_t* src, float* y) {
  quant::BlockQ5_K b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d), dmin = F16ToF32(b.dmin);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc, mn;
    quant::UnpackKScaleMin(b.scales, 2 * c, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    quant::UnpackKScaleMin(b.scales, 2 * c + 1, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    const uint8_t* q = b.qs + 32 * c;
    const uint8_t u1 = static_cast<uint8_t>(1u << (2 * c)),
                  u2 = static_cast<uint8_t>(2u << (2 * c));
    for (int l = 0; l < 32; ++l) {
      const int lo = (q[l] & 15) + ((b.qh[l] & u1) ? 16 : 0);
      const int hi = (q[l] >> 4) + ((b.qh[l] & u2) ? 16 : 0);
      y[64 * c + l] = d1 * static_cast<float>(lo) - m1;
      y[64 * c + 32 + l] = d2 * static_cast<float>(hi) - m2;
    }
  }
}

void DequantQ6_K(const uint8_t* src, float* y) {
  quant::BlockQ6_K b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    const int8_t* sc = b.scales + 8 * h;
    float* out = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 15) | ((qh[l] >> 0 & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2 & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
      out[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

void DequantIQ4_NL(const uint8_t* src, float* y) {
  quant::BlockIQ4_NL b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(quant::kIQ4NLValues[b.qs[j] & 15]);
    y[j + kQK / 2] = d * static_cast<float>(quant::kIQ4NLValues[b.qs[j] >> 4]);
  }
}

void DequantIQ4_XS(const uint8_t* src, float* y) {
  quant::BlockIQ4_XS b;
  std::memcpy(&b, src, sizeof b);
  const float d = F16ToF32(b.d);
  for (int k = 0; k < 8; ++k) {
    const int ls =
        ((b.scales_l[k / 2] >> (4 * (k % 2))) & 15) | (((b.scales_h >> (2 * k)) & 3) << 4);
    const float dl = d * static_cast<float>(ls - 32);
    const uint8_t* qs = b.qs + 16 * k;
    for (int j = 0; j < 16; ++j) {
      y[32 * k + j] = dl * static_cast<float>(quant::kIQ4NLValues[qs[j] & 15]);
      y[32 * k + j + 16] = dl * static_cast<float>(quant::kIQ4NLValues[qs[j] >> 4]);
    }
  }
}

}  // namespace garnet::quant
