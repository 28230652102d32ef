// The weight types beyond the first five (BF16, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K, IQ4_NL,
// IQ4_XS) through every weight-reading kernel (Matvec, MatvecId, Matmul, GetRows), against
// garnet_quant's DequantizeRow and a double-precision product, on the device as it is and on the
// fallback device (no subgroup arithmetic, no 16-bit storage). Sizes are odd on purpose: rows not
// a multiple of the rows per workgroup, several blocks per row, several vectors, ids out of range.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/quant/fp16.h"
#include "engine/quant/quant.h"
#include "engine/quant/types.h"
#include "engine/vulkan/kernels.h"
#include "tests/vulkan/idot_bound.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

using testing::DownloadFloats;
using testing::IdotRowBound;
using testing::RandomFloats;
using testing::UploadBytes;
using testing::UploadFloats;
using testing::UsesIdot;
using testing::VkTestDevice;
using testing::VkTestEnv;

struct TypeCase {
  GgmlType type;
  uint32_t in;  // a row of several blocks
  // Byte offsets of the block's fp16 scale fields (d, and dmin/m where the type has one).
  int d_at, m_at;
};

// Every new type, with a row length of 2-3 blocks.
const TypeCase kCases[] = {
    {GgmlType::kBF16, 70, -1, -1},  {GgmlType::kQ4_1, 96, 0, 2},
    {GgmlType::kQ5_0, 96, 0, -1},   {GgmlType::kQ5_1, 64, 0, 2},
    {GgmlType::kQ2_K, 512, 80, 82}, {GgmlType::kQ3_K, 512, 108, -1},
    {GgmlType::kQ5_K, 768, 0, 2},   {GgmlType::kQ6_K, 512, 208, -1},
    {GgmlType::kIQ4_NL, 96, 0, -1}, {GgmlType::kIQ4_XS, 512, 0, -1},
};

