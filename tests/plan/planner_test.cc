#include "engine/plan/planner.h"

#include <gtest/gtest.h>

#include "tests/plan/variants.h"

namespace garnet::plan {
namespace {

constexpr uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

// A 26B-A4B-shaped model with round, hand-chosen weight sizes: per layer 100 MiB of attention and
// dense MLP, 400 MiB of experts; token_embd 500 MiB. Easy to check placement arithmetic by hand.
ModelShape MoeShape() {
  ModelShape s;
  s.params = testing::MakeParams(testing::k26B);
  auto add = [&](std::string name, uint64_t bytes) {
    auto w = ClassifyTensor(name, GgmlType::kQ4_K, bytes, s.params);
    EXPECT_TRUE(w.ok()) << name;
    s.tensors.push_back(*w);
  };
  add("token_embd.weight", 500 * MiB);
  add("output_norm.weight", 11264);
  add("rope_freqs.weight", 1024);
  for (int il = 0; il < 30; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    add(b + "attn_q.weight", 60 * MiB);
    add(b + "ffn_up.weight", 40 * MiB);
    add(b + "ffn_gate_up_exps.weight", 300 * MiB);
    add(b + "ffn_down_exps.weight", 100 * MiB);
  }
  return s;
}

Inventory OneGpu(uint64_t free_bytes, uint64_t host_free = 64 * GiB) {
  Inventory inv;
  inv.gpus.push_back({"test-gpu", free_bytes, free_bytes, GpuType::kDiscrete, false});
  inv.host = {"host", host_free, host_free, GpuType::kOther, false};
  return inv;
}

KvOptions Ctx(uint32_t n) {
  KvOptions o;
  o.n_ctx = n;
  return o;
}

TEST(Planner, EverythingOnTheGpuWhenItFits) {
  auto shape = MoeShape();
  auto plan = MakePlan(shape, Ctx(8192), OneGpu(40 * GiB), Policy{});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->verdict, Verdict::kFits);
  EXPECT_EQ(plan->layers_on_host(), 0u);
  EXPECT_EQ(plan->expert_sets_on_host(), 0u);
  // weights: 500 MiB + 30 x 500 MiB + norm and rope rounded up to 256 B each.
  EXPECT_EQ(plan->devices[0].use.weights, 500 * MiB + 30 * 500 * MiB + 11264 + 1024);
  EXPECT_EQ(plan->devices[0].use.kv, KvTotalBytes(shape.params, Ctx(8192)));
  EXPECT_EQ(plan->devices[0].use.overhead, kGpuContextOverhead);
  EXPECT_EQ(plan->devices[1].use.total(), 0u);  // host does nothing
  EXPECT_GT(plan->max_ctx, 8192u);
  EXPECT_NE(plan->reason.find("fits"), std::string::npos);
}

// ChooseUbatch: 2048 where everything fits on the GPU with it at a small extra cost, the given
// ubatch where it would not fit, would cost more than 1/20 of the budget, or there is no GPU.
TEST(Planner, ChooseUbatchTakesTheLargeOneOnlyWhereItFitsCheaply) {
  auto shape = MoeShape();
  auto choose = [&](const KvOptions& kv, const Inventory& inv, const Policy& policy) {
    auto u = ChooseUbatch(shape, kv, inv, policy);
    EXPECT_TRUE(u.ok()) << u.status().ToString();
    return u.ok() ? *u : 0u;
  };
  auto plan = [&](const KvOptions& kv, const Inventory& inv) {
    auto p = MakePlan(shape, kv, inv, Policy{});
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? *p : Plan{};
  };
  KvOptions kv = Ctx(8192);
  kv.n_ubatch = 512;
  EXPECT_EQ(choose(kv, OneGpu(80 * GiB), Policy{}), kLargeUbatch);
  // The plan at 2048 really is all on the GPU, and costs more than the one at 512.
  KvOptions big = kv;
  big.n_ubatch = kLargeUbatch;
  const Plan p2048 = plan(big, OneGpu(80 * GiB)), p512 = plan(kv, OneGpu(80 * GiB));
  EXPECT_EQ(p2048.verdict, Verdict::kFits);
  ASSERT_GT(p2048.devices[0].use.total(), p512.devices[0].use.total());
  const uint64_t extra = p2048.devices[0].use.total() - p512.devices[0].use.total();
  // A GPU on which the 512 plan fits entirely with room for less than the 2048 plan's extra: the
  // large ubatch would push experts to the host, so 512 stays.
  const uint64_t tight = p512.devices[0].use.total() + Policy{}.gpu_reserve + extra / 2;
  EXPECT_EQ(plan(kv, OneGpu(tight)).verdict, Verdict::kFits);
  EXPECT_EQ(choose(kv, OneGpu(tight), Policy{}), 512u);
  // Four sequences: four sets of sliding rings of W + ubatch cells, so the large ubatch costs
  // more than 1/20 of a GPU that holds its plan exactly: 512 stays.
  KvOptions kv4 = kv, big4 = big;
  kv4.n_seq = big4.n_seq = 4;
  const Plan q2048 = plan(big4, OneGpu(80 * GiB)), q512 = plan(kv4, OneGpu(80 * GiB));
  const uint64_t extra4 = q2048.devices[0].use.total() - q512.devices[0].use.total();
  const uint64_t exact = q2048.devices[0].use.total() + Policy{}.gpu_reserve;
  ASSERT_GT(extra4 * 20, exact - Policy{}.gpu_reserve);
  EXPECT_EQ(plan(big4, OneGpu(exact)).verdict, Verdict::kFits);
  EXPECT_EQ(choose(kv4, OneGpu(exact), Policy{}), 512u);
  EXPECT_EQ(choose(kv4, OneGpu(20 * exact), Policy{}), kLargeUbatch);
  // No GPU, the CPU-only policy, or a context below the large ubatch (capped at the context).
  Inventory host_only = OneGpu(80 * GiB);
  host_only.gpus.clear();
  EXPECT_EQ(choose(kv, host_only, Policy{}), 512u);
  Policy cpu;
  cpu.mode = PolicyMode::kCpuOnly;
  EXPECT_EQ(choose(kv, OneGpu(80 * GiB), cpu), 512u);
  KvOptions small = Ctx(1000);
  small.n_ubatch = 512;
  EXPECT_EQ(choose(small, OneGpu(80 * GiB), Policy{}), 1000u);
  // Errors are MakePlan's.
  EXPECT_TRUE(ChooseUbatch(shape, Ctx(0), OneGpu(80 * GiB), Policy{}).status().IsInvalidArgument());
}

TEST(Planner, ExpertsLeaveBeforeLayers) {
  auto shape = MoeShape();
  // 12 GiB budget after the 512 MiB reserve: dense part (30 x 100 MiB + 500 MiB) plus KV and
  // scratch fits, all experts (30 x 400 MiB = 11.7 GiB) do not.
  auto plan = MakePlan(shape, Ctx(4096), OneGpu(12 * GiB + 512 * MiB), Policy{});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->verdict, Verdict::kFitsExpertOffload);
  EXPECT_EQ(plan->layers_on_host(), 0u);
  const uint32_t moved = plan->expert_sets_on_host();
  EXPECT_GT(moved, 0u);
  EXPECT_LT(moved, 30u);
  // The lowest layers' experts went first.
  for (uint32_t il = 0; il < 30; ++il) EXPECT_EQ(plan->experts_on_host[il], il < moved) << il;
  EXPECT_TRUE(plan->devices[0].fits());
  EXPECT_EQ(plan->devices[1].use.weights, moved * 400 * MiB);
  // One set fewer on the host would not fit: the GPU would need 400 MiB more than its budget.
  EXPECT_GT(plan->devices[0].use.total() + 400 * MiB, plan->devices[0].budget);
  EXPECT_NE(plan->reason.find(std::to_string(moved) + " of 30 expert sets to host"),
            std::string::npos)
      << plan->reason;
}

