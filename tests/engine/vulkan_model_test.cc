// The Vulkan backend against the CPU backend on the tiny presets (f32 and f16 weights), and the
// fit planner's prediction against what the Vulkan backend allocates.
//
// One Vulkan device per binary (tests/vulkan/vk_test_env.h; lavapipe compiles pipelines slowly);
// skipped loudly when the machine has no Vulkan device. Token counts are small: lavapipe runs
// these forward passes ~300x slower than the CPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/model/cpu_backend.h"
#include "engine/model/engine.h"
#include "engine/model/vulkan_backend.h"
#include "engine/plan/planner.h"
#include "tests/engine/model_fixture.h"
#include "tests/vulkan/vk_test_env.h"

namespace garnet::model {
namespace {

using garnet::testing::TestModelPath;
using vk::MemoryKind;

// Test geometry: window 16 (tiny presets), ubatch 8, so the sliding ring has 24 cells and a
// context of 128 wraps it four times; the prompt (40) is longer than the window.
constexpr int64_t kCtx = 128;
constexpr int64_t kUbatch = 8;
constexpr int kPrompt = 40;
// Greedy tokens: 64 with f16 weights (the issue's bar); 32 with f32 weights, to keep the binary
// near a minute on lavapipe (the ring still wraps during their decode).
constexpr int kGenerateF16 = 64;
constexpr int kGenerateF32 = 32;

vk::Device* TestDevice() {
  auto* env = vk::testing::VkTestEnv::Get();
  return env && env->available() ? env->main().device.get() : nullptr;
}

struct Loaded {
  std::unique_ptr<gguf::Model> model;
  gguf::Gemma4Params params;
  std::unique_ptr<ModelWeights> weights;
};

std::unique_ptr<Loaded> Load(const std::string& preset, const std::string& type,
                             uint32_t n_vocab = 0) {
  auto l = std::make_unique<Loaded>();
  auto m = gguf::Model::Open(TestModelPath(preset, type, n_vocab));
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return nullptr;
  l->model = std::move(*m);
  auto p = gguf::ReadGemma4Params(*l->model);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return nullptr;
  l->params = *p;
  auto w = LoadWeights(*l->model, l->params);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  if (!w.ok()) return nullptr;
  l->weights = std::make_unique<ModelWeights>(std::move(*w));
  return l;
}

VulkanBackendOptions VkOptions(int64_t n_seq = 1, KvType kv = KvType::kF16) {
  VulkanBackendOptions o;
  o.n_ctx = kCtx;
  o.n_ubatch = kUbatch;
  o.n_seq = n_seq;
  o.kv_type = kv;
  // Prefill chunks (8 tokens here) through the flash-attention style prefill kernel, as long
  // prompts take it in real use (default: runs of 64+); decode steps keep the per-query kernel.
  o.attn_prefill_min_tokens = 2;
  o.attn_coop_min_tokens = 2;  // where the device has tensor-core attention (not lavapipe)
  return o;
}

std::unique_ptr<CpuBackend> MakeCpu(const Loaded& l, KvType kv = KvType::kF16) {
  CpuBackendOptions o;
  o.n_ctx = kCtx;
  o.n_ubatch = kUbatch;
  o.n_threads = 2;
  o.kv_type = kv;
  auto b = CpuBackend::Create(&l.params, l.weights.get(), o);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(*b) : nullptr;
}

std::unique_ptr<VulkanBackend> MakeVk(const Loaded& l, int64_t n_seq = 1,
                                      KvType kv = KvType::kF16) {
  auto b = VulkanBackend::Create(l.model.get(), &l.params, l.weights.get(), VkOptions(n_seq, kv),
                                 TestDevice());
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(*b) : nullptr;
}

std::vector<int32_t> Tokens(int n, int vocab, uint64_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint64_t x = seed;
  for (auto& v : t) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<int32_t>(4 + (x >> 33) % static_cast<uint64_t>(vocab - 4));
  }
  t[0] = 2;
  return t;
}

// max |a - b| / max |a|
double RelDiff(std::span<const float> a, std::span<const float> b) {
  double d = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
    m = std::max(m, static_cast<double>(std::fabs(a[i])));
  }
  return d / std::max(m, 1e-12);
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Feeds `toks` from position pos0 in ubatch chunks; `last` receives the logits of the last token.
Status Feed(Backend& b, BackendSequence* s, std::span<const int32_t> toks, int64_t pos0,
            std::vector<float>* last, int64_t V) {
  last->assign(static_cast<size_t>(V), 0.0f);
  for (size_t i = 0; i < toks.size(); i += kUbatch) {
    const int64_t n = std::min<int64_t>(kUbatch, static_cast<int64_t>(toks.size() - i));
    GARNET_RETURN_IF_ERROR(
        b.Forward(s, toks.data() + i, n, pos0 + static_cast<int64_t>(i), false, last->data()));
  }
  return Status::OK();
}

struct ParityFigures {
  double prefill = 0, decode = 0;  // worst max|cpu - gpu| / max|cpu|
};

// Feeds `prompt` to both backends (the first micro-batch with every row's logits, the multi-pass
// head path; then chunk by chunk) and then decodes n_gen greedy tokens one by one, each side fed
// its own argmax: logits within 1e-2 relative at every step and identical continuations.
void CheckParity(Backend& cpu, Backend& gpu, int64_t V, const std::vector<int32_t>& prompt,
                 int n_gen, ParityFigures* worst) {
  auto sc = cpu.NewSequence();
  auto sg = gpu.NewSequence();
  ASSERT_TRUE(sc.ok() && sg.ok());
  std::vector<float> ac(static_cast<size_t>(kUbatch * V)), ag(ac.size());
  ASSERT_TRUE(cpu.Forward(sc->get(), prompt.data(), kUbatch, 0, true, ac.data()).ok());
  auto st = gpu.Forward(sg->get(), prompt.data(), kUbatch, 0, true, ag.data());
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (int64_t r = 0; r < kUbatch; ++r) {
    const double d = RelDiff(std::span(ac).subspan(r * V, V), std::span(ag).subspan(r * V, V));
    worst->prefill = std::max(worst->prefill, d);
    EXPECT_LE(d, 1e-2) << "prompt row " << r;
  }
  const int64_t n_prompt = static_cast<int64_t>(prompt.size());
  std::vector<float> lc, lg;
  for (int64_t i = kUbatch; i < n_prompt; i += kUbatch) {
    auto chunk = std::span(prompt).subspan(static_cast<size_t>(i),
                                           static_cast<size_t>(std::min(kUbatch, n_prompt - i)));
    ASSERT_TRUE(Feed(cpu, sc->get(), chunk, i, &lc, V).ok());
    st = Feed(gpu, sg->get(), chunk, i, &lg, V);
    ASSERT_TRUE(st.ok()) << st.ToString();
    const double d = RelDiff(lc, lg);
    worst->prefill = std::max(worst->prefill, d);
    EXPECT_LE(d, 1e-2) << "prompt chunk at " << i;
  }
  std::vector<int32_t> gen_c, gen_g;
  int64_t pos = n_prompt;
  for (int i = 0; i < n_gen; ++i) {
    const int32_t tc = Argmax(lc), tg = Argmax(lg);
    gen_c.push_back(tc);
    gen_g.push_back(tg);
    ASSERT_EQ(tc, tg) << "greedy continuations differ at generated token " << i;
    ASSERT_TRUE(Feed(cpu, sc->get(), std::span(&tc, 1), pos, &lc, V).ok());
    st = Feed(gpu, sg->get(), std::span(&tg, 1), pos, &lg, V);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ++pos;
    const double d = RelDiff(lc, lg);
    worst->decode = std::max(worst->decode, d);
    EXPECT_LE(d, 1e-2) << "decode step " << i;
  }
  EXPECT_EQ(gen_c, gen_g);
}

struct ParityCase {
  const char* preset;
  const char* type;
  KvType kv = KvType::kF16;  // both backends' caches
};

class Parity : public ::testing::TestWithParam<ParityCase> {};

// Prefill of a 40-token prompt (every row's logits of one chunk, the last row of each), then 64
// (f16 weights) or 32 (f32) greedy tokens decoded one by one on both backends: logits within
// 1e-2 relative everywhere, identical continuations. With a q8_0 cache on both sides too (each
// quantises its own K/V the same way).
TEST_P(Parity, PrefillAndGreedyDecodeMatchCpu) {
  GARNET_REQUIRE_VULKAN();
  const auto [preset, type, kv] = GetParam();
  auto l = Load(preset, type);
  ASSERT_TRUE(l);
  auto cpu = MakeCpu(*l, kv);
  auto gpu = MakeVk(*l, 1, kv);
  ASSERT_TRUE(cpu && gpu);
  const int64_t V = l->params.n_vocab;
  auto prompt = Tokens(kPrompt, static_cast<int>(V), 11);
  const int n_gen = std::string(type) == "f32" ? kGenerateF32 : kGenerateF16;
  const auto t0 = std::chrono::steady_clock::now();
  ParityFigures worst;
  CheckParity(*cpu, *gpu, V, prompt, n_gen, &worst);
  if (HasFatalFailure()) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "[parity] %s %s kv %s on %s: max rel diff prefill %.2e decode %.2e, %d greedy tokens "
      "identical (%.1f s)\n",
      preset, type, kv == KvType::kQ8_0 ? "q8_0" : "f16", gpu->device_name().c_str(), worst.prefill,
      worst.decode, n_gen, secs);
}

