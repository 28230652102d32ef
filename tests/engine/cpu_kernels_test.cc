#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/qdot.h"
#include "engine/cpu/thread_pool.h"
#include "engine/quant/fp16.h"
#include "engine/quant/quant.h"

namespace garnet::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 5, 17, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (int rep = 0; rep < 20; ++rep) {
      pool.ParallelFor(
          n,
          [&](int64_t b, int64_t e, int) {
            for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
          },
          4);
    }
    for (auto& h : hits) EXPECT_EQ(h.load(), 20);
  }
}

TEST(Kernels, FastMatchesReferenceAtOddSizes) {
  const Kernels& ref = RefKernels();
  const Kernels& fast = FastKernels();
  for (int64_t n : {1, 7, 8, 9, 31, 33, 100, 257}) {
    auto a = Random(static_cast<size_t>(n), 1), b = Random(static_cast<size_t>(n), 2);
    std::vector<uint16_t> h(static_cast<size_t>(n));
    ref.f32_to_f16(a.data(), h.data(), n);
    std::vector<uint16_t> h2(static_cast<size_t>(n));
    fast.f32_to_f16(a.data(), h2.data(), n);
    EXPECT_EQ(h, h2);
    const float tol = 1e-5f * static_cast<float>(n);
    EXPECT_NEAR(ref.dot_f32(a.data(), b.data(), n), fast.dot_f32(a.data(), b.data(), n), tol);
    EXPECT_NEAR(ref.dot_f16(h.data(), b.data(), n), fast.dot_f16(h.data(), b.data(), n), tol);
    std::vector<float> y1 = b, y2 = b;
    ref.axpy_f32(0.5f, a.data(), y1.data(), n);
    fast.axpy_f32(0.5f, a.data(), y2.data(), n);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(y1[static_cast<size_t>(i)], y2[static_cast<size_t>(i)], 1e-5f);
    y1 = b;
    y2 = b;
    ref.axpy_f16(-1.5f, h.data(), y1.data(), n);
    fast.axpy_f16(-1.5f, h.data(), y2.data(), n);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(y1[static_cast<size_t>(i)], y2[static_cast<size_t>(i)], 1e-5f);
  }
}

TEST(Kernels, GemmTileAtOddShapes) {
  for (int64_t rows : {1, 3, 4, 5, 9}) {
    for (int64_t T : {1, 2, 3, 5}) {
      const int64_t n = 37;
      auto w = Random(static_cast<size_t>(rows * n), 3), x = Random(static_cast<size_t>(T * n), 4);
      std::vector<float> y1(static_cast<size_t>(T * rows)), y2(y1.size());
      RefKernels().gemm_tile(w.data(), n, rows, x.data(), n, T, n, y1.data(), rows);
      FastKernels().gemm_tile(w.data(), n, rows, x.data(), n, T, n, y2.data(), rows);
      for (size_t i = 0; i < y1.size(); ++i) EXPECT_NEAR(y1[i], y2[i], 1e-4f);
    }
  }
}

struct TypeCase {
  GgmlType type;
  int64_t block;
};

class MatMulTypes : public ::testing::TestWithParam<TypeCase> {};

TEST_P(MatMulTypes, FastMatchesReference) {
  const TypeCase tc = GetParam();
  ThreadPool pool(3);
  for (int64_t rows : {1, 7, 19, 35}) {
    for (int64_t T : {1, 2, 5}) {
      const int64_t cols = tc.block * 3;
      auto wf = Random(static_cast<size_t>(rows * cols), 11, 0.5f);
      auto rb = RowBytes(tc.type, static_cast<uint64_t>(cols));
      ASSERT_TRUE(rb.ok());
      std::vector<uint8_t> wq(static_cast<size_t>(*rb * static_cast<uint64_t>(rows)));
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_TRUE(QuantizeRow(tc.type, wf.data() + r * cols, wq.data() + r * *rb, cols).ok());
      }
      auto w = MakeWeightMatrix("test", tc.type, wq.data(), rows, cols);
      ASSERT_TRUE(w.ok()) << w.status().ToString();
      auto x = Random(static_cast<size_t>(T * (cols + 3)), 12);
      const int64_t ldx = cols + 3, ldy = rows + 2;
      std::vector<float> y_ref(static_cast<size_t>(T * ldy), 0), y_fast(y_ref.size(), 0),
          y_one(y_ref.size(), 0), y_auto(y_ref.size(), 0);
      MatMulRef(*w, x.data(), ldx, T, y_ref.data(), ldy);
      MatMul(*w, x.data(), ldx, T, y_fast.data(), ldy, &pool, MatMulPath::kFloat);
      MatMul(*w, x.data(), ldx, T, y_one.data(), ldy, nullptr, MatMulPath::kFloat);
      MatMul(*w, x.data(), ldx, T, y_auto.data(), ldy, &pool);
      const bool integer = QDotFor(tc.type, true) != nullptr;
      float ymax = 0;
      for (float v : y_ref) ymax = std::max(ymax, std::fabs(v));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          size_t i = static_cast<size_t>(t * ldy + r);
          EXPECT_NEAR(y_ref[i], y_fast[i], 1e-4f * std::sqrt(static_cast<float>(cols)))
              << TypeName(tc.type) << " rows " << rows << " T " << T;
          EXPECT_EQ(y_fast[i], y_one[i]);
          // The integer path rounds activations to 8 bits: ~1% of the output scale.
          EXPECT_NEAR(y_ref[i], y_auto[i], integer ? 0.02f * ymax : 1e-4f * std::sqrt(cols))
              << TypeName(tc.type) << " rows " << rows << " T " << T;
        }
      }
      // DecodeRow agrees with the quant library.
      std::vector<float> a(static_cast<size_t>(cols)), b(a.size());
      DecodeRow(*w, rows - 1, a.data());
      ASSERT_TRUE(DequantizeRow(tc.type, w->row(rows - 1), b.data(), cols).ok());
      EXPECT_EQ(a, b);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, MatMulTypes,
    ::testing::Values(TypeCase{GgmlType::kF32, 1}, TypeCase{GgmlType::kF16, 1},
                      TypeCase{GgmlType::kBF16, 1}, TypeCase{GgmlType::kQ8_0, 32},
                      TypeCase{GgmlType::kQ4_0, 32}, TypeCase{GgmlType::kQ4_1, 32},
                      TypeCase{GgmlType::kQ5_0, 32}, TypeCase{GgmlType::kQ5_1, 32},
                      TypeCase{GgmlType::kQ4_K, 256}, TypeCase{GgmlType::kQ5_K, 256},
                      TypeCase{GgmlType::kQ6_K, 256}),
    [](const auto& info) { return std::string(TypeName(info.param.type)); });