TEST(Planner, LayersLeaveWhenExpertsAreNotEnough) {
  auto shape = MoeShape();
  auto plan = MakePlan(shape, Ctx(4096), OneGpu(2 * GiB), Policy{});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->verdict, Verdict::kFitsLayerOffload);
  EXPECT_EQ(plan->expert_sets_on_host(), 30u);
  EXPECT_GT(plan->layers_on_host(), 0u);
  // Host layers are the lowest ones; the output head follows the last layer onto the GPU.
  for (uint32_t il = 0; il < plan->layers_on_host(); ++il) EXPECT_EQ(plan->layer_device[il], 1);
  EXPECT_EQ(plan->output_device, 0);
  EXPECT_TRUE(plan->devices[0].fits());
}

TEST(Planner, DoesNotFitWhenHostIsTooSmallToo) {
  auto plan = MakePlan(MoeShape(), Ctx(4096), OneGpu(2 * GiB, 4 * GiB), Policy{});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->verdict, Verdict::kDoesNotFit);
  EXPECT_EQ(plan->max_ctx, 0u);
  EXPECT_NE(plan->reason.find("host RAM"), std::string::npos) << plan->reason;
}

TEST(Planner, CpuOnlyPolicyAndNoGpu) {
  auto shape = MoeShape();
  for (const Inventory& inv :
       {OneGpu(80 * GiB), Inventory{{}, {"host", 64 * GiB, 64 * GiB, GpuType::kOther, false}}}) {
    Policy pol;
    pol.mode = PolicyMode::kCpuOnly;
    auto plan = MakePlan(shape, Ctx(4096), inv, pol);
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(plan->verdict, Verdict::kFits);
    EXPECT_EQ(plan->layers_on_host(), 30u);
    const auto& host = plan->devices[plan->host_index()];
    EXPECT_EQ(host.use.weights, 500 * MiB + 30 * 500 * MiB + 11264 + 1024);
    EXPECT_EQ(host.use.overhead, 0u);
  }
}