INSTANTIATE_TEST_SUITE_P(TinyPresets, Parity,
                         ::testing::Values(ParityCase{"tiny", "f32"}, ParityCase{"tiny", "f16"},
                                           ParityCase{"tiny-moe", "f32"},
                                           ParityCase{"tiny-moe", "f16"},
                                           ParityCase{"tiny-ple", "f32"},
                                           ParityCase{"tiny-ple", "f16"},
                                           ParityCase{"tiny", "f16", KvType::kQ8_0},
                                           ParityCase{"tiny-moe", "f16", KvType::kQ8_0},
                                           ParityCase{"tiny-ple", "f16", KvType::kQ8_0}),
                         [](const auto& info) {
                           std::string s = std::string(info.param.preset) + "_" + info.param.type;
                           if (info.param.kv == KvType::kQ8_0) s += "_kv_q8_0";
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

// Eight greedy tokens after the same 12-token prompt are identical on two engines.
void ExpectSameGreedyTokens(engine::Engine& a, engine::Engine& b) {
  auto prompt = Tokens(12, static_cast<int>(a.params().n_vocab), 5);
  engine::GenerateRequest req;
  req.max_tokens = 8;
  req.stop_ids = {-1};
  auto sa = a.NewSequence();
  auto sb = b.NewSequence();
  ASSERT_TRUE(sa.ok() && sb.ok());
  auto ra = a.Generate(**sa, prompt, req, nullptr);
  auto rb = b.Generate(**sb, prompt, req, nullptr);
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(ra->tokens, rb->tokens);
}

// Several sequences in one pass: two sequences interleaved (one of them with two consecutive
// tokens, in two separate runs; three logit rows, more than n_seq = 2 per pass), then both
// decoding in one batch each step: the GPU (or mixed) backend's ForwardBatch within 1e-2 of the
// CPU backend's.
void CheckTwoSequenceBatches(Backend& cpu, Backend& gpu, int64_t V) {
  auto pa = Tokens(10, static_cast<int>(V), 3), pb = Tokens(9, static_cast<int>(V), 4);
  auto ca = cpu.NewSequence(), cb = cpu.NewSequence();
  auto ga = gpu.NewSequence(), gb = gpu.NewSequence();
  ASSERT_TRUE(ca.ok() && cb.ok() && ga.ok() && gb.ok());
  std::vector<float> tmp;
  ASSERT_TRUE(Feed(cpu, ca->get(), pa, 0, &tmp, V).ok());
  ASSERT_TRUE(Feed(cpu, cb->get(), pb, 0, &tmp, V).ok());
  ASSERT_TRUE(Feed(gpu, ga->get(), pa, 0, &tmp, V).ok());
  ASSERT_TRUE(Feed(gpu, gb->get(), pb, 0, &tmp, V).ok());
  // a@10, b@9, a@11: three logit rows, more than n_seq = 2 per pass.
  auto items = [&](BackendSequence* a, BackendSequence* b) {
    return std::vector<BatchItem>{{a, 7, 10, true}, {b, 9, 9, true}, {a, 5, 11, true}};
  };
  auto ic = items(ca->get(), cb->get());
  auto ig = items(ga->get(), gb->get());
  std::vector<float> oc(static_cast<size_t>(3 * V)), og(oc.size());
  ASSERT_TRUE(cpu.ForwardBatch(ic, oc.data()).ok());
  auto st = gpu.ForwardBatch(ig, og.data());
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (int r = 0; r < 3; ++r) {
    EXPECT_LE(RelDiff(std::span(oc).subspan(r * V, V), std::span(og).subspan(r * V, V)), 1e-2)
        << "row " << r;
  }
  // Both sequences go on decoding in one batch each step.
  for (int step = 0; step < 3; ++step) {
    std::vector<BatchItem> bc{{ca->get(), 11 + step, 12 + step, true},
                              {cb->get(), 12 + step, 10 + step, true}};
    std::vector<BatchItem> bg{{ga->get(), 11 + step, 12 + step, true},
                              {gb->get(), 12 + step, 10 + step, true}};
    ASSERT_TRUE(cpu.ForwardBatch(bc, oc.data()).ok());
    ASSERT_TRUE(gpu.ForwardBatch(bg, og.data()).ok());
    for (int r = 0; r < 2; ++r) {
      EXPECT_LE(RelDiff(std::span(oc).subspan(r * V, V), std::span(og).subspan(r * V, V)), 1e-2)
          << "step " << step << " row " << r;
    }
  }
}

TEST(VulkanBackend, ForwardBatchMatchesCpu) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f32");
  ASSERT_TRUE(l);
  auto cpu = MakeCpu(*l);
  auto gpu = MakeVk(*l, 2);
  ASSERT_TRUE(cpu && gpu);
  CheckTwoSequenceBatches(*cpu, *gpu, l->params.n_vocab);
}

// Tensor-core prefill (the default for quantised weights where the device has cooperative
// matrices, NV or KHR form: dequantised weights and activations rounded to f16) against the fp32
// tiled matmuls of the same backend, on a q8_0 tiny-moe (dense and expert matmuls both take it).
// Prints the figure for docs/CORRECTNESS.md. The bound is loose on purpose: a wrong kernel moves
// logits by O(1), f16 rounding by ~1e-2, and the CPU backend (8-bit activations) already differs
// from either by more. Skipped where the device has no cooperative matrices (lavapipe).
TEST(VulkanBackend, TensorCorePrefillCloseToFp32ForQuantisedWeights) {
  GARNET_REQUIRE_VULKAN();
  if (TestDevice()->caps().coopmat == vk::CoopmatForm::kNone) {
    GTEST_SKIP() << "no cooperative matrices on this device: the tensor-core path is unused";
  }
  auto l = Load("tiny-moe", "q8_0");
  ASSERT_TRUE(l);
  VulkanBackendOptions on = VkOptions(), off = VkOptions();
  off.coop_matmul = false;
  auto a = VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), on, TestDevice());
  auto b = VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), off, TestDevice());
  ASSERT_TRUE(a.ok() && b.ok());
  auto sa = (*a)->NewSequence();
  auto sb = (*b)->NewSequence();
  ASSERT_TRUE(sa.ok() && sb.ok());
  const int64_t V = l->params.n_vocab;
  const std::vector<int32_t> prompt = Tokens(kPrompt, static_cast<int>(V), 77);
  std::vector<float> la, lb;
  ASSERT_TRUE(Feed(**a, sa->get(), prompt, 0, &la, V).ok());
  ASSERT_TRUE(Feed(**b, sb->get(), prompt, 0, &lb, V).ok());
  const double prefill = RelDiff(lb, la);
  // A second prompt chunk on top (prefill against a filled cache), then one decode step.
  const std::vector<int32_t> more = Tokens(16, static_cast<int>(V), 78);
  ASSERT_TRUE(Feed(**a, sa->get(), more, kPrompt, &la, V).ok());
  ASSERT_TRUE(Feed(**b, sb->get(), more, kPrompt, &lb, V).ok());
  const double second = RelDiff(lb, la);
  std::printf(
      "[tensor cores] tiny-moe q8_0 on %s: max rel diff vs fp32 matmuls prefill %.2e, "
      "second chunk %.2e\n",
      TestDevice()->info().name.c_str(), prefill, second);
  EXPECT_LE(prefill, 0.1);
  EXPECT_LE(second, 0.1);
}

