// Block encoders. Deterministic: only + - * /, comparisons, std::fabs, exact conversions and the
// 1.5 * 2^23 rounding trick (the library is built with -ffp-contract=off). Scales are searched
// per sub-block, then quantised; the final quants are always computed against the exact
// (binary16-rounded, 6/8-bit-quantised) scales a reader will decode.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/quant/blocks.h"
#include "engine/quant/codec.h"
#include "engine/quant/fp16.h"

static_assert(std::endian::native == std::endian::little, "quantize.cc assumes little-endian");

namespace garnet::quant {
namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers

// Stores a non-negative or signed scale as binary16, saturating to the largest finite half so a
// huge block never turns into an infinite scale.
uint16_t ScaleToF16(float v) {
  uint16_t h = F32ToF16(v);
  if ((h & 0x7fffu) == 0x7c00u) h = static_cast<uint16_t>((h & 0x8000u) | 0x7bffu);
  return h;
}

// v clamped to [lo, hi] (NaN -> lo) and rounded to the nearest integer, ties to even, as a
// float. Adding and subtracting 1.5 * 2^23 rounds any |v| < 2^22 exactly under IEEE
// round-to-nearest-even; being branch-free, loops over it vectorise.
inline float RoundClampF(float v, float lo, float hi) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  v = v > lo ? v : lo;
  v = v < hi ? v : hi;
  return (v + kMagic) - kMagic;
}

// The same as an int. Callers keep |lo|, |hi| < 2^22.
inline int RoundClamp(float v, int lo, int hi) {
  return static_cast<int>(RoundClampF(v, static_cast<float>(lo), static_cast<float>(hi)));
}

// Value with the largest magnitude (first one on ties), sign kept.
float SignedAbsMax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      max = x[i];
    }
  }
  return max;
}

// ---------------------------------------------------------------------------------------------
// 32-element formats: the usual absmax (Q*_0) and min/max (Q*_1) scales.

// Symmetric 2^bits levels: the largest-magnitude value maps to the most negative level.
template <int kBits>
void QuantSym(const float* x, uint16_t* d_out, uint8_t* q) {
  constexpr int kHalf = 1 << (kBits - 1);
  const float max = SignedAbsMax(x, kQK);
  *d_out = ScaleToF16(max / static_cast<float>(-kHalf));
  const float d = F16ToF32(*d_out);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQK; ++i)
    q[i] = static_cast<uint8_t>(RoundClamp(x[i] * id, -kHalf, kHalf - 1) + kHalf);
}

// Affine 2^bits levels between the block's min and max.
template <int kBits>
void QuantAffine(const float* x, uint16_t* d_out, uint16_t* m_out, uint8_t* q) {
  constexpr int kMaxQ = (1 << kBits) - 1;
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQK; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *d_out = ScaleToF16((hi - lo) / static_cast<float>(kMaxQ));
  *m_out = ScaleToF16(lo);
  const float d = F16ToF32(*d_out), m = F16ToF32(*m_out);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQK; ++i) q[i] = static_cast<uint8_t>(RoundClamp((x[i] - m) * id, 0, kMaxQ));
}

void PackNibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < kQK / 2; ++j)
    qs[j] = static_cast<uint8_t>((q[j] & 15) | (q[j + kQK / 2] & 15) << 4);
}

void PackHighBits(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < kQK; ++j) h |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(h >> (8 * k));
}

// ---------------------------------------------------------------------------------------------
// K-quants: each sub-block gets a least-squares (scale, min) or scale, chosen among a few
// candidate quantisation grids; then the super-block scales are quantised.

// Sums over one candidate grid q_i = round(clamp((x_i - off) * iscale, q_lo, q_hi)): sum q,
// sum q^2 (exact integers) and sum q * x_i (eight partial sums in a fixed order, so the result
// does not depend on how the compiler vectorises the loop).
struct GridSums {
  float sq, sqq, sqx;
};