TEST(Planner, GpuLayersPolicyKeepsTheLastLayers) {
  Policy pol;
  pol.mode = PolicyMode::kGpuLayers;
  pol.gpu_layers = 10;
  auto plan = MakePlan(MoeShape(), Ctx(4096), OneGpu(80 * GiB), pol);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->layers_on_host(), 20u);
  for (uint32_t il = 0; il < 30; ++il) EXPECT_EQ(plan->layer_device[il], il < 20 ? 1 : 0);
  EXPECT_EQ(plan->verdict, Verdict::kFitsLayerOffload);
  pol.gpu_layers = 31;
  EXPECT_TRUE(MakePlan(MoeShape(), Ctx(4096), OneGpu(80 * GiB), pol).status().IsInvalidArgument());
}

TEST(Planner, ExpertsOnHostPolicy) {
  Policy pol;
  pol.mode = PolicyMode::kExpertsOnHost;
  auto plan = MakePlan(MoeShape(), Ctx(4096), OneGpu(80 * GiB), pol);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->expert_sets_on_host(), 30u);
  EXPECT_EQ(plan->layers_on_host(), 0u);
  EXPECT_EQ(plan->verdict, Verdict::kFitsExpertOffload);
  EXPECT_EQ(plan->devices[1].use.weights, 30 * 400 * MiB);
  EXPECT_GT(plan->devices[1].use.scratch, 0u);  // the CPU computes the experts
}

TEST(Planner, TwoGpusSplitInProportionToFreeMemory) {
  Inventory inv;
  inv.gpus.push_back(
      {"big", 40 * GiB + 512 * MiB, 40 * GiB + 512 * MiB, GpuType::kDiscrete, false});
  inv.gpus.push_back(
      {"small", 20 * GiB + 512 * MiB, 20 * GiB + 512 * MiB, GpuType::kDiscrete, false});
  inv.host = {"host", 64 * GiB, 64 * GiB, GpuType::kOther, false};
  auto plan = MakePlan(MoeShape(), Ctx(4096), inv, Policy{});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->verdict, Verdict::kFits);
  uint32_t on_big = 0;
  for (int d : plan->layer_device) on_big += d == 0;
  EXPECT_EQ(on_big, 20u);  // 2/3 of 30 layers
  EXPECT_EQ(plan->layer_device[0], 0);
  EXPECT_EQ(plan->layer_device[29], 1);
  EXPECT_EQ(plan->output_device, 1);
  EXPECT_GT(plan->devices[1].use.weights, 500 * MiB);  // output head on the second GPU
}

TEST(Planner, MaxContextIsTheLargestThatFits) {
  auto shape = MoeShape();
  auto plan = MakePlan(shape, Ctx(4096), OneGpu(20 * GiB), Policy{});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->verdict, Verdict::kFits);
  const uint32_t m = plan->max_ctx;
  ASSERT_GT(m, 4096u);
  ASSERT_LT(m, 262144u);
  EXPECT_EQ(MakePlan(shape, Ctx(m), OneGpu(20 * GiB), Policy{})->verdict, Verdict::kFits);
  auto over = MakePlan(shape, Ctx(m + 1), OneGpu(20 * GiB), Policy{});
  EXPECT_NE(over->verdict, Verdict::kFits);
}

