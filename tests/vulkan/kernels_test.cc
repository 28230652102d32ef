// Every kernel against a scalar CPU oracle (double precision) on random data at odd sizes, on
// the device as it is and on the fallback device (no subgroup arithmetic, no 16-bit storage, no
// push descriptors). Weight rows are random GGUF blocks; garnet_quant's DequantizeRow decodes
// them for the oracle.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/quant/fp16.h"
#include "engine/quant/quant.h"
#include "engine/quant/types.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/model_ops.h"
#include "tests/vulkan/idot_bound.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

using testing::DownloadFloats;
using testing::IdotItems;
using testing::IdotRowBound;
using testing::RandomFloats;
using testing::UploadBytes;
using testing::UploadFloats;
using testing::UsesIdot;
using testing::VkTestDevice;
using testing::VkTestEnv;

// Random weight rows of `type`: random bytes (every bit pattern of quants and sub-block scales),
// with each block's fp16 scale(s) replaced by a sane random value.
std::vector<uint8_t> RandomWeights(GgmlType type, uint32_t in, uint32_t out, uint32_t seed) {
  if (type == GgmlType::kF32) {
    std::vector<float> f = RandomFloats(size_t{in} * out, seed);
    std::vector<uint8_t> b(f.size() * 4);
    std::memcpy(b.data(), f.data(), b.size());
    return b;
  }
  if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    std::vector<float> f = RandomFloats(size_t{in} * out, seed);
    std::vector<uint8_t> b(f.size() * 2);
    for (size_t i = 0; i < f.size(); ++i) {
      uint32_t u = 0;
      std::memcpy(&u, &f[i], 4);
      const uint16_t h = type == GgmlType::kF16 ? F32ToF16(f[i]) : static_cast<uint16_t>(u >> 16);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return b;
  }
  const TypeTraits& t = Traits(type);
  std::vector<uint8_t> b = testing::RandomBytes(*RowBytes(type, in) * out, seed);
  const std::vector<float> scales =
      RandomFloats(b.size() / t.block_bytes * 2, seed + 1, 0.001f, 0.02f);
  for (size_t blk = 0; blk * t.block_bytes < b.size(); ++blk) {
    uint8_t* p = b.data() + blk * t.block_bytes;
    const uint16_t d = F32ToF16(scales[2 * blk]);
    // Q8_0, Q4_0, Q4_K: d first; Q6_K: d last (byte 208).
    std::memcpy(p + (type == GgmlType::kQ6_K ? 208 : 0), &d, 2);
    if (type == GgmlType::kQ4_K) {
      const uint16_t dmin = F32ToF16(scales[2 * blk + 1]);
      std::memcpy(p + 2, &dmin, 2);
    }
  }
  return b;
}

std::vector<float> Dequantize(GgmlType type, const std::vector<uint8_t>& w, uint32_t in,
                              uint32_t out) {
  std::vector<float> f(size_t{in} * out);
  const uint64_t rb = *RowBytes(type, in);
  for (uint32_t r = 0; r < out; ++r) {
    const Status s = DequantizeRow(type, w.data() + r * rb, f.data() + size_t{r} * in, in);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return f;
}

// n random expert matrices [out x in] of `type` stacked at 256-byte-aligned slabs (as the model
// backend lays out a *_exps tensor), with their dequantised values for the oracle.
struct ExpertStack {
  uint64_t stride = 0;  // bytes between experts
  std::vector<uint8_t> bytes;
  std::vector<std::vector<float>> values;
};
ExpertStack RandomExperts(GgmlType type, uint32_t in, uint32_t out, uint32_t n, uint32_t seed) {
  ExpertStack st;
  st.stride = (*RowBytes(type, in) * out + 255) / 256 * 256;
  st.bytes.assign(st.stride * n, 0);
  for (uint32_t e = 0; e < n; ++e) {
    const std::vector<uint8_t> m = RandomWeights(type, in, out, seed + e);
    std::memcpy(&st.bytes[e * st.stride], m.data(), m.size());
    st.values.push_back(Dequantize(type, m, in, out));
  }
  return st;
}

using KernelTest = garnet::vk::testing::DeviceParamTest;

// Two routings of `slots` slots (int32 ids, float weights): every reference slot routed, the same
// ids, and the weights within rel * want + abs.
void ExpectSameRoutes(VkTestDevice& d, const Buffer& got_ids, const Buffer& got_w,
                      const Buffer& want_ids, const Buffer& want_w, uint32_t slots, float rel,
                      float abs, const std::string& what) {
  std::vector<int32_t> got_i(slots), want_i(slots);
  GARNET_ASSERT_OK(d.transfer->Download(got_ids, 0, got_i.data(), slots * 4));
  GARNET_ASSERT_OK(d.transfer->Download(want_ids, 0, want_i.data(), slots * 4));
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> gw, DownloadFloats(d, got_w, slots));
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> ww, DownloadFloats(d, want_w, slots));
  for (uint32_t i = 0; i < slots; ++i) {
    ASSERT_GE(want_i[i], 0) << what;
    ASSERT_EQ(got_i[i], want_i[i]) << what << " slot " << i;
    ASSERT_NEAR(gw[i], ww[i], rel * ww[i] + abs) << what << " slot " << i;
  }
}

// Double-precision rms scale of n values.
double InvRms(const double* v, uint32_t n, double eps) {
  double ss = 0;
  for (uint32_t i = 0; i < n; ++i) ss += v[i] * v[i];
  return 1.0 / std::sqrt(ss / n + eps);
}

// |gpu - ref| <= rel * scale + abs (+ extra) per element, where scale (and extra, a bound of a
// known approximation such as IdotRowBound's) is given per element.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want,
                 const std::vector<double>& scale, double rel, double abs, const std::string& what,
                 const std::vector<double>* extra = nullptr) {
  ASSERT_EQ(got.size(), want.size());
  if (extra) ASSERT_EQ(extra->size(), want.size());
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double tol = rel * scale[i] + abs + (extra ? (*extra)[i] : 0.0);
    worst = std::max(worst, err / (scale[i] + 1e-30));
    if (!(err <= tol) && ++bad <= 5) {
      ADD_FAILURE() << what << " [" << i << "]: got " << got[i] << " want " << want[i]
                    << " (tolerance " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what;
  std::printf("  %s: worst relative error %.3g\n", what.c_str(), worst);
}

TEST_P(KernelTest, RmsNormWithAndWithoutWeightAndPerHead) {
  struct Case {
    uint32_t n, rows, xs, ys;
    bool weight;
  };
  for (const Case& c :
       {Case{300, 5, 310, 305, true}, Case{300, 5, 300, 300, false},
        Case{72, 12, 72, 72, true} /* 4 tokens x 3 heads of 72 */, Case{1, 3, 1, 1, true},
        Case{2817, 1, 2817, 2817, true} /* one long row: the wide workgroup */}) {
    const std::vector<float> x = RandomFloats(size_t{c.rows} * c.xs, 11 + c.n, -3, 3);
    const std::vector<float> w = RandomFloats(c.n, 12, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, w));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{c.rows} * c.ys * 4, MemoryKind::kScratch));
    const BufferRange wr(bw);
    RmsNormShape s{c.n, c.rows, c.xs, c.ys, 1e-6f};
    GARNET_ASSERT_OK(k().RmsNorm(rec(), s, bx, c.weight ? &wr : nullptr, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                DownloadFloats(*d_, by, size_t{c.rows} * c.ys));
    std::vector<float> got;
    std::vector<double> want, scale;
    for (uint32_t r = 0; r < c.rows; ++r) {
      double ss = 0;
      for (uint32_t i = 0; i < c.n; ++i) ss += double(x[r * c.xs + i]) * x[r * c.xs + i];
      const double inv = 1.0 / std::sqrt(ss / c.n + 1e-6);
      for (uint32_t i = 0; i < c.n; ++i) {
        const double v = x[r * c.xs + i] * inv * (c.weight ? w[i] : 1.0);
        got.push_back(y[r * c.ys + i]);
        want.push_back(v);
        scale.push_back(std::fabs(v));
      }
    }
    ExpectClose(got, want, scale, 1e-5, 1e-6,
                "rmsnorm n=" + std::to_string(c.n) + (c.weight ? " weighted" : ""));
  }
}

struct MatCase {
  GgmlType type;
  uint32_t in, out;
  uint32_t x_pad = 0;  // x stride - in where a test takes it (0: the test's default)
};

TEST_P(KernelTest, MatvecEveryWeightTypeOddSizes) {
  const uint32_t n_vecs = 3;
  for (const MatCase& c : {MatCase{GgmlType::kF32, 67, 37}, MatCase{GgmlType::kF16, 131, 45},
                           MatCase{GgmlType::kQ8_0, 96, 53}, MatCase{GgmlType::kQ8_0, 4096, 5},
                           // tall (3 x 10923 rows >= 32768): Q8_0's own launch, 64 x 8
                           MatCase{GgmlType::kQ8_0, 64, 10923}, MatCase{GgmlType::kQ4_0, 160, 29},
                           MatCase{GgmlType::kQ5_0, 160, 23}, MatCase{GgmlType::kQ4_K, 512, 19},
                           // x as vec4 (stride a multiple of 4) and 16-byte Q4_K words
                           MatCase{GgmlType::kQ4_K, 768, 6, 4}, MatCase{GgmlType::kQ6_K, 512, 11},
                           MatCase{GgmlType::kQ6_K, 768, 6, 4},
                           // 176 items a row: one round of 192 invocations, 2 rows a group
                           // (Kernels::OneRoundLaunch, where subgroup reductions exist)
                           MatCase{GgmlType::kQ6_K, 2816, 7, 4}}) {
    const std::string what = "matvec " + std::string(TypeName(c.type)) + " " +
                             std::to_string(c.in) + "x" + std::to_string(c.out) + " pad " +
                             std::to_string(c.x_pad) + " (" + k().MatvecVariant(c.type) + ")";
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, c.out, 100 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, c.out);
    const uint32_t xs = c.in + (c.x_pad ? c.x_pad : 5), ys = c.out + 3;
    const std::vector<float> x = RandomFloats(size_t{n_vecs} * xs, 200 + c.out);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_vecs} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matvec(rec(), c.type, {c.in, c.out, n_vecs, xs, ys}, bw, bx, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{n_vecs} * ys));
    std::vector<float> got;
    std::vector<double> want, scale, idot;
    for (uint32_t v = 0; v < n_vecs; ++v) {
      const std::vector<double> xv(x.begin() + v * xs, x.begin() + v * xs + c.in);
      for (uint32_t r = 0; r < c.out; ++r) {
        double acc = 0, mag = 0;
        for (uint32_t i = 0; i < c.in; ++i) {
          acc += double(wf[size_t{r} * c.in + i]) * xv[i];
          mag += std::fabs(double(wf[size_t{r} * c.in + i]) * xv[i]);
        }
        got.push_back(y[v * ys + r]);
        want.push_back(acc);
        scale.push_back(mag);
        if (UsesIdot(k(), c.type))
          idot.push_back(IdotRowBound(c.type, &wf[size_t{r} * c.in], xv.data(), c.in));
      }
    }
    ExpectClose(got, want, scale, 1e-5, 1e-7, what, idot.empty() ? nullptr : &idot);
  }
}

// The integer-dot path (matvec.comp IDOT) rounds each item's x values to int8 with the scale
// max|x| / 127. On inputs already on that grid (values k / 16, |k| <= 127, every item holding a
// +-127 / 16) the rounding is exact, so the product must match the oracle as tightly as the float
// path: a wrong pairing of x and weights, scale or offset shows up here at full size.
TEST_P(KernelTest, MatvecIntegerDotExactOnInt8GridInputs) {
  const uint32_t out = 37, n_vecs = 2;
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 768, 0}, MatCase{GgmlType::kQ6_K, 512, 0},
                           MatCase{GgmlType::kQ8_0, 96, 0}, MatCase{GgmlType::kQ5_0, 160, 0}}) {
    const uint32_t in = c.in;
    const std::vector<uint8_t> w = RandomWeights(c.type, in, out, 4242);
    const std::vector<float> wf = Dequantize(c.type, w, in, out);
    std::vector<float> x(size_t{n_vecs} * in);
    uint32_t state = 99;
    for (float& v : x) {
      state = state * 1664525u + 1013904223u;
      v = static_cast<float>(static_cast<int>(state >> 8) % 255 - 127) / 16.0f;
    }
    const uint32_t block = c.type == GgmlType::kQ4_K || c.type == GgmlType::kQ6_K ? 256 : 32;
    const std::vector<std::vector<uint32_t>> items = IdotItems(c.type);
    ASSERT_FALSE(items.empty());
    for (uint32_t v = 0; v < n_vecs; ++v) {
      for (uint32_t base = 0; base < in; base += block) {
        for (size_t t = 0; t < items.size(); ++t) {  // one +-127 / 16 per item, at varying places
          const uint32_t e = items[t][(t * 7 + v) % items[t].size()];
          x[v * in + base + e] = (t + v) % 2 ? 127 / 16.0f : -127 / 16.0f;
        }
      }
    }
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_vecs} * out * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matvec(rec(), c.type, {in, out, n_vecs, in, out}, bw, bx, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                DownloadFloats(*d_, by, size_t{n_vecs} * out));
    std::vector<double> want, scale;
    for (uint32_t v = 0; v < n_vecs; ++v) {
      for (uint32_t r = 0; r < out; ++r) {
        double acc = 0, mag = 0;
        for (uint32_t i = 0; i < in; ++i) {
          acc += double(wf[size_t{r} * in + i]) * x[v * in + i];
          mag += std::fabs(double(wf[size_t{r} * in + i]) * x[v * in + i]);
        }
        want.push_back(acc);
        scale.push_back(mag);
      }
    }
    ExpectClose(y, want, scale, 1e-5, 1e-7,
                "matvec " + std::string(TypeName(c.type)) + " on int8-grid x (" +
                    k().MatvecVariant(c.type) + ")");
  }
}

TEST_P(KernelTest, MatvecNormFoldsRmsNormIn) {
  const uint32_t n_vecs = 2, out = 13;
  for (const MatCase& c :
       {MatCase{GgmlType::kF32, 67, 0}, MatCase{GgmlType::kF16, 70, 0},
        MatCase{GgmlType::kQ8_0, 96, 0}, MatCase{GgmlType::kQ4_K, 512, 0},
        MatCase{GgmlType::kQ4_K, 256, 0, 4}, MatCase{GgmlType::kQ6_K, 256, 0},
        // vec4 norm prologue: 4 loads per step, then the remainder, then the
        // last in % 4 elements
        MatCase{GgmlType::kF32, 1030, 0, 2}, MatCase{GgmlType::kQ8_0, 1024, 0, 4}}) {
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, out, 700 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, out);
    const uint32_t xs = c.in + (c.x_pad ? c.x_pad : 2), ys = out + 1;
    const std::vector<float> x = RandomFloats(size_t{n_vecs} * xs, 701, -3, 3);
    const std::vector<float> nw = RandomFloats(c.in, 702, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bn, UploadFloats(*d_, nw));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_vecs} * ys * 4, MemoryKind::kScratch));
    const float eps = 1e-6f;
    for (bool weighted : {true, false}) {
      const std::string what = "matvec_norm " + std::string(TypeName(c.type)) +
                               (weighted ? " weighted" : "") + " (" +
                               k().MatvecNormVariant(c.type) + ")";
      const BufferRange nr(bn);
      GARNET_ASSERT_OK(k().MatvecNorm(rec(), c.type, {c.in, out, n_vecs, xs, ys}, bw, bx,
                                      weighted ? &nr : nullptr, eps, by));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                  DownloadFloats(*d_, by, size_t{n_vecs} * ys));
      std::vector<float> got;
      std::vector<double> want, scale, idot;
      for (uint32_t v = 0; v < n_vecs; ++v) {
        double ss = 0;
        for (uint32_t i = 0; i < c.in; ++i) ss += double(x[v * xs + i]) * x[v * xs + i];
        const double inv = 1.0 / std::sqrt(ss / c.in + eps);
        std::vector<double> xv(c.in);
        for (uint32_t i = 0; i < c.in; ++i) xv[i] = x[v * xs + i] * inv * (weighted ? nw[i] : 1.0);
        for (uint32_t r = 0; r < out; ++r) {
          double acc = 0, mag = 0;
          for (uint32_t i = 0; i < c.in; ++i) {
            const double t = double(wf[size_t{r} * c.in + i]) * xv[i];
            acc += t;
            mag += std::fabs(t);
          }
          got.push_back(y[v * ys + r]);
          want.push_back(acc);
          scale.push_back(mag);
          if (UsesIdot(k(), c.type))
            idot.push_back(IdotRowBound(c.type, &wf[size_t{r} * c.in], xv.data(), c.in));
        }
      }
      ExpectClose(got, want, scale, 1e-5, 1e-7, what, idot.empty() ? nullptr : &idot);
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  EXPECT_TRUE(
      k().MatvecNorm(rec(), GgmlType::kF32, {8, 2}, b, b, nullptr, NAN, b).IsInvalidArgument());
  const BufferRange small(b, 0, 16);
  EXPECT_TRUE(
      k().MatvecNorm(rec(), GgmlType::kF32, {8, 2}, b, b, &small, 1e-6f, b).IsInvalidArgument());
  EXPECT_TRUE(rec().empty());
}

