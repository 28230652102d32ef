// Tensor plans of the real shapes against ../shared/docs/gemma4.md §1.1/§3.3/§5/§6.1, and the
// type rules (q4_k_m mix, fallbacks, overrides) — no file is written.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tools/mkmodel/plan.h"

namespace garnet::mkmodel {
namespace {

using Shape = std::vector<uint64_t>;

ModelPlan Plan(std::string_view preset, std::string type = "") {
  auto spec = PresetSpec(preset);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  TypeOptions t;
  t.base = std::move(type);
  auto plan = MakePlan(*spec, t);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  return std::move(plan).value();
}

std::string B(int i, const char* s) {
  return "blk." + std::to_string(i) + "." + s;
}

void ExpectTensor(const ModelPlan& p, const std::string& name, Shape ne) {
  const PlannedTensor* t = p.Find(name);
  ASSERT_NE(t, nullptr) << name;
  EXPECT_EQ(t->ne, ne) << name;
}

void ExpectType(const ModelPlan& p, const std::string& name, GgmlType type) {
  const PlannedTensor* t = p.Find(name);
  ASSERT_NE(t, nullptr) << name;
  EXPECT_EQ(t->type, type) << name << " is " << TypeName(t->type);
}

uint64_t Params(const ModelPlan& p) {
  uint64_t n = 0;
  for (const auto& t : p.tensors) n += t.elements();
  return n;
}

TEST(MkmodelPlanTest, E2bShapes) {
  const ModelPlan p = Plan("e2b");
  ExpectTensor(p, "token_embd.weight", {1536, 262144});
  ExpectTensor(p, "per_layer_token_embd.weight", {8960, 262144});
  ExpectTensor(p, "per_layer_model_proj.weight", {1536, 8960});
  ExpectTensor(p, "per_layer_proj_norm.weight", {256});
  ExpectTensor(p, "rope_freqs.weight", {256});
  ExpectTensor(p, "output_norm.weight", {1536});
  for (int i = 0; i < 35; ++i) {
    const bool full = i % 5 == 4;
    ExpectTensor(p, B(i, "attn_q.weight"), {1536, full ? 4096u : 2048u});
    ExpectTensor(p, B(i, "attn_k.weight"), {1536, full ? 512u : 256u});
    ExpectTensor(p, B(i, "attn_v.weight"), {1536, full ? 512u : 256u});  // no K=V on E2B
    ExpectTensor(p, B(i, "attn_output.weight"), {full ? 4096u : 2048u, 1536});
    ExpectTensor(p, B(i, "attn_q_norm.weight"), {full ? 512u : 256u});
    ExpectTensor(p, B(i, "attn_k_norm.weight"), {full ? 512u : 256u});
    const uint64_t I = i < 15 ? 6144 : 12288;  // double-wide MLP on the KV-shared layers
    ExpectTensor(p, B(i, "ffn_gate.weight"), {1536, I});
    ExpectTensor(p, B(i, "ffn_up.weight"), {1536, I});
    ExpectTensor(p, B(i, "ffn_down.weight"), {I, 1536});
    ExpectTensor(p, B(i, "inp_gate.weight"), {1536, 256});
    ExpectTensor(p, B(i, "proj.weight"), {256, 1536});
    ExpectTensor(p, B(i, "post_norm.weight"), {1536});
    ExpectTensor(p, B(i, "layer_output_scale.weight"), {1});
    EXPECT_EQ(p.Find(B(i, "ffn_gate_inp.weight")), nullptr);
  }
  EXPECT_EQ(p.spec.FirstShared(), 15u);
  // 4.63 B parameters plus ~0.02 B of unused K/V on the shared layers (§5.1).
  EXPECT_NEAR(static_cast<double>(Params(p)), 4.65e9, 0.01e9);
  // Q4_K_M with the PLE table in Q4_K: ~2.79 GB (§5.2).
  EXPECT_NEAR(static_cast<double>(p.data_bytes()), 2.79e9, 0.06e9);
  ExpectType(p, "per_layer_model_proj.weight", GgmlType::kBF16);
  ExpectType(p, "per_layer_token_embd.weight", GgmlType::kQ4_K);
  ExpectType(p, "token_embd.weight", GgmlType::kQ6_K);
}

TEST(MkmodelPlanTest, E4bShapes) {
  const ModelPlan p = Plan("e4b");
  ExpectTensor(p, "per_layer_token_embd.weight", {10752, 262144});
  ExpectTensor(p, B(5, "attn_q.weight"), {2560, 4096});
  ExpectTensor(p, B(0, "attn_k.weight"), {2560, 512});
  ExpectTensor(p, B(5, "attn_v.weight"), {2560, 1024});
  ExpectTensor(p, B(41, "ffn_down.weight"), {10240, 2560});
  EXPECT_EQ(p.spec.FirstShared(), 24u);
  EXPECT_NEAR(static_cast<double>(Params(p)), 7.46e9 + 0.055e9, 0.02e9);
}

TEST(MkmodelPlanTest, ThirtyOneBShapes) {
  const ModelPlan p = Plan("31b");
  for (int i = 0; i < 60; ++i) {
    const bool full = i % 6 == 5;
    ExpectTensor(p, B(i, "attn_q.weight"), {5376, full ? 16384u : 8192u});
    ExpectTensor(p, B(i, "attn_k.weight"), {5376, full ? 2048u : 4096u});
    if (full) {
      EXPECT_EQ(p.Find(B(i, "attn_v.weight")), nullptr) << i;  // K=V
    } else {
      ExpectTensor(p, B(i, "attn_v.weight"), {5376, 4096});
    }
    ExpectTensor(p, B(i, "attn_output.weight"), {full ? 16384u : 8192u, 5376});
    ExpectTensor(p, B(i, "ffn_gate.weight"), {5376, 21504});
  }
  EXPECT_EQ(p.Find("per_layer_token_embd.weight"), nullptr);
  EXPECT_NEAR(static_cast<double>(Params(p)), 30.70e9, 0.02e9);
  EXPECT_NEAR(static_cast<double>(p.data_bytes()), 18.67e9, 0.4e9);
}

TEST(MkmodelPlanTest, TwentySixBMoeShapesAndFallbacks) {
  const ModelPlan p = Plan("26b-a4b");
  for (int i = 0; i < 30; ++i) {
    const bool full = i % 6 == 5;
    ExpectTensor(p, B(i, "attn_q.weight"), {2816, full ? 8192u : 4096u});
    ExpectTensor(p, B(i, "attn_k.weight"), {2816, full ? 1024u : 2048u});
    EXPECT_EQ(p.Find(B(i, "attn_v.weight")) == nullptr, full) << i;
    ExpectTensor(p, B(i, "ffn_gate.weight"), {2816, 2112});
    ExpectTensor(p, B(i, "ffn_down.weight"), {2112, 2816});
    ExpectTensor(p, B(i, "ffn_gate_inp.weight"), {2816, 128});
    ExpectTensor(p, B(i, "ffn_gate_inp.scale"), {2816});
    ExpectTensor(p, B(i, "ffn_gate_up_exps.weight"), {2816, 1408, 128});
    ExpectTensor(p, B(i, "ffn_down_exps.weight"), {704, 2816, 128});
    ExpectTensor(p, B(i, "ffn_down_exps.scale"), {128});
    for (const char* n : {"pre_ffw_norm_2.weight", "post_ffw_norm_1.weight",
                          "post_ffw_norm_2.weight", "post_ffw_norm.weight", "ffn_norm.weight"}) {
      ExpectTensor(p, B(i, n), {2816});
    }
    // §6.1: 2112- and 704-wide rows cannot hold K-quants.
    const GgmlType down = UseMoreBits(i, 30) ? GgmlType::kQ8_0 : GgmlType::kQ5_0;
    ExpectType(p, B(i, "ffn_down.weight"), down);
    ExpectType(p, B(i, "ffn_down_exps.weight"), down);
    ExpectType(p, B(i, "ffn_gate_up_exps.weight"), GgmlType::kQ4_K);
    ExpectType(p, B(i, "ffn_gate_inp.weight"), GgmlType::kBF16);
    ExpectType(p, B(i, "ffn_gate_inp.scale"), GgmlType::kF32);
  }
  EXPECT_NEAR(static_cast<double>(Params(p)), 25.23e9, 0.02e9);
  EXPECT_NEAR(static_cast<double>(p.data_bytes()), 16.76e9, 0.4e9);
}

TEST(MkmodelPlanTest, TwelveBShapes) {
  const ModelPlan p = Plan("12b");
  ExpectTensor(p, B(0, "attn_k.weight"), {3840, 2048});
  ExpectTensor(p, B(5, "attn_k.weight"), {3840, 512});
  EXPECT_EQ(p.Find(B(47, "attn_v.weight")), nullptr);
  EXPECT_NEAR(static_cast<double>(Params(p)), 11.91e9, 0.02e9);
}

TEST(MkmodelPlanTest, UseMoreBitsMatchesLlamaCpp) {
  // n = 60: first 7, last 8 (>= 52), and i with (i - 7) % 3 == 2 in between.
  std::vector<uint32_t> more;
  for (uint32_t i = 0; i < 60; ++i) {
    if (UseMoreBits(i, 60)) more.push_back(i);
  }
  const std::vector<uint32_t> want = {0,  1,  2,  3,  4,  5,  6,  9,  12, 15, 18, 21, 24, 27, 30,
                                      33, 36, 39, 42, 45, 48, 51, 52, 53, 54, 55, 56, 57, 58, 59};
  EXPECT_EQ(more, want);
}

TEST(MkmodelPlanTest, FallbackForRow) {
  EXPECT_EQ(FallbackForRow(GgmlType::kQ4_K, 512), GgmlType::kQ4_K);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ4_K, 2112), GgmlType::kQ5_0);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ5_K, 704), GgmlType::kQ5_1);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ6_K, 160), GgmlType::kQ8_0);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ6_K, 100), GgmlType::kF16);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ4_0, 48), GgmlType::kF16);
  EXPECT_EQ(FallbackForRow(GgmlType::kBF16, 7), GgmlType::kBF16);
  EXPECT_EQ(FallbackForRow(GgmlType::kIQ4_XS, 704), GgmlType::kIQ4_NL);
  EXPECT_EQ(FallbackForRow(GgmlType::kIQ4_XS, 2112), GgmlType::kIQ4_NL);
  EXPECT_EQ(FallbackForRow(GgmlType::kIQ4_XS, 5376), GgmlType::kIQ4_XS);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ3_K, 2112), GgmlType::kIQ4_NL);
  EXPECT_EQ(FallbackForRow(GgmlType::kQ2_K, 100), GgmlType::kF16);
}