// The decode matvecs' integer-dot path (matvec.comp IDOT: each item's x rounded to int8) against
// the float path of the fallback device on the same GPU, on models with quantised weights (the
// parity tests above use f32 / f16 weights, which have no such path), in both of its forms: with
// the Q4_K matvecs reading quantised inputs (quantized_inputs, the default: x rounded once per
// 32-block by the residual update that writes it) and with x rounded per item. All decode the same
// tokens (the float path's greedy choices) after the same prompt; the prompt itself runs through
// the prefill matmuls, which have no integer path. A rounded x moves each matvec's output by
// ~0.3-0.5 % of its size, and these random models carry that through every layer and the attention:
// lavapipe measured up to 0.28 of the largest logit (the CPU backend's own int8 activations move
// them about as far: 0.18-0.20 against this float path). So the bounds are 0.5 and 56 of 64 greedy
// choices alike (measured: 63 or 64); the kernel tests bound each matvec tightly, and a broken item
// or scale here scrambles the logits. The two forms must differ on the Q4_K models (else the
// quantised inputs were not taken). The figures are printed for docs/CORRECTNESS.md.
TEST(VulkanBackend, IntegerDotDecodeCloseToFloatPath) {
  GARNET_REQUIRE_VULKAN();
  if (!TestDevice()->caps().integer_dot_product) {
    GTEST_SKIP() << "no integer dot products on " << TestDevice()->info().name;
  }
  auto fb = vk::testing::VkTestEnv::Get()->fallback();
  ASSERT_TRUE(fb.ok()) << fb.status().ToString();
  for (const auto& [preset, type] : {std::pair{"tiny", "q4_k_m"}, std::pair{"tiny-moe", "q4_k_m"},
                                     std::pair{"tiny-ple", "q8_0"}}) {
    auto l = Load(preset, type);
    ASSERT_TRUE(l);
    // The prompt through the fp32 matmuls and attention on every side, so the decode steps
    // start from the same cache (tensor cores round their inputs to f16: on an H200 that moved
    // tiny-moe's prompt logits 0.17 from the fallback's, an expert picked differently).
    VulkanBackendOptions quantized = VkOptions();
    quantized.coop_matmul = false;
    quantized.attn_coop_min_tokens = 0;
    VulkanBackendOptions per_item = quantized;
    per_item.quantized_inputs = false;
    auto idot_or = VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), quantized,
                                         TestDevice());
    auto flt = VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), VkOptions(),
                                     (*fb)->device.get());
    auto item =
        VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), per_item, TestDevice());
    ASSERT_TRUE(idot_or.ok() && flt.ok() && item.ok()) << flt.status().ToString();
    VulkanBackend* idot = idot_or->get();
    const int64_t V = l->params.n_vocab;
    auto sf = (*flt)->NewSequence();
    auto si = idot->NewSequence();
    auto sp = (*item)->NewSequence();
    ASSERT_TRUE(sf.ok() && si.ok() && sp.ok());
    const std::vector<int32_t> prompt = Tokens(kPrompt, static_cast<int>(V), 11);
    std::vector<float> lf, li, lp;
    ASSERT_TRUE(Feed(**flt, sf->get(), prompt, 0, &lf, V).ok());
    ASSERT_TRUE(Feed(*idot, si->get(), prompt, 0, &li, V).ok());
    ASSERT_TRUE(Feed(**item, sp->get(), prompt, 0, &lp, V).ok());
    const double prefill = RelDiff(lf, li);
    EXPECT_LE(prefill, 1e-2) << preset << " " << type << " prompt";
    // On the MoE model a router score within rounding of the next one can pick another expert,
    // which moves the logits further (measured on lavapipe: 0.40 per item, 0.50 quantised
    // inputs, greedy tokens alike at 63-64 of 64), hence its wider bound.
    const double bound = std::string(preset) == "tiny-moe" ? 0.8 : 0.5;
    double worst = 0, worst_item = 0, worst_q = 0;
    int same = 0, same_item = 0;
    for (int i = 0; i < kGenerateF16; ++i) {
      const int32_t t = Argmax(lf);
      same += Argmax(li) == t;
      same_item += Argmax(lp) == t;
      const int64_t pos = kPrompt + i;
      ASSERT_TRUE(Feed(**flt, sf->get(), std::span(&t, 1), pos, &lf, V).ok());
      ASSERT_TRUE(Feed(*idot, si->get(), std::span(&t, 1), pos, &li, V).ok());
      ASSERT_TRUE(Feed(**item, sp->get(), std::span(&t, 1), pos, &lp, V).ok());
      const double d = RelDiff(lf, li), dp = RelDiff(lf, lp);
      worst = std::max(worst, d);
      worst_item = std::max(worst_item, dp);
      worst_q = std::max(worst_q, RelDiff(lp, li));
      EXPECT_LE(d, bound) << preset << " " << type << " decode step " << i;
      EXPECT_LE(dp, bound) << preset << " " << type << " decode step " << i << " (per item)";
    }
    EXPECT_GE(same, kGenerateF16 * 7 / 8) << preset << " " << type;
    EXPECT_GE(same_item, kGenerateF16 * 7 / 8) << preset << " " << type << " (per item)";
    // The Q4_K models take the quantised inputs where the device has them (so the two integer
    // paths differ); tiny-ple's Q8_0 matvecs do not (the same logits).
    const bool q4k = std::string(type) == "q4_k_m";
    if (q4k && vk::testing::VkTestEnv::Get()->main().kernels->MatvecXqAvailable(GgmlType::kQ4_K)) {
      EXPECT_GT(worst_q, 0.0) << preset << ": the quantised inputs were not used";
    } else if (!q4k) {
      EXPECT_EQ(worst_q, 0.0) << preset;
    }
    std::printf(
        "[idot] %s %s on %s: max rel diff to the float path prefill %.2e decode %.2e (per-item "
        "rounding %.2e), same greedy token %d (%d) of %d\n",
        preset, type, TestDevice()->info().name.c_str(), prefill, worst, worst_item, same,
        same_item, kGenerateF16);
  }
}

TEST(VulkanBackend, RejectsBadCalls) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny", "f32");
  ASSERT_TRUE(l);
  auto gpu = MakeVk(*l);
  ASSERT_TRUE(gpu);
  auto s = gpu->NewSequence();
  ASSERT_TRUE(s.ok());
  std::vector<float> out(l->params.n_vocab);
  const int32_t bad = static_cast<int32_t>(l->params.n_vocab);
  EXPECT_EQ(gpu->Forward(s->get(), &bad, 1, 0, false, out.data()).code(), Code::kInvalidArgument);
  const int32_t ok = 5;
  EXPECT_EQ(gpu->Forward(s->get(), &ok, 1, kCtx, false, out.data()).code(), Code::kOutOfRange);
  std::vector<int32_t> many(kUbatch + 1, 5);
  EXPECT_EQ(gpu->Forward(s->get(), many.data(), kUbatch + 1, 0, false, out.data()).code(),
            Code::kInvalidArgument);
  // Still usable afterwards.
  EXPECT_TRUE(gpu->Forward(s->get(), &ok, 1, 0, false, out.data()).ok());
}

