// Matrix multiplication with weights used in place, in any supported ggml type.
//
//   y[t, r] = sum_k W[r, k] * x[t, k]      r < rows (ggml ne[1]), k < cols (ggml ne[0]), t < T
//
// Weights stay in their stored type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
// Q6_K) and are decoded a tile of rows at a time into a small per-thread buffer, then used for
// every token of the batch: in a prefill of T tokens each weight byte is read and decoded once.
// MatMulRef is the scalar oracle (row-by-row decode through the quant library, plain dot).
//
// Thread-safety: MatMul uses the pool (see ThreadPool's rule); inputs are read-only.
#pragma once

#include <cstdint>

#include "engine/base/status.h"
#include "engine/quant/types.h"

namespace garnet::cpu {

class ThreadPool;

// A 2-D view of weight rows. For 3-D expert tensors, one expert's slab (data + e * rows *
// row_bytes). The data must hold rows * row_bytes bytes.
struct WeightMatrix {
  GgmlType type = GgmlType::kF32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  uint64_t row_bytes = 0;

  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes; }
};

// Builds a view, checking that the type is supported and that cols fits its blocks.
// InvalidArgument naming `what` otherwise.
Result<WeightMatrix> MakeWeightMatrix(std::string_view what, GgmlType type, const uint8_t* data,
                                      int64_t rows, int64_t cols);

// Decodes row r into out[0..cols). The type was validated by MakeWeightMatrix.
void DecodeRow(const WeightMatrix& w, int64_t r, float* out);

// How MatMul computes: kAuto uses integer dot products with 8-bit activations (qdot.h) for
// Q8_0/Q4_0/Q4_K/Q6_K weights and decoded fp32 tiles for every other type; kFloat always decodes.
enum class MatMulPath { kAuto, kFloat };

// y[t * ldy + r] for t < T, r < w.rows. x rows are w.cols long with stride ldx.
void MatMul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t T, float* y, int64_t ldy,
            ThreadPool* pool, MatMulPath path = MatMulPath::kAuto);
void MatMulRef(const WeightMatrix& w, const float* x, int64_t ldx, int64_t T, float* y,
               int64_t ldy);

}  // namespace garnet::cpu