// Scalar and AVX2 integer dot products agree, and both stay within the activation-rounding bound
// of the exact float dot product of the decoded weights.
TEST(QDot, FastMatchesScalarAndFloatBound) {
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    const int64_t block = (type == GgmlType::kQ4_K || type == GgmlType::kQ6_K) ? 256 : 32;
    for (int64_t nblk : {1, 3, 7}) {
      const int64_t n = block * nblk;
      auto wf = Random(static_cast<size_t>(n), 21, 0.3f);
      auto x = Random(static_cast<size_t>(n), 22, 2.0f);
      auto rb = RowBytes(type, static_cast<uint64_t>(n));
      ASSERT_TRUE(rb.ok());
      std::vector<uint8_t> wq(static_cast<size_t>(*rb));
      ASSERT_TRUE(QuantizeRow(type, wf.data(), wq.data(), n).ok());
      std::vector<float> wd(static_cast<size_t>(n));
      ASSERT_TRUE(DequantizeRow(type, wq.data(), wd.data(), n).ok());
      std::vector<BlockQ8A> xq(static_cast<size_t>(n / 32));
      const bool kfmt = NeedsKActivations(type);
      auto quantize = kfmt ? QuantizeActivationsK : QuantizeActivations;
      quantize(x.data(), n, xq.data());
      double exact = 0, bound = 1e-4;
      for (int64_t i = 0; i < n; ++i) {
        exact += static_cast<double>(wd[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
        bound += std::fabs(wd[static_cast<size_t>(i)]) * xq[static_cast<size_t>(i / 32)].d * 0.5;
      }
      QDotFn ref = QDotFor(type, false), fast = QDotFor(type, true);
      ASSERT_NE(ref, nullptr);
      ASSERT_NE(fast, nullptr);
      const float r = ref(wq.data(), xq.data(), n), f = fast(wq.data(), xq.data(), n);
      EXPECT_NEAR(r, exact, bound) << TypeName(type) << " n " << n;
      EXPECT_NEAR(f, r, 1e-4 * (std::fabs(r) + 1.0)) << TypeName(type) << " n " << n;
      // The 4-row kernel equals four single calls (rows of activations at stride nb + 1).
      if (QDot4Fn f4 = QDot4For(type)) {
        const int64_t nb = n / 32, stride = nb + 1;
        std::vector<BlockQ8A> xs(static_cast<size_t>(4 * stride));
        for (int t = 0; t < 4; ++t) {
          auto xt = Random(static_cast<size_t>(n), 30 + t, 1.0f);
          quantize(xt.data(), n, &xs[static_cast<size_t>(t * stride)]);
        }
        float out[4];
        f4(wq.data(), xs.data(), stride, n, out);
        for (int t = 0; t < 4; ++t) {
          // Bitwise equal to the single-row AVX2 kernel: prefill and decode round alike.
          const float one = fast(wq.data(), &xs[static_cast<size_t>(t * stride)], n);
          EXPECT_EQ(out[t], one) << TypeName(type) << " t " << t;
        }
      }
    }
  }
  EXPECT_EQ(QDotFor(GgmlType::kQ5_K, true), nullptr);
}

TEST(QDot, KActivationsShareOneScalePer256) {
  auto x = Random(512, 41, 1.0f);
  x[300] = 10.0f;
  std::vector<BlockQ8A> b(16);
  QuantizeActivationsK(x.data(), 512, b.data());
  for (int k = 0; k < 8; ++k) EXPECT_EQ(b[static_cast<size_t>(k)].d, b[0].d);
  for (int k = 8; k < 16; ++k) EXPECT_FLOAT_EQ(b[static_cast<size_t>(k)].d, 10.0f / 127.0f);
  EXPECT_EQ(b[9].qs[300 - 288], 127);
  EXPECT_TRUE(NeedsKActivations(GgmlType::kQ4_K));
  EXPECT_FALSE(NeedsKActivations(GgmlType::kQ8_0));
}

TEST(QDot, QuantizeActivationsRoundsAndSums) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i - 16) * 0.5f;
  BlockQ8A b;
  QuantizeActivations(x.data(), 32, &b);
  EXPECT_FLOAT_EQ(b.d, 8.0f / 127.0f);
  EXPECT_EQ(b.qs[0], -127);
  int s0 = 0, s1 = 0;
  for (int i = 0; i < 16; ++i) s0 += b.qs[i];
  for (int i = 16; i < 32; ++i) s1 += b.qs[i];
  EXPECT_EQ(b.s16[0], s0);
  EXPECT_EQ(b.s16[1], s1);
  std::vector<float> z(32, 0.0f);
  QuantizeActivations(z.data(), 32, &b);
  EXPECT_EQ(b.d, 0.0f);
  EXPECT_EQ(b.qs[5], 0);
}