// GARNET_VULKAN_STATS in the environment at Create: one stderr line per pass with its counters
// (a diagnostic docs/PERF.md relies on; it was once silently lost).
TEST(VulkanBackend, StatsEnvironmentPrintsOneLinePerPass) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny", "f32");
  ASSERT_TRUE(l);
  ASSERT_EQ(setenv("GARNET_VULKAN_STATS", "1", 1), 0);
  auto gpu = MakeVk(*l);
  ASSERT_EQ(unsetenv("GARNET_VULKAN_STATS"), 0);
  ASSERT_TRUE(gpu);
  auto s = gpu->NewSequence();
  ASSERT_TRUE(s.ok());
  std::vector<float> out(l->params.n_vocab);
  const std::vector<int32_t> prompt = {2, 5, 9};
  ::testing::internal::CaptureStderr();
  const Status st = gpu->Forward(s->get(), prompt.data(), 3, 0, false, out.data());
  const int32_t next = 7;
  const Status st2 = gpu->Forward(s->get(), &next, 1, 3, false, out.data());
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(st2.ok()) << st2.ToString();
  EXPECT_NE(err.find("vulkan pass: T=3 dispatches="), std::string::npos) << err;
  EXPECT_NE(err.find("vulkan pass: T=1 dispatches="), std::string::npos) << err;
  EXPECT_NE(err.find("submit+wait="), std::string::npos) << err;
  EXPECT_NE(err.find("inputs="), std::string::npos) << err;
  EXPECT_NE(err.find("logits="), std::string::npos) << err;
  // Without the variable: silent.
  auto quiet = MakeVk(*l);
  ASSERT_TRUE(quiet);
  auto q = quiet->NewSequence();
  ASSERT_TRUE(q.ok());
  ::testing::internal::CaptureStderr();
  EXPECT_TRUE(quiet->Forward(q->get(), &next, 1, 0, false, out.data()).ok());
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("vulkan pass"), std::string::npos);
}

// A Vulkan backend over `l` with `opt`; with GARNET_VULKAN_STATS set while it is created (the
// backend reads it then) when `stats`.
auto CreateBackend(const Loaded& l, const VulkanBackendOptions& opt, bool stats) {
  if (stats) setenv("GARNET_VULKAN_STATS", "1", 1);
  auto b = VulkanBackend::Create(l.model.get(), &l.params, l.weights.get(), opt, TestDevice());
  if (stats) unsetenv("GARNET_VULKAN_STATS");
  return b;
}

// Two backends over `l` (options a and b, GARNET_VULKAN_STATS on) fed the same prompt of
// `prompt_len` tokens, then `steps` one-token decodes (token 4 + (step * tok_step) % (V - 4)):
// every decode pass of a records `extra` dispatches (and, unless kAnyBarriers, `extra_barriers`
// barriers) more than b's, and the logits agree within `tol` of the largest.
constexpr int64_t kAnyBarriers = INT64_MIN;
void ExpectSameDecode(const Loaded& l, const VulkanBackendOptions& oa,
                      const VulkanBackendOptions& ob, int prompt_len, uint64_t seed, int steps,
                      int tok_step, int64_t extra, float tol,
                      int64_t extra_barriers = kAnyBarriers) {
  auto a = CreateBackend(l, oa, true);
  auto b = CreateBackend(l, ob, true);
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t V = l.params.n_vocab;
  auto sa = (*a)->NewSequence();
  auto sb = (*b)->NewSequence();
  ASSERT_TRUE(sa.ok() && sb.ok());
  const std::vector<int32_t> prompt = Tokens(prompt_len, static_cast<int>(V), seed);
  std::vector<float> la, lb;
  ASSERT_TRUE(Feed(**a, sa->get(), prompt, 0, &la, V).ok());
  ASSERT_TRUE(Feed(**b, sb->get(), prompt, 0, &lb, V).ok());
  auto t1_dispatches = [](const std::string& err) -> int64_t {
    const size_t at = err.rfind("T=1 dispatches=");
    return at == std::string::npos ? -1 : std::stoll(err.substr(at + 15));
  };
  auto t1_barriers = [](const std::string& err) -> int64_t {
    const size_t at = err.rfind("T=1 dispatches=");
    const size_t b = at == std::string::npos ? at : err.find(" barriers=", at);
    return b == std::string::npos ? -1 : std::stoll(err.substr(b + 10));
  };
  int64_t pos = static_cast<int64_t>(prompt.size());
  for (int step = 0; step < steps; ++step, ++pos) {
    const int32_t tok = static_cast<int32_t>(4 + (step * tok_step) % (V - 4));
    ::testing::internal::CaptureStderr();
    ASSERT_TRUE(Feed(**a, sa->get(), std::span(&tok, 1), pos, &la, V).ok());
    const std::string ea = ::testing::internal::GetCapturedStderr();
    ::testing::internal::CaptureStderr();
    ASSERT_TRUE(Feed(**b, sb->get(), std::span(&tok, 1), pos, &lb, V).ok());
    const std::string eb = ::testing::internal::GetCapturedStderr();
    const int64_t da = t1_dispatches(ea), db = t1_dispatches(eb);
    ASSERT_GT(da, 0);
    EXPECT_EQ(da, db + extra) << "step " << step;
    if (extra_barriers != kAnyBarriers) {
      ASSERT_GT(t1_barriers(ea), 0);
      EXPECT_EQ(t1_barriers(ea), t1_barriers(eb) + extra_barriers) << "step " << step;
    }
    float scale = 0, diff = 0;
    for (int64_t i = 0; i < V; ++i) {
      scale = std::max(scale, std::fabs(lb[static_cast<size_t>(i)]));
      diff = std::max(diff, std::fabs(la[static_cast<size_t>(i)] - lb[static_cast<size_t>(i)]));
    }
    ASSERT_LE(diff, tol * scale) << "step " << step;
  }
}

// MoE decode with the routing inside the router matvec (fused_routing, the default) takes one
// dispatch per layer fewer than with a routing dispatch of its own, and gives the same logits up
// to the rounding of the softmax sums (summed over different workgroups) for 24 decoded tokens.
TEST(VulkanBackend, FusedRoutingMatchesSeparateRouting) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f16");
  ASSERT_TRUE(l);
  VulkanBackendOptions on = VkOptions(), off = VkOptions();
  ASSERT_TRUE(on.fused_routing);
  off.fused_routing = false;
  on.early_routing = false;  // the same router input on both sides (early routing: below)
  ExpectSameDecode(*l, on, off, 12, 33, 24, 53, -static_cast<int64_t>(l->params.n_layer), 1e-4f);
}

// MoE decode with the router beside the attention block's residual update (early_routing, the
// default) takes one barrier interval per layer fewer than with the router after it and one
// dispatch more (its copy of the residual stream), and gives the logits of the late router
// within rounding: the router forms the update by linearity, in another order, so its input
// differs in the last bits (measured on lavapipe: 1.1e-4 of the largest logit over these steps,
// through the f16 cache as for prenorm), hence 1e-3.
TEST(VulkanBackend, EarlyRoutingMatchesLateRouting) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f16");
  ASSERT_TRUE(l);
  VulkanBackendOptions on = VkOptions(), off = VkOptions();
  ASSERT_TRUE(on.early_routing);
  off.early_routing = false;
  const auto n_layer = static_cast<int64_t>(l->params.n_layer);
  ExpectSameDecode(*l, on, off, 12, 33, 24, 53, n_layer, 1e-3f, -n_layer);
}

// Decode with prenorm (the default: the residual updates write the next matvecs' normalised
// inputs, the matvecs fold no norm) gives the logits of the folded norms within rounding, on a
// dense, an MoE and a per-layer-embedding model; it records one dispatch more per token (the
// first layer's input norm) and no other. The two orders of the norm's scale differ in the last
// fp32 bits, which can flip a K/V value's f16 rounding in the cache: measured on lavapipe up to
// 1.7e-4 of the largest logit over these steps, hence 1e-3 (the CPU parity bound is 1e-2).
TEST(VulkanBackend, PrenormMatchesFoldedNorms) {
  GARNET_REQUIRE_VULKAN();
  for (const char* preset : {"tiny", "tiny-moe", "tiny-ple"}) {
    SCOPED_TRACE(preset);
    auto l = Load(preset, "f16");
    ASSERT_TRUE(l);
    VulkanBackendOptions on = VkOptions(), off = VkOptions();
    ASSERT_TRUE(on.prenorm);
    off.prenorm = false;
    on.early_routing = false;  // needs prenorm; compared on its own above
    ExpectSameDecode(*l, on, off, 10, 35, 12, 71, 1, 1e-3f);
  }
}