TEST(Planner, PolicyMaxContextMayMoveMore) {
  auto shape = MoeShape();
  // 12.5 GiB free: at 4096 some expert sets move; a longer context needs more of them moved,
  // which the policy does: policy_max_ctx goes beyond this placement's max_ctx.
  auto plan = MakePlan(shape, Ctx(4096), OneGpu(12 * GiB + 512 * MiB), Policy{});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->verdict, Verdict::kFitsExpertOffload);
  EXPECT_GT(plan->policy_max_ctx, plan->max_ctx);
  const uint32_t m = plan->policy_max_ctx;
  if (m < 262144) {
    EXPECT_NE(MakePlan(shape, Ctx(m), OneGpu(12 * GiB + 512 * MiB), Policy{})->verdict,
              Verdict::kDoesNotFit);
    EXPECT_EQ(MakePlan(shape, Ctx(m + 1), OneGpu(12 * GiB + 512 * MiB), Policy{})->verdict,
              Verdict::kDoesNotFit);
  }
  EXPECT_NE(plan->reason.find("with more offload"), std::string::npos) << plan->reason;
}

TEST(Planner, DoesNotFitSaysUpToWhichContextItWould) {
  // CPU only, 17 GiB free after the 1 GiB reserve: 15.1 GiB of weights leave room for some
  // context, not for 262144 (5.3 GiB of KV).
  Policy cpu;
  cpu.mode = PolicyMode::kCpuOnly;
  auto shape = MoeShape();
  Inventory inv{{}, {"host", 18 * GiB, 18 * GiB, GpuType::kOther, false}};
  auto plan = MakePlan(shape, Ctx(262144), inv, cpu);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->verdict, Verdict::kDoesNotFit);
  EXPECT_EQ(plan->max_ctx, 0u);
  const uint32_t m = plan->policy_max_ctx;
  ASSERT_GT(m, 4096u);
  ASSERT_LT(m, 262144u);
  EXPECT_EQ(MakePlan(shape, Ctx(m), inv, cpu)->verdict, Verdict::kFits);
  EXPECT_EQ(MakePlan(shape, Ctx(m + 1), inv, cpu)->verdict, Verdict::kDoesNotFit);
  EXPECT_NE(plan->reason.find("does not fit at 262144 (fits at up to " + std::to_string(m) + ")"),
            std::string::npos)
      << plan->reason;
}

TEST(Planner, ReasonReadsLikeTheIssueExample) {
  // "needs 21.3 GiB, device has 15.1 GiB free: 26 of 30 expert sets to host → fits at 32768"
  auto plan = MakePlan(MoeShape(), Ctx(4096), OneGpu(12 * GiB + 512 * MiB), Policy{});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->reason.rfind("needs ", 0), 0u) << plan->reason;
  EXPECT_NE(plan->reason.find(", device has 12.0 GiB free: "), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find(" expert sets to host \u2192 fits at 4096 (max context "),
            std::string::npos)
      << plan->reason;
  const std::string report = FormatPlan(*plan);
  EXPECT_NE(report.find("fits with expert offload: needs "), std::string::npos) << report;
  auto easy = MakePlan(MoeShape(), Ctx(4096), OneGpu(40 * GiB), Policy{});
  ASSERT_TRUE(easy.ok());
  EXPECT_EQ(FormatPlan(*easy).find("fits: fits"), std::string::npos);
  EXPECT_NE(easy->reason.find("device has 39.5 GiB free \u2192 fits at 4096"), std::string::npos)
      << easy->reason;
}

TEST(Planner, RejectsImpossibleRequests) {
  auto shape = MoeShape();
  EXPECT_TRUE(MakePlan(shape, Ctx(0), OneGpu(GiB), Policy{}).status().IsInvalidArgument());
  EXPECT_TRUE(MakePlan(shape, Ctx(262145), OneGpu(GiB), Policy{}).status().IsInvalidArgument());
  ModelShape empty;
  EXPECT_TRUE(MakePlan(empty, Ctx(16), OneGpu(GiB), Policy{}).status().IsInvalidArgument());
}

TEST(Planner, ReportNamesDevicesAndVerdict) {
  auto plan = MakePlan(MoeShape(), Ctx(4096), OneGpu(12 * GiB + 512 * MiB), Policy{});
  ASSERT_TRUE(plan.ok());
  const std::string r = FormatPlan(*plan);
  EXPECT_NE(r.find("test-gpu"), std::string::npos);
  EXPECT_NE(r.find("fits with expert offload"), std::string::npos) << r;
  EXPECT_NE(r.find("kv f16"), std::string::npos) << r;
}

}  // namespace
}  // namespace garnet::plan
