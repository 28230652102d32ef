// Inner-loop kernels of the CPU backend: dot products, axpy and a small GEMM tile on fp32 (and
// fp16 for the KV cache). Two implementations share one table: a plain scalar reference (the
// oracle) and an AVX2/FMA/F16C version picked at run time when the CPU has those features
// (compiled in its own translation unit with those flags, so the rest of the build stays
// portable).
//
// Thread-safety: pure functions; the tables are immutable.
#pragma once

#include <cstdint>

namespace garnet::cpu {

struct Kernels {
  const char* name;
  // sum_i a[i] * b[i]
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  // sum_i f16(a[i]) * b[i]
  float (*dot_f16)(const uint16_t* a, const float* b, int64_t n);
  // y[i] += alpha * x[i]
  void (*axpy_f32)(float alpha, const float* x, float* y, int64_t n);
  void (*axpy_f16)(float alpha, const uint16_t* x, float* y, int64_t n);
  // y[t * ldy + r] = sum_k w[r * ldw + k] * x[t * ldx + k] for r < rows, t < T (overwrites y).
  void (*gemm_tile)(const float* w, int64_t ldw, int64_t rows, const float* x, int64_t ldx,
                    int64_t T, int64_t n, float* y, int64_t ldy);
  // dst[i] = f16 -> f32 / f32 -> f16 (round to nearest even) conversions of n values.
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
};

const Kernels& RefKernels();
// AVX2 kernels when the CPU supports AVX2+FMA+F16C (and they were compiled in), else the
// reference ones. GARNET_CPU_KERNELS=ref in the environment forces the reference table.
const Kernels& FastKernels();
bool HaveAvx2Kernels();

}  // namespace garnet::cpu
