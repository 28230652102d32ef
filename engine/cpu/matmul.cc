#include "engine/cpu/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/qdot.h"
#include "engine/cpu/thread_pool.h"
#include "engine/quant/quant.h"

namespace garnet::cpu {
namespace {

constexpr int64_t kTileRows = 16;

}  // namespace

Result<WeightMatrix> MakeWeightMatrix(std::string_view what, GgmlType type, const uint8_t* data,
                                      int64_t rows, int64_t cols) {
  if (!IsQuantSupported(type)) {
    return Status::InvalidArgument(what, "weight type " + std::string(TypeName(type)) +
                                             " is not supported by the CPU backend");
  }
  if (rows <= 0 || cols <= 0) return Status::InvalidArgument(what, "empty weight matrix");
  GARNET_ASSIGN_OR_RETURN(uint64_t rb, RowBytes(type, static_cast<uint64_t>(cols)));
  if (data == nullptr) return Status::InvalidArgument(what, "no tensor data");
  WeightMatrix w;
  w.type = type;
  w.data = data;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = rb;
  return w;
}

void DecodeRow(const WeightMatrix& w, int64_t r, float* out) {
  const uint8_t* src = w.row(r);
  switch (w.type) {
    case GgmlType::kF32:
      std::memcpy(out, src, static_cast<size_t>(w.cols) * sizeof(float));
      return;
    case GgmlType::kF16:
      FastKernels().f16_to_f32(reinterpret_cast<const uint16_t*>(src), out, w.cols);
      return;
    default:
      // Validated in MakeWeightMatrix: cannot fail.
      (void)DequantizeRow(w.type, src, out, w.cols);
  }
}

void MatMulRef(const WeightMatrix& w, const float* x, int64_t ldx, int64_t T, float* y,
               int64_t ldy) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    (void)DequantizeRow(w.type, w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += static_cast<double>(row[static_cast<size_t>(k)]) * x[t * ldx + k];
      y[t * ldy + r] = static_cast<float>(s);
    }
  }
}

namespace {

// Integer path: activations quantised once, then a tile of rows against every token.
void MatMulQ8(const WeightMatrix& w, QDotFn qd, const float* x, int64_t ldx, int64_t T, float* y,
              int64_t ldy, ThreadPool* pool) {
  const QDot4Fn qd4 = QDot4For(w.type);
  const int64_t nb = w.cols / 32;
  std::vector<BlockQ8A> xq(static_cast<size_t>(T * nb));
  const bool kfmt = NeedsKActivations(w.type);
  auto quant = [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      if (kfmt) {
        QuantizeActivationsK(x + t * ldx, w.cols, &xq[t * nb]);
      } else {
        QuantizeActivations(x + t * ldx, w.cols, &xq[t * nb]);
      }
    }
  };
  auto work = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; r += kTileRows) {
      const int64_t n = std::min(kTileRows, r1 - r);
      int64_t t = 0;
      if (qd4 != nullptr) {
        for (; t + 4 <= T; t += 4) {
          const BlockQ8A* a = &xq[t * nb];
          for (int64_t i = 0; i < n; ++i) {
            float out[4];
            qd4(w.row(r + i), a, nb, w.cols, out);
            for (int k = 0; k < 4; ++k) y[(t + k) * ldy + r + i] = out[k];
          }
        }
      }
      for (; t < T; ++t) {
        const BlockQ8A* a = &xq[t * nb];
        for (int64_t i = 0; i < n; ++i) y[t * ldy + r + i] = qd(w.row(r + i), a, w.cols);
      }
    }
  };
  if (pool == nullptr) {
    quant(0, T, 0);
    work(0, w.rows, 0);
  } else {
    pool->ParallelFor(T, quant);
    pool->ParallelFor(w.rows, work, kTileRows);
  }
}

}  // namespace

void MatMul(const WeightMatrix& w, const float* x, int64_t ldx, int64_t T, float* y, int64_t ldy,
            ThreadPool* pool, MatMulPath path) {
  if (path == MatMulPath::kAuto && w.cols % 32 == 0) {
    if (QDotFn qd = QDotFor(w.type, /*fast=*/true)) {
      MatMulQ8(w, qd, x, ldx, T, y, ldy, pool);
      return;
    }
  }
  const Kernels& k = FastKernels();
  auto work = [&](int64_t r0, int64_t r1, int) {
    thread_local std::vector<float> tile;
    if (w.type == GgmlType::kF32) {  // used directly, no copy
      for (int64_t r = r0; r < r1; r += kTileRows) {
        int64_t n = std::min(kTileRows, r1 - r);
        k.gemm_tile(reinterpret_cast<const float*>(w.row(r)), w.cols, n, x, ldx, T, w.cols, y + r,
                    ldy);
      }
      return;
    }
    tile.resize(static_cast<size_t>(kTileRows * w.cols));
    for (int64_t r = r0; r < r1; r += kTileRows) {
      int64_t n = std::min(kTileRows, r1 - r);
      for (int64_t i = 0; i < n; ++i) DecodeRow(w, r + i, tile.data() + i * w.cols);
      k.gemm_tile(tile.data(), w.cols, n, x, ldx, T, w.cols, y + r, ldy);
    }
  };
  if (pool == nullptr) {
    work(0, w.rows, 0);
  } else {
    pool->ParallelFor(w.rows, work, kTileRows);
  }
}

}  // namespace garnet::cpu