// The router with the routing in its last workgroup gives the same logits and ids as MatvecNorm
// followed by MoeRoute (weights within rounding), leaves its counter at zero, and routes again
// correctly when dispatched back to back on the same counter (each dispatch resets it).
TEST_P(KernelTest, MatvecNormRouteEqualsMatvecNormThenMoeRoute) {
  struct Case {
    GgmlType type;
    uint32_t in, e, k, n_vecs;
    bool scale;
  };
  int checked = 0;
  for (const Case& c :
       {Case{GgmlType::kBF16, 320, 128, 8, 1, true}, Case{GgmlType::kF32, 67, 37, 5, 3, false},
        Case{GgmlType::kQ8_0, 96, 128, 8, 2, true}, Case{GgmlType::kF16, 70, 300, 1, 1, false}}) {
    if (!k().MatvecNormRouteAvailable(c.type)) continue;
    ++checked;
    const std::string what = std::string(TypeName(c.type)) + " " + std::to_string(c.e) +
                             " experts top " + std::to_string(c.k);
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, c.e, 950 + c.in);
    const std::vector<float> nw = RandomFloats(c.in, 951, 0.5f, 1.5f);
    const std::vector<float> scale = RandomFloats(c.e, 952, 0.5f, 1.5f);
    const uint32_t xs = c.in + 1, ys = c.e + 3, slots = c.n_vecs * c.k;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bn, UploadFloats(*d_, nw));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bs, UploadFloats(*d_, scale));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer counter, UploadFloats(*d_, std::vector<float>(c.n_vecs)));
    const BufferRange nr(bn), sr(bs);
    const MatvecShape shape{c.in, c.e, c.n_vecs, xs, ys};
    constexpr int kRuns = 5;
    std::vector<std::vector<float>> xs_in;
    std::vector<Buffer> bx, logits, ids, wts;
    for (int run = 0; run < kRuns; ++run) {
      xs_in.push_back(RandomFloats(size_t{c.n_vecs} * xs, 960 + run, -3, 3));
      GARNET_ASSERT_OK_AND_ASSIGN(Buffer x, UploadFloats(*d_, xs_in.back()));
      bx.push_back(std::move(x));
      for (auto* v : {&logits, &ids, &wts}) {
        const uint64_t bytes = v == &logits ? uint64_t{c.n_vecs} * ys * 4 : uint64_t{slots} * 4;
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer b,
                                    Buffer::Create(*d_->device, bytes, MemoryKind::kScratch));
        v->push_back(std::move(b));
      }
    }
    // Runs 0, 1 and 2 back to back in one command buffer (the counter as uploaded), then runs 3
    // and 4 in another.
    for (int run = 0; run < kRuns; ++run) {
      GARNET_ASSERT_OK(k().MatvecNormRoute(rec(), c.type, shape, c.k, bw, bx[run], &nr, 1e-6f,
                                           c.scale ? &sr : nullptr, logits[run], ids[run], wts[run],
                                           counter));
      if (run != 2 && run != kRuns - 1) continue;
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      std::vector<uint32_t> left(c.n_vecs, 1);
      GARNET_ASSERT_OK(d_->transfer->Download(counter, 0, left.data(), c.n_vecs * 4));
      for (uint32_t v = 0; v < c.n_vecs; ++v) {
        EXPECT_EQ(left[v], 0u) << what << " counter " << v << " after run " << run;
      }
    }
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer ref_logits,
        Buffer::Create(*d_->device, uint64_t{c.n_vecs} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer ref_ids,
                                Buffer::Create(*d_->device, slots * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer ref_w,
                                Buffer::Create(*d_->device, slots * 4, MemoryKind::kScratch));
    for (int run = 0; run < kRuns; ++run) {
      const std::string at = what + " run " + std::to_string(run);
      // The reference logits back to back (MoeRoute reads E per token), the fused ones ys apart.
      GARNET_ASSERT_OK(k().MatvecNorm(rec(), c.type, {c.in, c.e, c.n_vecs, xs, c.e}, bw, bx[run],
                                      &nr, 1e-6f, ref_logits));
      GARNET_ASSERT_OK(k().MoeRoute(rec(), c.e, c.k, c.n_vecs, ref_logits, c.scale ? &sr : nullptr,
                                    ref_ids, ref_w));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> want_l,
                                  DownloadFloats(*d_, ref_logits, size_t{c.n_vecs} * c.e));
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> got_l,
                                  DownloadFloats(*d_, logits[run], size_t{c.n_vecs} * ys));
      for (uint32_t v = 0; v < c.n_vecs; ++v) {
        for (uint32_t r = 0; r < c.e; ++r) {
          ASSERT_EQ(got_l[v * ys + r], want_l[v * c.e + r]) << at << " logit " << v << "," << r;
        }
      }
      // The softmax sums run over the matvec's workgroup, MoeRoute's over its own: the same
      // ranks (from the logits alone), weights within rounding.
      ExpectSameRoutes(*d_, ids[run], wts[run], ref_ids, ref_w, slots, 1e-6f, 1e-9f, at);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GT(checked, 0) << "no weight type has the routing matvec";
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 65536, MemoryKind::kScratch));
  const MatvecShape big{64, 2000, 1, 0, 0};
  EXPECT_TRUE(
      k().MatvecNormRoute(rec(), GgmlType::kF32, big, 8, b, b, nullptr, 1e-6f, nullptr, b, b, b, b)
          .IsInvalidArgument());
  const MatvecShape four{64, 4, 1, 0, 0};
  EXPECT_TRUE(
      k().MatvecNormRoute(rec(), GgmlType::kF32, four, 5, b, b, nullptr, 1e-6f, nullptr, b, b, b, b)
          .IsInvalidArgument());
  EXPECT_TRUE(k().MatvecNormRoute(rec(), GgmlType::kQ4_K, {256, 8, 1, 0, 0}, 2, b, b, nullptr,
                                  1e-6f, nullptr, b, b, b, b)
                  .IsUnimplemented());
  EXPECT_TRUE(rec().empty());
}

// The router forming the attention block's residual update itself (ResidSpec) routes as the
// update (RmsNormAdd with scale 1) followed by the plain routing router: the same experts, the
// logits and weights within the rounding of the different order of the sums. It leaves h as it
// was. Rows and strides that are multiples of 4 take the kernel's four-element loop, the others
// its one-element loop.
TEST_P(KernelTest, MatvecNormRouteWithResidEqualsRmsNormAddThenRoute) {
  struct Case {
    GgmlType type;
    uint32_t in, e, k, n_vecs;
    bool scale;
    uint32_t pad;  // floats between vectors beyond `in`
  };
  int checked = 0;
  for (const Case& c :
       {Case{GgmlType::kBF16, 2816, 128, 8, 1, true, 0},
        Case{GgmlType::kBF16, 2816, 128, 8, 2, false, 3},
        Case{GgmlType::kF32, 67, 37, 5, 3, false, 1}, Case{GgmlType::kF32, 128, 37, 5, 3, true, 4},
        Case{GgmlType::kF16, 70, 300, 1, 2, true, 2},
        Case{GgmlType::kF16, 96, 64, 4, 2, true, 8}}) {
    if (!k().MatvecNormRouteAvailable(c.type, true)) continue;
    ++checked;
    const std::string what = std::string(TypeName(c.type)) + " " + std::to_string(c.e) +
                             " experts top " + std::to_string(c.k);
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, c.e, 970 + c.in);
    const std::vector<float> nw = RandomFloats(c.in, 971, 0.5f, 1.5f);
    const std::vector<float> wo = RandomFloats(c.in, 972, 0.5f, 1.5f);
    const std::vector<float> scale = RandomFloats(c.e, 973, 0.5f, 1.5f);
    const uint32_t xs = c.in + c.pad, slots = c.n_vecs * c.k;
    const std::vector<float> h = RandomFloats(size_t{c.n_vecs} * xs, 974, -2, 2);
    const std::vector<float> o = RandomFloats(size_t{c.n_vecs} * xs, 975, -30, 30);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bn, UploadFloats(*d_, nw));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bwo, UploadFloats(*d_, wo));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bs, UploadFloats(*d_, scale));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh2, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bo, UploadFloats(*d_, o));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer counter, UploadFloats(*d_, std::vector<float>(c.n_vecs)));
    std::vector<Buffer> logits, ids, wts;
    for (int run = 0; run < 2; ++run) {
      for (auto* v : {&logits, &ids, &wts}) {
        const uint64_t bytes = v == &logits ? uint64_t{c.n_vecs} * c.e * 4 : uint64_t{slots} * 4;
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer b,
                                    Buffer::Create(*d_->device, bytes, MemoryKind::kScratch));
        v->push_back(std::move(b));
      }
    }
    const BufferRange nr(bn), sr(bs);
    const Kernels::ResidSpec resid{bo, bwo};
    const MatvecShape shape{c.in, c.e, c.n_vecs, xs, c.e};
    // Run 0: the residual form on h. Run 1: h' = h + rmsnorm(o) * wo, then the plain router.
    GARNET_ASSERT_OK(k().MatvecNormRoute(rec(), c.type, shape, c.k, bw, bh, &nr, 1e-6f,
                                         c.scale ? &sr : nullptr, logits[0], ids[0], wts[0],
                                         counter, &resid));
    GARNET_ASSERT_OK(
        k().RmsNormAdd(rec(), {c.in, c.n_vecs, xs, xs, 1e-6f, 1.0f}, bh2, bo, BufferRange(bwo)));
    GARNET_ASSERT_OK(k().MatvecNormRoute(rec(), c.type, shape, c.k, bw, bh2, &nr, 1e-6f,
                                         c.scale ? &sr : nullptr, logits[1], ids[1], wts[1],
                                         counter));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> h_after, DownloadFloats(*d_, bh, h.size()));
    EXPECT_EQ(h_after, h) << what;
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> got_l,
                                DownloadFloats(*d_, logits[0], size_t{c.n_vecs} * c.e));
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> want_l,
                                DownloadFloats(*d_, logits[1], size_t{c.n_vecs} * c.e));
    float big = 0;
    for (float v : want_l) big = std::max(big, std::fabs(v));
    for (size_t i = 0; i < want_l.size(); ++i) {
      ASSERT_NEAR(got_l[i], want_l[i], 2e-5f * big) << what << " logit " << i;
    }
    ExpectSameRoutes(*d_, ids[0], wts[0], ids[1], wts[1], slots, 1e-4f, 1e-7f, what);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(checked, 0) << "no weight type has the residual routing matvec";
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 65536, MemoryKind::kScratch));
  const Kernels::ResidSpec short_o{BufferRange(b, 0, 252), BufferRange(b, 1024, 256)};
  EXPECT_TRUE(k().MatvecNormRoute(rec(), GgmlType::kF32, {64, 8, 1, 0, 0}, 2, b, b, nullptr, 1e-6f,
                                  nullptr, b, b, b, b, &short_o)
                  .IsInvalidArgument());  // o shorter than a row
  const Kernels::ResidSpec ok{BufferRange(b, 0, 1024), BufferRange(b, 1024, 1024)};
  EXPECT_TRUE(k().MatvecNormRoute(rec(), GgmlType::kQ8_0, {256, 8, 1, 0, 0}, 2, b, b, nullptr,
                                  1e-6f, nullptr, b, b, b, b, &ok)
                  .IsUnimplemented());
  EXPECT_TRUE(rec().empty());
}

TEST_P(KernelTest, MatvecGegluGateUpGeluInOneDispatch) {
  const uint32_t n_vecs = 2, out = 13;
  for (const MatCase& c : {MatCase{GgmlType::kF16, 70, 0}, MatCase{GgmlType::kQ8_0, 96, 0},
                           MatCase{GgmlType::kQ4_K, 512, 0}, MatCase{GgmlType::kQ6_K, 256, 0}}) {
    const std::vector<uint8_t> wg = RandomWeights(c.type, c.in, out, 800 + c.in);
    const std::vector<uint8_t> wu = RandomWeights(c.type, c.in, out, 900 + c.in);
    const std::vector<float> gf = Dequantize(c.type, wg, c.in, out);
    const std::vector<float> uf = Dequantize(c.type, wu, c.in, out);
    // One buffer: 256 bytes of padding, up, then gate (after up, 4-byte aligned, plus 4).
    const size_t up_at = 256, gate_at = (up_at + wu.size() + 3) / 4 * 4 + 4;
    std::vector<uint8_t> all(gate_at + wg.size(), 0);
    std::memcpy(&all[up_at], wu.data(), wu.size());
    std::memcpy(&all[gate_at], wg.data(), wg.size());
    const uint32_t xs = c.in + 3, ys = out + 2;
    const std::vector<float> x = RandomFloats(size_t{n_vecs} * xs, 801, -2, 2);
    const std::vector<float> nw = RandomFloats(c.in, 802, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, all.data(), all.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bn, UploadFloats(*d_, nw));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_vecs} * ys * 4, MemoryKind::kScratch));
    const BufferRange gate(bw, gate_at, wg.size()), up(bw, up_at, wu.size()), nr(bn);
    for (int mode = 0; mode < 3; ++mode) {  // no norm, norm without weight, norm with weight
      Kernels::NormSpec ns;
      ns.weight = mode == 2 ? &nr : nullptr;
      const std::string what = "matvec_geglu " + std::string(TypeName(c.type)) + " norm mode " +
                               std::to_string(mode) + " (" + k().MatvecGegluVariant(c.type) + ")";
      GARNET_ASSERT_OK(k().MatvecGeglu(rec(), c.type, {c.in, out, n_vecs, xs, ys}, gate, up, bx,
                                       mode ? &ns : nullptr, by));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                  DownloadFloats(*d_, by, size_t{n_vecs} * ys));
      std::vector<float> got;
      std::vector<double> want, scale, idot;
      for (uint32_t v = 0; v < n_vecs; ++v) {
        double inv = 1.0;
        if (mode) {
          double ss = 0;
          for (uint32_t i = 0; i < c.in; ++i) ss += double(x[v * xs + i]) * x[v * xs + i];
          inv = 1.0 / std::sqrt(ss / c.in + ns.eps);
        }
        std::vector<double> xv(c.in);
        for (uint32_t i = 0; i < c.in; ++i) xv[i] = x[v * xs + i] * inv * (mode == 2 ? nw[i] : 1.0);
        for (uint32_t r = 0; r < out; ++r) {
          double g = 0, u = 0, mg = 0, mu = 0;
          for (uint32_t i = 0; i < c.in; ++i) {
            g += gf[size_t{r} * c.in + i] * xv[i];
            u += uf[size_t{r} * c.in + i] * xv[i];
            mg += std::fabs(gf[size_t{r} * c.in + i] * xv[i]);
            mu += std::fabs(uf[size_t{r} * c.in + i] * xv[i]);
          }
          const double gelu =
              0.5 * g * (1 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
          got.push_back(y[v * ys + r]);
          want.push_back(gelu * u);
          scale.push_back(1.2 * mg * std::fabs(u) + std::fabs(gelu) * mu);
          if (UsesIdot(k(), c.type)) {  // first order in the gate's and the up's errors
            const double bg = IdotRowBound(c.type, &gf[size_t{r} * c.in], xv.data(), c.in);
            const double bu = IdotRowBound(c.type, &uf[size_t{r} * c.in], xv.data(), c.in);
            idot.push_back(1.2 * bg * (std::fabs(u) + bu) + std::fabs(gelu) * bu);
          }
        }
      }
      ExpectClose(got, want, scale, 1e-5, 1e-7, what, idot.empty() ? nullptr : &idot);
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer a, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  // Gate and up in different buffers; offsets 2 bytes apart.
  EXPECT_TRUE(
      k().MatvecGeglu(rec(), GgmlType::kF16, {8, 2}, a, b, a, nullptr, b).IsInvalidArgument());
  EXPECT_TRUE(k().MatvecGeglu(rec(), GgmlType::kF16, {8, 2}, BufferRange(a, 0, 32),
                              BufferRange(a, 34, 32), b, nullptr, b)
                  .IsInvalidArgument());
  EXPECT_TRUE(rec().empty());
}

TEST_P(KernelTest, MatvecOtherLaunchShapesAgree) {
  // Several rows per workgroup (with a partial last group) and other workgroup sizes give the
  // same results as the default launch; with subgroup reductions also a size that is a multiple
  // of the subgroup size but not a power of two (96).
  const uint32_t in = 256, out = 29;
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kF16}) {
    const std::vector<uint8_t> w = RandomWeights(type, in, out, 77);
    const std::vector<float> x = RandomFloats(in, 78);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                                Buffer::Create(*d_->device, out * 4, MemoryKind::kScratch));
    std::vector<std::vector<float>> ys;
    const uint32_t wg = std::max(32u, d_->device->info().subgroup_size);
    std::vector<std::pair<uint32_t, uint32_t>> launches = {{64u, 1u}, {wg, 3u}, {128u, 2u}};
    if (d_->device->caps().subgroup_arithmetic) launches.emplace_back(96u, 4u);
    for (auto [g, rows] : launches) {
      GARNET_ASSERT_OK(k().SetMatvecLaunch(g, rows));
      GARNET_ASSERT_OK(k().Matvec(rec(), type, {in, out}, bw, bx, by));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, out));
      ys.push_back(std::move(y));
    }
    GARNET_ASSERT_OK(k().SetMatvecLaunch(64, 4));  // the default again
    for (size_t v = 1; v < ys.size(); ++v) {
      for (uint32_t r = 0; r < out; ++r) {
        EXPECT_NEAR(ys[v][r], ys[0][r], 1e-5 * std::fabs(ys[0][r]) + 1e-5)
            << TypeName(type) << " " << v << " " << r;
      }
    }
  }
  EXPECT_TRUE(k().SetMatvecLaunch(33, 1).IsInvalidArgument());
  // A multiple of the subgroup size that is no power of two needs the subgroup reductions.
  EXPECT_EQ(k().SetMatvecLaunch(96, 1).ok(), d_->device->caps().subgroup_arithmetic);
  GARNET_ASSERT_OK(k().SetMatvecLaunch(64, 4));
  EXPECT_TRUE(k().SetMatvecLaunch(64, 0).IsInvalidArgument());
  EXPECT_TRUE(k().SetMatvecLaunch(64, 9).IsInvalidArgument());
  k().SetMatvecRowsAuto();  // the later tests run the automatic launches again
}