template <int kN>
GridSums SumGrid(const float* x, float off, float iscale, float q_lo, float q_hi) {
  static_assert(kN % 8 == 0);
  float part[8] = {};
  int32_t sq = 0, sqq = 0;
  for (int i = 0; i < kN; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float q = RoundClampF((x[i + k] - off) * iscale, q_lo, q_hi);
      part[k] += q * x[i + k];
      const auto qi = static_cast<int32_t>(q);
      sq += qi;
      sqq += qi * qi;
    }
  }
  const float sqx =
      ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  return {static_cast<float>(sq), static_cast<float>(sqq), sqx};
}

// Fits x[0..kN) ≈ a * q - m with integer q in [0, max_q], a >= 0, m >= 0 (the min is never
// positive, as in the format). Candidate grids stretch the [min(x, 0), max(x)] range by up to one
// level either way; for each grid's quants the affine (a, -m) is the least-squares solution, and
// the plain min/max grid is the baseline.
template <int kN>
void FitScaleMin(const float* x, int max_q, float* scale, float* min) {
  float lo = 0, hi = x[0];
  float sum_x = 0, sum_xx = 0;
  for (int i = 0; i < kN; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_x += x[i];
    sum_xx += x[i] * x[i];
  }
  if (!(hi > lo)) {  // all zero, or all equal and negative: the min alone represents them
    *scale = 0;
    *min = -lo;
    return;
  }
  const float fq = static_cast<float>(max_q), fn = static_cast<float>(kN);
  // Squared error of a * q + b against x, expanded into the sums.
  auto error = [&](const GridSums& g, float a, float b) {
    return sum_xx - 2 * a * g.sqx - 2 * b * sum_x + a * a * g.sqq + 2 * a * b * g.sq + fn * b * b;
  };
  float best_a = (hi - lo) / fq, best_b = lo;
  float best_err = error(SumGrid<kN>(x, lo, fq / (hi - lo), 0.0f, fq), best_a, best_b);
  constexpr int kSteps = 8;  // candidates t = -1, -0.75, ..., +1 levels
  for (int s = 0; s <= kSteps; ++s) {
    const float t = -1.0f + 2.0f * static_cast<float>(s) / kSteps;
    const GridSums g = SumGrid<kN>(x, lo, (fq + t) / (hi - lo), 0.0f, fq);
    const float det = fn * g.sqq - g.sq * g.sq;
    if (!(det > 0)) continue;
    float a = (fn * g.sqx - g.sq * sum_x) / det;
    float b = (g.sqq * sum_x - g.sq * g.sqx) / det;
    if (b > 0) {  // the format cannot add a positive offset: refit the scale alone
      b = 0;
      a = g.sqx / g.sqq;
    }
    if (!(a > 0)) continue;
    const float err = error(g, a, b);
    if (err < best_err) {
      best_err = err;
      best_a = a;
      best_b = b;
    }
  }
  *scale = best_a;
  *min = -best_b;
}

// Fits x[0..16) ≈ a * q with integer q in [q_lo, -q_lo - 1] (a may be negative so the
// largest-magnitude value can use the level q_lo). Candidate grids map that value to
// -(|q_lo| + step * s) for s in [s_lo, s_hi]; each grid's least-squares a is kept if best.
float FitScaleSym(const float* x, int q_lo, float step, int s_lo, int s_hi) {
  const float max = SignedAbsMax(x, 16);
  if (max == 0) return 0;
  const float lo = static_cast<float>(q_lo), hi = static_cast<float>(-q_lo - 1);
  float best_a = max / lo, best_score = -1;
  for (int s = s_lo; s <= s_hi; ++s) {
    const float iscale = -(-lo + step * static_cast<float>(s)) / max;
    const GridSums g = SumGrid<16>(x, 0.0f, iscale, lo, hi);
    if (!(g.sqq > 0)) continue;
    // Error = sum_xx - sqx^2 / sqq at the optimal a = sqx / sqq: maximise sqx^2 / sqq.
    const float score = g.sqx * g.sqx / g.sqq;
    if (score > best_score) {
      best_score = score;
      best_a = g.sqx / g.sqq;
    }
  }
  return best_a;
}

