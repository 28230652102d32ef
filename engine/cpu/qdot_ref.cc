#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine/cpu/qdot.h"
#include "engine/quant/blocks.h"
#include "engine/quant/fp16.h"

namespace garnet::cpu {

#if defined(GARNET_HAVE_AVX2_TU)
QDotFn Avx2QDot(GgmlType type);    // qdot_avx2.cc
QDot4Fn Avx2QDot4(GgmlType type);  // qdot_avx2.cc
bool CpuHasAvx2FmaF16c();          // kernels_ref.cc
#endif

namespace {

using quant::BlockQ4_0;
using quant::BlockQ4_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;

float DotQ8_0(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t acc = 0;
    for (int j = 0; j < 32; ++j) acc += int32_t{b[i].qs[j]} * a[i].qs[j];
    s += F16ToF32(b[i].d) * a[i].d * static_cast<float>(acc);
  }
  return s;
}

float DotQ4_0(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_0*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t acc = 0;
    for (int j = 0; j < 16; ++j) {
      acc += int32_t{b[i].qs[j] & 15} * a[i].qs[j] + int32_t{b[i].qs[j] >> 4} * a[i].qs[j + 16];
    }
    acc -= 8 * (a[i].s16[0] + a[i].s16[1]);
    s += F16ToF32(b[i].d) * a[i].d * static_cast<float>(acc);
  }
  return s;
}

}  // namespace

// 6-bit (scale, min) pair k of a Q4_K/Q5_K block.
void KScaleMin(const uint8_t* scales, int k, int* sc, int* mn) {
  if (k < 4) {
    *sc = scales[k] & 63;
    *mn = scales[k + 4] & 63;
  } else {
    *sc = (scales[k + 4] & 15) | ((scales[k - 4] >> 6) << 4);
    *mn = (scales[k + 4] >> 4) | ((scales[k] >> 6) << 4);
  }
}

namespace {

float DotQ4_K(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ4_K*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    const BlockQ8A* ab = a + i * 8;
    for (int k = 0; k < 8; ++k) {
      int sc, mn;
      KScaleMin(b[i].scales, k, &sc, &mn);
      const uint8_t* q = b[i].qs + 32 * (k / 2);
      int32_t acc = 0;
      for (int l = 0; l < 32; ++l) {
        const int v = (k & 1) ? (q[l] >> 4) : (q[l] & 15);
        acc += v * ab[k].qs[l];
      }
      s += d * sc * ab[k].d * static_cast<float>(acc) -
           dmin * mn * ab[k].d * static_cast<float>(ab[k].s16[0] + ab[k].s16[1]);
    }
  }
  return s;
}

float DotQ6_K(const uint8_t* w, const BlockQ8A* a, int64_t n) {
  const auto* b = reinterpret_cast<const BlockQ6_K*>(w);
  float s = 0;
  for (int64_t i = 0; i < n / 256; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int k = 0; k < 4; ++k) {
        const BlockQ8A& ab = a[i * 8 + 4 * h + k];
        int32_t acc[2] = {0, 0};
        for (int l = 0; l < 32; ++l) {
          const uint8_t lo = (k & 1) ? ql[l + 32] : ql[l];
          const int nib = (k < 2) ? (lo & 15) : (lo >> 4);
          const int q = nib | (((qh[l] >> (2 * k)) & 3) << 4);
          acc[l / 16] += q * ab.qs[l];
        }
        const float v = static_cast<float>(sc[2 * k] * (acc[0] - 32 * ab.s16[0]) +
                                           sc[2 * k + 1] * (acc[1] - 32 * ab.s16[1]));
        s += d * ab.d * v;
      }
    }
  }
  return s;
}

}  // namespace

void QuantizeActivations(const float* x, int64_t n, BlockQ8A* out) {
  for (int64_t i = 0; i < n / 32; ++i) {
    const float* v = x + i * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d > 0 ? 1.0f / d : 0.0f;
    BlockQ8A& b = out[i];
    b.d = d;
    int s0 = 0, s1 = 0;
    for (int j = 0; j < 32; ++j) {
      const int q = static_cast<int>(std::nearbyint(v[j] * id));
      b.qs[j] = static_cast<int8_t>(q < -127 ? -127 : (q > 127 ? 127 : q));
      (j < 16 ? s0 : s1) += b.qs[j];
    }
    b.s16[0] = static_cast<int16_t>(s0);
    b.s16[1] = static_cast<int16_t>(s1);
  }
}

namespace {

bool UseAvx2() {
  static const bool ok = [] {
    const char* env = std::getenv("GARNET_CPU_KERNELS");
    if (env != nullptr && std::strcmp(env, "ref") == 0) return false;
#if defined(GARNET_HAVE_AVX2_TU)
    return CpuHasAvx2FmaF16c();
#else
    return false;
#endif
  }();
  return ok;
}

}  // namespace

QDot4Fn QDot4For(GgmlType type) {
#if defined(GARNET_HAVE_AVX2_TU)
  if (UseAvx2()) return Avx2QDot4(type);
#endif
  (void)type;
  return nullptr;
}

void QuantizeActivationsK(const float* x, int64_t n, BlockQ8A* out) {
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* v = x + i * 256;
    float amax = 0;
    for (int j = 0; j < 256; ++j) amax = std::fmax(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d > 0 ? 1.0f / d : 0.0f;
    for (int k = 0; k < 8; ++k) {
      BlockQ8A& b = out[i * 8 + k];
      b.d = d;
      int s0 = 0, s1 = 0;
      for (int j = 0; j < 32; ++j) {
        const int q = static_cast<int>(std::nearbyint(v[32 * k + j] * id));
        b.qs[j] = static_cast<int8_t>(q < -127 ? -127 : (q > 127 ? 127 : q));
        (j < 16 ? s0 : s1) += b.qs[j];
      }
      b.s16[0] = static_cast<int16_t>(s0);
      b.s16[1] = static_cast<int16_t>(s1);
    }
  }
}

bool NeedsKActivations(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ6_K;
}

QDotFn QDotFor(GgmlType type, bool fast) {
#if defined(GARNET_HAVE_AVX2_TU)
  if (fast && UseAvx2()) {
    if (QDotFn f = Avx2QDot(type)) return f;
  }
#endif
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