TEST_P(KernelTest, MatvecIdReadsOnlyRoutedExperts) {
  const uint32_t n_experts = 6, out = 21;
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 256, 0}, MatCase{GgmlType::kQ8_0, 96, 0},
                           MatCase{GgmlType::kF16, 70, 0}}) {
    const ExpertStack es = RandomExperts(c.type, c.in, out, n_experts, 900);
    const uint64_t stride = es.stride;
    const std::vector<uint8_t>& w = es.bytes;
    const std::vector<std::vector<float>>& wf = es.values;
    const std::vector<int32_t> ids = {4, 0, -1, 5, 4, 6};  // -1 and 6: empty slots
    const uint32_t slots = static_cast<uint32_t>(ids.size());
    for (bool shared_x : {true, false}) {
      const uint32_t xs = shared_x ? 0 : c.in + 2;
      const std::vector<float> x = RandomFloats(shared_x ? c.in : size_t{slots} * xs, 950);
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
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                  DownloadFloats(*d_, by, size_t{slots} * out));
      std::vector<float> got;
      std::vector<double> want, scale, idot;
      for (uint32_t sl = 0; sl < slots; ++sl) {
        const bool valid = ids[sl] >= 0 && ids[sl] < int32_t(n_experts);
        const float* x0 = &x[shared_x ? 0 : sl * xs];
        const std::vector<double> xv(x0, x0 + c.in);
        for (uint32_t r = 0; r < out; ++r) {
          double acc = 0, mag = 0;
          if (valid) {
            for (uint32_t i = 0; i < c.in; ++i) {
              const double t = double(wf[ids[sl]][size_t{r} * c.in + i]) * xv[i];
              acc += t;
              mag += std::fabs(t);
            }
          }
          got.push_back(y[sl * out + r]);
          want.push_back(acc);
          scale.push_back(mag);
          if (UsesIdot(k(), c.type)) {
            idot.push_back(
                valid ? IdotRowBound(c.type, &wf[ids[sl]][size_t{r} * c.in], xv.data(), c.in)
                      : 0.0);
          }
        }
      }
      ExpectClose(got, want, scale, 1e-5, 1e-7,
                  "matvec_id " + std::string(TypeName(c.type)) + (shared_x ? " shared x" : ""),
                  idot.empty() ? nullptr : &idot);
    }
  }
}

TEST_P(KernelTest, MatvecIdNormAndGegluTransformTheInputOnLoad) {
  const uint32_t n_experts = 5, out = 19;
  const std::vector<int32_t> ids = {3, 0, -1, 4, 3};  // -1: an empty slot
  const uint32_t slots = static_cast<uint32_t>(ids.size());
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 512, 0}, MatCase{GgmlType::kQ8_0, 96, 0},
                           MatCase{GgmlType::kQ6_K, 256, 0}, MatCase{GgmlType::kF32, 70, 0},
                           MatCase{GgmlType::kF16, 70, 0}, MatCase{GgmlType::kQ5_0, 704, 0},
                           MatCase{GgmlType::kQ4_0, 96, 0}, MatCase{GgmlType::kIQ4_NL, 64, 0}}) {
    const std::string name(TypeName(c.type));
    if (!k().MatvecIdFusedAvailable(c.type)) {
      MatvecIdShape s{c.in, out, n_experts, slots, 0, 0, 0};
      GARNET_ASSERT_OK_AND_ASSIGN(Buffer b,
                                  Buffer::Create(*d_->device, 1 << 16, MemoryKind::kScratch));
      EXPECT_TRUE(k().MatvecIdNorm(rec(), c.type, s, b, b, b, nullptr, 1e-6f, b).IsUnimplemented())
          << name;
      continue;
    }
    const ExpertStack es = RandomExperts(c.type, c.in, out, n_experts, 960);
    const uint64_t stride = es.stride;
    const std::vector<uint8_t>& w = es.bytes;
    const std::vector<std::vector<float>>& wf = es.values;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{slots} * out * 4, MemoryKind::kScratch));
    for (int kind = 1; kind <= 2; ++kind) {
      // Norm: one shared x of `in`; GeGLU: per slot [gate | pad | up] rows, up at in + 3.
      const uint32_t up_off = c.in + 3, xs = 2 * c.in + 5;
      const std::vector<float> x =
          RandomFloats(kind == 1 ? c.in : size_t{slots} * xs, 970 + kind, -2, 2);
      const std::vector<float> nw = RandomFloats(c.in, 972, 0.5f, 1.5f);
      GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
      GARNET_ASSERT_OK_AND_ASSIGN(Buffer bn, UploadFloats(*d_, nw));
      GARNET_ASSERT_OK(rec().Fill(by, 0, by.size(), 0x7fc00000u));
      const BufferRange nr(bn);
      if (kind == 1) {
        MatvecIdShape s{c.in, out, n_experts, slots, 0, 0, stride};
        GARNET_ASSERT_OK(k().MatvecIdNorm(rec(), c.type, s, bw, bx, bi, &nr, 1e-6f, by));
      } else {
        MatvecIdShape s{c.in, out, n_experts, slots, xs, 0, stride};
        GARNET_ASSERT_OK(k().MatvecIdGeglu(rec(), c.type, s, bw, bx, bi, up_off, by));
      }
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                  DownloadFloats(*d_, by, size_t{slots} * out));
      std::vector<float> got;
      std::vector<double> want, scale, idot;
      for (uint32_t sl = 0; sl < slots; ++sl) {
        std::vector<double> xv(c.in);
        if (kind == 1) {
          for (uint32_t i = 0; i < c.in; ++i) xv[i] = x[i];
          const double inv = InvRms(xv.data(), c.in, 1e-6);
          for (uint32_t i = 0; i < c.in; ++i) xv[i] *= inv * nw[i];
        } else {
          for (uint32_t i = 0; i < c.in; ++i) {
            const double g = x[sl * xs + i], u = x[sl * xs + up_off + i];
            const double gl =
                0.5 * g * (1.0 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
            xv[i] = gl * u;
          }
        }
        const bool valid = ids[sl] >= 0 && ids[sl] < int32_t(n_experts);
        for (uint32_t r = 0; r < out; ++r) {
          double acc = 0, mag = 0;
          for (uint32_t i = 0; valid && i < c.in; ++i) {
            const double t = double(wf[ids[sl]][size_t{r} * c.in + i]) * xv[i];
            acc += t;
            mag += std::fabs(t);
          }
          got.push_back(y[sl * out + r]);
          want.push_back(acc);
          scale.push_back(mag);
          if (UsesIdot(k(), c.type)) {
            idot.push_back(
                valid ? IdotRowBound(c.type, &wf[ids[sl]][size_t{r} * c.in], xv.data(), c.in)
                      : 0.0);
          }
        }
      }
      ExpectClose(got, want, scale, 1e-5, 1e-7,
                  (kind == 1 ? "matvec_id_norm " : "matvec_id_glu ") + name,
                  idot.empty() ? nullptr : &idot);
    }
  }
}

TEST_P(KernelTest, MatvecFoldsGridsBeyondTheWorkgroupCountLimit) {
  // More rows than maxComputeWorkGroupCount[0] (65535 on most devices).
  const uint32_t in = 32, out = d_->device->info().max_workgroup_count[0] + 100;
  if (d_->device->info().max_workgroup_count[0] > 1u << 20 ||
      uint64_t{out} * 34 > d_->device->info().max_storage_buffer_range) {
    GTEST_SKIP() << "this device's x grid limit (" << d_->device->info().max_workgroup_count[0]
                 << ") needs no folding at test sizes";
  }
  const std::vector<uint8_t> w = RandomWeights(GgmlType::kQ8_0, in, out, 5);
  const std::vector<float> wf = Dequantize(GgmlType::kQ8_0, w, in, out);
  const std::vector<float> x = RandomFloats(in, 6);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                              UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                              Buffer::Create(*d_->device, size_t{out} * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(k().Matvec(rec(), GgmlType::kQ8_0, {in, out}, bw, bx, by));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, out));
  const std::vector<double> xv(x.begin(), x.end());
  for (uint32_t r : {0u, 1u, 65534u, 65535u, 65536u, out - 1}) {
    if (r >= out) continue;
    double acc = 0, mag = 0;
    for (uint32_t i = 0; i < in; ++i) {
      acc += double(wf[size_t{r} * in + i]) * x[i];
      mag += std::fabs(double(wf[size_t{r} * in + i]) * x[i]);
    }
    const double idot = UsesIdot(k(), GgmlType::kQ8_0)
                            ? IdotRowBound(GgmlType::kQ8_0, &wf[size_t{r} * in], xv.data(), in)
                            : 0.0;
    EXPECT_NEAR(y[r], acc, 1e-5 * mag + 1e-7 + idot) << "row " << r;
  }
}

TEST_P(KernelTest, MatmulTiledEveryWeightTypeOddSizes) {
  const uint32_t n = 67;  // tokens: crosses the 64-token tile
  for (const MatCase& c : {MatCase{GgmlType::kF32, 45, 70}, MatCase{GgmlType::kF16, 83, 70},
                           MatCase{GgmlType::kQ8_0, 96, 70}, MatCase{GgmlType::kQ4_0, 64, 65},
                           MatCase{GgmlType::kQ4_K, 256, 66}}) {
    const std::string what = "matmul " + std::string(TypeName(c.type)) +
                             " M=" + std::to_string(c.out) + " N=" + std::to_string(n) +
                             " K=" + std::to_string(c.in) + " (" + k().MatmulVariant(c.type) + ")";
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, c.out, 300 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, c.out);
    const uint32_t xs = c.in + 1, ys = c.out + 2;
    const std::vector<float> x = RandomFloats(size_t{n} * xs, 400 + c.out);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matmul(rec(), c.type, {c.out, n, c.in, xs, ys}, bw, bx, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{n} * ys));
    std::vector<float> got;
    std::vector<double> want, scale;
    for (uint32_t t = 0; t < n; ++t) {
      for (uint32_t m = 0; m < c.out; ++m) {
        double acc = 0, mag = 0;
        for (uint32_t i = 0; i < c.in; ++i) {
          acc += double(wf[size_t{m} * c.in + i]) * x[t * xs + i];
          mag += std::fabs(double(wf[size_t{m} * c.in + i]) * x[t * xs + i]);
        }
        got.push_back(y[t * ys + m]);
        want.push_back(acc);
        scale.push_back(mag);
      }
    }
    // The cooperative-matrix path rounds W and X to f16.
    ExpectClose(got, want, scale, k().MatmulUsesCooperativeMatrix() ? 2e-3 : 1e-5, 1e-7, what);
  }
}

TEST_P(KernelTest, MatmulLargerTilesBothPaths) {
  // Several 128x128 cooperative tiles with partial edges (and the tiled kernel for comparison);
  // on devices without cooperative matrices both runs use the tiled kernel.
  const uint32_t m = 200, n = 131;
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 512, 0}, MatCase{GgmlType::kF16, 83, 0}}) {
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, m, 500 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, m);
    const std::vector<float> x = RandomFloats(size_t{n} * c.in, 501);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n} * m * 4, MemoryKind::kScratch));
    // Cooperative 128x128 tiles, cooperative 128x64 tiles (small grids), the tiled kernel.
    for (int path : {0, 1, 2}) {
      const bool coop = path < 2;
      k().SetMatmulCooperative(coop);
      k().SetMatmulCoopSmallGrid(path == 0 ? 0 : 1u << 30);
      const bool used = k().MatmulUsesCooperativeMatrix();
      const std::string what = "matmul " + std::string(TypeName(c.type)) + " " + std::to_string(m) +
                               "x" + std::to_string(n) + " (" + k().MatmulVariant(c.type) +
                               (used && path == 1 ? ", 128x64 tiles" : "") + ")";
      GARNET_ASSERT_OK(k().Matmul(rec(), c.type, {m, n, c.in}, bw, bx, by));
      k().SetMatmulCooperative(true);
      k().SetMatmulCoopSmallGrid(256);
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{n} * m));
      std::vector<double> want, scale;
      for (uint32_t t = 0; t < n; ++t) {
        for (uint32_t r = 0; r < m; ++r) {
          double acc = 0, mag = 0;
          for (uint32_t i = 0; i < c.in; ++i) {
            acc += double(wf[size_t{r} * c.in + i]) * x[size_t{t} * c.in + i];
            mag += std::fabs(double(wf[size_t{r} * c.in + i]) * x[size_t{t} * c.in + i]);
          }
          want.push_back(acc);
          scale.push_back(mag);
        }
      }
      ExpectClose(y, want, scale, used ? 2e-3 : 1e-5, 1e-7, what);
      if (d_->device->caps().coopmat == CoopmatForm::kNone)
        break;  // the other runs would repeat the first
    }
  }
}

TEST_P(KernelTest, MatmulIdGroupsSlotsByExpert) {
  const uint32_t n_experts = 5, m = 70, n_tokens = 37, k_slots = 3;
  const uint32_t n_slots = n_tokens * k_slots;
  // Skewed routing: expert 2 gets more than one 64-slot tile; -1 and 5 are out of range.
  std::vector<int32_t> ids(n_slots);
  std::mt19937 rng(42);
  for (uint32_t i = 0; i < n_slots; ++i) {
    const uint32_t r = rng() % 10;
    ids[i] = r < 6 ? 2 : (r == 6 ? -1 : (r == 7 ? 5 : static_cast<int32_t>(rng() % 5)));
  }
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 256, 0}, MatCase{GgmlType::kQ8_0, 64, 0},
                           MatCase{GgmlType::kF16, 40, 0}}) {
    const ExpertStack es = RandomExperts(c.type, c.in, m, n_experts, 1000);
    const uint64_t stride = es.stride;
    const std::vector<uint8_t>& w = es.bytes;
    const std::vector<std::vector<float>>& wf = es.values;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bs, Buffer::Create(*d_->device, MatmulIdScratchBytes(n_experts, n_slots),
                                  MemoryKind::kScratch));
    const uint32_t ys = m + 2;
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{n_slots} * ys * 4, MemoryKind::kScratch));
    // Both kernels where the device has tensor cores (matmul_coop.comp -DMUL_ID: f16 inputs).
    for (int variant = 0; variant < 4; ++variant) {
      const bool shared_x = variant % 2 == 0, coop = variant < 2;
      k().SetMatmulCooperative(coop);
      if (coop && !k().MatmulUsesCooperativeMatrix(c.type)) continue;
      // Shared x rows at an odd stride (matmul_coop's element loads), per-slot rows at a
      // multiple of 4 (its 16-byte X loads where K % 16 == 0).
      const uint32_t slot_stride = shared_x ? 0 : c.in + 4;
      const uint32_t xs = shared_x ? c.in + 3 : k_slots * slot_stride;
      const std::vector<float> x = RandomFloats(size_t{n_tokens} * xs, 1100);
      GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
      GARNET_ASSERT_OK(rec().Fill(by, 0, by.size(), 0x7fc00000u));  // NaN: rows are written
      MatmulIdShape s{m, c.in, n_experts, n_tokens, k_slots, xs, slot_stride, ys, stride};
      GARNET_ASSERT_OK(k().MatmulId(rec(), c.type, s, bw, bx, bi, bs, by));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y,
                                  DownloadFloats(*d_, by, size_t{n_slots} * ys));
      std::vector<float> got;
      std::vector<double> want, scale;
      for (uint32_t sl = 0; sl < n_slots; ++sl) {
        const uint32_t t = sl / k_slots, sk = sl % k_slots;
        const bool valid = ids[sl] >= 0 && ids[sl] < int32_t(n_experts);
        const float* xv = &x[size_t{t} * xs + sk * slot_stride];
        for (uint32_t r = 0; r < m; ++r) {
          double acc = 0, mag = 0;
          for (uint32_t i = 0; valid && i < c.in; ++i) {
            const double v = double(wf[ids[sl]][size_t{r} * c.in + i]) * xv[i];
            acc += v;
            mag += std::fabs(v);
          }
          got.push_back(y[size_t{sl} * ys + r]);
          want.push_back(acc);
          scale.push_back(mag);
        }
      }
      ExpectClose(got, want, scale, coop ? 2e-3 : 1e-5, 1e-7,
                  "matmul_id " + std::string(TypeName(c.type)) + (shared_x ? " shared x" : "") +
                      (coop ? " (cooperative matrix)" : ""));
    }
    k().SetMatmulCooperative(true);
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  // Scratch too small; more than 1024 experts.
  EXPECT_TRUE(
      k().MatmulId(rec(), GgmlType::kF32, {4, 4, 2, 2, 1}, b, b, b, BufferRange(b, 0, 16), b)
          .IsInvalidArgument());
  EXPECT_TRUE(
      k().MatmulId(rec(), GgmlType::kF32, {1, 1, 2000, 1, 1}, b, b, b, b, b).IsInvalidArgument());
  EXPECT_TRUE(rec().empty());
}