// Shared by Q4_K and Q5_K: per-sub-block fit, 6-bit scales/mins, final quants q[0..256).
template <int kMaxQ>
void QuantKAffine(const float* x, uint16_t* d_out, uint16_t* dmin_out, uint8_t* scales,
                  uint8_t* q) {
  float sub_scale[8], sub_min[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    FitScaleMin<32>(x + 32 * j, kMaxQ, &sub_scale[j], &sub_min[j]);
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  *d_out = ScaleToF16(max_scale / 63.0f);
  *dmin_out = ScaleToF16(max_min / 63.0f);
  const float d = F16ToF32(*d_out), dmin = F16ToF32(*dmin_out);
  uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? RoundClamp(sub_scale[j] / d, 0, 63) : 0);
    mn[j] = static_cast<uint8_t>(dmin > 0 ? RoundClamp(sub_min[j] / dmin, 0, 63) : 0);
  }
  for (int k = 0; k < 4; ++k) {
    scales[k] = static_cast<uint8_t>(sc[k] | (sc[k + 4] >> 4) << 6);
    scales[k + 4] = static_cast<uint8_t>(mn[k] | (mn[k + 4] >> 4) << 6);
    scales[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) | (mn[k + 4] & 15) << 4);
  }
  for (int j = 0; j < 8; ++j) {
    const float eff_d = d * sc[j], eff_m = dmin * mn[j];
    const float id = eff_d > 0 ? 1.0f / eff_d : 0.0f;
    for (int i = 0; i < 32; ++i) {
      q[32 * j + i] = static_cast<uint8_t>(RoundClamp((x[32 * j + i] + eff_m) * id, 0, kMaxQ));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// IQ4_NL / IQ4_XS: the non-linear codebook. A value maps to its nearest codebook entry.

// Index of the codebook entry nearest to v (ties to the lower entry): the number of midpoints
// between neighbouring entries that lie below v.
inline int NearestIQ4(float v) {
  static constexpr float kMid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                     7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};
  int idx = 0;
  for (float m : kMid) idx += v > m ? 1 : 0;
  return idx;
}

// Least-squares scale for x[0..32) ≈ d * codebook[idx_i], choosing the grid among candidates that
// map the largest-magnitude value to the codebook's negative end (-127) or positive end (113),
// stretched by up to ±12 %. Returns 0 for an all-zero block.
float FitIQ4Scale(const float* x) {
  const float max = SignedAbsMax(x, kQK);
  if (max == 0) return 0;
  float best_d = max / -127.0f, best_score = -1;
  for (float end : {-127.0f, 113.0f}) {
    for (int t = -6; t <= 6; ++t) {
      const float id = end * (1.0f + 0.02f * static_cast<float>(t)) / max;
      float sxv = 0, svv = 0;
      for (int i = 0; i < kQK; ++i) {
        const float v = quant::kIQ4NLValues[NearestIQ4(x[i] * id)];
        sxv += x[i] * v;
        svv += v * v;
      }
      // Error at the optimal d = sxv / svv is sum_xx - sxv^2 / svv: maximise sxv^2 / svv.
      const float score = sxv * sxv / svv;
      if (score > best_score) {
        best_score = score;
        best_d = sxv / svv;
      }
    }
  }
  return best_d;
}

void PackIQ4(const float* x, float d, uint8_t* qs) {
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK / 2; ++j) {
    qs[j] = static_cast<uint8_t>(NearestIQ4(x[j] * id) | NearestIQ4(x[j + kQK / 2] * id) << 4);
  }
}

}  // namespace

