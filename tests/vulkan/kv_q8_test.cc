// The q8_0 KV cache on the GPU (engine/vulkan/kv_format.h): kv_store and kv_norm_store quantise
// as the CPU's model::KvQuantizeQ8_0 does, and attn_decode reads the planar quants + scales.
// Part of vulkan_kernels_test (one device, pipelines compiled once).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/quant/fp16.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/model_ops.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

using testing::DownloadFloats;
using testing::RandomFloats;
using testing::UploadBytes;
using testing::UploadFloats;
using KvQ8Test = garnet::vk::testing::DeviceParamTest;

// A q8_0 cache image as the format defines it (quants, then one f16 scale per 32 values), made
// on the host with the format's rules (kv_format.h; the same as model::KvQuantizeQ8_0).
struct Q8Image {
  std::vector<int8_t> q;
  std::vector<uint16_t> d;  // one per 32 values
  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> b(q.size() + d.size() * 2);
    std::memcpy(b.data(), q.data(), q.size());
    std::memcpy(b.data() + q.size(), d.data(), d.size() * 2);
    return b;
  }
  double At(size_t e) const { return double(F16ToF32(d[e / 32])) * q[e]; }
};

void QuantBlock(const float* x, int8_t* q, uint16_t* d) {
  float amax = 0;
  bool finite = true;
  for (int i = 0; i < 32; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (!finite) {
    *d = 0x7e00;
    std::fill(q, q + 32, 0);
    return;
  }
  uint16_t h = F32ToF16(amax / 127.0f);
  if ((h & 0x7fff) == 0x7c00) h = 0x7bff;
  const float df = F16ToF32(h);
  const float id = df != 0 ? 1.0f / df : 0.0f;
  for (int i = 0; i < 32; ++i) {
    q[i] = static_cast<int8_t>(std::nearbyint(std::clamp(x[i] * id, -127.0f, 127.0f)));
  }
  *d = h;
}

Q8Image Quantise(const std::vector<float>& x) {
  Q8Image img;
  img.q.resize(x.size());
  img.d.resize(x.size() / 32);
  for (size_t b = 0; b < img.d.size(); ++b) QuantBlock(&x[b * 32], &img.q[b * 32], &img.d[b]);
  return img;
}

Result<Q8Image> Download(testing::VkTestDevice& dev, const Buffer& b, size_t elems) {
  GARNET_ASSIGN_OR_RETURN(std::vector<float> words, DownloadFloats(dev, b, b.size() / 4));
  Q8Image img;
  img.q.resize(elems);
  img.d.resize(elems / 32);
  std::memcpy(img.q.data(), words.data(), elems);
  std::memcpy(img.d.data(), reinterpret_cast<const uint8_t*>(words.data()) + elems,
              img.d.size() * 2);
  return img;
}

// kv_store: tokens at wrapping and skipped positions; head_dim 32, so the scales of neighbouring
// slots share 32-bit words and are written by different invocations (a torn half would show);
// one block holds a NaN and must read back as NaN; unwritten slots keep their bytes.
TEST_P(KvQ8Test, KvStoreQuantisesLikeTheCpu) {
  constexpr uint32_t kD = 32, kHeads = 3, kRing = 5;
  const std::vector<int32_t> pos = {0, 1, 7, -1, 3};  // 7 wraps to slot 2; -1 is skipped
  const uint32_t tokens = static_cast<uint32_t>(pos.size());
  const uint32_t row = kHeads * kD, stride = row + 8;
  std::vector<float> k = RandomFloats(size_t{tokens} * stride, 901, -3, 3);
  std::vector<float> v = RandomFloats(size_t{tokens} * stride, 902, -0.01f, 0.01f);
  k[size_t{4} * stride + kD + 5] = std::numeric_limits<float>::quiet_NaN();  // token 4, head 1
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bk, UploadFloats(*d_, k));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bv, UploadFloats(*d_, v));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, pos.data(), pos.size() * 4));
  const size_t elems = size_t{row} * kRing;
  const uint64_t bytes = KvCacheBytes(KvFormat::kQ8_0, elems);
  ASSERT_EQ(bytes, elems / 32 * 34 + 2);  // 15 scales: the last word half used
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer kc, Buffer::Create(*d_->device, bytes, MemoryKind::kKv));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer vc, Buffer::Create(*d_->device, bytes, MemoryKind::kKv));
  GARNET_ASSERT_OK(rec().Fill(kc, 0, bytes, 0x5a5a5a5au));
  GARNET_ASSERT_OK(rec().Fill(vc, 0, bytes, 0x5a5a5a5au));
  KvStoreShape s{kD, kHeads, tokens, kRing, stride};
  s.format = KvFormat::kQ8_0;
  GARNET_ASSERT_OK(KvStore(*d_->device, rec(), s, bk, bv, bp, kc, vc));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(Q8Image gk, Download(*d_, kc, elems));
  GARNET_ASSERT_OK_AND_ASSIGN(Q8Image gv, Download(*d_, vc, elems));
  std::vector<bool> written(kRing, false);
  int off_by_one = 0;
  for (uint32_t t = 0; t < tokens; ++t) {
    if (pos[t] < 0) continue;
    const uint32_t slot = static_cast<uint32_t>(pos[t]) % kRing;
    written[slot] = true;
    for (uint32_t g = 0; g < kHeads; ++g) {
      const size_t dst = (size_t{g} * kRing + slot) * kD;
      for (const auto& [src, got] : {std::pair{&k, &gk}, std::pair{&v, &gv}}) {
        std::vector<float> x(src->begin() + t * stride + g * kD,
                             src->begin() + t * stride + (g + 1) * kD);
        int8_t q[32];
        uint16_t d;
        QuantBlock(x.data(), q, &d);
        EXPECT_EQ(got->d[dst / 32], d) << "token " << t << " head " << g;
        for (uint32_t i = 0; i < kD; ++i) {
          const int diff = std::abs(int(got->q[dst + i]) - int(q[i]));
          EXPECT_LE(diff, 1) << "token " << t << " head " << g << " element " << i;
          off_by_one += diff;
        }
        if (t == 4 && g == 1 && src == &k) {
          EXPECT_TRUE(std::isnan(got->At(dst))) << "a NaN block reads back as NaN";
        }
      }
    }
  }
  // Only an exact tie after a differently rounded division can move a quant.
  EXPECT_LE(off_by_one, 2);
  for (uint32_t slot = 0; slot < kRing; ++slot) {
    if (written[slot]) continue;
    for (uint32_t g = 0; g < kHeads; ++g) {
      const size_t e = (size_t{g} * kRing + slot) * kD;
      EXPECT_EQ(static_cast<uint8_t>(gk.q[e]), 0x5a) << "slot " << slot;
      EXPECT_EQ(gk.d[e / 32], 0x5a5a) << "slot " << slot;
    }
  }
  // A head dim that is not a whole number of blocks is refused.
  s = KvStoreShape{48, 1, 1, 4, 0};
  s.format = KvFormat::kQ8_0;
  EXPECT_TRUE(KvStore(*d_->device, rec(), s, bk, bv, bp, kc, vc).IsInvalidArgument());
}