// Random rows: random bytes (every bit pattern of quants, sub-block scales and high bits) with
// each block's fp16 scales replaced by sane random values; BF16 from random floats.
std::vector<uint8_t> RandomWeights(const TypeCase& c, uint32_t rows, uint32_t seed) {
  if (c.type == GgmlType::kBF16) {
    const std::vector<float> f = RandomFloats(size_t{c.in} * rows, seed);
    std::vector<uint8_t> b(f.size() * 2);
    for (size_t i = 0; i < f.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &f[i], 4);
      const uint16_t h = static_cast<uint16_t>(u >> 16);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return b;
  }
  const TypeTraits& t = Traits(c.type);
  std::vector<uint8_t> b = testing::RandomBytes(*RowBytes(c.type, c.in) * rows, seed);
  const std::vector<float> s = RandomFloats(b.size() / t.block_bytes * 2, seed + 1, 0.001f, 0.02f);
  for (size_t blk = 0; blk * t.block_bytes < b.size(); ++blk) {
    uint8_t* p = b.data() + blk * t.block_bytes;
    const uint16_t d = F32ToF16(s[2 * blk]), m = F32ToF16(s[2 * blk + 1]);
    std::memcpy(p + c.d_at, &d, 2);
    if (c.m_at >= 0) std::memcpy(p + c.m_at, &m, 2);
  }
  return b;
}

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& w, uint32_t in,
                              uint32_t rows) {
  std::vector<float> f(size_t{in} * rows);
  const uint64_t rb = *RowBytes(type, in);
  for (uint32_t r = 0; r < rows; ++r) {
    const Status s = DequantizeRow(type, w.data() + r * rb, f.data() + size_t{r} * in, in);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return f;
}

// Checks got[i] against sum_k w[row, k] x[k] (double) within rel * sum |w x| + 1e-7, plus
// `extra` (the integer-dot path's rounding bound, IdotRowBound, where the kernel took it).
void ExpectDot(float got, const float* w, const float* x, uint32_t n, const std::string& what,
               double rel = 1e-5, double extra = 0) {
  double acc = 0, mag = 0;
  for (uint32_t i = 0; i < n; ++i) {
    acc += double(w[i]) * x[i];
    mag += std::fabs(double(w[i]) * x[i]);
  }
  EXPECT_NEAR(got, acc, rel * mag + 1e-7 + extra) << what;
}

std::string Name(GgmlType t) {
  return std::string(TypeName(t));
}

using WeightTypeTest = garnet::vk::testing::DeviceParamTest;

TEST_P(WeightTypeTest, SupportsEveryDequantisableType) {
  for (const TypeCase& c : kCases) EXPECT_TRUE(Kernels::SupportsWeightType(c.type)) << Name(c.type);
  EXPECT_FALSE(Kernels::SupportsWeightType(GgmlType::kQ8_1));
  EXPECT_FALSE(Kernels::SupportsWeightType(GgmlType::kIQ2_XXS));
}

TEST_P(WeightTypeTest, MatvecSeveralVectorsPartialRowGroups) {
  const uint32_t out = 13, n_vecs = 2;  // 13 rows: the last group of 4 is partial
  for (const TypeCase& c : kCases) {
    const std::string what = "matvec " + Name(c.type) + " (" + k().MatvecVariant(c.type) + ")";
    const std::vector<uint8_t> w = RandomWeights(c, out, 10 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, out);
    const uint32_t xs = c.in + 3, ys = out + 2;
    const std::vector<float> x = RandomFloats(size_t{n_vecs} * xs, 20 + c.in);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_vecs} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matvec(rec(), c.type, {c.in, out, n_vecs, xs, ys}, bw, bx, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{n_vecs} * ys));
    for (uint32_t v = 0; v < n_vecs; ++v) {
      for (uint32_t r = 0; r < out; ++r) {
        const double idot = UsesIdot(k(), c.type)
                                ? IdotRowBound(c.type, &wf[size_t{r} * c.in], &x[v * xs], c.in)
                                : 0;
        ExpectDot(y[v * ys + r], &wf[size_t{r} * c.in], &x[v * xs], c.in,
                  what + " vec " + std::to_string(v) + " row " + std::to_string(r), 1e-5, idot);
      }
    }
  }
}

TEST_P(WeightTypeTest, MatvecIdRoutedExpertsAndOutOfRangeIds) {
  const uint32_t n_experts = 3, out = 6;
  const std::vector<int32_t> ids = {2, -1, 0, 3};  // -1 and 3: empty slots, zeros
  const uint32_t slots = static_cast<uint32_t>(ids.size());
  for (const TypeCase& c : kCases) {
    const std::string what = "matvec_id " + Name(c.type);
    const uint64_t rb = *RowBytes(c.type, c.in);
    const uint64_t stride = (rb * out + 255) / 256 * 256;  // padded expert slabs
    std::vector<uint8_t> w(stride * n_experts, 0);
    std::vector<std::vector<float>> wf;
    for (uint32_t e = 0; e < n_experts; ++e) {
      const std::vector<uint8_t> m = RandomWeights(c, out, 30 + e);
      std::memcpy(&w[e * stride], m.data(), m.size());
      wf.push_back(Dequantize(c.type, m, c.in, out));
    }
    const uint32_t xs = c.in + 1;
    const std::vector<float> x = RandomFloats(size_t{slots} * xs, 40);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{slots} * out * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(rec().Fill(by, 0, by.size(), 0x7fc00000u));  // NaN: every output is written
    MatvecIdShape s{c.in, out, n_experts, slots, xs, 0, stride};
    GARNET_ASSERT_OK(k().MatvecId(rec(), c.type, s, bw, bx, bi, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{slots} * out));
    for (uint32_t sl = 0; sl < slots; ++sl) {
      const bool valid = ids[sl] >= 0 && ids[sl] < int32_t(n_experts);
      for (uint32_t r = 0; r < out; ++r) {
        const std::string at = what + " slot " + std::to_string(sl) + " row " + std::to_string(r);
        if (!valid) {
          EXPECT_EQ(y[sl * out + r], 0.0f) << at;
        } else {
          const float* wr = &wf[ids[sl]][size_t{r} * c.in];
          const double idot =
              UsesIdot(k(), c.type) ? IdotRowBound(c.type, wr, &x[sl * xs], c.in) : 0;
          ExpectDot(y[sl * out + r], wr, &x[sl * xs], c.in, at, 1e-5, idot);
        }
      }
    }
  }
}