void QuantQ8_0(const float* x, uint8_t* dst) {
  quant::BlockQ8_0 b;
  float amax = 0;
  for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
  b.d = ScaleToF16(amax / 127.0f);
  const float d = F16ToF32(b.d);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQK; ++i) b.qs[i] = static_cast<int8_t>(RoundClamp(x[i] * id, -127, 127));
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ4_0(const float* x, uint8_t* dst) {
  quant::BlockQ4_0 b;
  uint8_t q[kQK];
  QuantSym<4>(x, &b.d, q);
  PackNibbles(q, b.qs);
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ4_1(const float* x, uint8_t* dst) {
  quant::BlockQ4_1 b;
  uint8_t q[kQK];
  QuantAffine<4>(x, &b.d, &b.m, q);
  PackNibbles(q, b.qs);
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ5_0(const float* x, uint8_t* dst) {
  quant::BlockQ5_0 b;
  uint8_t q[kQK];
  QuantSym<5>(x, &b.d, q);
  PackNibbles(q, b.qs);
  PackHighBits(q, b.qh);
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ5_1(const float* x, uint8_t* dst) {
  quant::BlockQ5_1 b;
  uint8_t q[kQK];
  QuantAffine<5>(x, &b.d, &b.m, q);
  PackNibbles(q, b.qs);
  PackHighBits(q, b.qh);
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ2_K(const float* x, uint8_t* dst) {
  BlockQ2_K b;
  float sub_scale[16], sub_min[16], max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    FitScaleMin<16>(x + 16 * j, 3, &sub_scale[j], &sub_min[j]);
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  b.d = ScaleToF16(max_scale / 15.0f);
  b.dmin = ScaleToF16(max_min / 15.0f);
  const float d = F16ToF32(b.d), dmin = F16ToF32(b.dmin);
  std::memset(b.qs, 0, sizeof b.qs);
  for (int j = 0; j < 16; ++j) {
    const int sc = d > 0 ? RoundClamp(sub_scale[j] / d, 0, 15) : 0;
    const int mn = dmin > 0 ? RoundClamp(sub_min[j] / dmin, 0, 15) : 0;
    b.scales[j] = static_cast<uint8_t>(sc | mn << 4);
    const float eff_d = d * static_cast<float>(sc), eff_m = dmin * static_cast<float>(mn);
    const float id = eff_d > 0 ? 1.0f / eff_d : 0.0f;
    for (int i = 0; i < 16; ++i) {
      const int o = 16 * j + i;  // h = o / 128, shift 2 * (o % 128 / 32), byte 32h + o % 32
      const int q = RoundClamp((x[o] + eff_m) * id, 0, 3);
      b.qs[32 * (o / 128) + o % 32] |= static_cast<uint8_t>(q << (2 * (o % 128 / 32)));
    }
  }
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ3_K(const float* x, uint8_t* dst) {
  BlockQ3_K b;
  float sub_scale[16], max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    sub_scale[j] = FitScaleSym(x + 16 * j, -4, 0.0625f, -12, 4);
    if (std::fabs(sub_scale[j]) > amax) {
      amax = std::fabs(sub_scale[j]);
      max_scale = sub_scale[j];
    }
  }
  // The largest-magnitude sub-block scale maps to -32, the most negative 6-bit step.
  b.d = ScaleToF16(max_scale / -32.0f);
  const float d = F16ToF32(b.d);
  std::memset(b.hmask, 0, sizeof b.hmask);
  std::memset(b.qs, 0, sizeof b.qs);
  std::memset(b.scales, 0, sizeof b.scales);
  for (int j = 0; j < 16; ++j) {
    const int ls = d != 0 ? RoundClamp(sub_scale[j] / d, -32, 31) : 0;
    const int stored = ls + 32;
    b.scales[j % 8] |= static_cast<uint8_t>((stored & 15) << (j < 8 ? 0 : 4));
    b.scales[8 + j % 4] |= static_cast<uint8_t>((stored >> 4) << (2 * (j / 4)));
    const float eff = d * static_cast<float>(ls);
    const float id = eff != 0 ? 1.0f / eff : 0.0f;
    for (int i = 0; i < 16; ++i) {
      const int o = 16 * j + i, h = o / 128, jj = o % 128 / 32;
      const int u = RoundClamp(x[o] * id, -4, 3) + 4;  // 0..7: low 2 bits + high bit
      b.qs[32 * h + o % 32] |= static_cast<uint8_t>((u & 3) << (2 * jj));
      b.hmask[o % 32] |= static_cast<uint8_t>((u >> 2) << (4 * h + jj));
    }
  }
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ4_K(const float* x, uint8_t* dst) {
  quant::BlockQ4_K b;
  uint8_t q[kQK_K];
  QuantKAffine<15>(x, &b.d, &b.dmin, b.scales, q);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
  }
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ5_K(const float* x, uint8_t* dst) {
  quant::BlockQ5_K b;
  uint8_t q[kQK_K];
  QuantKAffine<31>(x, &b.d, &b.dmin, b.scales, q);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
      b.qs[32 * c + l] = static_cast<uint8_t>((lo & 15) | (hi & 15) << 4);
      b.qh[l] |= static_cast<uint8_t>(((lo >> 4) & 1) << (2 * c) | ((hi >> 4) & 1) << (2 * c + 1));
    }
  }
  std::memcpy(dst, &b, sizeof b);
}

void QuantQ6_K(const float* x, uint8_t* dst) {
  quant::BlockQ6_K b;
  float sub_scale[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    sub_scale[j] = FitScaleSym(x + 16 * j, -32, 0.5f, -6, 4);
    if (std::fabs(sub_scale[j]) > amax) {
      amax = std::fabs(sub_scale[j]);
      max_scale = sub_scale[j];
    }
  }
  // The largest-magnitude sub-block scale maps to -128, the most negative int8.
  b.d = ScaleToF16(max_scale / -128.0f);
  const float d = F16ToF32(b.d);
  uint8_t q[kQK_K];
  for (int j = 0; j < 16; ++j) {
    b.scales[j] = static_cast<int8_t>(d != 0 ? RoundClamp(sub_scale[j] / d, -128, 127) : 0);
    const float eff = d * static_cast<float>(b.scales[j]);
    const float id = eff != 0 ? 1.0f / eff : 0.0f;
    for (int i = 0; i < 16; ++i) {
      q[16 * j + i] = static_cast<uint8_t>(RoundClamp(x[16 * j + i] * id, -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    uint8_t* ql = b.ql + 64 * h;
    uint8_t* qh = b.qh + 32 * h;
    const uint8_t* qq = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 15) | (q3 & 15) << 4);
      ql[l + 32] = static_cast<uint8_t>((q2 & 15) | (q4 & 15) << 4);
      qh[l] = static_cast<uint8_t>((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
    }
  }
  std::memcpy(dst, &b, sizeof b);
}

void QuantIQ4_NL(const float* x, uint8_t* dst) {
  quant::BlockIQ4_NL b;
  b.d = ScaleToF16(FitIQ4Scale(x));
  PackIQ4(x, F16ToF32(b.d), b.qs);
  std::memcpy(dst, &b, sizeof b);
}

void QuantIQ4_XS(const float* x, uint8_t* dst) {
  quant::BlockIQ4_XS b;
  float sub[8], max_scale = 0, amax = 0;
  for (int k = 0; k < 8; ++k) {
    sub[k] = FitIQ4Scale(x + 32 * k);
    if (std::fabs(sub[k]) > amax) {
      amax = std::fabs(sub[k]);
      max_scale = sub[k];
    }
  }
  // The largest-magnitude sub-block scale maps to ls - 32 = -32, the most negative step.
  b.d = ScaleToF16(max_scale / -32.0f);
  const float d = F16ToF32(b.d);
  b.scales_h = 0;
  std::memset(b.scales_l, 0, sizeof b.scales_l);
  for (int k = 0; k < 8; ++k) {
    const int ls = d != 0 ? RoundClamp(sub[k] / d, -32, 31) + 32 : 32;
    b.scales_l[k / 2] |= static_cast<uint8_t>((ls & 15) << (4 * (k % 2)));
    b.scales_h |= static_cast<uint16_t>((ls >> 4) << (2 * k));
    PackIQ4(x + 32 * k, d * static_cast<float>(ls - 32), b.qs + 16 * k);
  }
  std::memcpy(dst, &b, sizeof b);
}

}  // namespace garnet::quant
