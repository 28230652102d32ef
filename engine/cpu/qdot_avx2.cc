// AVX2 integer dot products (see qdot.h). Compiled with -mavx2 -mfma -mf16c; reached only after
// QDotFor has checked the CPU.
#include <immintrin.h>

#include "engine/cpu/qdot.h"
#include "engine/quant/blocks.h"
#include "engine/quant/fp16.h"

namespace garnet::cpu {

void KScaleMin(const uint8_t* scales, int k, int* sc, int* mn);  // qdot_ref.cc

namespace {

using quant::BlockQ4_0;
using quant::BlockQ4_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;

inline float Hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// 8 int32 lanes of sum(u[i] * s[i]) over groups of 4 bytes; u unsigned (< 128 here), s signed.
inline __m256i DotU8S8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline float ScaleF16(uint16_t h) {
  return _cvtsh_ss(h);
}

float DotQ8_0(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(w);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs));
    const __m256i p = DotU8S8(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
    acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(ScaleF16(b[i].d) * a[i].d), _mm256_cvtepi32_ps(p),
                                 acc[i & 1]);
  }
  return Hsum(_mm256_add_ps(acc[0], acc[1]));
}

float DotQ4_0(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(w);
  const __m256i mask = _mm256_set1_epi8(15);
  __m256 acc = _mm256_setzero_ps();
  float off = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m256i wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), mask);
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs));
    const float s = ScaleF16(b[i].d) * a[i].d;
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(DotU8S8(wv, av)), acc);
    off += s * static_cast<float>(8 * (a[i].s16[0] + a[i].s16[1]));
  }
  return Hsum(acc) - off;
}

// Q4_K / Q6_K with K-format activations (one scale per 256): sub-block scales are applied in
// integers (madd with the scale as int16) and the sum converted to float once per super-block.
float DotQ4_K(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_K*>(w);
  const __m256i mask = _mm256_set1_epi8(15);
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    const BlockQ8A* ab = a + i * 8;
    const float d = ScaleF16(b[i].d) * ab[0].d, dmin = ScaleF16(b[i].dmin) * ab[0].d;
    __m256i sumi = _mm256_setzero_si256();
    int32_t minsum = 0;
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(q, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
      int sc0, mn0, sc1, mn1;
      KScaleMin(b[i].scales, 2 * c, &sc0, &mn0);
      KScaleMin(b[i].scales, 2 * c + 1, &sc1, &mn1);
      const BlockQ8A& a0 = ab[2 * c];
      const BlockQ8A& a1 = ab[2 * c + 1];
      const __m256i p0 =
          _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0.qs)));
      const __m256i p1 =
          _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a1.qs)));
      sumi = _mm256_add_epi32(sumi,
                              _mm256_madd_epi16(p0, _mm256_set1_epi16(static_cast<int16_t>(sc0))));
      sumi = _mm256_add_epi32(sumi,
                              _mm256_madd_epi16(p1, _mm256_set1_epi16(static_cast<int16_t>(sc1))));
      minsum += mn0 * (a0.s16[0] + a0.s16[1]) + mn1 * (a1.s16[0] + a1.s16[1]);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    mins += dmin * static_cast<float>(minsum);
  }
  return Hsum(acc) - mins;
}

// 6-bit quants of half h of a Q6_K block: the four quadrants of 32 values (0..63).
inline void Q6Quadrants(const BlockQ6_K& b, int h, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(15);
  const __m256i m2 = _mm256_set1_epi8(3);
  const uint8_t* ql = b.ql + 64 * h;
  const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
  const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
  q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
}

// Sub-block scales of quadrant k of half h as int16 lanes: 8 x sc[2k], then 8 x sc[2k + 1].
inline __m256i Q6Scales(const BlockQ6_K& b, int h, int k) {
  const int8_t* sc = b.scales + 8 * h;
  return _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
}

float DotQ6_K(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ6_K*>(w);
  __m256 acc = _mm256_setzero_ps();
  float off = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = ScaleF16(b[i].d) * a[i * 8].d;
    __m256i sumi = _mm256_setzero_si256();
    int32_t offsum = 0;
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      Q6Quadrants(b[i], h, q);
      const int8_t* sc = b[i].scales + 8 * h;
      for (int k = 0; k < 4; ++k) {
        const BlockQ8A& ab = a[i * 8 + 4 * h + k];
        const __m256i p =
            _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, Q6Scales(b[i], h, k)));
        offsum += sc[2 * k] * ab.s16[0] + sc[2 * k + 1] * ab.s16[1];
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    off += 32.0f * d * static_cast<float>(offsum);
  }
  return Hsum(acc) - off;
}