// The decode graph (a one-token pass recorded once, replayed for the next tokens) gives the same
// logits, bit for bit, as recording every pass: 36 tokens past the prompt, so the 24-cell sliding
// ring wraps and kv_first (derived on the device) moves; two sequences taking turns, so the
// graph is re-recorded for each switch; a batch of two in between. GARNET_VULKAN_STATS shows
// that replays happened.
TEST(VulkanBackend, DecodeGraphReplayMatchesRecordedPasses) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f16");
  ASSERT_TRUE(l);
  VulkanBackendOptions on = VkOptions(), off = VkOptions();
  ASSERT_TRUE(on.decode_graph);
  off.decode_graph = false;
  auto a = CreateBackend(*l, on, true);
  auto b = CreateBackend(*l, off, false);
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t V = l->params.n_vocab;
  auto a1 = (*a)->NewSequence(), a2 = (*a)->NewSequence();
  auto b1 = (*b)->NewSequence(), b2 = (*b)->NewSequence();
  ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok() && b2.ok());
  const std::vector<int32_t> prompt = Tokens(12, static_cast<int>(V), 21);
  std::vector<float> la, lb;
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(Feed(**a, a1->get(), prompt, 0, &la, V).ok());
  ASSERT_TRUE(Feed(**a, a2->get(), prompt, 0, &la, V).ok());
  ASSERT_TRUE(Feed(**b, b1->get(), prompt, 0, &lb, V).ok());
  ASSERT_TRUE(Feed(**b, b2->get(), prompt, 0, &lb, V).ok());
  const int64_t n0 = static_cast<int64_t>(prompt.size());
  int64_t pos1 = n0, pos2 = n0;
  for (int step = 0; step < 36; ++step) {
    // Sequence 1 every step, sequence 2 every fourth (a re-recording each time it comes back).
    const bool second = step % 4 == 3;
    BackendSequence* sa = second ? a2->get() : a1->get();
    BackendSequence* sb = second ? b2->get() : b1->get();
    int64_t& pos = second ? pos2 : pos1;
    const int32_t tok = static_cast<int32_t>(4 + (step * 37) % (V - 4));
    Status sta = Feed(**a, sa, std::span(&tok, 1), pos, &la, V);
    Status stb = Feed(**b, sb, std::span(&tok, 1), pos, &lb, V);
    ASSERT_TRUE(sta.ok() && stb.ok()) << sta.ToString() << " / " << stb.ToString();
    ++pos;
    ASSERT_EQ(la, lb) << "step " << step;
    if (step == 20) {  // a two-sequence batch in between (recorded, not the graph)
      std::vector<BatchItem> ia{{a1->get(), 9, pos1, true}, {a2->get(), 10, pos2, true}};
      std::vector<BatchItem> ib{{b1->get(), 9, pos1, true}, {b2->get(), 10, pos2, true}};
      std::vector<float> oa(static_cast<size_t>(2 * V)), ob(oa.size());
      ASSERT_TRUE((*a)->ForwardBatch(ia, oa.data()).ok());
      ASSERT_TRUE((*b)->ForwardBatch(ib, ob.data()).ok());
      ASSERT_EQ(oa, ob);
      ++pos1;
      ++pos2;
    }
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  size_t replays = 0, records = 0;  // " replay" ends both kinds of line
  for (size_t at = 0; (at = err.find("us replay\n", at)) != std::string::npos; ++at) ++replays;
  for (size_t at = 0; (at = err.find(" recorded for replay\n", at)) != std::string::npos; ++at) {
    ++records;
  }
  // Recorded: the first token of each turn (step 0, sequence 2's 9 turns, the 8 returns to
  // sequence 1; the batch leaves the kept graph alone); replayed: the other 18.
  EXPECT_EQ(records, 18u) << err;
  EXPECT_EQ(replays, 18u) << err;
}

// Consecutive tokens of one sequence from pos0 as batch items, logits for the last.
std::vector<BatchItem> SeqItems(BackendSequence* s, std::span<const int32_t> toks, int64_t pos0) {
  std::vector<BatchItem> it;
  for (size_t i = 0; i < toks.size(); ++i) {
    it.push_back({s, toks[i], pos0 + static_cast<int64_t>(i), i + 1 == toks.size()});
  }
  return it;
}

// Greedy picks on the device (ForwardBatchPicks: the head's logits soft-capped and reduced by
// ArgmaxRows, only the ids read back) equal sampling::GreedyPick over the logits ForwardBatch
// returns, on two backends with the same kernels: a prompt, 24 greedy decode steps (the kept
// decode graph replayed in pick mode) and a three-row batch of two sequences (more rows than
// n_seq = 2: two head rounds).
TEST(VulkanBackend, DevicePicksEqualHostPicks) {
  GARNET_REQUIRE_VULKAN();
  for (const char* preset : {"tiny-moe", "tiny-ple"}) {
    SCOPED_TRACE(preset);
    auto l = Load(preset, "f16");
    ASSERT_TRUE(l);
    ASSERT_GT(l->params.final_logit_softcap, 0.0f);  // the pick must see the capped values
    auto a = CreateBackend(*l, VkOptions(2), false);
    auto b = CreateBackend(*l, VkOptions(2), true);
    ASSERT_TRUE(a.ok() && b.ok());
    const int64_t V = l->params.n_vocab;
    auto a1 = (*a)->NewSequence(), a2 = (*a)->NewSequence();
    auto b1 = (*b)->NewSequence(), b2 = (*b)->NewSequence();
    ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok() && b2.ok());
    const std::vector<int32_t> prompt = Tokens(7, static_cast<int>(V), 31);  // one ubatch
    std::vector<float> la(static_cast<size_t>(3 * V));
    int32_t picks[3] = {-2, -2, -2};
    ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a1->get(), prompt, 0), la.data()).ok());
    ASSERT_TRUE((*b)->ForwardBatchPicks(SeqItems(b1->get(), prompt, 0), picks).ok());
    int32_t tok = sampling::GreedyPick(std::span(la).first(static_cast<size_t>(V)));
    ASSERT_GE(tok, 0);
    EXPECT_EQ(picks[0], tok);
    ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a2->get(), prompt, 0), la.data()).ok());
    ASSERT_TRUE((*b)->ForwardBatchPicks(SeqItems(b2->get(), prompt, 0), picks).ok());
    int64_t pos = static_cast<int64_t>(prompt.size());
    ::testing::internal::CaptureStderr();
    for (int step = 0; step < 24; ++step, ++pos) {
      ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a1->get(), std::span(&tok, 1), pos), la.data()).ok());
      const Status st =
          (*b)->ForwardBatchPicks(SeqItems(b1->get(), std::span(&tok, 1), pos), picks);
      ASSERT_TRUE(st.ok()) << st.ToString();
      const int32_t want = sampling::GreedyPick(std::span(la).first(static_cast<size_t>(V)));
      ASSERT_EQ(picks[0], want) << "step " << step;
      tok = want;
    }
    const std::string err = ::testing::internal::GetCapturedStderr();
    size_t replays = 0;
    for (size_t at = 0; (at = err.find("us replay\n", at)) != std::string::npos; ++at) ++replays;
    EXPECT_EQ(replays, 23u) << err;  // recorded at the first step, replayed after
    // Three rows of two sequences in one pass.
    const int64_t p2 = static_cast<int64_t>(prompt.size());
    auto batch = [&](BackendSequence* s1, BackendSequence* s2) {
      return std::vector<BatchItem>{{s1, 7, pos, true}, {s2, 9, p2, true}, {s1, 5, pos + 1, true}};
    };
    ASSERT_TRUE((*a)->ForwardBatch(batch(a1->get(), a2->get()), la.data()).ok());
    ASSERT_TRUE((*b)->ForwardBatchPicks(batch(b1->get(), b2->get()), picks).ok());
    for (size_t r = 0; r < 3; ++r) {
      EXPECT_EQ(picks[r], sampling::GreedyPick(std::span(la).subspan(r * static_cast<size_t>(V),
                                                                     static_cast<size_t>(V))))
          << "row " << r;
    }
  }
}

