// Whole plans for the real Gemma 4 variants (E2B, E4B, 31B, 26B-A4B at Q4_K_M / Q8_0 / BF16) on a
// 16 GiB and a 24 GiB GPU at several contexts, checked against numbers derived by hand from
// ../shared/docs/gemma4.md §5:
//   - weight totals against the §5.2 file-size table;
//   - KV bytes against the §5.3 formula with its per-token table (full layers: KiB per token of
//     context; sliding layers: bytes per cell, W + n_ubatch cells);
//   - the verdict, weights per device, expert sets moved and the largest context, from
//     "weights + KV + scratch + overhead <= free - reserve" worked out here independently of the
//     planner's search.
// Shapes: the hyper-parameters are typed in from §1.1 (variants.h) and cross-checked against the
// header garnet-mkmodel writes; tensor names, types and byte sizes come from mkmodel's plan (its
// Q4_K_M mix and row-length fallbacks, §6.1).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/gguf/gguf.h"
#include "engine/plan/planner.h"
#include "tests/gguf/test_util.h"
#include "tests/plan/variants.h"
#include "tools/bench-fit/sparse_model.h"
#include "tools/mkmodel/plan.h"
#include "tools/mkmodel/spec.h"

namespace garnet::plan {
namespace {

constexpr uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

struct Variant {
  const char* preset;
  testing::VariantSpec spec;
  // §5.3 table: F16 bytes per token of all owning full layers, and per cell of all owning
  // sliding layers (2 * elems/token-slot).
  uint64_t full_per_token;
  uint64_t swa_per_cell;
  // §5.2 table, GB (1e9 bytes): BF16, Q8_0, Q4_K_M (PLE table Q4_K).
  double gb_bf16, gb_q8_0, gb_q4_k_m;
};

const Variant kVariants[] = {
    {"e2b", testing::kE2B, 6 * KiB, 2 * 6144, 9.26, 4.93, 2.79},
    {"e4b", testing::kE4B, 16 * KiB, 2 * 20480, 14.93, 7.96, 4.56},
    {"31b", testing::k31B, 80 * KiB, 2 * 409600, 61.40, 32.62, 18.67},
    {"26b-a4b", testing::k26B, 20 * KiB, 2 * 102400, 50.47, 26.82, 16.76},
};

const Variant& Find(std::string_view preset) {
  for (const auto& v : kVariants) {
    if (preset == v.preset) return v;
  }
  ADD_FAILURE() << preset;
  return kVariants[0];
}

mkmodel::ModelPlan MkPlan(const char* preset, const char* type) {
  auto spec = mkmodel::PresetSpec(preset);
  EXPECT_TRUE(spec.ok()) << preset;
  mkmodel::TypeOptions t;
  t.base = type;
  auto plan = mkmodel::MakePlan(*spec, t);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  return *plan;
}

ModelShape Shape(const Variant& v, const char* type) {
  ModelShape s;
  s.params = testing::MakeParams(v.spec);
  for (const auto& t : MkPlan(v.preset, type).tensors) {
    auto bytes = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
    EXPECT_TRUE(bytes.ok()) << t.name;
    auto w = ClassifyTensor(t.name, t.type, *bytes, s.params);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    s.tensors.push_back(*w);
  }
  return s;
}

Inventory Gpu(uint64_t vram) {
  Inventory inv;
  inv.gpus.push_back({"gpu", vram, vram, GpuType::kDiscrete, false});
  inv.host = {"host", 128 * GiB, 128 * GiB, GpuType::kOther, false};
  return inv;
}

KvOptions Ctx(uint32_t n) {
  KvOptions o;
  o.n_ctx = n;
  return o;
}

// §5.3 with W + n_ubatch sliding cells (capped at the context), F16, one sequence.
uint64_t KvFormula(const Variant& v, uint32_t ctx) {
  const uint64_t swa_cells = std::min<uint64_t>(ctx, v.spec.window + 512);
  return v.full_per_token * ctx + v.swa_per_cell * swa_cells;
}

TEST(Variants, HandTypedShapesMatchTheHeaderMkmodelWrites) {
  gguf::testing::ScratchDir dir;
  for (const auto& v : kVariants) {
    SCOPED_TRACE(v.preset);
    const std::string path = dir.Path(std::string(v.preset) + ".gguf");
    ASSERT_TRUE(benchfit::WriteSparseModel(MkPlan(v.preset, "q4_k_m"), path).ok());
    auto model = gguf::Model::Open(path);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    auto shape = ShapeFromModel(**model);
    ASSERT_TRUE(shape.ok()) << shape.status().ToString();
    const auto& a = shape->params;
    const auto b = testing::MakeParams(v.spec);
    EXPECT_EQ(a.n_embd, b.n_embd);
    EXPECT_EQ(a.n_vocab, b.n_vocab);
    EXPECT_EQ(a.context_length, b.context_length);
    EXPECT_EQ(a.sliding_window, b.sliding_window);
    EXPECT_EQ(a.n_embd_per_layer, b.n_embd_per_layer);
    EXPECT_EQ(a.n_expert, b.n_expert);
    EXPECT_EQ(a.n_expert_used, b.n_expert_used);
    EXPECT_EQ(a.expert_ffn_dim, b.expert_ffn_dim);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t il = 0; il < a.layers.size(); ++il) {
      SCOPED_TRACE(il);
      EXPECT_EQ(a.layers[il].kind, b.layers[il].kind);
      EXPECT_EQ(a.layers[il].head_dim, b.layers[il].head_dim);
      EXPECT_EQ(a.layers[il].n_head, b.layers[il].n_head);
      EXPECT_EQ(a.layers[il].n_head_kv, b.layers[il].n_head_kv);
      EXPECT_EQ(a.layers[il].ffn_dim, b.layers[il].ffn_dim);
      EXPECT_EQ(a.layers[il].has_v, b.layers[il].has_v);
      EXPECT_EQ(a.layers[il].kv_source, b.layers[il].kv_source);
    }
    // Same tensors, bytes and classes as the shape built without a file.
    const ModelShape s = Shape(v, "q4_k_m");
    ASSERT_EQ(shape->tensors.size(), s.tensors.size());
    for (size_t i = 0; i < s.tensors.size(); ++i) {
      EXPECT_EQ(shape->tensors[i].name, s.tensors[i].name);
      EXPECT_EQ(shape->tensors[i].bytes, s.tensors[i].bytes);
      EXPECT_EQ(shape->tensors[i].cls, s.tensors[i].cls);
    }
  }
}

TEST(Variants, WeightTotalsMatchTheFileSizeTable) {
  for (const auto& v : kVariants) {
    for (const auto& [type, gb] : {std::pair{"bf16", v.gb_bf16}, std::pair{"q8_0", v.gb_q8_0},
                                   std::pair{"q4_k_m", v.gb_q4_k_m}}) {
      SCOPED_TRACE(std::string(v.preset) + " " + type);
      uint64_t total = 0;
      for (const auto& t : Shape(v, type).tensors) total += t.bytes;
      EXPECT_NEAR(static_cast<double>(total) / 1e9, gb, gb * 0.01);  // the table rounds
    }
  }
}

TEST(Variants, KvMatchesTheSection53Formula) {
  for (const auto& v : kVariants) {
    const auto p = testing::MakeParams(v.spec);
    for (uint32_t ctx : {1024u, 4096u, 32768u, 131072u}) {
      EXPECT_EQ(KvTotalBytes(p, Ctx(ctx)), KvFormula(v, ctx)) << v.preset << " @" << ctx;
    }
  }
  // The §5.3 worked examples (minimal ring W, i.e. without the n_ubatch cells): 31B @32k =
  // 2.5 GiB + 0.8 GiB... as printed there, rounded: 3.28 GiB.
  const auto& b31 = Find("31b");
  EXPECT_EQ(b31.full_per_token * 32768, 5 * GiB / 2);
  EXPECT_EQ(b31.swa_per_cell * 1024, 800 * MiB);
}

struct Expect {
  bool all_on_gpu;       // weights + KV + scratch + overhead within the budget
  uint32_t expert_sets;  // sets moved to host (MoE)
  Verdict verdict;
};

// What the plan must be, worked out from the rules: all on the GPU when it fits; else (MoE)
// expert sets leave lowest layer first until the GPU fits; else layers leave.
Expect HandPlan(const ModelShape& s, const Variant& v, uint64_t vram, uint32_t ctx) {
  const uint64_t budget = vram - Policy{}.gpu_reserve;
  uint64_t gpu_weights = 0;
  std::vector<uint64_t> experts(s.params.n_layer, 0);
  for (const auto& t : s.tensors) {
    if (t.cls == TensorClass::kPleTable || t.cls == TensorClass::kUnused) continue;
    gpu_weights += AlignUp(t.bytes);
    if (t.cls == TensorClass::kExperts) experts[t.layer] += AlignUp(t.bytes);
  }
  uint64_t need =
      gpu_weights + KvFormula(v, ctx) + ScratchBytes(s.params, Ctx(ctx)) + kGpuContextOverhead;
  if (need <= budget) return {true, 0, Verdict::kFits};
  uint32_t moved = 0;
  while (s.params.is_moe() && moved < s.params.n_layer && need > budget) {
    need -= experts[moved++];
  }
  if (need <= budget) return {false, moved, Verdict::kFitsExpertOffload};
  return {false, moved, Verdict::kFitsLayerOffload};
}

TEST(Variants, WholePlansOn16And24GiB) {
  int expert_offloads = 0, layer_offloads = 0, fits = 0;
  for (const auto& v : kVariants) {
    for (const char* type : {"q4_k_m", "q8_0", "bf16"}) {
      const ModelShape s = Shape(v, type);
      uint64_t ple = 0, gpu_weights = 0;
      for (const auto& t : s.tensors) {
        if (t.cls == TensorClass::kPleTable) ple += t.bytes;
        if (t.cls != TensorClass::kPleTable && t.cls != TensorClass::kUnused) {
          gpu_weights += AlignUp(t.bytes);
        }
      }
      for (uint64_t vram : {16 * GiB, 24 * GiB}) {
        for (uint32_t ctx : {4096u, 32768u, 131072u}) {
          SCOPED_TRACE(std::string(v.preset) + " " + type + " " + FormatBytes(vram) + " @" +
                       std::to_string(ctx));
          auto plan = MakePlan(s, Ctx(ctx), Gpu(vram), Policy{});
          ASSERT_TRUE(plan.ok()) << plan.status().ToString();
          const Expect e = HandPlan(s, v, vram, ctx);
          EXPECT_EQ(plan->verdict, e.verdict) << plan->reason;
          const DeviceUse& gpu = plan->devices[0];
          const DeviceUse& host = plan->devices[1];
          EXPECT_TRUE(gpu.fits());
          if (e.all_on_gpu) {
            ++fits;
            EXPECT_EQ(gpu.use.weights, gpu_weights);
            EXPECT_EQ(gpu.use.kv, KvFormula(v, ctx));
            EXPECT_EQ(host.use.weights, ple);  // only the PLE table (E2B/E4B) stays home
            EXPECT_EQ(host.use.kv, 0u);
            EXPECT_GE(plan->max_ctx, ctx);
          } else if (e.verdict == Verdict::kFitsExpertOffload) {
            ++expert_offloads;
            EXPECT_EQ(plan->expert_sets_on_host(), e.expert_sets) << plan->reason;
            EXPECT_EQ(plan->layers_on_host(), 0u);
            EXPECT_EQ(gpu.use.kv, KvFormula(v, ctx));
            EXPECT_NE(plan->reason.find(std::to_string(e.expert_sets) + " of 30 expert sets"),
                      std::string::npos)
                << plan->reason;
          } else {
            ++layer_offloads;
            const uint32_t on_host = plan->layers_on_host();
            ASSERT_GT(on_host, 0u);
            for (uint32_t il = 0; il < s.params.n_layer; ++il) {
              EXPECT_EQ(plan->layer_device[il], il < on_host ? 1 : 0) << il;
            }
            EXPECT_EQ(gpu.use.kv + host.use.kv, KvFormula(v, ctx));
            // One more layer on the GPU would not fit (dense models: -ngl places exactly the
            // same layers; a MoE model's experts are all on the host by now, which -ngl does not
            // do).
            if (!s.params.is_moe()) {
              Policy more;
              more.mode = PolicyMode::kGpuLayers;
              more.gpu_layers = s.params.n_layer - on_host + 1;
              auto bigger = MakePlan(s, Ctx(ctx), Gpu(vram), more);
              ASSERT_TRUE(bigger.ok());
              EXPECT_FALSE(bigger->devices[0].fits());
            } else {
              EXPECT_EQ(plan->expert_sets_on_host(), s.params.n_layer);
            }
          }
        }
      }
    }
  }
  // The sweep covers every verdict but "does not fit" (host RAM is 128 GiB).
  EXPECT_GT(fits, 0);
  EXPECT_GT(expert_offloads, 0);
  EXPECT_GT(layer_offloads, 0);
}

// Spot values worked out by hand from §5 (GiB = 2^30; budget = VRAM - 0.5 GiB reserve).
TEST(Variants, HandCheckedSpotValues) {
  // 31B Q4_K_M: 18.67 GB = 17.39 GiB of weights. 24 GiB @32k: + KV 2.5 + 1.17 GiB + scratch +
  // 0.25 overhead ~ 21.5 <= 23.5: fits. Largest context: (23.5 - 17.39 - 1.17 - scratch - 0.25)
  // / 80 KiB per token.
  {
    const auto& v = Find("31b");
    const ModelShape s = Shape(v, "q4_k_m");
    auto plan = MakePlan(s, Ctx(32768), Gpu(24 * GiB), Policy{});
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->verdict, Verdict::kFits);
    const uint64_t fixed = plan->devices[0].use.weights + v.swa_per_cell * 1536 +
                           ScratchBytes(s.params, Ctx(plan->max_ctx)) + kGpuContextOverhead;
    EXPECT_EQ(plan->max_ctx, (24 * GiB - 512 * MiB - fixed) / v.full_per_token);
    EXPECT_NEAR(static_cast<double>(plan->max_ctx), 58900, 300);
    // 16 GiB: the weights alone (17.4 GiB) exceed the budget: layers go to the host.
    auto small = MakePlan(s, Ctx(32768), Gpu(16 * GiB), Policy{});
    ASSERT_TRUE(small.ok());
    EXPECT_EQ(small->verdict, Verdict::kFitsLayerOffload);
  }
  // 26B-A4B Q4_K_M (16.76 GB = 15.6 GiB). 16 GiB @32k: 15.6 + KV 0.92 (20 KiB x 32768 + 200 KiB x
  // 1536) + scratch + 0.25 ~ 17 GiB, 1.5 GiB over: with expert sets of 0.42-0.51 GiB (gate_up
  // Q4_K 0.27 GB + down Q5_0 0.17 GB, or Q8_0 0.27 GB on use_more_bits layers), three sets.
  // 24 GiB @262144: 15.6 + 5.0 + 0.29 + scratch + 0.25 ~ 21.3 GiB: fits at the full context.
  {
    const auto& v = Find("26b-a4b");
    const ModelShape s = Shape(v, "q4_k_m");
    auto plan = MakePlan(s, Ctx(32768), Gpu(16 * GiB), Policy{});
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->verdict, Verdict::kFitsExpertOffload);
    EXPECT_EQ(plan->expert_sets_on_host(), 3u) << plan->reason;
    for (uint32_t il = 0; il < 30; ++il) EXPECT_EQ(plan->experts_on_host[il], il < 3) << il;
    auto full = MakePlan(s, Ctx(262144), Gpu(24 * GiB), Policy{});
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(full->verdict, Verdict::kFits) << full->reason;
    EXPECT_EQ(full->max_ctx, 262144u);
    EXPECT_NEAR(static_cast<double>(full->devices[0].use.total()) / GiB, 21.3, 0.2);
  }
  // E2B Q4_K_M: the PLE table (2.35 B params x 4.5 bits = 1.32 GB = 1.2 GiB) stays on the host;
  // the rest (1.4 GiB) and KV at the full 131072 context (0.75 GiB + 12 MiB) fit 16 GiB easily.
  {
    const auto& v = Find("e2b");
    const ModelShape s = Shape(v, "q4_k_m");
    auto plan = MakePlan(s, Ctx(131072), Gpu(16 * GiB), Policy{});
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->verdict, Verdict::kFits);
    EXPECT_NEAR(static_cast<double>(plan->devices[1].use.weights) / 1e9, 2.35e9 * 4.5 / 8 / 1e9,
                0.01);
    EXPECT_EQ(plan->devices[0].use.kv, 768 * MiB + 12 * MiB);
  }
}

}  // namespace
}  // namespace garnet::plan