TEST_P(WeightTypeTest, MatmulTiledPartialTiles) {
  const uint32_t m = 70, n = 9;  // M crosses the 64-row tile; N is a partial token tile
  for (TypeCase c : kCases) {
    // lavapipe compiles each matmul pipeline in ~1 s: on the fallback device (32-bit word loads,
    // which the matvec tests above cover for every type) only the q4_k_m mix's Q6_K and Q5_K.
    if (GetParam() && c.type != GgmlType::kQ6_K && c.type != GgmlType::kQ5_K) continue;
    // One block of 256 for the K-quants (lavapipe runs this kernel slowly), two of 32 otherwise:
    // the tile loop steps K by 16 either way.
    c.in = Traits(c.type).block_elems == 256 ? 256 : 64 + (c.type == GgmlType::kBF16 ? 3 : 0);
    const std::string what = "matmul " + Name(c.type) + " (" + k().MatmulVariant(c.type) + ")";
    const std::vector<uint8_t> w = RandomWeights(c, m, 50 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, m);
    const uint32_t xs = c.in + 1, ys = m + 2;
    const std::vector<float> x = RandomFloats(size_t{n} * xs, 60 + c.in);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matmul(rec(), c.type, {m, n, c.in, xs, ys}, bw, bx, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{n} * ys));
    for (uint32_t t = 0; t < n; ++t) {
      for (uint32_t r = 0; r < m; ++r) {
        ExpectDot(y[t * ys + r], &wf[size_t{r} * c.in], &x[t * xs], c.in,
                  what + " token " + std::to_string(t) + " row " + std::to_string(r),
                  k().MatmulUsesCooperativeMatrix() ? 2e-3 : 1e-5);  // f16 inputs there
      }
    }
  }
}

TEST_P(WeightTypeTest, GetRowsWithScaleAndBadIds) {
  const uint32_t n_rows = 5;
  const std::vector<int32_t> ids = {1, -1, 4, 5, 0};
  const uint32_t t_n = static_cast<uint32_t>(ids.size());
  for (const TypeCase& c : kCases) {
    const std::vector<uint8_t> w = RandomWeights(c, n_rows, 70 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, n_rows);
    const uint32_t ys = c.in + 3;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{t_n} * ys * 4, MemoryKind::kScratch));
    const float scale = 16.0f;
    GARNET_ASSERT_OK(k().GetRows(rec(), c.type, c.in, n_rows, t_n, ys, scale, bw, bi, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{t_n} * ys));
    for (uint32_t t = 0; t < t_n; ++t) {
      const bool valid = ids[t] >= 0 && ids[t] < int32_t(n_rows);
      for (uint32_t e = 0; e < c.in; ++e) {
        const double want = valid ? double(wf[size_t(ids[t]) * c.in + e]) * scale : 0.0;
        EXPECT_NEAR(y[t * ys + e], want, 1e-6 * std::fabs(want))
            << "get_rows " << Name(c.type) << " token " << t << " element " << e;
      }
    }
  }
}

TEST_P(WeightTypeTest, RowLengthMustBeWholeBlocks) {
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  EXPECT_TRUE(k().Matvec(rec(), GgmlType::kQ6_K, {128, 1}, b, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().Matmul(rec(), GgmlType::kQ5_0, {1, 1, 48}, b, b, b).IsInvalidArgument());
  EXPECT_TRUE(rec().empty());
}

INSTANTIATE_TEST_SUITE_P(Devices, WeightTypeTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "Fallback" : "Native";
                         });

}  // namespace
}  // namespace garnet::vk