// Top candidates from the device (ForwardBatchTop: each 2048-logit chunk sorted on the GPU, the
// chunks' lists merged on the host) equal sampling::TopCandidates over the logits ForwardBatch
// returns, on two backends with the same kernels: a tiny-moe whose 5000-logit rows span three
// chunks (the last one short), k = 128 and k = 5, the prompt, 12 decode steps (the kept decode
// graph replayed in this mode) and a three-row batch of two sequences.
TEST(VulkanBackend, DeviceTopCandidatesEqualHostTopCandidates) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f16", 5000);
  ASSERT_TRUE(l);
  ASSERT_EQ(l->params.n_vocab, 5000u);
  auto a = CreateBackend(*l, VkOptions(2), false);
  auto b = CreateBackend(*l, VkOptions(2), true);
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t V = l->params.n_vocab;
  for (const uint32_t k : {128u, 5u}) {
    SCOPED_TRACE(k);
    auto a1 = (*a)->NewSequence(), a2 = (*a)->NewSequence();
    auto b1 = (*b)->NewSequence(), b2 = (*b)->NewSequence();
    ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok() && b2.ok());
    const std::vector<int32_t> prompt = Tokens(7, static_cast<int>(V), 51);
    std::vector<float> la(static_cast<size_t>(3 * V));
    std::vector<std::pair<float, int32_t>> top(3 * k), want;
    auto expect_row = [&](size_t r, const std::string& where) {
      sampling::TopCandidates(
          std::span(la).subspan(r * static_cast<size_t>(V), static_cast<size_t>(V)), k, &want);
      ASSERT_EQ(want.size(), k);
      for (uint32_t j = 0; j < k; ++j) {
        ASSERT_EQ(top[r * k + j].second, want[j].second) << where << " row " << r << " #" << j;
        ASSERT_EQ(top[r * k + j].first, want[j].first) << where << " row " << r << " #" << j;
      }
    };
    ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a1->get(), prompt, 0), la.data()).ok());
    Status st = (*b)->ForwardBatchTop(SeqItems(b1->get(), prompt, 0), k, top.data());
    ASSERT_TRUE(st.ok()) << st.ToString();
    expect_row(0, "prompt");
    ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a2->get(), prompt, 0), la.data()).ok());
    ASSERT_TRUE((*b)->ForwardBatchTop(SeqItems(b2->get(), prompt, 0), k, top.data()).ok());
    int64_t pos = static_cast<int64_t>(prompt.size());
    ::testing::internal::CaptureStderr();
    for (int step = 0; step < 12; ++step, ++pos) {
      const int32_t tok = top[static_cast<size_t>(step) % k].second;  // not always the best
      ASSERT_TRUE((*a)->ForwardBatch(SeqItems(a1->get(), std::span(&tok, 1), pos), la.data()).ok());
      ASSERT_TRUE(
          (*b)->ForwardBatchTop(SeqItems(b1->get(), std::span(&tok, 1), pos), k, top.data()).ok());
      expect_row(0, "step " + std::to_string(step));
    }
    const std::string err = ::testing::internal::GetCapturedStderr();
    size_t replays = 0;
    for (size_t at = 0; (at = err.find("us replay\n", at)) != std::string::npos; ++at) ++replays;
    EXPECT_EQ(replays, 11u) << err;
    const int64_t p2 = static_cast<int64_t>(prompt.size());
    auto batch = [&](BackendSequence* s1, BackendSequence* s2) {
      return std::vector<BatchItem>{{s1, 7, pos, true}, {s2, 9, p2, true}, {s1, 5, pos + 1, true}};
    };
    ASSERT_TRUE((*a)->ForwardBatch(batch(a1->get(), a2->get()), la.data()).ok());
    ASSERT_TRUE((*b)->ForwardBatchTop(batch(b1->get(), b2->get()), k, top.data()).ok());
    for (size_t r = 0; r < 3; ++r) expect_row(r, "batch");
  }
  auto s = (*b)->NewSequence();
  ASSERT_TRUE(s.ok());
  std::vector<std::pair<float, int32_t>> top(129);
  const int32_t tok = 2;
  EXPECT_TRUE(
      (*b)->ForwardBatchTop(std::vector<BatchItem>{{s->get(), tok, 0, true}}, 129, top.data())
          .IsInvalidArgument());
}

// Planner prediction == device accounting, per kind, exactly (the fit planner issue).
class Exactness : public ::testing::TestWithParam<const char*> {};

void CheckPlanEqualsAllocation(const char* preset, KvType kvt) {
  GARNET_REQUIRE_VULKAN();
  vk::Device* dev = TestDevice();
  auto l = Load(preset, "f16");
  ASSERT_TRUE(l);
  constexpr int64_t kSeq = 2;
  auto shape = plan::ShapeFromModel(*l->model);
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  plan::KvOptions kv;
  kv.n_ctx = kCtx;
  kv.n_ubatch = kUbatch;
  kv.n_seq = kSeq;
  kv.type = PlanKvType(kvt);
  plan::Inventory inv;
  inv.gpus.push_back({"big gpu", 1ull << 40, 1ull << 40});
  inv.host = {"host", 1ull << 40, 1ull << 40};
  auto pl = plan::MakePlan(*shape, kv, inv, plan::Policy{});
  ASSERT_TRUE(pl.ok()) << pl.status().ToString();
  ASSERT_EQ(pl->verdict, plan::Verdict::kFits);
  const plan::MemoryUse& want = pl->devices[0].use;

  const vk::MemoryAccounting before = dev->accounting();
  auto delta = [&](MemoryKind k, bool driver) {
    const vk::MemoryAccounting now = dev->accounting();
    return driver ? now.Bytes(k) - before.Bytes(k) : now.Requested(k) - before.Requested(k);
  };
  {
    auto gpu = MakeVk(*l, kSeq, kvt);
    ASSERT_TRUE(gpu);
    std::vector<std::unique_ptr<BackendSequence>> seqs;
    for (int i = 0; i < kSeq; ++i) {
      auto s = gpu->NewSequence();
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      seqs.push_back(std::move(*s));
    }
    for (bool driver : {false, true}) {
      SCOPED_TRACE(driver ? "driver bytes" : "requested bytes");
      EXPECT_EQ(delta(MemoryKind::kWeights, driver), want.weights);
      EXPECT_EQ(delta(MemoryKind::kKv, driver), want.kv);
      EXPECT_EQ(delta(MemoryKind::kScratch, driver), want.scratch);
      EXPECT_EQ(delta(MemoryKind::kStaging, driver), 0u);
    }
    const VulkanAllocation a = gpu->allocated();
    EXPECT_EQ(a.weights, want.weights);
    EXPECT_EQ(a.kv, want.kv);
    EXPECT_EQ(a.scratch, want.scratch);
    std::printf("[exactness] %s kv %s on %s: weights %llu kv %llu scratch %llu bytes == plan\n",
                preset, kvt == KvType::kQ8_0 ? "q8_0" : "f16", gpu->device_name().c_str(),
                static_cast<unsigned long long>(want.weights),
                static_cast<unsigned long long>(want.kv),
                static_cast<unsigned long long>(want.scratch));
    // A third sequence opens a second block of n_seq; dropping sequences frees their block.
    auto extra = gpu->NewSequence();
    ASSERT_TRUE(extra.ok());
    EXPECT_EQ(delta(MemoryKind::kKv, false), 2 * want.kv);
    extra->reset();
    EXPECT_EQ(delta(MemoryKind::kKv, false), want.kv);
  }
  for (int k = 0; k < vk::kMemoryKindCount; ++k) {
    EXPECT_EQ(delta(static_cast<MemoryKind>(k), false), 0u) << "kind " << k << " leaked";
  }
}

TEST_P(Exactness, PlanEqualsAllocation) {
  for (KvType kvt : {KvType::kF16, KvType::kQ8_0}) {
    SCOPED_TRACE(kvt == KvType::kQ8_0 ? "kv q8_0" : "kv f16");
    CheckPlanEqualsAllocation(GetParam(), kvt);
  }
}

INSTANTIATE_TEST_SUITE_P(TinyPresets, Exactness, ::testing::Values("tiny", "tiny-moe", "tiny-ple"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

// A weight type with no Vulkan kernel is a FailedPrecondition naming the tensor and the type.
TEST(VulkanBackend, UnsupportedWeightTypeNamesTensor) {
  GARNET_REQUIRE_VULKAN();
  for (const char* t :
       {"q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs", "bf16"}) {
    auto type = ParseTypeName(t);
    ASSERT_TRUE(type.has_value()) << t;
    if (vk::Kernels::SupportsWeightType(*type)) continue;
    auto l = Load("tiny", t);
    ASSERT_TRUE(l);
    auto b = VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), VkOptions(),
                                   TestDevice());
    ASSERT_FALSE(b.ok()) << t;
    EXPECT_EQ(b.status().code(), Code::kFailedPrecondition) << b.status().ToString();
    EXPECT_NE(b.status().ToString().find("tensor "), std::string::npos) << b.status().ToString();
    EXPECT_NE(b.status().ToString().find(TypeName(*type)), std::string::npos)
        << b.status().ToString();
  }
}