TEST(MkmodelPlanTest, Q4KmMixOnTinyMoe) {
  const ModelPlan p = Plan("tiny-moe", "q4_k_m");
  EXPECT_EQ(p.file_type, 15u);
  ExpectType(p, "token_embd.weight", GgmlType::kQ6_K);
  // attn_v exists on the sliding layers 0, 1, 3, 4 only; use_more_bits(i, 4) picks i = 2, 3.
  ExpectType(p, B(0, "attn_v.weight"), GgmlType::kQ4_K);
  ExpectType(p, B(1, "attn_v.weight"), GgmlType::kQ4_K);
  ExpectType(p, B(3, "attn_v.weight"), GgmlType::kQ6_K);
  ExpectType(p, B(4, "attn_v.weight"), GgmlType::kQ6_K);
  // attn_output rows: 128 on sliding layers (fallback), 256 on full layers.
  ExpectType(p, B(0, "attn_output.weight"), GgmlType::kQ5_0);
  ExpectType(p, B(2, "attn_output.weight"), GgmlType::kQ4_K);
  // ffn_down rows are 160 / 64 wide: Q6_K -> Q8_0 on use_more_bits(l, 6) = {2, 5}, else Q5_0.
  for (int l = 0; l < 6; ++l) {
    const GgmlType want = (l == 2 || l == 5) ? GgmlType::kQ8_0 : GgmlType::kQ5_0;
    ExpectType(p, B(l, "ffn_down.weight"), want);
    ExpectType(p, B(l, "ffn_down_exps.weight"), want);
    ExpectType(p, B(l, "ffn_gate_up_exps.weight"), GgmlType::kQ4_K);
    ExpectType(p, B(l, "ffn_gate_inp.weight"), GgmlType::kF32);  // tiny: never quantised, F32
    ExpectType(p, B(l, "ffn_norm.weight"), GgmlType::kF32);
  }
}