TEST(MatMul, RejectsBadShapes) {
  uint8_t buf[64] = {};
  EXPECT_TRUE(MakeWeightMatrix("w", GgmlType::kQ8_0, buf, 1, 31).status().IsInvalidArgument());
  EXPECT_TRUE(MakeWeightMatrix("w", GgmlType::kIQ2_XS, buf, 1, 256).status().IsInvalidArgument());
  EXPECT_TRUE(MakeWeightMatrix("w", GgmlType::kF32, nullptr, 1, 4).status().IsInvalidArgument());
}

TEST(Ops, RmsNorm) {
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 0.5f, 2, 1}, y(4);
  RmsNorm(x.data(), w.data(), y.data(), 4, 1e-6f);
  const float s = 1.0f / std::sqrt(7.5f + 1e-6f);
  EXPECT_NEAR(y[0], 1 * s, 1e-6f);
  EXPECT_NEAR(y[1], 2 * s * 0.5f, 1e-6f);
  EXPECT_NEAR(y[2], 3 * s * 2, 1e-6f);
  RmsNorm(x.data(), nullptr, x.data(), 4, 1e-6f);
  EXPECT_NEAR(x[3], 4 * s, 1e-6f);
}

TEST(Ops, GeluSoftmaxSoftcap) {
  EXPECT_NEAR(GeluTanh(1.0f), 0.8411920f, 1e-6f);
  EXPECT_NEAR(GeluTanh(-2.0f), -0.0454023f, 1e-6f);
  std::vector<float> s = {1, 2, -INFINITY, 3};
  Softmax(s.data(), 4);
  EXPECT_NEAR(s[0] + s[1] + s[3], 1.0f, 1e-6f);
  EXPECT_EQ(s[2], 0.0f);
  EXPECT_NEAR(s[3] / s[2 - 1], std::exp(1.0f), 1e-5f);
  std::vector<float> c = {0, 30, -300};
  Softcap(c.data(), 3, 30);
  EXPECT_EQ(c[0], 0);
  EXPECT_NEAR(c[1], 30 * std::tanh(1.0f), 1e-5f);
  EXPECT_NEAR(c[2], -30, 1e-4f);
}

TEST(Ops, RopeNeoxRotatesPairsAndHonoursFreqFactors) {
  const int64_t d = 8;
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> y = x;
  RopeNeox(y.data(), d, 3, 10000.0f, nullptr);
  for (int j = 0; j < 4; ++j) {
    double a = 3.0 * std::pow(10000.0, -2.0 * j / d);
    EXPECT_NEAR(y[j], x[j] * std::cos(a) - x[j + 4] * std::sin(a), 1e-5);
    EXPECT_NEAR(y[j + 4], x[j + 4] * std::cos(a) + x[j] * std::sin(a), 1e-5);
  }
  // Factor 1e30 leaves a pair untouched (the partial-rotation encoding of full layers).
  std::vector<float> ff = {1, 1e30f, 1e30f, 1e30f};
  y = x;
  RopeNeox(y.data(), d, 1000, 1e6f, ff.data());
  for (int j = 1; j < 4; ++j) {
    EXPECT_NEAR(y[j], x[j], 1e-5);
    EXPECT_NEAR(y[j + 4], x[j + 4], 1e-5);
  }
  EXPECT_NE(y[0], x[0]);
  // Position 0 is the identity.
  y = x;
  RopeNeox(y.data(), d, 0, 1e4f, nullptr);
  EXPECT_EQ(y, x);
}

}  // namespace
}  // namespace garnet::cpu