// The Engine picks the backend by name; greedy generation agrees with the CPU engine.
TEST(VulkanEngine, GenerateMatchesCpuEngine) {
  GARNET_REQUIRE_VULKAN();
  engine::EngineOptions o;
  o.n_ctx = kCtx;
  o.n_ubatch = kUbatch;
  o.n_threads = 2;
  o.kv_type = KvType::kF16;
  o.backend = "vulkan";
  o.device = std::to_string(TestDevice()->info().index);
  const std::string path = TestModelPath("tiny", "f32");
  auto ev = engine::Engine::Open(path, o);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ((*ev)->backend_name(), "vulkan");
  o.backend = "cpu";
  auto ec = engine::Engine::Open(path, o);
  ASSERT_TRUE(ec.ok());
  ExpectSameGreedyTokens(**ev, **ec);
  if (HasFatalFailure()) return;
  o.backend = "vulkan";
  o.kv_type = KvType::kF32;
  EXPECT_EQ(engine::Engine::Open(path, o).status().code(), Code::kInvalidArgument);
  o.kv_type = KvType::kF16;
  o.device = "no such device";
  EXPECT_EQ(engine::Engine::Open(path, o).status().code(), Code::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// Mixed GPU/CPU placement (issue #6): host layers and host experts inside one forward pass.

// A placement to test: a planner policy over a one-GPU inventory whose GPU budget is the
// all-GPU need minus `gpu_short` bytes (0: plenty), as kAuto sees a too-small card.
struct MixedCase {
  const char* name;
  const char* preset;
  plan::PolicyMode mode;
  uint32_t gpu_layers;
  // kAuto only: GPU budget = all-GPU need - short_experts * (one expert set) - short_layers *
  // (one layer's weights) + half a unit, so the planner moves that many expert sets / layers.
  uint32_t short_experts;
  uint32_t short_layers;
  // What the plan must come out as (layers on the host, expert sets on the host).
  uint32_t want_host_layers;
  uint32_t want_host_experts;
  KvType kv = KvType::kF16;  // GPU caches, GPU copies of host donors' and the host layers' caches
};

plan::KvOptions MixedKv(uint32_t n_seq, KvType type) {
  plan::KvOptions kv;
  kv.n_ctx = kCtx;
  kv.n_ubatch = kUbatch;
  kv.n_seq = n_seq;
  kv.type = PlanKvType(type);
  return kv;
}

// The plan for a case; the inventory's GPU budget is derived from an all-GPU plan's need.
Result<plan::Plan> MixedPlan(const MixedCase& c, const gguf::Model& model, uint32_t n_seq) {
  GARNET_ASSIGN_OR_RETURN(plan::ModelShape shape, plan::ShapeFromModel(model));
  plan::Policy policy;
  policy.mode = c.mode;
  policy.gpu_layers = c.gpu_layers;
  policy.gpu_reserve = 0;
  policy.host_reserve = 0;
  plan::Inventory inv;
  inv.gpus.push_back({"test gpu", 1ull << 40, 1ull << 40});
  inv.host = {"host", 1ull << 40, 1ull << 40};
  if (c.short_experts || c.short_layers) {
    GARNET_ASSIGN_OR_RETURN(plan::Plan all,
                            plan::MakePlan(shape, MixedKv(n_seq, c.kv), inv, policy));
    uint64_t expert_set = 0, layer = 0;
    for (const auto& t : shape.tensors) {
      if (t.layer != 0) continue;
      if (t.cls == plan::TensorClass::kExperts) expert_set += plan::AlignUp(t.bytes);
      if (t.cls == plan::TensorClass::kLayer) layer += plan::AlignUp(t.bytes);
    }
    const uint64_t need = all.devices[0].use.total();
    // Half a unit of slack, so the few KB of crossing buffers a move adds to the GPU's scratch
    // do not tip the planner into moving one more.
    const uint64_t cut = c.short_experts * expert_set + c.short_layers * layer -
                         (c.short_layers ? layer : expert_set) / 2;
    inv.gpus[0].free_bytes = inv.gpus[0].total_bytes = need - cut;
  }
  return plan::MakePlan(shape, MixedKv(n_seq, c.kv), inv, policy);
}

std::unique_ptr<VulkanBackend> MakeMixed(const Loaded& l, const plan::Plan& pl, int64_t n_seq,
                                         KvType kv = KvType::kF16) {
  VulkanBackendOptions o = VkOptions(n_seq, kv);
  o.n_threads = 2;
  Status st = PlacementFromPlan(pl, l.params, &o);
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto b = VulkanBackend::Create(l.model.get(), &l.params, l.weights.get(), o, TestDevice());
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(*b) : nullptr;
}

class MixedExactness : public ::testing::TestWithParam<MixedCase> {};
class MixedParity : public ::testing::TestWithParam<MixedCase> {};

// Predicted bytes == allocated bytes on the GPU (weights, KV, scratch) and on the host (KV of the
// host layers for n_seq sequences, the CPU scratch arena), exactly.
TEST_P(MixedExactness, PlanEqualsAllocation) {
  GARNET_REQUIRE_VULKAN();
  const MixedCase& c = GetParam();
  vk::Device* dev = TestDevice();
  auto l = Load(c.preset, "f16");
  ASSERT_TRUE(l);
  constexpr int64_t kSeq = 2;
  auto pl = MixedPlan(c, *l->model, kSeq);
  ASSERT_TRUE(pl.ok()) << pl.status().ToString();
  ASSERT_NE(pl->verdict, plan::Verdict::kDoesNotFit) << pl->reason;
  EXPECT_EQ(pl->layers_on_host(), c.want_host_layers) << plan::FormatPlan(*pl);
  EXPECT_EQ(pl->expert_sets_on_host(), c.want_host_experts) << plan::FormatPlan(*pl);
  const plan::MemoryUse& gpu_want = pl->devices[0].use;
  const plan::MemoryUse& host_want = pl->devices[static_cast<size_t>(pl->host_index())].use;
  const vk::MemoryAccounting before = dev->accounting();
  auto delta = [&](MemoryKind k) { return dev->accounting().Requested(k) - before.Requested(k); };
  {
    auto gpu = MakeMixed(*l, *pl, kSeq, c.kv);
    ASSERT_TRUE(gpu);
    std::vector<std::unique_ptr<BackendSequence>> seqs;
    for (int i = 0; i < kSeq; ++i) {
      auto s = gpu->NewSequence();
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      seqs.push_back(std::move(*s));
    }
    EXPECT_EQ(delta(MemoryKind::kWeights), gpu_want.weights);
    EXPECT_EQ(delta(MemoryKind::kKv), gpu_want.kv);
    EXPECT_EQ(delta(MemoryKind::kScratch), gpu_want.scratch);
    EXPECT_EQ(delta(MemoryKind::kStaging), 0u);
    const VulkanAllocation a = gpu->allocated();
    EXPECT_EQ(a.weights, gpu_want.weights);
    EXPECT_EQ(a.kv, gpu_want.kv);
    EXPECT_EQ(a.scratch, gpu_want.scratch);
    EXPECT_EQ(a.host_kv, host_want.kv);
    EXPECT_EQ(a.host_scratch, host_want.scratch);
    EXPECT_GT(a.host_scratch, 0u);
    std::printf(
        "[mixed exactness] %s: gpu weights %llu kv %llu scratch %llu, host kv %llu "
        "scratch %llu bytes == plan\n",
        c.name, static_cast<unsigned long long>(a.weights), static_cast<unsigned long long>(a.kv),
        static_cast<unsigned long long>(a.scratch), static_cast<unsigned long long>(a.host_kv),
        static_cast<unsigned long long>(a.host_scratch));
    seqs.pop_back();
    EXPECT_EQ(gpu->allocated().host_kv, host_want.kv / kSeq);
  }
  for (int k = 0; k < vk::kMemoryKindCount; ++k) {
    EXPECT_EQ(delta(static_cast<MemoryKind>(k)), 0u) << "kind " << k << " leaked";
  }
}

// Logits within 1e-2 relative of the all-CPU backend through a prefill whose prompt (40) wraps
// the sliding ring (24 cells), and 32 greedy tokens decoded one by one, identical.
TEST_P(MixedParity, MatchesCpu) {
  GARNET_REQUIRE_VULKAN();
  const MixedCase& c = GetParam();
  auto l = Load(c.preset, "f16");
  ASSERT_TRUE(l);
  auto pl = MixedPlan(c, *l->model, 1);
  ASSERT_TRUE(pl.ok()) << pl.status().ToString();
  auto cpu = MakeCpu(*l, c.kv);
  auto gpu = MakeMixed(*l, *pl, 1, c.kv);
  ASSERT_TRUE(cpu && gpu);
  const int64_t V = l->params.n_vocab;
  auto prompt = Tokens(kPrompt, static_cast<int>(V), 17);
  const auto t0 = std::chrono::steady_clock::now();
  ParityFigures worst;
  CheckParity(*cpu, *gpu, V, prompt, kGenerateF32, &worst);
  if (HasFatalFailure()) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "[mixed parity] %s (%u layers, %u expert sets on host) on %s: max rel diff prefill "
      "%.2e decode %.2e, %d greedy tokens identical (%.1f s)\n",
      c.name, pl->layers_on_host(), pl->expert_sets_on_host(), gpu->device_name().c_str(),
      worst.prefill, worst.decode, kGenerateF32, secs);
}

constexpr plan::PolicyMode kAuto = plan::PolicyMode::kAuto;
constexpr plan::PolicyMode kGpuLayers = plan::PolicyMode::kGpuLayers;
constexpr plan::PolicyMode kExperts = plan::PolicyMode::kExpertsOnHost;

const MixedCase kMixedCases[] = {
    // tiny: the lowest 2 of 6 layers on the CPU.
    {"tiny_gpu_layers_4", "tiny", kGpuLayers, 4, 0, 0, 2, 0},
    // tiny-moe: the auto policy on a card 3 expert sets short (the lowest 3 layers' experts
    // move: host and GPU experts in one pass); one 6 expert sets + 2 layers short (every expert
    // set and the lowest 2 layers move); every expert set on the host by policy.
    {"tiny_moe_auto_3_expert_sets", "tiny-moe", kAuto, 0, 3, 0, 0, 3},
    {"tiny_moe_auto_experts_and_layers", "tiny-moe", kAuto, 0, 6, 2, 2, 6},
    // tiny-ple: the lowest 4 of 8 layers on the CPU (layers 4..7 on the GPU share the caches of
    // host layers 2 and 3: GPU copies); the lowest 2 (the KV donors stay on the GPU).
    {"tiny_ple_gpu_layers_4", "tiny-ple", kGpuLayers, 4, 0, 0, 4, 0},
    // The same with q8_0 caches: host layers quantise theirs, the GPU copies quantise the same.
    {"tiny_ple_gpu_layers_4_kv_q8_0", "tiny-ple", kGpuLayers, 4, 0, 0, 4, 0, KvType::kQ8_0},
    {"tiny_ple_gpu_layers_6", "tiny-ple", kGpuLayers, 6, 0, 0, 2, 0},
    {"tiny_moe_experts_on_host", "tiny-moe", kExperts, 0, 0, 0, 0, 6},
};
auto MixedName = [](const auto& info) { return std::string(info.param.name); };

INSTANTIATE_TEST_SUITE_P(TinyPresets, MixedExactness, ::testing::ValuesIn(kMixedCases), MixedName);
// Parity on the first five (the last two place subsets of what those cover: host layers before
// GPU donors, all experts on the host): 3-7 s each on lavapipe.
INSTANTIATE_TEST_SUITE_P(TinyPresets, MixedParity,
                         ::testing::ValuesIn(kMixedCases, kMixedCases + 5), MixedName);

// A batch mixing two sequences through host layers (each sequence's own host KV) and host
// experts: matches the CPU backend's ForwardBatch.
TEST(MixedPlan, ForwardBatchMatchesCpu) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-moe", "f16");
  ASSERT_TRUE(l);
  auto pl = MixedPlan(kMixedCases[2], *l->model, 2);
  ASSERT_TRUE(pl.ok()) << pl.status().ToString();
  ASSERT_GT(pl->layers_on_host(), 0u);
  ASSERT_GT(pl->expert_sets_on_host(), pl->layers_on_host());
  auto cpu = MakeCpu(*l);
  auto gpu = MakeMixed(*l, *pl, 2);
  ASSERT_TRUE(cpu && gpu);
  CheckTwoSequenceBatches(*cpu, *gpu, l->params.n_vocab);
}