// The KHR form of matmul_coop (garnet-spirv-coop-khr rewrites the NV SPIR-V at build time)
// against the same oracle as the runs above, on a device made to prefer it. NVIDIA drivers list
// both extensions, so an NVIDIA GPU runs this too; devices without a usable KHR cooperative
// matrix (lavapipe) skip it.
TEST(CooperativeMatrixKhr, MatmulAndMatmulIdMatchTheOracle) {
  GARNET_REQUIRE_VULKAN();
  VkTestEnv* env = VkTestEnv::Get();
  const DeviceInfo& info = env->main().device->info();
  if (!info.khr_coopmat_f16_shape) {
    GTEST_SKIP() << info.name << ": no VK_KHR_cooperative_matrix with the subgroup 16x16x16 f16 "
                 << "-> f32 shape (extension "
                 << (info.khr_cooperative_matrix ? "present" : "absent")
                 << "): the KHR matmul_coop variants are not run";
  }
  DeviceOptions opts;
  opts.selector = std::to_string(info.index);
  opts.pipeline_cache_path = "-";
  opts.cooperative_matrix = CoopmatForm::kKhr;
  GARNET_ASSERT_OK_AND_ASSIGN(VkTestDevice d, testing::MakeTestDevice(env->instance(), opts));
  if (d.device->caps().coopmat != CoopmatForm::kKhr) {
    GTEST_SKIP() << info.name << " lists the KHR shape but the KHR form is not usable (it needs "
                 << "float16, 16-bit storage, the Vulkan memory model and subgroup size 32)";
  }
  Kernels& kern = *d.kernels;
  Recorder& r = *d.recorder;
  ASSERT_TRUE(kern.MatmulUsesCooperativeMatrix());

  // Dense: several 128x128 tiles with partial edges and padded strides.
  const uint32_t m = 200, n = 131;
  for (const MatCase& c : {MatCase{GgmlType::kQ4_K, 512, 0}, MatCase{GgmlType::kQ8_0, 96, 0},
                           MatCase{GgmlType::kQ6_K, 256, 0}, MatCase{GgmlType::kF16, 83, 0}}) {
    const std::string variant = kern.MatmulVariant(c.type);
    EXPECT_TRUE(variant.ends_with("_khr")) << variant;
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, m, 700 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, m);
    const uint32_t xs = c.in + 1, ys = m + 2;
    const std::vector<float> x = RandomFloats(size_t{n} * xs, 701);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(d, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(d, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d.device, size_t{n} * ys * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(kern.Matmul(r, c.type, {m, n, c.in, xs, ys}, bw, bx, by));
    GARNET_ASSERT_OK(r.SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(d, by, size_t{n} * ys));
    std::vector<float> got;
    std::vector<double> want, scale;
    for (uint32_t t = 0; t < n; ++t) {
      for (uint32_t row = 0; row < m; ++row) {
        double acc = 0, mag = 0;
        for (uint32_t i = 0; i < c.in; ++i) {
          const double v = double(wf[size_t{row} * c.in + i]) * x[size_t{t} * xs + i];
          acc += v;
          mag += std::fabs(v);
        }
        got.push_back(y[size_t{t} * ys + row]);
        want.push_back(acc);
        scale.push_back(mag);
      }
    }
    ExpectClose(got, want, scale, 2e-3, 1e-7,
                "matmul " + std::string(TypeName(c.type)) + " (" + variant + ")");
  }

  // MoE experts (matmul_coop_id_<type>_khr), routing skewed as in MatmulIdGroupsSlotsByExpert.
  const uint32_t n_experts = 5, me = 70, n_tokens = 37, k_slots = 3, in = 256;
  const uint32_t n_slots = n_tokens * k_slots;
  std::vector<int32_t> ids(n_slots);
  std::mt19937 rng(43);
  for (uint32_t i = 0; i < n_slots; ++i) {
    const uint32_t v = rng() % 10;
    ids[i] = v < 6 ? 2 : (v == 6 ? -1 : (v == 7 ? 5 : static_cast<int32_t>(rng() % 5)));
  }
  const ExpertStack es = RandomExperts(GgmlType::kQ4_K, in, me, n_experts, 1200);
  GARNET_ASSERT_OK_AND_ASSIGN(
      Buffer bw, UploadBytes(d, es.bytes.data(), es.bytes.size(), MemoryKind::kWeights));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(d, ids.data(), ids.size() * 4));
  GARNET_ASSERT_OK_AND_ASSIGN(
      Buffer bs,
      Buffer::Create(*d.device, MatmulIdScratchBytes(n_experts, n_slots), MemoryKind::kScratch));
  const uint32_t xs = in + 3, ys = me + 2;
  const std::vector<float> x = RandomFloats(size_t{n_tokens} * xs, 1201);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(d, x));
  GARNET_ASSERT_OK_AND_ASSIGN(
      Buffer by, Buffer::Create(*d.device, size_t{n_slots} * ys * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(r.Fill(by, 0, by.size(), 0x7fc00000u));  // NaN: rows are written
  MatmulIdShape s{me, in, n_experts, n_tokens, k_slots, xs, 0, ys, es.stride};
  GARNET_ASSERT_OK(kern.MatmulId(r, GgmlType::kQ4_K, s, bw, bx, bi, bs, by));
  GARNET_ASSERT_OK(r.SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(d, by, size_t{n_slots} * ys));
  std::vector<float> got;
  std::vector<double> want, scale;
  for (uint32_t sl = 0; sl < n_slots; ++sl) {
    const bool valid = ids[sl] >= 0 && ids[sl] < int32_t(n_experts);
    const float* xv = &x[size_t{sl / k_slots} * xs];
    for (uint32_t row = 0; row < me; ++row) {
      double acc = 0, mag = 0;
      for (uint32_t i = 0; valid && i < in; ++i) {
        const double v = double(es.values[ids[sl]][size_t{row} * in + i]) * xv[i];
        acc += v;
        mag += std::fabs(v);
      }
      got.push_back(y[size_t{sl} * ys + row]);
      want.push_back(acc);
      scale.push_back(mag);
    }
  }
  ExpectClose(got, want, scale, 2e-3, 1e-7, "matmul_id q4_K (matmul_coop_id_q4_k_khr)");
}

TEST_P(KernelTest, MatvecAndMatmulRejectBadShapes) {
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  // Row length not a multiple of the block.
  EXPECT_TRUE(k().Matvec(rec(), GgmlType::kQ8_0, {33, 2}, b, b, b).IsInvalidArgument());
  // Weight range too small for the shape.
  EXPECT_TRUE(k().Matvec(rec(), GgmlType::kF32, {64, 64}, b, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().Matmul(rec(), GgmlType::kF32, {64, 2, 64}, b, b, b).IsInvalidArgument());
  // A type without a kernel.
  EXPECT_TRUE(k().Matvec(rec(), GgmlType::kQ8_1, {256, 1}, b, b, b).IsUnimplemented());
  EXPECT_TRUE(rec().empty());
}

TEST_P(KernelTest, RopeNeoxWithFreqFactorsPartialInPlaceAndLongContexts) {
  struct Case {
    uint32_t head_dim, n_rot, heads;
    double base;
    bool ff, in_place;
  };
  // Positions up to Gemma 4's 262144-token context: the angle must not lose precision there.
  const std::vector<int32_t> pos = {0, 1, 7, 1000, 8191, 100003, 262143};
  const uint32_t tokens = static_cast<uint32_t>(pos.size());
  for (const Case& c : {Case{64, 64, 3, 10000.0, false, false},
                        Case{32, 32, 2, 1e6, true, true},  // Gemma full-layer style
                        Case{48, 32, 3, 10000.0, false, true}}) {
    const uint32_t row = c.heads * c.head_dim;
    const std::vector<float> x = RandomFloats(size_t{tokens} * row, 500 + c.head_dim);
    std::vector<float> ff;
    if (c.ff) {
      ff.assign(c.n_rot / 2, 1.0f);
      for (size_t i = ff.size() / 4; i < ff.size(); ++i) ff[i] = 1e30f;  // pairs switched off
      ff[1] = 2.5f;
    }
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> table, RopeThetaTable(c.n_rot, c.base, ff));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, pos.data(), pos.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bt, UploadFloats(*d_, table));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                                Buffer::Create(*d_->device, x.size() * 4, MemoryKind::kScratch));
    const Buffer& out = c.in_place ? bx : by;
    RopeShape s{c.head_dim, c.n_rot, c.heads, tokens, 0, 0};
    GARNET_ASSERT_OK(k().Rope(rec(), s, bx, bp, bt, out));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, out, x.size()));
    std::vector<double> want(x.size()), scale(x.size(), 1.0);
    const uint32_t half = c.n_rot / 2;
    for (uint32_t t = 0; t < tokens; ++t) {
      for (uint32_t h = 0; h < c.heads; ++h) {
        const size_t b = size_t{t} * row + h * c.head_dim;
        for (uint32_t i = 0; i < c.head_dim; ++i) want[b + i] = x[b + i];
        for (uint32_t i = 0; i < half; ++i) {
          double a = pos[t] * std::pow(c.base, -2.0 * i / c.n_rot);
          if (c.ff) a /= ff[i];
          want[b + i] = x[b + i] * std::cos(a) - x[b + i + half] * std::sin(a);
          want[b + i + half] = x[b + i + half] * std::cos(a) + x[b + i] * std::sin(a);
        }
      }
    }
    ExpectClose(
        y, want, scale, 2e-6, 0,
        "rope head_dim=" + std::to_string(c.head_dim) + " n_rot=" + std::to_string(c.n_rot));
  }
}

TEST_P(KernelTest, NormRopeNormalisesEachHeadThenRotates) {
  struct Case {
    uint32_t head_dim, n_rot, heads;
    double base;
    bool ff, in_place, weight;
  };
  const std::vector<int32_t> pos = {0, 5, 4097, 262143};
  const uint32_t tokens = static_cast<uint32_t>(pos.size());
  for (const Case& c : {Case{512, 512, 2, 1e6, true, true, true},  // Gemma full layer
                        Case{256, 256, 3, 10000.0, false, false, true},
                        Case{300, 128, 2, 10000.0, false, true, true},  // > 2 * WG, pass-through
                        Case{48, 32, 3, 10000.0, false, true, false}}) {
    const uint32_t row = c.heads * c.head_dim;
    const std::vector<float> x = RandomFloats(size_t{tokens} * row, 520 + c.head_dim, -4, 4);
    const std::vector<float> w = RandomFloats(c.head_dim, 521, 0.5f, 1.5f);
    std::vector<float> ff;
    if (c.ff) {
      ff.assign(c.n_rot / 2, 1.0f);
      for (size_t i = ff.size() / 4; i < ff.size(); ++i) ff[i] = 1e30f;
    }
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> table, RopeThetaTable(c.n_rot, c.base, ff));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, w));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, pos.data(), pos.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bt, UploadFloats(*d_, table));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                                Buffer::Create(*d_->device, x.size() * 4, MemoryKind::kScratch));
    const Buffer& out = c.in_place ? bx : by;
    const BufferRange wr(bw);
    RopeShape s{c.head_dim, c.n_rot, c.heads, tokens, 0, 0};
    GARNET_ASSERT_OK(k().NormRope(rec(), s, c.weight ? &wr : nullptr, 1e-6f, bx, bp, bt, out));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, out, x.size()));
    std::vector<double> want(x.size()), scale(x.size(), 1.0);
    const uint32_t half = c.n_rot / 2;
    for (uint32_t t = 0; t < tokens; ++t) {
      for (uint32_t h = 0; h < c.heads; ++h) {
        const size_t b = size_t{t} * row + h * c.head_dim;
        std::vector<double> v(c.head_dim);
        for (uint32_t i = 0; i < c.head_dim; ++i) v[i] = x[b + i];
        const double inv = InvRms(v.data(), c.head_dim, 1e-6);
        for (uint32_t i = 0; i < c.head_dim; ++i) {
          v[i] *= inv * (c.weight ? w[i] : 1.0);
          want[b + i] = v[i];
          scale[b + i] = 1.5;
        }
        for (uint32_t i = 0; i < half; ++i) {
          double a = pos[t] * std::pow(c.base, -2.0 * i / c.n_rot);
          if (c.ff) a /= ff[i];
          want[b + i] = v[i] * std::cos(a) - v[i + half] * std::sin(a);
          want[b + i + half] = v[i + half] * std::cos(a) + v[i] * std::sin(a);
        }
      }
    }
    ExpectClose(
        y, want, scale, 2e-6, 0,
        "norm_rope head_dim=" + std::to_string(c.head_dim) + " n_rot=" + std::to_string(c.n_rot));
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  RopeShape s{64, 66, 1, 1, 0, 0};  // n_rot > head_dim
  EXPECT_TRUE(k().NormRope(rec(), s, nullptr, 1e-6f, b, b, b, b).IsInvalidArgument());
  s = RopeShape{64, 64, 1, 1, 0, 0};
  const BufferRange short_w(b, 0, 252);
  EXPECT_TRUE(k().NormRope(rec(), s, &short_w, 1e-6f, b, b, b, b).IsInvalidArgument());
}

TEST_P(KernelTest, KvNormRopeStoreWritesNormedRotatedKAndNormedVAsF16) {
  struct Case {
    uint32_t head_dim, n_rot, kv_heads, ring;
    bool k_is_v;
  };
  // Positions past the ring size wrap (to distinct slots); -1 is skipped.
  const std::vector<int32_t> pos = {3, 9, -1, 4};
  const uint32_t tokens = static_cast<uint32_t>(pos.size());
  for (const Case& c :
       {Case{512, 512, 1, 8, true}, Case{256, 256, 2, 7, false}, Case{300, 128, 3, 10, false}}) {
    const uint32_t row = c.kv_heads * c.head_dim, stride = row + 4;
    const std::vector<float> kx = RandomFloats(size_t{tokens} * stride, 530 + c.head_dim, -4, 4);
    const std::vector<float> vx =
        c.k_is_v ? kx : RandomFloats(size_t{tokens} * stride, 531 + c.head_dim, -4, 4);
    const std::vector<float> kw = RandomFloats(c.head_dim, 532, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> table, RopeThetaTable(c.n_rot, 1e4, {}));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bk, UploadFloats(*d_, kx));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bv, UploadFloats(*d_, vx));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, kw));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, pos.data(), pos.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bt, UploadFloats(*d_, table));
    const size_t cache_halves = size_t{row} * c.ring;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer kc,
                                Buffer::Create(*d_->device, cache_halves * 2, MemoryKind::kKv));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer vc,
                                Buffer::Create(*d_->device, cache_halves * 2, MemoryKind::kKv));
    GARNET_ASSERT_OK(rec().Fill(kc, 0, kc.size() / 4 * 4, 0x7e007e00u));  // f16 NaN: untouched
    GARNET_ASSERT_OK(rec().Fill(vc, 0, vc.size() / 4 * 4, 0x7e007e00u));
    KvStoreShape s{c.head_dim, c.kv_heads, tokens, c.ring, stride};
    GARNET_ASSERT_OK(KvNormRopeStore(*d_->device, rec(), s, c.n_rot, 1e-6f, bk, c.k_is_v ? bk : bv,
                                     bp, bt, bw, kc, vc));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    std::vector<uint16_t> gk(cache_halves), gv(cache_halves);
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> kwords,
                                DownloadFloats(*d_, kc, cache_halves / 2));
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> vwords,
                                DownloadFloats(*d_, vc, cache_halves / 2));
    std::memcpy(gk.data(), kwords.data(), cache_halves * 2);
    std::memcpy(gv.data(), vwords.data(), cache_halves * 2);
    std::vector<float> got;
    std::vector<double> want, scale;
    std::vector<bool> written(c.ring, false);
    const uint32_t half = c.n_rot / 2;
    for (uint32_t t = 0; t < tokens; ++t) {
      if (pos[t] < 0) continue;
      const uint32_t slot = static_cast<uint32_t>(pos[t]) % c.ring;
      written[slot] = true;
      for (uint32_t g = 0; g < c.kv_heads; ++g) {
        const size_t src = size_t{t} * stride + g * c.head_dim;
        const size_t dst = (size_t{g} * c.ring + slot) * c.head_dim;
        std::vector<double> kv(c.head_dim), vv(c.head_dim);
        for (uint32_t d = 0; d < c.head_dim; ++d) {
          kv[d] = kx[src + d];
          vv[d] = vx[src + d];
        }
        const double ik = InvRms(kv.data(), c.head_dim, 1e-6);
        const double iv = InvRms(vv.data(), c.head_dim, 1e-6);
        for (uint32_t d = 0; d < c.head_dim; ++d) {
          kv[d] *= ik * kw[d];
          vv[d] *= iv;
        }
        std::vector<double> kr = kv;
        for (uint32_t i = 0; i < half; ++i) {
          const double a = pos[t] * std::pow(1e4, -2.0 * i / c.n_rot);
          kr[i] = kv[i] * std::cos(a) - kv[i + half] * std::sin(a);
          kr[i + half] = kv[i + half] * std::cos(a) + kv[i] * std::sin(a);
        }
        for (uint32_t d = 0; d < c.head_dim; ++d) {
          got.push_back(F16ToF32(gk[dst + d]));
          want.push_back(kr[d]);
          scale.push_back(std::fabs(kr[d]) + 1e-3);
          got.push_back(F16ToF32(gv[dst + d]));
          want.push_back(vv[d]);
          scale.push_back(std::fabs(vv[d]) + 1e-3);
        }
      }
    }
    // f16 storage: half an ulp is 2^-11 relative.
    ExpectClose(got, want, scale, 1.0 / 1024, 0,
                "kv_norm_store head_dim=" + std::to_string(c.head_dim));
    for (uint32_t slot = 0; slot < c.ring; ++slot) {
      if (!written[slot]) EXPECT_EQ(gk[slot * c.head_dim], 0x7e00) << "slot " << slot;
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 16, MemoryKind::kScratch));
  KvStoreShape s{514, 1, 1, 4, 0};  // head_dim above the staging row
  EXPECT_TRUE(
      KvNormRopeStore(*d_->device, rec(), s, 514, 1e-6f, b, b, b, b, b, b, b).IsInvalidArgument());
  s = KvStoreShape{64, 1, 1, 4, 0};
  EXPECT_TRUE(
      KvNormRopeStore(*d_->device, rec(), s, 66, 1e-6f, b, b, b, b, b, b, b).IsInvalidArgument());
}