// kv_norm_store's q8_0 variant: the normalised, rotated K and normalised V it stores read back
// within half a quantisation step of the double-precision values.
TEST_P(KvQ8Test, KvNormRopeStoreQuantisesTheNormedRows) {
  constexpr uint32_t kD = 256, kRot = 64, kHeads = 2, kRing = 6;
  const std::vector<int32_t> pos = {2, 9, -1};
  const uint32_t tokens = static_cast<uint32_t>(pos.size());
  const uint32_t row = kHeads * kD;
  const std::vector<float> kx = RandomFloats(size_t{tokens} * row, 911, -4, 4);
  const std::vector<float> vx = RandomFloats(size_t{tokens} * row, 912, -4, 4);
  const std::vector<float> kw = RandomFloats(kD, 913, 0.5f, 1.5f);
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> table, RopeThetaTable(kRot, 1e4, {}));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bk, UploadFloats(*d_, kx));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bv, UploadFloats(*d_, vx));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bw, UploadFloats(*d_, kw));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, pos.data(), pos.size() * 4));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer bt, UploadFloats(*d_, table));
  const size_t elems = size_t{row} * kRing;
  const uint64_t bytes = KvCacheBytes(KvFormat::kQ8_0, elems);
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer kc, Buffer::Create(*d_->device, bytes, MemoryKind::kKv));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer vc, Buffer::Create(*d_->device, bytes, MemoryKind::kKv));
  KvStoreShape s{kD, kHeads, tokens, kRing, 0};
  s.format = KvFormat::kQ8_0;
  GARNET_ASSERT_OK(KvNormRopeStore(*d_->device, rec(), s, kRot, 1e-6f, bk, bv, bp, bt, bw, kc, vc));
  GARNET_ASSERT_OK(rec().SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(Q8Image gk, Download(*d_, kc, elems));
  GARNET_ASSERT_OK_AND_ASSIGN(Q8Image gv, Download(*d_, vc, elems));
  for (uint32_t t = 0; t < tokens; ++t) {
    if (pos[t] < 0) continue;
    const uint32_t slot = static_cast<uint32_t>(pos[t]) % kRing;
    for (uint32_t g = 0; g < kHeads; ++g) {
      std::vector<double> kv(kD), vv(kD);
      double sk = 0, sv = 0;
      for (uint32_t d = 0; d < kD; ++d) {
        kv[d] = kx[t * row + g * kD + d];
        vv[d] = vx[t * row + g * kD + d];
        sk += kv[d] * kv[d];
        sv += vv[d] * vv[d];
      }
      const double ik = 1 / std::sqrt(sk / kD + 1e-6), iv = 1 / std::sqrt(sv / kD + 1e-6);
      for (uint32_t d = 0; d < kD; ++d) {
        kv[d] *= ik * kw[d];
        vv[d] *= iv;
      }
      std::vector<double> kr = kv;
      for (uint32_t i = 0; i < kRot / 2; ++i) {
        const double a = pos[t] * std::pow(1e4, -2.0 * i / kRot);
        kr[i] = kv[i] * std::cos(a) - kv[i + kRot / 2] * std::sin(a);
        kr[i + kRot / 2] = kv[i + kRot / 2] * std::cos(a) + kv[i] * std::sin(a);
      }
      const size_t dst = (size_t{g} * kRing + slot) * kD;
      for (const auto& [want, got] : {std::pair{&kr, &gk}, std::pair{&vv, &gv}}) {
        for (uint32_t d = 0; d < kD; ++d) {
          const double step = F16ToF32(got->d[(dst + d) / 32]);
          EXPECT_LE(std::fabs(got->At(dst + d) - (*want)[d]), 0.5 * step * 1.01 + 1e-5)
              << "token " << t << " head " << g << " element " << d;
        }
      }
    }
  }
}