// Four activation rows (a, a + stride, a + 2 stride, a + 3 stride) against one weight row: the
// weight blocks are loaded and unpacked once for all four.
void DotQ8_0x4(const uint8_t* w, const BlockQ8A* a, int64_t stride, int64_t n, float* out) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(w);
  // Same summation order as DotQ8_0 (two accumulators, even/odd blocks): results are identical.
  __m256 acc[4][2];
  for (auto& r : acc) r[0] = r[1] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
    const __m256i ax = _mm256_sign_epi8(wv, wv);
    const float dw = ScaleF16(b[i].d);
    for (int t = 0; t < 4; ++t) {
      const BlockQ8A& ab = a[t * stride + i];
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs));
      const __m256i p = DotU8S8(ax, _mm256_sign_epi8(av, wv));
      acc[t][i & 1] =
          _mm256_fmadd_ps(_mm256_set1_ps(dw * ab.d), _mm256_cvtepi32_ps(p), acc[t][i & 1]);
    }
  }
  for (int t = 0; t < 4; ++t) out[t] = Hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
}

void DotQ4_0x4(const uint8_t* w, const BlockQ8A* a, int64_t stride, int64_t n, float* out) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(w);
  const __m256i mask = _mm256_set1_epi8(15);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  float off[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m256i wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), mask);
    const float dw = ScaleF16(b[i].d);
    for (int t = 0; t < 4; ++t) {
      const BlockQ8A& ab = a[t * stride + i];
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs));
      const float s = dw * ab.d;
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(DotU8S8(wv, av)), acc[t]);
      off[t] += s * static_cast<float>(8 * (ab.s16[0] + ab.s16[1]));
    }
  }
  for (int t = 0; t < 4; ++t) out[t] = Hsum(acc[t]) - off[t];
}

void DotQ4_Kx4(const uint8_t* w, const BlockQ8A* a, int64_t stride, int64_t n, float* out) {
  const auto* b = reinterpret_cast<const BlockQ4_K*>(w);
  const __m256i mask = _mm256_set1_epi8(15);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  float mins[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = ScaleF16(b[i].d), dmin = ScaleF16(b[i].dmin);
    __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                       _mm256_setzero_si256()};
    int32_t minsum[4] = {0, 0, 0, 0};
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(q, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
      int sc0, mn0, sc1, mn1;
      KScaleMin(b[i].scales, 2 * c, &sc0, &mn0);
      KScaleMin(b[i].scales, 2 * c + 1, &sc1, &mn1);
      const __m256i s0 = _mm256_set1_epi16(static_cast<int16_t>(sc0));
      const __m256i s1 = _mm256_set1_epi16(static_cast<int16_t>(sc1));
      for (int t = 0; t < 4; ++t) {
        const BlockQ8A& a0 = a[t * stride + i * 8 + 2 * c];
        const BlockQ8A& a1 = a[t * stride + i * 8 + 2 * c + 1];
        const __m256i p0 =
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0.qs)));
        const __m256i p1 =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a1.qs)));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p0, s0));
        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p1, s1));
        minsum[t] += mn0 * (a0.s16[0] + a0.s16[1]) + mn1 * (a1.s16[0] + a1.s16[1]);
      }
    }
    for (int t = 0; t < 4; ++t) {
      const float da = a[t * stride + i * 8].d;
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
      mins[t] += dmin * da * static_cast<float>(minsum[t]);
    }
  }
  for (int t = 0; t < 4; ++t) out[t] = Hsum(acc[t]) - mins[t];
}

void DotQ6_Kx4(const uint8_t* w, const BlockQ8A* a, int64_t stride, int64_t n, float* out) {
  const auto* b = reinterpret_cast<const BlockQ6_K*>(w);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  float off[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = ScaleF16(b[i].d);
    __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                       _mm256_setzero_si256()};
    int32_t offsum[4] = {0, 0, 0, 0};
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      Q6Quadrants(b[i], h, q);
      const int8_t* sc = b[i].scales + 8 * h;
      for (int k = 0; k < 4; ++k) {
        const __m256i scv = Q6Scales(b[i], h, k);
        for (int t = 0; t < 4; ++t) {
          const BlockQ8A& ab = a[t * stride + i * 8 + 4 * h + k];
          const __m256i p = _mm256_maddubs_epi16(
              q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs)));
          sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scv));
          offsum[t] += sc[2 * k] * ab.s16[0] + sc[2 * k + 1] * ab.s16[1];
        }
      }
    }
    for (int t = 0; t < 4; ++t) {
      const float dd = d * a[t * stride + i * 8].d;
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
      off[t] += 32.0f * dd * static_cast<float>(offsum[t]);
    }
  }
  for (int t = 0; t < 4; ++t) out[t] = Hsum(acc[t]) - off[t];
}

}  // namespace

QDot4Fn Avx2QDot4(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
      return DotQ8_0x4;
    case GgmlType::kQ4_0:
      return DotQ4_0x4;
    case GgmlType::kQ4_K:
      return DotQ4_Kx4;
    case GgmlType::kQ6_K:
      return DotQ6_Kx4;
    default:
      return nullptr;
  }
}

namespace {}  // namespace

QDotFn Avx2QDot(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
      return DotQ8_0;
    case GgmlType::kQ4_0:
      return DotQ4_0;
    case GgmlType::kQ4_K:
      return DotQ4_K;
    case GgmlType::kQ6_K:
      return DotQ6_K;
    default:
      return nullptr;
  }
}

}  // namespace garnet::cpu