TEST_P(KernelTest, GeluMulAndSoftcap) {
  const uint32_t n = 1003;
  std::vector<float> g = RandomFloats(n, 900, -6, 6);
  g[0] = 0.0f;
  g[1] = 1e-7f;
  g[2] = -1e-7f;
  g[3] = 20.0f;
  g[4] = -20.0f;
  g[5] = 1e4f;
  g[6] = -1e4f;
  const std::vector<float> u = RandomFloats(n, 901, -2, 2);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bg, UploadFloats(*d_, g));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bu, UploadFloats(*d_, u));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer by, Buffer::Create(*d_->device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bc, Buffer::Create(*d_->device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(k().GeluMul(rec(), n, bg, bu, by));
  GARNET_ASSERT_OK(k().Softcap(rec(), n, 30.0f, bg, bc));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, n));
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> c, DownloadFloats(*d_, bc, n));
  std::vector<double> want(n), scale(n), cwant(n), cscale(n);
  for (uint32_t i = 0; i < n; ++i) {
    const double v = g[i];
    const double gelu =
        0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    want[i] = gelu * u[i];
    // Near the tail (v << 0) gelu is a tiny difference of O(1) terms in fp32: scale by |v u|.
    scale[i] = std::max(std::fabs(want[i]), 1e-3 * std::fabs(v * u[i]));
    cwant[i] = 30.0 * std::tanh(v / 30.0);
    cscale[i] = std::fabs(cwant[i]);
  }
  for (float v : y) ASSERT_FALSE(std::isnan(v));
  ExpectClose(y, want, scale, 1e-5, 1e-12, "gelu_mul");
  ExpectClose(c, cwant, cscale, 1e-5, 1e-12, "softcap");
}

// The greedy pick's rule (sampling::GreedyPick): the lowest index of the largest value, NaN and
// -inf never winning, -1 when nothing qualifies.
int32_t ReferencePick(const float* v, uint32_t n) {
  int32_t best = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (!(v[i] > -std::numeric_limits<float>::infinity())) continue;
    if (best < 0 || v[i] > v[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

TEST_P(KernelTest, ArgmaxRowsPicksAsTheSampler) {
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  struct Case {
    uint32_t n, rows;
  };
  // Short rows, a row over 128 chunks of 2048 (the stage-0 chunk grows) and single values.
  for (const Case c : {Case{1003, 5}, Case{300001, 2}, Case{1, 3}, Case{262144, 1}}) {
    std::vector<float> x = RandomFloats(size_t{c.n} * c.rows, 950 + c.n, -30, 30);
    auto row = [&](uint32_t r) { return x.data() + size_t{r} * c.n; };
    if (c.rows >= 2 && c.n > 10) {  // ties for the largest value, NaNs before and between them
      float* r1 = row(1);
      r1[0] = kNan;
      r1[c.n / 3] = 100.0f;
      r1[c.n / 3 + 1] = kNan;
      r1[c.n - 1] = 100.0f;
      r1[c.n / 2] = 100.0f;
    }
    if (c.rows >= 3) {  // nothing qualifies: NaN and -inf only
      float* r2 = row(2);
      for (uint32_t i = 0; i < c.n; ++i) r2[i] = i % 2 ? kNan : -kInf;
    }
    if (c.rows >= 4) {  // +inf wins, the first of two
      row(3)[c.n - 2] = kInf;
      row(3)[7] = kInf;
    }
    if (c.rows >= 5) row(4)[c.n - 1] = 1000.0f;  // the last element, in the last chunk
    if (c.rows == 2 && c.n > 10) row(0)[c.n - 1] = 99.0f;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bp,
        Buffer::Create(*d_->device, Kernels::ArgmaxScratchBytes(c.rows), MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bo,
                                Buffer::Create(*d_->device, c.rows * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().ArgmaxRows(rec(), c.n, c.rows, bx, bp, bo));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> raw, DownloadFloats(*d_, bo, c.rows));
    for (uint32_t r = 0; r < c.rows; ++r) {
      int32_t got = 0;
      std::memcpy(&got, &raw[r], 4);
      EXPECT_EQ(got, ReferencePick(row(r), c.n)) << "n " << c.n << " row " << r;
    }
    if (c.n == 1003) {
      EXPECT_EQ(ReferencePick(row(1), c.n), static_cast<int32_t>(c.n / 3));
      EXPECT_EQ(ReferencePick(row(2), c.n), -1);
      EXPECT_EQ(ReferencePick(row(3), c.n), 7);
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 12, MemoryKind::kScratch));
  EXPECT_TRUE(k().ArgmaxRows(rec(), 0, 1, b, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().ArgmaxRows(rec(), 64, 1, BufferRange(b, 0, 128), b, b).IsInvalidArgument());
  EXPECT_TRUE(k().ArgmaxRows(rec(), 64, 1, b, BufferRange(b, 0, 64), b).IsInvalidArgument());
}

// TopChunks: each chunk's best `keep` in the sampler's order (value first, lower index on ties,
// -0 equal to +0, NaN and -inf never), padded with (-inf, 0xffffffff); against a host sort of
// every chunk. Rows with ties spread over chunks, NaN and +-inf, a short last chunk, a chunk
// with fewer candidates than `keep`; keep 128 (all), 64 and 3.
TEST_P(KernelTest, TopChunksKeepEachChunksBestInSamplerOrder) {
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  constexpr uint32_t kChunk = Kernels::kTopChunk, kBest = Kernels::kTopChunkBest;
  for (const auto& [n, keep] : {std::pair{5000u, 128u}, std::pair{5000u, 3u}, std::pair{2048u, 64u},
                                std::pair{37u, 128u}}) {
    const uint32_t rows = 3, chunks = Kernels::TopChunkCount(n);
    // Values on a coarse grid so that ties are common.
    std::vector<float> x = RandomFloats(size_t{n} * rows, 970 + n, -8, 8);
    for (float& v : x) v = std::round(v * 2.0f) / 2.0f;
    float* r1 = x.data() + n;
    for (uint32_t i = 0; i < n; i += 3) r1[i] = kNan;
    r1[n / 2] = kInf;
    r1[n - 1] = kInf;
    r1[1] = -kInf;
    float* r2 = x.data() + 2 * size_t{n};
    for (uint32_t i = 0; i < n; ++i) r2[i] = i % 5 == 0 ? (i % 2 ? -0.0f : 0.0f) : -kInf;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bo,
        Buffer::Create(*d_->device, Kernels::TopChunksBytes(n, rows), MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().TopChunks(rec(), n, rows, keep, bx, bo));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> raw,
                                DownloadFloats(*d_, bo, size_t{rows} * chunks * kBest * 2));
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t c = 0; c < chunks; ++c) {
        std::vector<std::pair<float, uint32_t>> want;
        for (uint32_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
          const float v = x[size_t{r} * n + i];
          if (v > -kInf) want.push_back({v == 0.0f ? 0.0f : v, i});
        }
        std::sort(want.begin(), want.end(), [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first > b.first : a.second < b.second;
        });
        want.resize(std::min<size_t>(want.size(), keep));
        const float* got = raw.data() + (size_t{r} * chunks + c) * kBest * 2;
        for (uint32_t j = 0; j < keep; ++j) {
          uint32_t id = 0;
          std::memcpy(&id, &got[2 * j + 1], 4);
          const float v = got[2 * j];
          if (j < want.size()) {
            ASSERT_EQ(id, want[j].second)
                << "n " << n << " row " << r << " chunk " << c << " #" << j;
            ASSERT_EQ(v, want[j].first) << "n " << n << " row " << r << " chunk " << c << " #" << j;
          } else {
            ASSERT_EQ(id, 0xffffffffu) << "n " << n << " row " << r << " chunk " << c << " #" << j;
            ASSERT_EQ(v, -kInf);
          }
        }
      }
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 12, MemoryKind::kScratch));
  EXPECT_TRUE(k().TopChunks(rec(), 0, 1, 64, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().TopChunks(rec(), 64, 1, 0, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().TopChunks(rec(), 64, 1, 129, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().TopChunks(rec(), 64, 1, 64, BufferRange(b, 0, 128), b).IsInvalidArgument());
  EXPECT_TRUE(k().TopChunks(rec(), 64, 1, 64, b, BufferRange(b, 0, 512)).IsInvalidArgument());
}

// One attention problem: its shape, positions and random Q (float) and K, V (f16) data.
struct AttnCase {
  const char* name;
  uint32_t d, n_q, n_kv, ring, kv_first, window;
  std::vector<int32_t> pos;
  float scale;
};

struct AttnData {
  std::vector<float> q;
  std::vector<uint16_t> k16, v16;
};

AttnData MakeAttnData(const AttnCase& c) {
  const size_t q_n = c.pos.size() * c.n_q * c.d;
  const size_t kv_n = size_t{c.n_kv} * c.ring * c.d;
  AttnData a;
  a.q = RandomFloats(q_n, 1000 + c.d);
  const std::vector<float> kf = RandomFloats(kv_n, 1001 + c.d);
  const std::vector<float> vf = RandomFloats(kv_n, 1002 + c.d);
  a.k16.resize(kv_n);
  a.v16.resize(kv_n);
  for (size_t i = 0; i < kv_n; ++i) {
    a.k16[i] = F32ToF16(kf[i]);
    a.v16[i] = F32ToF16(vf[i]);
  }
  return a;
}

// attn_decode.comp's formula in double precision: per token and query head, softmax over the
// keys at positions [max(kv_first, p - window + 1), p] (slot j % ring), zeros for none.
std::vector<double> AttentionOracle(const AttnCase& c, const AttnData& a) {
  const size_t t_n = c.pos.size();
  std::vector<double> want(t_n * c.n_q * c.d, 0.0);
  for (size_t t = 0; t < t_n; ++t) {
    const int64_t p = c.pos[t];
    int64_t lo = c.kv_first;
    if (c.window) lo = std::max<int64_t>(lo, p - c.window + 1);
    for (uint32_t h = 0; h < c.n_q; ++h) {
      const uint32_t g = h / (c.n_q / c.n_kv);
      const float* qh = &a.q[(t * c.n_q + h) * c.d];
      std::vector<double> sc;
      double mx = -1e300;
      for (int64_t j = lo; j <= p; ++j) {
        const size_t kb = (size_t{g} * c.ring + size_t(j % c.ring)) * c.d;
        double dot = 0;
        for (uint32_t e = 0; e < c.d; ++e) dot += double(qh[e]) * F16ToF32(a.k16[kb + e]);
        sc.push_back(dot * c.scale);
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (double& x : sc) sum += (x = std::exp(x - mx));
      double* out = &want[(t * c.n_q + h) * c.d];
      for (int64_t j = lo; j <= p; ++j) {
        const size_t vb = (size_t{g} * c.ring + size_t(j % c.ring)) * c.d;
        for (uint32_t e = 0; e < c.d; ++e) out[e] += sc[j - lo] / sum * F16ToF32(a.v16[vb + e]);
      }
    }
  }
  return want;
}

// A case's q, K, V, positions and an output buffer of q's size, on the device.
struct AttnBuffers {
  Buffer q, k, v, pos, o;
};
Result<AttnBuffers> UploadAttn(VkTestDevice& d, const AttnCase& c, const AttnData& a) {
  AttnBuffers b;
  const size_t kv_bytes = a.k16.size() * 2;
  GARNET_ASSIGN_OR_RETURN(b.q, UploadFloats(d, a.q));
  GARNET_ASSIGN_OR_RETURN(b.k, UploadBytes(d, a.k16.data(), kv_bytes, MemoryKind::kKv));
  GARNET_ASSIGN_OR_RETURN(b.v, UploadBytes(d, a.v16.data(), kv_bytes, MemoryKind::kKv));
  GARNET_ASSIGN_OR_RETURN(b.pos, UploadBytes(d, c.pos.data(), c.pos.size() * 4));
  GARNET_ASSIGN_OR_RETURN(b.o, Buffer::Create(*d.device, a.q.size() * 4, MemoryKind::kScratch));
  return b;
}

AttentionShape ShapeOf(const AttnCase& c) {
  AttentionShape s;
  s.head_dim = c.d;
  s.n_q_heads = c.n_q;
  s.n_kv_heads = c.n_kv;
  s.n_tokens = static_cast<uint32_t>(c.pos.size());
  s.ring_size = c.ring;
  s.kv_first = c.kv_first;
  s.window = c.window;
  s.scale = c.scale;
  return s;
}

TEST_P(KernelTest, AttentionOnlineSoftmaxGqaWindowRing) {
  const std::vector<AttnCase> cases = {
      {"full 256 gqa causal", 256, 4, 2, 16, 0, 0, {10, 11, 12}, 1.0f},
      {"swa 512 ring", 512, 2, 1, 8, 14, 8, {20, 21}, 0.0625f},
      {"64 long chunks + wrap + empty", 64, 3, 3, 300, 701, 0, {1000, 750, -5, 600}, 0.125f},
      // Rows not a multiple of 8 elements: keys read element by element (no 16-byte loads).
      {"36 unaligned rows", 36, 2, 1, 12, 0, 0, {5, 11}, 0.2f},
      // 16-byte rows below 64 elements (the tiny presets' sliding layers): the general kernel
      // (attn_decode_rows needs head_dim >= 64; below, a round would outgrow the workgroup).
      {"32 ring wraps", 32, 4, 2, 20, 15, 16, {30, 31, 32}, 0.3f},
      {"16", 16, 2, 1, 10, 0, 0, {5, 9}, 0.5f},
  };
  for (const AttnCase& c : cases) {
    const AttnData a = MakeAttnData(c);
    const size_t q_n = a.q.size();
    GARNET_ASSERT_OK_AND_ASSIGN(AttnBuffers ab, UploadAttn(*d_, c, a));
    const Buffer &bq = ab.q, &bk = ab.k, &bv = ab.v, &bp = ab.pos, &bo = ab.o;
    AttentionShape s = ShapeOf(c);
    // One pass, then split into slices of 5 keys (many splits, some empty) merged by the combine
    // pass; each with the key-row-team kernel (attn_decode_rows, where the shape allows it) and
    // with the general one.
    std::vector<std::vector<float>> outs;
    for (uint32_t run = 0; run < 4; ++run) {
      const uint32_t split_keys = run % 2 == 0 ? 0u : 5u;
      k().SetAttentionDecodeRows(run < 2);
      s.split_keys = split_keys;
      const uint64_t scratch_bytes = AttentionScratchBytes(s);
      EXPECT_EQ(scratch_bytes == 0, AttentionSplits(s) == 1);
      GARNET_ASSERT_OK_AND_ASSIGN(
          Buffer scratch,
          Buffer::Create(*d_->device, std::max<uint64_t>(scratch_bytes, 4), MemoryKind::kScratch));
      const BufferRange sr(scratch);
      GARNET_ASSERT_OK(rec().Fill(bo, 0, q_n * 4, 0x7fc00000u));  // NaN: every output is written
      GARNET_ASSERT_OK(k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> o, DownloadFloats(*d_, bo, q_n));
      outs.push_back(std::move(o));
    }
    k().SetAttentionDecodeRows(true);
    ASSERT_GT(AttentionSplits(s), 1u);
    const std::vector<double> want = AttentionOracle(c, a);
    const std::vector<double> scale(q_n, 1.0);
    for (uint32_t run = 0; run < 4; ++run) {
      const std::string what = std::string("attention ") + c.name +
                               (run < 2 ? " (rows kernel where it applies)" : " (general kernel)");
      ExpectClose(
          outs[run], want, scale, 2e-5, 0,
          run % 2 == 0 ? what : what + " in " + std::to_string(AttentionSplits(s)) + " splits");
    }
  }
}

// With a counter, attn_decode_rows merges the splits in the last split workgroup of each head:
// one dispatch instead of two, the same output bits as the combine pass, and the counter back at
// zero, so a second dispatch on the same counter is right too.
TEST_P(KernelTest, AttentionDecodeMergesSplitsInLastWorkgroup) {
  for (const AttnCase& c : std::vector<AttnCase>{
           {"full 256 gqa causal", 256, 4, 2, 16, 0, 0, {10, 11, 12}, 1.0f},
           {"swa 512 ring", 512, 2, 1, 8, 14, 8, {20, 21}, 0.0625f},
           {"64 long chunks + wrap + empty", 64, 3, 3, 300, 701, 0, {1000, 750, -5, 600}, 0.125f},
       }) {
    const AttnData a = MakeAttnData(c);
    const size_t q_n = a.q.size();
    const uint32_t t_n = static_cast<uint32_t>(c.pos.size());
    GARNET_ASSERT_OK_AND_ASSIGN(AttnBuffers ab, UploadAttn(*d_, c, a));
    const Buffer &bq = ab.q, &bk = ab.k, &bv = ab.v, &bp = ab.pos, &bo = ab.o;
    AttentionShape s = ShapeOf(c);
    s.split_keys = 5;
    ASSERT_GT(AttentionSplits(s), 1u);
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer scratch,
        Buffer::Create(*d_->device, AttentionScratchBytes(s), MemoryKind::kScratch));
    const BufferRange sr(scratch);
    const uint32_t n_count = t_n * c.n_q;
    const std::vector<uint32_t> zeros(n_count, 0u);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer counter, UploadBytes(*d_, zeros.data(), n_count * 4));
    const BufferRange cr(counter);

    GARNET_ASSERT_OK(rec().Fill(bo, 0, q_n * 4, 0x7fc00000u));
    GARNET_ASSERT_OK(k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> two_pass, DownloadFloats(*d_, bo, q_n));
    for (int rep = 0; rep < 2; ++rep) {
      GARNET_ASSERT_OK(rec().Fill(bo, 0, q_n * 4, 0x7fc00000u));
      const uint32_t before = rec().stats().dispatches;
      GARNET_ASSERT_OK(k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr, &cr));
      EXPECT_EQ(rec().stats().dispatches, before + 1) << c.name;
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> fused, DownloadFloats(*d_, bo, q_n));
      EXPECT_EQ(std::memcmp(fused.data(), two_pass.data(), q_n * 4), 0)
          << c.name << " repetition " << rep << ": the merged splits differ from the combine pass";
      std::vector<uint32_t> left(n_count, 1u);
      GARNET_ASSERT_OK(d_->transfer->Download(counter, 0, left.data(), n_count * 4));
      EXPECT_EQ(left, zeros) << c.name << ": the counters are not back at zero";
    }
    ExpectClose(two_pass, AttentionOracle(c, a), std::vector<double>(q_n, 1.0), 2e-5, 0, c.name);
    // A counter too small for n_tokens * n_q_heads.
    const BufferRange short_counter(counter, 0, n_count * 4 - 4);
    EXPECT_TRUE(
        k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr, &short_counter).IsInvalidArgument());
  }
}