// attn_decode over a q8_0 cache: GQA, a sliding window over a wrapping ring, kv_first > 0, a
// query with no key, one pass and many splits, head dims 64 and 256.
TEST_P(KvQ8Test, AttentionDecodeReadsQ8Cache) {
  struct Case {
    uint32_t d, n_q, n_kv, ring, kv_first, window;
    std::vector<int32_t> pos;
  };
  for (const Case& c :
       {Case{256, 4, 2, 16, 0, 0, {10, 11, 12}}, Case{64, 3, 1, 40, 31, 12, {70, 65, -3}}}) {
    const uint32_t t_n = static_cast<uint32_t>(c.pos.size());
    const size_t q_n = size_t{t_n} * c.n_q * c.d, kv_n = size_t{c.n_kv} * c.ring * c.d;
    const std::vector<float> q = RandomFloats(q_n, 920 + c.d);
    const Q8Image kq = Quantise(RandomFloats(kv_n, 921 + c.d, -2, 2));
    const Q8Image vq = Quantise(RandomFloats(kv_n, 922 + c.d, -2, 2));
    const std::vector<uint8_t> kb = kq.Bytes(), vb = vq.Bytes();
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bq, UploadFloats(*d_, q));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bk, UploadBytes(*d_, kb.data(), kb.size(), MemoryKind::kKv));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bv, UploadBytes(*d_, vb.data(), vb.size(), MemoryKind::kKv));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bp, UploadBytes(*d_, c.pos.data(), t_n * 4));
    GARNET_ASSERT_OK_AND_ASSIGN(Buffer bo,
                                Buffer::Create(*d_->device, q_n * 4, MemoryKind::kScratch));
    // The oracle over the dequantised cache, in double precision.
    std::vector<double> want(q_n, 0.0);
    for (uint32_t t = 0; t < t_n; ++t) {
      const int64_t p = c.pos[t];
      int64_t lo = c.kv_first;
      if (c.window) lo = std::max<int64_t>(lo, p - c.window + 1);
      for (uint32_t h = 0; h < c.n_q; ++h) {
        const uint32_t g = h / (c.n_q / c.n_kv);
        std::vector<double> sc;
        double mx = -1e300;
        for (int64_t j = lo; j <= p; ++j) {
          const size_t base = (size_t{g} * c.ring + size_t(j % c.ring)) * c.d;
          double dot = 0;
          for (uint32_t e = 0; e < c.d; ++e)
            dot += double(q[(t * c.n_q + h) * c.d + e]) * kq.At(base + e);
          sc.push_back(dot);
          mx = std::max(mx, dot);
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int64_t j = lo; j <= p; ++j) {
          const size_t base = (size_t{g} * c.ring + size_t(j % c.ring)) * c.d;
          for (uint32_t e = 0; e < c.d; ++e) {
            want[(t * c.n_q + h) * c.d + e] += sc[j - lo] / sum * vq.At(base + e);
          }
        }
      }
    }
    AttentionShape s;
    s.head_dim = c.d;
    s.n_q_heads = c.n_q;
    s.n_kv_heads = c.n_kv;
    s.n_tokens = t_n;
    s.ring_size = c.ring;
    s.kv_first = c.kv_first;
    s.window = c.window;
    s.kv = KvFormat::kQ8_0;
    for (uint32_t split_keys : {0u, 5u}) {
      s.split_keys = split_keys;
      GARNET_ASSERT_OK_AND_ASSIGN(
          Buffer scratch,
          Buffer::Create(*d_->device, std::max<uint64_t>(AttentionScratchBytes(s), 4),
                         MemoryKind::kScratch));
      const BufferRange sr(scratch);
      GARNET_ASSERT_OK(rec().Fill(bo, 0, q_n * 4, 0x7fc00000u));  // NaN: every output is written
      GARNET_ASSERT_OK(k().AttentionDecode(rec(), s, bq, bk, bv, bp, bo, &sr));
      GARNET_ASSERT_OK(rec().SubmitAndWait());
      GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> o, DownloadFloats(*d_, bo, q_n));
      double worst = 0;
      for (size_t i = 0; i < q_n; ++i) {
        const double err = std::fabs(o[i] - want[i]);
        worst = std::max(worst, err);
        ASSERT_LE(err, 2e-5) << "d=" << c.d << " splits=" << AttentionSplits(s) << " [" << i << "]";
      }
      std::printf("  q8_0 attention d=%u, %u splits: worst error %.3g\n", c.d, AttentionSplits(s),
                  worst);
    }
    // The range must hold the scales too.
    const BufferRange short_k(bk, 0, kv_n);
    EXPECT_TRUE(k().AttentionDecode(rec(), s, bq, short_k, bv, bp, bo).IsInvalidArgument());
    // The tiled prefill kernel reads f16 only.
    EXPECT_TRUE(k().AttentionPrefill(rec(), s, bq, bk, bv, bp, bo).IsInvalidArgument());
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, KvQ8Test, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("Fallback") : std::string("Native");
                         });

}  // namespace
}  // namespace garnet::vk