TEST(MkmodelPlanTest, OverridesApplyBeforeFallback) {
  auto spec = PresetSpec("tiny-ple");
  ASSERT_TRUE(spec.ok());
  TypeOptions t;
  t.base = "q8_0";
  t.embd = GgmlType::kBF16;
  t.overrides = {{"per_layer_token_embd", GgmlType::kQ6_K}, {"proj.weight", GgmlType::kQ4_K}};
  auto p = MakePlan(*spec, t);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ExpectType(*p, "token_embd.weight", GgmlType::kBF16);
  ExpectType(*p, "per_layer_token_embd.weight", GgmlType::kQ6_K);  // rows of 512
  ExpectType(*p, B(0, "proj.weight"), GgmlType::kQ5_0);            // rows of 64: Q4_K falls back
  ExpectType(*p, B(0, "attn_q.weight"), GgmlType::kQ8_0);
  ExpectType(*p, "per_layer_model_proj.weight", GgmlType::kF32);  // never quantised
  EXPECT_EQ(p->file_type, 7u);
}

TEST(MkmodelPlanTest, RejectsBadInput) {
  auto spec = PresetSpec("tiny");
  ASSERT_TRUE(spec.ok());
  TypeOptions t;
  t.base = "q8_1";
  EXPECT_TRUE(MakePlan(*spec, t).status().IsInvalidArgument());
  t.base = "q4_k_s";
  EXPECT_TRUE(MakePlan(*spec, t).status().IsInvalidArgument());
  t.base = "f32";
  t.overrides = {{"attn", GgmlType::kIQ2_XXS}};
  EXPECT_TRUE(MakePlan(*spec, t).status().IsInvalidArgument());
  EXPECT_TRUE(PresetSpec("tiny-xl").status().IsNotFound());
  ModelSpec bad = *spec;
  bad.n_head_kv_swa = 3;  // does not divide 4 heads
  EXPECT_TRUE(MakePlan(bad, {}).status().IsInvalidArgument());
  bad = *spec;
  bad.n_vocab = 100;
  EXPECT_TRUE(MakePlan(bad, {}).status().IsInvalidArgument());
}