// kv_first = kKvFirstFromPositions (a replayed decode pass): the oldest position held is derived
// on the device from the last query position, max(0, p + 1 - ring): the same output as that
// kv_first given, on both decode kernels, split or not.
TEST_P(KernelTest, AttentionDecodeDerivesKvFirstFromPositions) {
  for (const AttnCase& c : std::vector<AttnCase>{
           {"ring wrapped", 256, 4, 2, 40, 1000 + 1 - 40, 0, {1000}, 0.1f},
           {"ring not full", 64, 2, 1, 40, 0, 0, {17}, 0.3f},
       }) {
    const AttnData a = MakeAttnData(c);
    const size_t q_n = a.q.size();
    GARNET_ASSERT_OK_AND_ASSIGN(AttnBuffers ab, UploadAttn(*d_, c, a));
    const Buffer &bq = ab.q, &bk = ab.k, &bv = ab.v, &bp = ab.pos, &bo = ab.o;
    AttentionShape s = ShapeOf(c);
    s.kv_first = kKvFirstFromPositions;
    const std::vector<double> want = AttentionOracle(c, a);
    const std::vector<double> scale(q_n, 1.0);
    for (uint32_t run = 0; run < 4; ++run) {
      k().SetAttentionDecodeRows(run < 2);
      s.split_keys = run % 2 == 0 ? 0u : 8u;
      GARNET_ASSERT_OK_AND_ASSIGN(
          Buffer scratch,
          Buffer::Create(*d_->device, std::max<uint64_t>(AttentionScratchBytes(s), 4),
                         MemoryKind::kScratch));
      const BufferRange sr(scratch);
      GARNET_ASSERT_OK(rec().Fill(bo, 0, q_n * 4, 0x7fc00000u));
      GARNET_ASSERT_OK(k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> o, DownloadFloats(*d_, bo, q_n));
      ExpectClose(o, want, scale, 2e-5, 0, std::string(c.name) + " run " + std::to_string(run));
    }
    k().SetAttentionDecodeRows(true);
    // The tiled kernels take no such kv_first.
    EXPECT_TRUE(k().AttentionPrefill(rec(), s, bq, bk, bv, bp, bo).IsInvalidArgument());
  }
}

// Runs `run` (one attention dispatch) on case c with Q and O of 3 spare floats per token (which
// must survive) and K/V with slot_pad spare halves per slot and head_pad per head. Those halves
// and the ring slots no query's key range reaches hold NaN: a kernel must never let them into an
// output. Returns the outputs packed as the oracle's.
template <typename Run>
std::vector<float> RunStridedAttention(VkTestDevice& d, const AttnCase& c, const AttnData& a,
                                       uint32_t slot_pad, uint32_t head_pad, Run run) {
  const uint32_t t_n = static_cast<uint32_t>(c.pos.size());
  const uint32_t row = c.n_q * c.d;
  const uint32_t qs = row + 3, slot = c.d + slot_pad, head = c.ring * slot + head_pad;
  std::vector<float> q(size_t{t_n} * qs, 7.0f);
  for (uint32_t t = 0; t < t_n; ++t) {
    std::copy_n(&a.q[size_t{t} * row], row, &q[size_t{t} * qs]);
  }
  // The ring slots some query's key range [lo, p] reaches; every other half stays NaN.
  std::vector<bool> reached(c.ring, false);
  for (const int32_t p : c.pos) {
    int64_t lo = c.kv_first;
    if (c.window) lo = std::max<int64_t>(lo, int64_t{p} - c.window + 1);
    for (int64_t j = std::max<int64_t>(lo, 0); j <= p; ++j) reached[size_t(j % c.ring)] = true;
  }
  std::vector<uint16_t> k16(size_t{c.n_kv} * head, 0x7e00), v16(k16.size(), 0x7e00);  // NaN
  for (uint32_t g = 0; g < c.n_kv; ++g) {
    for (uint32_t j = 0; j < c.ring; ++j) {
      if (!reached[j]) continue;
      const size_t src = (size_t{g} * c.ring + j) * c.d, dst = size_t{g} * head + j * slot;
      std::copy_n(&a.k16[src], c.d, &k16[dst]);
      std::copy_n(&a.v16[src], c.d, &v16[dst]);
    }
  }
  auto bq = UploadFloats(d, q);
  auto bk = UploadBytes(d, k16.data(), k16.size() * 2, MemoryKind::kKv);
  auto bv = UploadBytes(d, v16.data(), v16.size() * 2, MemoryKind::kKv);
  auto bp = UploadBytes(d, c.pos.data(), t_n * 4);
  auto bo = UploadFloats(d, q);
  EXPECT_TRUE(bq.ok() && bk.ok() && bv.ok() && bp.ok() && bo.ok());
  if (!bq.ok() || !bk.ok() || !bv.ok() || !bp.ok() || !bo.ok()) return {};
  AttentionShape s = ShapeOf(c);
  s.q_tok_stride = s.o_tok_stride = qs;
  s.slot_stride = slot;
  s.kv_head_stride = head;
  const Status st = run(s, *bq, *bk, *bv, *bp, *bo);
  EXPECT_TRUE(st.ok()) << c.name << ": " << st.ToString();
  if (!st.ok()) return {};
  const Status done = d.recorder->SubmitAndWait();
  EXPECT_TRUE(done.ok()) << done.ToString();
  auto o = DownloadFloats(d, *bo, q.size());
  EXPECT_TRUE(o.ok());
  if (!o.ok()) return {};
  std::vector<float> got(size_t{t_n} * row);
  for (uint32_t t = 0; t < t_n; ++t) {
    std::copy_n(&(*o)[size_t{t} * qs], row, &got[size_t{t} * row]);
    for (uint32_t e = row; e < qs; ++e) {
      EXPECT_EQ((*o)[size_t{t} * qs + e], 7.0f) << c.name << ": spare float overwritten";
    }
  }
  return got;
}

// RunStridedAttention on case c against the fp64 oracle, within rel * 1 + abs (values in [-1, 1]).
template <typename Run>
void CheckStridedAttention(VkTestDevice& d, const AttnCase& c, uint32_t slot_pad, uint32_t head_pad,
                           double rel, double abs, const std::string& what, Run run) {
  const AttnData a = MakeAttnData(c);
  const std::vector<float> got = RunStridedAttention(d, c, a, slot_pad, head_pad, run);
  const std::vector<double> want = AttentionOracle(c, a);
  ExpectClose(got, want, std::vector<double>(want.size(), 1.0), rel, abs, what + " " + c.name);
}

// Cases both prefill kernels run: a window over a wrapping ring (100..136 over 24 slots), GQA 8
// with kv_first > 0, a position with no key and one below kv_first, and positions out of order
// with an empty query.
std::vector<AttnCase> PrefillAttentionCases() {
  std::vector<int32_t> run37(37), run21(21);
  std::iota(run37.begin(), run37.end(), 100);
  std::iota(run21.begin(), run21.end(), 20);
  run21[5] = -3;  // no key at all
  run21[6] = 2;   // below kv_first: no key
  return {
      {"256 gqa2 window ring", 256, 4, 2, 24, 113, 16, run37, 0.0625f},
      {"512 gqa8 causal kv_first", 512, 8, 1, 64, 3, 0, run21, 1.0f},
      {"64 out of order + wrap + empty", 64, 3, 3, 300, 701, 0, {1000, 750, -5, 600, 999}, 0.125f},
  };
}

// The prefill kernel (tiles of 16 query rows of one kv head, keys streamed in chunks) on token
// counts that are no multiple of the tile, GQA groups of 1, 2 and 8 heads, window masks, a ring
// that wraps, kv_first > 0, queries with no key (a negative position, one below kv_first),
// positions out of order, strided Q/O/K/V, and head dims 256 and 512 (the Gemma 4 ones), 64 and
// 32 (the tiny presets') and 384. The tile each uses depends on the device's shared memory
// (printed): lavapipe (32 KiB) runs 16x16, 8x8, 16x32, 16x32 and 16x8; a 48 KiB GPU 16x32,
// 16x8, 16x32, 16x32 and 16x16.
TEST_P(KernelTest, AttentionPrefillMatchesOracle) {
  std::vector<int32_t> run19(19);
  std::iota(run19.begin(), run19.end(), 0);
  std::vector<AttnCase> cases = PrefillAttentionCases();
  cases.push_back({"32 gqa2 window from 0", 32, 2, 1, 32, 0, 7, run19, 0.5f});
  // 192 f16 pairs: a second, partly idle pair per invocation; 16 x 8 tiles on 32 KiB devices.
  cases.push_back({"384 gqa2 window", 384, 2, 1, 40, 0, 9, run19, 0.05f});
  for (const AttnCase& c : cases) {
    const AttentionTile tile = k().AttentionPrefillTile(c.d);
    ASSERT_GT(tile.rows, 0u) << c.name;
    CheckStridedAttention(*d_, c, 2, 6, 2e-5, 0,
                          "attention prefill (tile " + std::to_string(tile.rows) + "x" +
                              std::to_string(tile.keys) + ")",
                          [&](const AttentionShape& s, const Buffer& q, const Buffer& kb,
                              const Buffer& vb, const Buffer& pb, const Buffer& ob) {
                            return k().AttentionPrefill(rec(), s, q, kb, vb, pb, ob);
                          });
  }
}

// The tensor-core prefill attention (attn_coop.comp) against the fp64 oracle: head dims 64, 128,
// 256 and 512; GQA groups of 1, 2 and 8; window and causal masks; rings that wrap inside a
// 16-key step and chunks that end inside the tile's key range (the staged path) as well as
// whole 64-key chunks (the direct path); kv_first > 0, queries with no key, positions out of
// order; NaN in every K/V half no position in range reaches. Q and the probabilities are rounded
// to f16, so the tolerance is 4e-3 (values and V in [-1, 1]). Only on devices with cooperative
// matrices (not lavapipe).
TEST_P(KernelTest, AttentionCoopMatchesOracle) {
  if (!k().AttentionCoopAvailable(256)) {
    GTEST_SKIP() << "no cooperative-matrix attention on this device";
  }
  std::vector<int32_t> run19(19), run300(300), run70(70);
  std::iota(run19.begin(), run19.end(), 0);
  std::iota(run300.begin(), run300.end(), 0);   // 300 keys: whole chunks, a partial last one
  std::iota(run70.begin(), run70.end(), 1000);  // over a ring of 200 from kv_first 870: wraps
  std::vector<AttnCase> cases = PrefillAttentionCases();
  cases.push_back({"128 gqa2 window from 0", 128, 2, 1, 32, 0, 7, run19, 0.5f});
  cases.push_back({"256 gqa2 causal 300", 256, 4, 2, 304, 0, 0, run300, 0.0625f});
  cases.push_back({"512 gqa8 window 100 ring 200", 512, 8, 1, 200, 870, 100, run70, 0.05f});
  for (const AttnCase& c : cases) {
    CheckStridedAttention(*d_, c, 8, 8, 0, 4e-3, "attention coop",
                          [&](const AttentionShape& s, const Buffer& q, const Buffer& kb,
                              const Buffer& vb, const Buffer& pb, const Buffer& ob) {
                            return k().AttentionCoop(rec(), s, q, kb, vb, pb, ob);
                          });
  }
  // Strides that are not whole 16-byte words: refused, nothing recorded.
  const AttnCase c = cases[0];
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 20, MemoryKind::kScratch));
  AttentionShape s = ShapeOf(c);
  s.slot_stride = c.d + 2;
  EXPECT_TRUE(k().AttentionCoop(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.slot_stride = 0;
  s.head_dim = 96;
  EXPECT_TRUE(k().AttentionCoop(rec(), s, b, b, b, b, b).IsInvalidArgument());
}

TEST_P(KernelTest, AttentionRejectsBadShapes) {
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 16, MemoryKind::kScratch));
  AttentionShape s;
  s.head_dim = 64;
  s.n_q_heads = 3;
  s.n_kv_heads = 2;  // 3 is not a multiple of 2
  s.ring_size = 8;
  EXPECT_TRUE(k().AttentionDecode(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.n_kv_heads = 1;
  s.ring_size = 1 << 20;  // K/V would need far more than the buffer holds
  EXPECT_TRUE(k().AttentionDecode(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.ring_size = 64;
  s.split_keys = 16;  // 4 splits: scratch required
  ASSERT_GT(AttentionScratchBytes(s), 0u);
  EXPECT_TRUE(k().AttentionDecode(rec(), s, b, b, b, b, b).IsInvalidArgument());
  // The prefill kernel: the same shape checks, and head dims it has no tile for.
  s.n_kv_heads = 2;
  EXPECT_TRUE(k().AttentionPrefill(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.n_kv_heads = 1;
  s.ring_size = 1 << 20;
  EXPECT_TRUE(k().AttentionPrefill(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.ring_size = 8;
  s.head_dim = 64;
  s.slot_stride = 65;  // odd: the prefill kernel reads f16 pairs as 32-bit words
  EXPECT_TRUE(k().AttentionPrefill(rec(), s, b, b, b, b, b).IsInvalidArgument());
  s.slot_stride = 0;
  for (uint32_t d : {63u, 66u, 516u, 1024u}) {
    s.head_dim = d;
    EXPECT_EQ(k().AttentionPrefillTile(d).rows, 0u) << d;
    EXPECT_TRUE(k().AttentionPrefill(rec(), s, b, b, b, b, b).IsInvalidArgument()) << d;
  }
  EXPECT_TRUE(rec().empty());
}

TEST_P(KernelTest, GetRowsEveryWeightTypeWithScaleAndBadIds) {
  const uint32_t n_rows = 13;
  const std::vector<int32_t> ids = {0, 12, 5, -1, 13, 5, 1 << 30};
  const uint32_t t_n = static_cast<uint32_t>(ids.size());
  for (const MatCase& c : {MatCase{GgmlType::kF32, 45, 0}, MatCase{GgmlType::kF16, 83, 0},
                           MatCase{GgmlType::kQ8_0, 96, 0}, MatCase{GgmlType::kQ4_0, 64, 0},
                           MatCase{GgmlType::kQ4_K, 512, 0}}) {
    const std::vector<uint8_t> w = RandomWeights(c.type, c.in, n_rows, 600 + c.in);
    const std::vector<float> wf = Dequantize(c.type, w, c.in, n_rows);
    const uint32_t ys = c.in + 3;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{t_n} * ys * 4, MemoryKind::kScratch));
    const float scale = 16.0f;  // e.g. sqrt(256) for the PLE table
    GARNET_ASSERT_OK(k().GetRows(rec(), c.type, c.in, n_rows, t_n, ys, scale, bw, bi, by));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{t_n} * ys));
    std::vector<float> got;
    std::vector<double> want, sc;
    for (uint32_t t = 0; t < t_n; ++t) {
      const bool valid = ids[t] >= 0 && ids[t] < int32_t(n_rows);
      for (uint32_t e = 0; e < c.in; ++e) {
        got.push_back(y[t * ys + e]);
        want.push_back(valid ? double(wf[size_t(ids[t]) * c.in + e]) * scale : 0.0);
        sc.push_back(std::fabs(want.back()));
      }
    }
    ExpectClose(got, want, sc, 1e-6, 0, "get_rows " + std::string(TypeName(c.type)));
  }
}

TEST_P(KernelTest, BinaryAddMulBroadcastAndInPlace) {
  const uint32_t n = 1000, b_len = 40;
  const std::vector<float> a = RandomFloats(n, 700);
  const std::vector<float> b = RandomFloats(b_len, 701);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer ba, UploadFloats(*d_, a));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bb, UploadFloats(*d_, b));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer by, Buffer::Create(*d_->device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(k().Binary(rec(), Kernels::BinaryOp::kAdd, n, b_len, 0.5f, ba, bb, by));
  GARNET_ASSERT_OK(
      k().Binary(rec(), Kernels::BinaryOp::kMul, n, b_len, 2.0f, ba, bb, ba));  // in place
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, n));
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> m, DownloadFloats(*d_, ba, n));
  for (uint32_t i = 0; i < n; ++i) {
    EXPECT_FLOAT_EQ(y[i], (a[i] + b[i % b_len]) * 0.5f) << i;
    EXPECT_FLOAT_EQ(m[i], a[i] * b[i % b_len] * 2.0f) << i;
  }
  EXPECT_TRUE(
      k().Binary(rec(), Kernels::BinaryOp::kAdd, n, 0, 1.0f, ba, bb, by).IsInvalidArgument());
  EXPECT_TRUE(
      k().Binary(rec(), Kernels::BinaryOp::kAdd, n + 1, 1, 1.0f, ba, bb, by).IsInvalidArgument());
}

