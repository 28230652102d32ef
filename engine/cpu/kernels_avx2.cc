// AVX2 + FMA + F16C kernels. This file is compiled with -mavx2 -mfma -mf16c; nothing in it may
// run before Avx2KernelsOrNull() has checked the CPU.
#include <immintrin.h>

#include "engine/cpu/kernels.h"
#include "engine/quant/fp16.h"

namespace garnet::cpu {
namespace {

inline float Hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}

float DotF32(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = Hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline __m256 LoadF16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

float DotF16(const uint16_t* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(LoadF16(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(LoadF16(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(LoadF16(a + i), _mm256_loadu_ps(b + i), s0);
  float s = Hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += F16ToF32(a[i]) * b[i];
  return s;
}

void AxpyF32(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

void AxpyF16(float alpha, const uint16_t* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, LoadF16(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * F16ToF32(x[i]);
}

// 4 weight rows x 2 tokens per step: 8 accumulators, each x/w load feeds several FMAs.
void Tile4x2(const float* w, int64_t ldw, const float* x, int64_t ldx, int64_t n, float* y,
             int64_t ldy) {
  __m256 acc[2][4];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  const float* w0 = w;
  const float* w1 = w + ldw;
  const float* w2 = w + 2 * ldw;
  const float* w3 = w + 3 * ldw;
  const float* x0 = x;
  const float* x1 = x + ldx;
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 a0 = _mm256_loadu_ps(x0 + k), a1 = _mm256_loadu_ps(x1 + k);
    __m256 b = _mm256_loadu_ps(w0 + k);
    acc[0][0] = _mm256_fmadd_ps(b, a0, acc[0][0]);
    acc[1][0] = _mm256_fmadd_ps(b, a1, acc[1][0]);
    b = _mm256_loadu_ps(w1 + k);
    acc[0][1] = _mm256_fmadd_ps(b, a0, acc[0][1]);
    acc[1][1] = _mm256_fmadd_ps(b, a1, acc[1][1]);
    b = _mm256_loadu_ps(w2 + k);
    acc[0][2] = _mm256_fmadd_ps(b, a0, acc[0][2]);
    acc[1][2] = _mm256_fmadd_ps(b, a1, acc[1][2]);
    b = _mm256_loadu_ps(w3 + k);
    acc[0][3] = _mm256_fmadd_ps(b, a0, acc[0][3]);
    acc[1][3] = _mm256_fmadd_ps(b, a1, acc[1][3]);
  }
  const float* ws[4] = {w0, w1, w2, w3};
  const float* xs[2] = {x0, x1};
  for (int t = 0; t < 2; ++t) {
    for (int r = 0; r < 4; ++r) {
      float s = Hsum(acc[t][r]);
      for (int64_t kk = k; kk < n; ++kk) s += ws[r][kk] * xs[t][kk];
      y[t * ldy + r] = s;
    }
  }
}

// 4 weight rows x 1 token.
void Tile4x1(const float* w, int64_t ldw, const float* x, int64_t n, float* y) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256 a = _mm256_loadu_ps(x + k);
    for (int r = 0; r < 4; ++r)
      acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + r * ldw + k), a, acc[r]);
  }
  for (int r = 0; r < 4; ++r) {
    float s = Hsum(acc[r]);
    for (int64_t kk = k; kk < n; ++kk) s += w[r * ldw + kk] * x[kk];
    y[r] = s;
  }
}

void GemmTile(const float* w, int64_t ldw, int64_t rows, const float* x, int64_t ldx, int64_t T,
              int64_t n, float* y, int64_t ldy) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) Tile4x2(w + r * ldw, ldw, x + t * ldx, ldx, n, y + t * ldy + r, ldy);
    for (; t < T; ++t) Tile4x1(w + r * ldw, ldw, x + t * ldx, n, y + t * ldy + r);
  }
  for (; r < rows; ++r) {
    for (int64_t t = 0; t < T; ++t) y[t * ldy + r] = DotF32(w + r * ldw, x + t * ldx, n);
  }
}

void F16ToF32N(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, LoadF16(src + i));
  for (; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

void F32ToF16N(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  for (; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

const Kernels kAvx2 = {"avx2", DotF32, DotF16, AxpyF32, AxpyF16, GemmTile, F16ToF32N, F32ToF16N};

}  // namespace

// Only returns the table's address; the CPU check happens in portable code (kernels_ref.cc).
const Kernels* Avx2Table() {
  return &kAvx2;
}

}  // namespace garnet::cpu