// The backend refuses placements it cannot run, with errors that say why.
TEST(MixedPlan, BackendRejectsBadPlacements) {
  GARNET_REQUIRE_VULKAN();
  auto l = Load("tiny-ple", "f32");
  ASSERT_TRUE(l);
  auto make = [&](std::vector<bool> host_layers, std::vector<bool> host_experts = {}) {
    VulkanBackendOptions o = VkOptions();
    o.host_layers = std::move(host_layers);
    o.host_experts = std::move(host_experts);
    return VulkanBackend::Create(l->model.get(), &l->params, l->weights.get(), o, TestDevice())
        .status();
  };
  const std::vector<bool> F(8, false);
  auto hole = F;
  hole[3] = true;  // not a prefix
  EXPECT_EQ(make(hole).code(), Code::kInvalidArgument) << make(hole).ToString();
  EXPECT_EQ(make(std::vector<bool>(8, true)).code(), Code::kInvalidArgument);
  EXPECT_EQ(make(std::vector<bool>(3, false)).code(), Code::kInvalidArgument);
  EXPECT_EQ(make(F, std::vector<bool>(8, true)).code(), Code::kInvalidArgument);  // dense model
  plan::Plan two;
  two.devices.resize(3);
  two.layer_device = {0, 0, 0, 0, 1, 1, 1, 1};
  VulkanBackendOptions o;
  EXPECT_EQ(PlacementFromPlan(two, l->params, &o).code(), Code::kUnimplemented);
}

// The Engine takes a policy: layers on the host with the Vulkan backend, generation equal to the
// CPU engine's; the CPU-only policy opens the CPU backend.
TEST(MixedEngine, PolicyOpensMixedPlacement) {
  GARNET_REQUIRE_VULKAN();
  engine::EngineOptions o;
  o.n_ctx = kCtx;
  o.n_ubatch = kUbatch;
  o.n_threads = 2;
  o.kv_type = KvType::kF16;
  o.backend = "vulkan";
  o.device = std::to_string(TestDevice()->info().index);
  o.policy.mode = plan::PolicyMode::kGpuLayers;
  o.policy.gpu_layers = 3;
  const std::string path = TestModelPath("tiny-moe", "f32");
  auto ev = engine::Engine::Open(path, o);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ((*ev)->backend_name(), "vulkan");
  ASSERT_NE((*ev)->plan(), nullptr);
  EXPECT_EQ((*ev)->plan()->layers_on_host(), 3u);
  engine::EngineOptions oc = o;
  oc.backend = "cpu";
  auto ec = engine::Engine::Open(path, oc);
  ASSERT_TRUE(ec.ok());
  ExpectSameGreedyTokens(**ev, **ec);
  if (HasFatalFailure()) return;
  o.policy.mode = plan::PolicyMode::kCpuOnly;
  auto e_cpu = engine::Engine::Open(path, o);
  ASSERT_TRUE(e_cpu.ok()) << e_cpu.status().ToString();
  EXPECT_EQ((*e_cpu)->backend_name(), "cpu");
  // A machine too small for the model: the plan's reason comes back.
  o.policy.mode = plan::PolicyMode::kAuto;
  plan::Inventory tiny_machine;
  tiny_machine.gpus.push_back({"small", 1 << 20, 1 << 20});
  tiny_machine.host = {"host", 1 << 20, 1 << 20};
  o.inventory = tiny_machine;
  auto none = engine::Engine::Open(path, o);
  EXPECT_EQ(none.status().code(), Code::kResourceExhausted);
  EXPECT_NE(none.status().ToString().find("does not fit"), std::string::npos)
      << none.status().ToString();
}

}  // namespace
}  // namespace garnet::model