TEST_P(KernelTest, RecorderProfileCountsDispatchesPerShaderAndTag) {
  // GARNET_VULKAN_PROFILE's machinery on a Recorder of its own: two dispatches of one shader
  // and grid in one pass under a tag give one row with 2 calls; the result is unchanged.
  GARNET_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Recorder> r, Recorder::Create(*d_->device));
  r->EnableProfile();
  if (!r->profiling()) GTEST_SKIP() << "the queue has no timestamps";
  r->set_profile_tag("probe");
  const uint32_t n = 256;
  const std::vector<float> a = RandomFloats(n, 710);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer ba, UploadFloats(*d_, a));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer by, Buffer::Create(*d_->device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(k().Binary(*r, Kernels::BinaryOp::kAdd, n, n, 1.0f, ba, ba, by));
  GARNET_ASSERT_OK(k().Binary(*r, Kernels::BinaryOp::kAdd, n, n, 1.0f, by, ba, by));
  GARNET_ASSERT_OK(r->SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, n));
  for (uint32_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(y[i], 3.0f * a[i]) << i;
  const std::string report = r->ProfileReport();
  EXPECT_NE(report.find("vulkan profile [probe]: 1 passes"), std::string::npos) << report;
  EXPECT_NE(report.find("binary"), std::string::npos) << report;
  EXPECT_NE(report.find("2.00 calls"), std::string::npos) << report;
}

// A NextNorms output (rows x count copies of n floats) against rmsnorm(h'[r]) * w_j, with h' the
// kernel's own updated rows (stride hs).
void ExpectNextNormsOf(const std::vector<float>& h, uint32_t n, uint32_t rows, uint32_t hs,
                       std::initializer_list<const std::vector<float>*> w, uint32_t count,
                       VkTestDevice& d, const Buffer& out, const std::string& what) {
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> got,
                              DownloadFloats(d, out, size_t{rows} * count * n));
  std::vector<double> want, scale;
  for (uint32_t r = 0; r < rows; ++r) {
    const std::vector<double> hr(h.begin() + size_t{r} * hs, h.begin() + size_t{r} * hs + n);
    const double inv = InvRms(hr.data(), n, 1e-6);
    for (uint32_t j = 0; j < count; ++j) {
      for (uint32_t i = 0; i < n; ++i) {
        want.push_back(hr[i] * inv * (*w.begin()[j])[i]);
        scale.push_back(std::fabs(want.back()) + 1e-6);
      }
    }
  }
  ExpectClose(got, want, scale, 2e-6, 1e-6, what);
}

TEST_P(KernelTest, RmsNormAddUpdatesTheResidualWithScaleAndStrides) {
  struct Case {
    uint32_t n, rows, hs, xs;
    float scale;
  };
  // Rows of at most 4 x the workgroup take the register path, longer ones (1500 elements on 9
  // rows: 256-wide workgroups) the loop.
  for (const Case& c :
       {Case{2817, 3, 2817, 2830, 0.75f}, Case{300, 5, 301, 300, 1.0f}, Case{1, 2, 1, 1, 2.0f},
        Case{129, 700, 129, 129, 1.0f}, Case{1500, 9, 1500, 1500, 1.0f}}) {
    const std::vector<float> h = RandomFloats(size_t{c.rows} * c.hs, 40 + c.n, -2, 2);
    const std::vector<float> x = RandomFloats(size_t{c.rows} * c.xs, 41 + c.n, -3, 3);
    const std::vector<float> w = RandomFloats(c.n, 42, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, w));
    Kernels::NormAddShape s{c.n, c.rows, c.hs, c.xs, 1e-6f, c.scale};
    GARNET_ASSERT_OK(k().RmsNormAdd(rec(), s, bh, bx, bw));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, bh, h.size()));
    std::vector<float> got;
    std::vector<double> want, scale;
    for (uint32_t r = 0; r < c.rows; ++r) {
      std::vector<double> xr(x.begin() + size_t{r} * c.xs, x.begin() + size_t{r} * c.xs + c.n);
      const double inv = InvRms(xr.data(), c.n, 1e-6);
      for (uint32_t i = 0; i < c.hs; ++i) {
        const size_t at = size_t{r} * c.hs + i;
        if (i >= c.n) {  // padding between rows stays untouched
          EXPECT_EQ(y[at], h[at]);
          continue;
        }
        const double v = (h[at] + xr[i] * inv * w[i]) * c.scale;
        got.push_back(y[at]);
        want.push_back(v);
        scale.push_back(std::fabs(h[at]) + std::fabs(xr[i] * inv * w[i]));
      }
    }
    ExpectClose(got, want, scale, 2e-6, 1e-6, "norm_add n=" + std::to_string(c.n));
    // The same update with its next norms (1 or 2 copies): h as above, the copies normalised.
    const uint32_t count = c.n % 2 + 1;
    const std::vector<float> w0 = RandomFloats(c.n, 43, 0.5f, 1.5f);
    const std::vector<float> w1 = RandomFloats(c.n, 44, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh2, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw0, UploadFloats(*d_, w0));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw1, UploadFloats(*d_, w1));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bnn,
        Buffer::Create(*d_->device, size_t{c.rows} * count * c.n * 4, MemoryKind::kScratch));
    const BufferRange rw0(bw0), rw1(bw1), rnn(bnn);
    const Kernels::NextNorms nn{{&rw0, &rw1}, count, &rnn};
    GARNET_ASSERT_OK(k().RmsNormAdd(rec(), s, bh2, bx, bw, &nn));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y2, DownloadFloats(*d_, bh2, h.size()));
    EXPECT_EQ(y2, y) << "norm_add with next norms n=" << c.n;
    ExpectNextNormsOf(y2, c.n, c.rows, c.hs, {&w0, &w1}, count, *d_, bnn,
                      "norm_add next norms n=" + std::to_string(c.n));
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  Kernels::NormAddShape s{100, 2};
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, BufferRange(b, 0, 800), BufferRange(b, 400, 800),
                             BufferRange(b, 3200, 400))
                  .IsInvalidArgument());  // x overlaps h
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, BufferRange(b, 0, 800), BufferRange(b, 800, 796),
                             BufferRange(b, 3200, 400))
                  .IsInvalidArgument());  // x too short
  const BufferRange h(b, 0, 800), x(b, 800, 800), w(b, 3200, 400), nn_w(b, 3600, 400);
  Kernels::NextNorms nn{{&nn_w, nullptr}, 1, &x};
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, h, x, w, &nn).IsInvalidArgument());  // out overlaps x
  const BufferRange out(b, 1600, 800);
  nn.out = &out;
  nn.count = 2;
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, h, x, w, &nn).IsInvalidArgument());  // no second weight
  nn.count = 1;
  const BufferRange over_w(b, 3400, 800);  // overlaps w and the next norm weight
  nn.out = &over_w;
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, h, x, w, &nn).IsInvalidArgument());
  nn.out = &out;
  GARNET_ASSERT_OK(k().RmsNormAdd(rec(), s, h, x, w, &nn));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  nn.count = 3;
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, h, x, w, &nn).IsInvalidArgument());
  s.rows = 0;
  EXPECT_TRUE(k().RmsNormAdd(rec(), s, b, b, b).IsInvalidArgument());
}

TEST_P(KernelTest, MoeTailCombinesNormsAddsAndScales) {
  struct Case {
    uint32_t n, k, t;
    float scale;
  };
  // The register path (n <= 4 x the workgroup: 1024 wide for up to 8 tokens, else 256) and the
  // loop (5000 elements on 9 tokens).
  for (const Case& c : {Case{2817, 8, 3, 0.5f}, Case{33, 3, 70, 1.0f}, Case{1, 1, 2, 1.5f},
                        Case{5000, 9, 9, 1.0f}}) {
    const uint32_t n = c.n, K = c.k, T = c.t;
    const std::vector<float> h = RandomFloats(size_t{T} * n, 50 + n, -2, 2);
    const std::vector<float> dense = RandomFloats(size_t{T} * n, 51 + n, -3, 3);
    const std::vector<float> down = RandomFloats(size_t{T} * K * n, 52 + n, -3, 3);
    std::vector<float> wt = RandomFloats(size_t{T} * K, 53 + n, 0.0f, 1.0f);
    wt[0] = 0.0f;  // an empty slot: its row must not reach the sum, even when it holds NaN
    std::vector<float> down_nan = down;
    for (uint32_t j = 0; j < n; ++j) down_nan[j] = std::nanf("");
    const std::vector<float> w1 = RandomFloats(n, 54, 0.5f, 1.5f);
    const std::vector<float> w2 = RandomFloats(n, 55, 0.5f, 1.5f);
    const std::vector<float> w = RandomFloats(n, 56, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bd, UploadFloats(*d_, dense));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bdown, UploadFloats(*d_, down_nan));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bwt, UploadFloats(*d_, wt));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw1, UploadFloats(*d_, w1));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw2, UploadFloats(*d_, w2));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, w));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bmo, Buffer::Create(*d_->device, size_t{T} * n * 4, MemoryKind::kScratch));
    Kernels::MoeTailShape s{n, K, T, 1e-6f, c.scale};
    GARNET_ASSERT_OK(k().MoeTail(rec(), s, bh, bd, bdown, bwt, bmo, bw1, bw2, bw));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> gh, DownloadFloats(*d_, bh, h.size()));
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> gy, DownloadFloats(*d_, bd, dense.size()));
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> gm, DownloadFloats(*d_, bmo, dense.size()));
    std::vector<float> got;
    std::vector<double> want, scale;
    for (uint32_t t = 0; t < T; ++t) {
      std::vector<double> m(n, 0.0), d(n), y(n), ms(n, 0.0);
      for (uint32_t j = 0; j < n; ++j) {
        d[j] = dense[size_t{t} * n + j];
        for (uint32_t i = 0; i < K; ++i) {
          const double wi = wt[size_t{t} * K + i];
          if (wi == 0.0) continue;
          m[j] += wi * down[(size_t{t} * K + i) * n + j];
          ms[j] += std::fabs(wi * down[(size_t{t} * K + i) * n + j]);
        }
      }
      const double rd = InvRms(d.data(), n, 1e-6), rm = InvRms(m.data(), n, 1e-6);
      for (uint32_t j = 0; j < n; ++j) y[j] = d[j] * rd * w1[j] + m[j] * rm * w2[j];
      const double ry = InvRms(y.data(), n, 1e-6);
      for (uint32_t j = 0; j < n; ++j) {
        const size_t at = size_t{t} * n + j;
        got.push_back(gm[at]);
        want.push_back(m[j]);
        scale.push_back(ms[j]);
        got.push_back(gy[at]);
        want.push_back(y[j]);
        scale.push_back(std::fabs(d[j] * rd * w1[j]) + std::fabs(m[j] * rm * w2[j]) +
                        ms[j] * rm * w2[j]);
        got.push_back(gh[at]);
        want.push_back((h[at] + y[j] * ry * w[j]) * c.scale);
        scale.push_back(std::fabs(h[at]) + std::fabs(y[j] * ry * w[j]) + 1e-3);
      }
    }
    ExpectClose(got, want, scale, 1e-5, 1e-6,
                "moe_tail n=" + std::to_string(n) + " k=" + std::to_string(K));
    // The same with its next norms (1 or 2 copies): h as above, the copies normalised.
    const uint32_t count = n % 2 + 1;
    const std::vector<float> nw0 = RandomFloats(n, 57, 0.5f, 1.5f);
    const std::vector<float> nw1 = RandomFloats(n, 58, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh2, UploadFloats(*d_, h));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bd2, UploadFloats(*d_, dense));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bnw0, UploadFloats(*d_, nw0));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bnw1, UploadFloats(*d_, nw1));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bnn, Buffer::Create(*d_->device, size_t{T} * count * n * 4, MemoryKind::kScratch));
    const BufferRange rw0(bnw0), rw1(bnw1), rnn(bnn);
    const Kernels::NextNorms nn{{&rw0, &rw1}, count, &rnn};
    GARNET_ASSERT_OK(k().MoeTail(rec(), s, bh2, bd2, bdown, bwt, bmo, bw1, bw2, bw, &nn));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> gh2, DownloadFloats(*d_, bh2, h.size()));
    EXPECT_EQ(gh2, gh) << "moe_tail with next norms n=" << n;
    ExpectNextNormsOf(gh2, n, T, n, {&nw0, &nw1}, count, *d_, bnn,
                      "moe_tail next norms n=" + std::to_string(n));
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 1 << 16, MemoryKind::kScratch));
  Kernels::MoeTailShape s{100, 2, 1};
  const BufferRange h(b, 0, 400), dense(b, 512, 400), down(b, 1024, 800), wt(b, 2048, 8),
      mo(b, 4096, 400), w1(b, 8192, 400);
  GARNET_ASSERT_OK(k().MoeTail(rec(), s, h, dense, down, wt, mo, w1, w1, w1));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  EXPECT_TRUE(k().MoeTail(rec(), s, h, BufferRange(b, 256, 400), down, wt, mo, w1, w1, w1)
                  .IsInvalidArgument());  // dense overlaps h
  EXPECT_TRUE(k().MoeTail(rec(), s, h, dense, BufferRange(b, 1024, 796), wt, mo, w1, w1, w1)
                  .IsInvalidArgument());  // down holds one slot row too few
  s.k = 0;
  EXPECT_TRUE(k().MoeTail(rec(), s, h, dense, down, wt, mo, w1, w1, w1).IsInvalidArgument());
}

