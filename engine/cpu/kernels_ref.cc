#include "engine/cpu/kernels.h"

#include <cstdlib>
#include <cstring>

#if defined(GARNET_HAVE_AVX2_TU)
#include <cpuid.h>
#endif

#include "engine/quant/fp16.h"

namespace garnet::cpu {

#if defined(GARNET_HAVE_AVX2_TU)
const Kernels* Avx2Table();  // kernels_avx2.cc

bool CpuHasAvx2FmaF16c() {
  static const bool ok = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    // F16C: CPUID leaf 1, ECX bit 29 (not every compiler's __builtin_cpu_supports knows it).
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

static const Kernels* Avx2KernelsOrNull() {
  return CpuHasAvx2FmaF16c() ? Avx2Table() : nullptr;
}
#else
static const Kernels* Avx2KernelsOrNull() {
  return nullptr;
}
#endif

namespace {

float DotF32(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float DotF16(const uint16_t* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += F16ToF32(a[i]) * b[i];
  return s;
}

void AxpyF32(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void AxpyF16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * F16ToF32(x[i]);
}

void GemmTile(const float* w, int64_t ldw, int64_t rows, const float* x, int64_t ldx, int64_t T,
              int64_t n, float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < rows; ++r) y[t * ldy + r] = DotF32(w + r * ldw, x + t * ldx, n);
  }
}

void F16ToF32N(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}

void F32ToF16N(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}

const Kernels kRef = {"ref", DotF32, DotF16, AxpyF32, AxpyF16, GemmTile, F16ToF32N, F32ToF16N};

}  // namespace

const Kernels& RefKernels() {
  return kRef;
}

bool HaveAvx2Kernels() {
  return Avx2KernelsOrNull() != nullptr;
}

const Kernels& FastKernels() {
  static const Kernels* picked = [] {
    const char* env = std::getenv("GARNET_CPU_KERNELS");
    if (env != nullptr && std::strcmp(env, "ref") == 0) return &kRef;
    const Kernels* k = Avx2KernelsOrNull();
    return k != nullptr ? k : &kRef;
  }();
  return *picked;
}

}  // namespace garnet::cpu