TEST(MkmodelPlanTest, SetLayerCountKeepsRules) {
  auto spec = PresetSpec("e2b");
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(SetLayerCount(*spec, 10).ok());
  EXPECT_EQ(spec->n_layer, 10u);
  EXPECT_TRUE(spec->IsFull(9));
  EXPECT_TRUE(spec->IsFull(4));
  // 20/35 of 10 = 5 shared, reduced to 5: first shared 5, layer 4 full, layer 3 sliding.
  EXPECT_EQ(spec->n_kv_shared, 5u);
  EXPECT_TRUE(ValidateSpec(*spec).ok());
  auto tiny = PresetSpec("tiny");
  ASSERT_TRUE(SetLayerCount(*tiny, 4).ok());
  EXPECT_TRUE(tiny->IsFull(2));
  EXPECT_TRUE(tiny->IsFull(3));  // last layer is always full
  EXPECT_TRUE(SetLayerCount(*tiny, 0).IsInvalidArgument());
  for (uint32_t n = 1; n <= 40; ++n) {
    auto s = PresetSpec("tiny-ple");
    ASSERT_TRUE(SetLayerCount(*s, n).ok());
    EXPECT_TRUE(ValidateSpec(*s).ok()) << n;
  }
}

}  // namespace
}  // namespace garnet::mkmodel