// q8x (Kernels::Q8xBytes): n int8 values, then per 32-block a vec4 (d, d * the sum of its first
// 16 values, d * the sum of its last 16, 0).
struct Q8x {
  std::vector<int8_t> q;
  std::vector<float> meta;
};
Q8x SplitQ8x(const std::vector<uint8_t>& bytes, uint32_t n, size_t at) {
  Q8x r;
  r.q.resize(n);
  r.meta.resize(n / 8);
  std::memcpy(r.q.data(), bytes.data() + at, n);
  std::memcpy(r.meta.data(), bytes.data() + at + n, size_t{n} / 8 * 4);
  return r;
}
// The host's q8x of x (what the residual kernels write), and its dequantised values.
std::vector<uint8_t> HostQ8x(const std::vector<float>& x, std::vector<double>* deq) {
  const uint32_t n = static_cast<uint32_t>(x.size());
  std::vector<uint8_t> out(Kernels::Q8xBytes(n));
  deq->assign(n, 0.0);
  for (uint32_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (uint32_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float d = amax / 127.0f;
    int sum[2] = {0, 0};
    for (uint32_t i = 0; i < 32; ++i) {
      const int q =
          amax > 0 ? std::clamp(static_cast<int>(std::nearbyint(x[b * 32 + i] * (127.0f / amax))),
                                -127, 127)
                   : 0;
      out[b * 32 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
      sum[i / 16] += q;
      (*deq)[b * 32 + i] = double(d) * q;
    }
    const float meta[4] = {d, d * float(sum[0]), d * float(sum[1]), 0.0f};
    std::memcpy(&out[n + b * 16], meta, 16);
  }
  return out;
}
// A q8x copy written by a residual kernel against the f32 copy it wrote beside it: per block the
// scale of its largest magnitude, every value rounded to the nearest step (a tie either way), and
// the half sums of its own values.
void ExpectQ8xOf(const std::vector<float>& copy, const Q8x& g, const std::string& what) {
  const uint32_t n = static_cast<uint32_t>(copy.size());
  int bad = 0;
  for (uint32_t b = 0; b < n / 32 && bad < 5; ++b) {
    double amax = 0;
    for (uint32_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(copy[b * 32 + i])));
    const float* m = &g.meta[b * 4];
    const double d = m[0];
    if (!(std::fabs(d - amax / 127) <= 1e-6 * amax / 127)) {
      ++bad;
      ADD_FAILURE() << what << " block " << b << ": scale " << d << " want " << amax / 127;
      continue;
    }
    long sum[2] = {0, 0};
    for (uint32_t i = 0; i < 32; ++i) {
      const int q = g.q[b * 32 + i];
      sum[i / 16] += q;
      const double want = d > 0 ? copy[b * 32 + i] / d : 0.0;
      if (q < -127 || !(std::fabs(q - want) <= 0.5 + 1e-4) && ++bad <= 5) {
        ADD_FAILURE() << what << " block " << b << " value " << i << ": " << q << " want " << want;
      }
    }
    for (int h = 0; h < 2; ++h) {
      EXPECT_NEAR(m[1 + h], d * sum[h], 1e-6 * d * 2048 + 1e-30) << what << " block " << b;
    }
    EXPECT_EQ(m[3], 0.0f) << what << " block " << b;
  }
  EXPECT_EQ(bad, 0) << what;
  std::printf("  %s: %u blocks checked\n", what.c_str(), n / 32);
}

// The residual kernels' q8x copies (NextNorms::q8) and the Q4_K matvecs that read them (xq).
TEST_P(KernelTest, NextNormsQ8FeedTheXqMatvecs) {
  // Producers: RmsNormAdd and MoeTail on one row (decode), with one and two copies; a next norm
  // weight of zeros over one block makes that block all zeros (scale 0, values 0).
  for (const uint32_t n : {2816u, 96u}) {
    if (!k().NextNormsQ8Available(n, 1)) {
      std::printf("  NO Q8X PRODUCERS on this device (n=%u): not tested\n", n);
      continue;
    }
    for (const uint32_t count : {1u, 2u}) {
      for (const bool tail : {false, true}) {
        const std::string what =
            std::string(tail ? "moe_tail" : "norm_add") + " q8x n=" + std::to_string(n) +
            " copies=" + std::to_string(count) + " (" +
            k().NextNormsQ8Suffix(tail ? "moe_tail_nn_q8" : "norm_add_nn_q8") + ")";
        const std::vector<float> h = RandomFloats(n, 60 + n, -2, 2);
        const std::vector<float> x = RandomFloats(size_t{8} * n, 61 + n, -3, 3);
        std::vector<float> nw0 = RandomFloats(n, 62, 0.5f, 1.5f);
        const std::vector<float> nw1 = RandomFloats(n, 63, -1.5f, 1.5f);
        for (uint32_t i = 32; i < 64; ++i) nw0[i] = 0.0f;
        const std::vector<float> w = RandomFloats(n, 64, 0.5f, 1.5f);
        const std::vector<float> wt = {0.5f, 0.25f};
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bh, UploadFloats(*d_, h));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bx, UploadFloats(*d_, x));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bd, UploadFloats(*d_, x));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, w));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bwt, UploadFloats(*d_, wt));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw0, UploadFloats(*d_, nw0));
        GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw1, UploadFloats(*d_, nw1));
        GARNET_ASSERT_OK_AND_ASSIGN(
            Buffer bmo, Buffer::Create(*d_->device, size_t{n} * 4, MemoryKind::kScratch));
        GARNET_ASSERT_OK_AND_ASSIGN(
            Buffer bnn, Buffer::Create(*d_->device, size_t{count} * n * 4, MemoryKind::kScratch));
        GARNET_ASSERT_OK_AND_ASSIGN(
            Buffer bq,
            Buffer::Create(*d_->device, count * Kernels::Q8xBytes(n) + 64, MemoryKind::kScratch));
        const BufferRange rw0(bw0), rw1(bw1), rnn(bnn), rq(bq, 0, count * Kernels::Q8xBytes(n));
        const Kernels::NextNorms nn{{&rw0, &rw1}, count, &rnn, &rq};
        if (tail) {
          const BufferRange down(bx, 0, size_t{2} * n * 4);
          GARNET_ASSERT_OK(
              k().MoeTail(rec(), {n, 2, 1, 1e-6f, 1.0f}, bh, bd, down, bwt, bmo, bw, bw, bw, &nn));
        } else {
          GARNET_ASSERT_OK(k().RmsNormAdd(rec(), {n, 1, n, n, 1e-6f, 1.0f}, bh, bx, bw, &nn));
        }
        GARNET_ASSERT_OK(rec().SubmitAndWait());
        GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> copies,
                                    DownloadFloats(*d_, bnn, size_t{count} * n));
        std::vector<uint8_t> qb(count * Kernels::Q8xBytes(n));
        GARNET_ASSERT_OK(d_->transfer->Download(bq, 0, qb.data(), qb.size()));
        for (uint32_t j = 0; j < count; ++j) {
          const std::vector<float> cj(copies.begin() + size_t{j} * n,
                                      copies.begin() + size_t{j + 1} * n);
          const Q8x g = SplitQ8x(qb, n, j * Kernels::Q8xBytes(n));
          ExpectQ8xOf(cj, g, what + " copy " + std::to_string(j));
          if (j == 0) {  // the zero block
            EXPECT_EQ(g.meta[4], 0.0f) << what;
            for (uint32_t i = 32; i < 64; ++i) EXPECT_EQ(g.q[i], 0) << what << " value " << i;
          }
        }
      }
    }
  }
  // Bad q8 ranges: too short, overlapping the copies.
  {
    const uint32_t n = 96;
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 8192, MemoryKind::kScratch));
    const BufferRange h(b, 0, 384), x(b, 512, 384), w(b, 1024, 384), out(b, 1536, 384),
        short_q(b, 2048, Kernels::Q8xBytes(n) - 16), over_q(b, 1536, Kernels::Q8xBytes(n));
    Kernels::NextNorms nn{{&w, nullptr}, 1, &out, &short_q};
    EXPECT_TRUE(k().RmsNormAdd(rec(), {n, 1}, h, x, w, &nn).IsInvalidArgument());
    nn.q8 = &over_q;
    EXPECT_TRUE(k().RmsNormAdd(rec(), {n, 1}, h, x, w, &nn).IsInvalidArgument());
  }

  // Consumers: x given as zeros and as q8x, so a kernel that read x would return zeros.
  if (!k().MatvecXqAvailable(GgmlType::kQ4_K)) {
    std::printf("  NO XQ MATVECS on this device: not tested\n");
    return;
  }
  const GgmlType type = GgmlType::kQ4_K;
  const uint32_t in = 512, out = 37;
  const std::vector<float> x = RandomFloats(in, 70, -2, 2);
  std::vector<double> xd;
  const std::vector<uint8_t> xq = HostQ8x(x, &xd);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bzero, UploadFloats(*d_, std::vector<float>(in, 0.0f)));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bxq, UploadBytes(*d_, xq.data(), xq.size()));
  const BufferRange rxq(bxq, 0, xq.size());
  // W . xd for each row of wf (out rows of in), with the magnitudes for the tolerance.
  const auto oracle = [&](const float* wf, std::vector<double>* want, std::vector<double>* mag) {
    for (uint32_t r = 0; r < out; ++r) {
      double acc = 0, m = 0;
      for (uint32_t i = 0; i < in; ++i) {
        acc += double(wf[size_t{r} * in + i]) * xd[i];
        m += std::fabs(double(wf[size_t{r} * in + i]) * xd[i]);
      }
      want->push_back(acc);
      mag->push_back(m);
    }
  };
  {  // Matvec
    const std::vector<uint8_t> w = RandomWeights(type, in, out, 71);
    const std::vector<float> wf = Dequantize(type, w, in, out);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, w.data(), w.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                                Buffer::Create(*d_->device, out * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK(k().Matvec(rec(), type, {in, out}, bw, bzero, by, &rxq));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, out));
    std::vector<double> want, mag;
    oracle(wf.data(), &want, &mag);
    ExpectClose(y, want, mag, 1e-5, 1e-7, "matvec q4_k xq");
  }
  {  // MatvecGeglu: gate and up rows in one buffer, both on 16-byte words
    const std::vector<uint8_t> wg = RandomWeights(type, in, out, 72);
    const std::vector<uint8_t> wu = RandomWeights(type, in, out, 73);
    const std::vector<float> gf = Dequantize(type, wg, in, out);
    const std::vector<float> uf = Dequantize(type, wu, in, out);
    const size_t gate_at = (wu.size() + 255) / 256 * 256;
    std::vector<uint8_t> all(gate_at + wg.size(), 0);
    std::memcpy(all.data(), wu.data(), wu.size());
    std::memcpy(&all[gate_at], wg.data(), wg.size());
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                UploadBytes(*d_, all.data(), all.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                                Buffer::Create(*d_->device, out * 4, MemoryKind::kScratch));
    const BufferRange gate(bw, gate_at, wg.size()), up(bw, 0, wu.size());
    GARNET_ASSERT_OK(k().MatvecGeglu(rec(), type, {in, out}, gate, up, bzero, nullptr, by, &rxq));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, out));
    std::vector<double> g, mg, u, mu, want, scale;
    oracle(gf.data(), &g, &mg);
    oracle(uf.data(), &u, &mu);
    for (uint32_t r = 0; r < out; ++r) {
      const double gelu =
          0.5 * g[r] * (1 + std::tanh(0.7978845608028654 * (g[r] + 0.044715 * g[r] * g[r] * g[r])));
      want.push_back(gelu * u[r]);
      scale.push_back(1.2 * mg[r] * std::fabs(u[r]) + std::fabs(gelu) * mu[r]);
    }
    ExpectClose(y, want, scale, 1e-5, 1e-7, "matvec_geglu q4_k xq");
  }
  {  // MatvecId: every slot reads the one x
    const uint32_t n_experts = 4;
    const ExpertStack es = RandomExperts(type, in, out, n_experts, 74);
    const std::vector<int32_t> ids = {3, -1, 0, 3};
    const uint32_t slots = static_cast<uint32_t>(ids.size());
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer bw, UploadBytes(*d_, es.bytes.data(), es.bytes.size(), MemoryKind::kWeights));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi, UploadBytes(*d_, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(
        Buffer by, Buffer::Create(*d_->device, size_t{slots} * out * 4, MemoryKind::kScratch));
    MatvecIdShape s{in, out, n_experts, slots, 0, 0, es.stride};
    GARNET_ASSERT_OK(k().MatvecId(rec(), type, s, bw, bzero, bi, by, &rxq));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> y, DownloadFloats(*d_, by, size_t{slots} * out));
    std::vector<double> want, mag;
    for (const int32_t id : ids) {
      if (id < 0) {
        want.insert(want.end(), out, 0.0);
        mag.insert(mag.end(), out, 0.0);
      } else {
        oracle(es.values[id].data(), &want, &mag);
      }
    }
    ExpectClose(y, want, mag, 1e-5, 1e-7, "matvec_id q4_k xq");
  }
  // A q8x range shorter than its input is an error, not a read past it.
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                              Buffer::Create(*d_->device, 1 << 16, MemoryKind::kWeights));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer by,
                              Buffer::Create(*d_->device, out * 4, MemoryKind::kScratch));
  const BufferRange short_xq(bxq, 0, xq.size() - 16);
  EXPECT_TRUE(k().Matvec(rec(), type, {in, out}, bw, bzero, by, &short_xq).IsInvalidArgument());
}

TEST_P(KernelTest, RecorderFlushKeepsDependenciesAcrossParts) {
  const uint32_t n = 5000;
  const std::vector<float> a = RandomFloats(n, 710);
  const std::vector<float> b = RandomFloats(n, 711);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer ba, UploadFloats(*d_, a));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bb, UploadFloats(*d_, b));
  GARNET_ASSERT_OK(rec().Flush());  // nothing recorded: no-op
  // a = (a + b) * 0.5, six times, each step in its own submitted part (read-after-write on a
  // across every cut), and the parts grow the Recorder's command-buffer list the first time.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 6; ++i) {
      GARNET_ASSERT_OK(k().Binary(rec(), Kernels::BinaryOp::kAdd, n, n, 0.5f, ba, bb, ba));
      if (i < 5) GARNET_ASSERT_OK(rec().Flush());
    }
    GARNET_ASSERT_OK(rec().SubmitAndWait());
  }
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> got, DownloadFloats(*d_, ba, n));
  for (uint32_t i = 0; i < n; ++i) {
    float v = a[i];
    for (int s = 0; s < 12; ++s) v = (v + b[i]) * 0.5f;
    ASSERT_FLOAT_EQ(got[i], v) << i;
  }
  // An error latched after a flush: Submit reports it once the submitted part has finished, and
  // the Recorder is reusable.
  GARNET_ASSERT_OK(k().Binary(rec(), Kernels::BinaryOp::kAdd, n, n, 1.0f, ba, bb, ba));
  GARNET_ASSERT_OK(rec().Flush());
  GARNET_ASSERT_OK_AND_ASSIGN(const Pipeline* p, d_->device->pipelines().Get(PipelineDesc{
                                                     "binary", 3, 0b100, 16, {256}, {256, 1, 1}}));
  const BufferRange two[] = {ba, bb};  // the shader has three bindings: latched error
  EXPECT_FALSE(rec().Dispatch(*p, two, std::span<const uint8_t>(), 1).ok());
  EXPECT_FALSE(rec().SubmitAndWait().ok());
  GARNET_ASSERT_OK(k().Binary(rec(), Kernels::BinaryOp::kMul, n, n, 1.0f, ba, bb, bb));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
}

TEST_P(KernelTest, MoeRouteSoftmaxTopKRenormScaleTiesAndNaN) {
  struct Case {
    uint32_t e, k;
    bool scale;
  };
  for (const Case& c : {Case{128, 8, true}, Case{37, 5, false}, Case{300, 1, true}}) {
    const uint32_t t_n = 4;
    std::vector<float> logits = RandomFloats(size_t{t_n} * c.e, 800 + c.e, -4, 4);
    // Token 1: an exact tie at the top (lower id must win). Token 3: a NaN logit.
    logits[c.e + 3] = logits[c.e + 9] = 10.0f;
    logits[3 * c.e + 2] = NAN;
    const std::vector<float> scale = RandomFloats(c.e, 801, 0.5f, 1.5f);
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bl, UploadFloats(*d_, logits));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bs, UploadFloats(*d_, scale));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bi,
                                Buffer::Create(*d_->device, t_n * c.k * 4, MemoryKind::kScratch));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw,
                                Buffer::Create(*d_->device, t_n * c.k * 4, MemoryKind::kScratch));
    const BufferRange sr(bs);
    GARNET_ASSERT_OK(k().MoeRoute(rec(), c.e, c.k, t_n, bl, c.scale ? &sr : nullptr, bi, bw));
    GARNET_ASSERT_OK(rec().SubmitAndWait());
    std::vector<int32_t> ids(t_n * c.k);
    GARNET_ASSERT_OK(d_->transfer->Download(bi, 0, ids.data(), ids.size() * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> w, DownloadFloats(*d_, bw, t_n * c.k));
    for (uint32_t t = 0; t < t_n; ++t) {
      const std::string what = std::to_string(c.e) + " experts top " + std::to_string(c.k) +
                               " token " + std::to_string(t);
      if (t == 3) {  // NaN: every slot empty
        for (uint32_t j = 0; j < c.k; ++j) {
          EXPECT_EQ(ids[t * c.k + j], -1) << what;
          EXPECT_EQ(w[t * c.k + j], 0.0f) << what;
        }
        continue;
      }
      const float* l = &logits[size_t{t} * c.e];
      double mx = -1e300, sum = 0;
      for (uint32_t e = 0; e < c.e; ++e) mx = std::max(mx, double(l[e]));
      std::vector<double> pr(c.e);
      for (uint32_t e = 0; e < c.e; ++e) sum += (pr[e] = std::exp(l[e] - mx));
      for (double& v : pr) v /= sum;
      std::vector<int32_t> order(c.e);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return pr[a] > pr[b]; });
      double top = 0;
      for (uint32_t j = 0; j < c.k; ++j) top += pr[order[j]];
      for (uint32_t j = 0; j < c.k; ++j) {
        ASSERT_EQ(ids[t * c.k + j], order[j]) << what << " slot " << j;
        const double want = pr[order[j]] / top * (c.scale ? scale[order[j]] : 1.0);
        EXPECT_NEAR(w[t * c.k + j], want, 1e-5 * want + 1e-7) << what << " slot " << j;
      }
      if (t == 1) {
        EXPECT_EQ(ids[t * c.k], 3) << what;  // the tie goes to the lower id
        if (c.k > 1) EXPECT_EQ(ids[t * c.k + 1], 9) << what;
      }
    }
  }
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d_->device, 4096, MemoryKind::kScratch));
  EXPECT_TRUE(k().MoeRoute(rec(), 8, 9, 1, b, nullptr, b, b).IsInvalidArgument());
  EXPECT_TRUE(k().MoeRoute(rec(), 2000, 8, 1, b, nullptr, b, b).IsInvalidArgument());
}

INSTANTIATE_TEST_SUITE_P(Devices, KernelTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("Fallback") : std::string("Native");
                         });

}  // namespace
}  // namespace garnet::vk
