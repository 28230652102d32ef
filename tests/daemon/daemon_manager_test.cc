// ModelManager: shared loads, slots and the busy limit, keep-alive expiry, unload, eviction by
// planned memory, option validation — with the real engine on the tiny model.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "daemon/fit.h"
#include "daemon/model_manager.h"
#include "engine/model/engine.h"
#include "tests/daemon/harness.h"
#include "tools/mkmodel/generator.h"

namespace garnet::daemon {
namespace {

using std::chrono::milliseconds;

class ManagerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    path_ = tmp_->path() + "/tiny.gguf";
    ASSERT_TRUE(mkmodel::WritePreset("tiny", "", path_).ok());
  }
  static void TearDownTestSuite() { delete tmp_; }

  // Every name resolves to the tiny file; "missing" is not pulled.
  static Result<ResolvedModel> Resolve(const std::string& ref) {
    if (ref == "missing") return Status::NotFound("model missing", "is not pulled");
    ResolvedModel m;
    m.name = ref;
    m.digest = "sha256-" + std::string(64, 'a');
    m.paths = {path_};
    m.size = 1;
    return m;
  }
  ModelManager::OpenFn CountingOpen() {
    return [this](const ModelManager::EngineSpec& s) {
      opens_++;
      std::this_thread::sleep_for(milliseconds(100));  // a slow load, so callers overlap
      engine::EngineOptions eo;
      eo.n_ctx = s.ctx;
      eo.n_threads = 1;
      return engine::Engine::OpenParts(s.paths, eo);
    };
  }

  static testing::TempDir* tmp_;
  static std::string path_;
  std::atomic<int> opens_{0};
};
testing::TempDir* ManagerTest::tmp_ = nullptr;
std::string ManagerTest::path_;

TEST_F(ManagerTest, ConcurrentRequestsShareOneLoad) {
  ManagerOptions o;
  o.default_parallel = 8;
  ModelManager mm(o, Resolve, CountingOpen());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto lease = mm.Acquire("a", {}, 0, nullptr);
      if (lease.ok()) ok++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(opens_.load(), 1);
  auto ps = mm.Ps();
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].ctx, 512u);  // capped at the trained context
  EXPECT_EQ(ps[0].active, 0u);
  EXPECT_GT(ps[0].planned_bytes, 0u);
}

TEST_F(ManagerTest, BusyBeyondQueue) {
  ManagerOptions o;
  o.default_parallel = 1;
  o.max_queue = 1;
  ModelManager mm(o, Resolve, CountingOpen());
  auto first = mm.Acquire("a", {}, 0, nullptr);
  ASSERT_TRUE(first.ok());
  std::atomic<bool> second_done{false};
  std::thread waiter([&] {
    auto second = mm.Acquire("a", {}, 0, nullptr);  // queued until `first` ends
    EXPECT_TRUE(second.ok());
    second_done = true;
  });
  ASSERT_TRUE(testing::WaitFor([&] { return !mm.Ps().empty() && mm.Ps()[0].queued == 1; }));
  auto third = mm.Acquire("a", {}, 0, nullptr);
  EXPECT_TRUE(third.status().IsResourceExhausted()) << third.status().ToString();
  EXPECT_FALSE(second_done.load());
  first->reset();
  waiter.join();
  EXPECT_TRUE(second_done.load());
}

TEST_F(ManagerTest, CancelWhileQueued) {
  ManagerOptions o;
  o.default_parallel = 1;
  ModelManager mm(o, Resolve, CountingOpen());
  auto first = mm.Acquire("a", {}, 0, nullptr);
  ASSERT_TRUE(first.ok());
  std::atomic<bool> cancel{false};
  std::thread t([&] {
    auto r = mm.Acquire("a", {}, 0, &cancel);
    EXPECT_TRUE(r.status().IsCancelled());
  });
  ASSERT_TRUE(testing::WaitFor([&] { return mm.Ps()[0].queued == 1; }));
  cancel = true;
  t.join();
  EXPECT_EQ(mm.Ps()[0].queued, 0u);
}

TEST_F(ManagerTest, KeepAliveExpiryAndUnload) {
  ManagerOptions o;
  ModelManager mm(o, Resolve, CountingOpen());
  ASSERT_TRUE(mm.Load("a", {}, 1, nullptr).ok());
  ASSERT_TRUE(mm.Load("b", {}, -1, nullptr).ok());
  EXPECT_EQ(mm.Ps().size(), 2u);
  EXPECT_TRUE(testing::WaitFor([&] { return mm.Ps().size() == 1; }, milliseconds(4000)));
  EXPECT_EQ(mm.Ps()[0].name, "b");
  EXPECT_EQ(mm.Ps()[0].expires_at_ms, 0);
  EXPECT_TRUE(mm.Unload("b").ok());
  EXPECT_TRUE(mm.Ps().empty());
  EXPECT_TRUE(mm.Unload("b").IsNotFound());
}

TEST_F(ManagerTest, UnloadWhileBusyWaitsForTheRequest) {
  ModelManager mm({}, Resolve, CountingOpen());
  auto lease = mm.Acquire("a", {}, -1, nullptr);
  ASSERT_TRUE(lease.ok());
  EXPECT_TRUE(mm.Unload("a").ok());
  EXPECT_EQ(mm.Ps().size(), 1u);  // still running
  lease->reset();
  EXPECT_TRUE(testing::WaitFor([&] { return mm.Ps().empty(); }, milliseconds(2000)));
}

TEST_F(ManagerTest, EvictsLeastRecentlyUsedIdleModel) {
  ManagerOptions o;
  o.max_loaded = 2;
  ModelManager mm(o, Resolve, CountingOpen());
  ASSERT_TRUE(mm.Load("a", {}, -1, nullptr).ok());
  std::this_thread::sleep_for(milliseconds(5));
  ASSERT_TRUE(mm.Load("b", {}, -1, nullptr).ok());
  auto busy_a = mm.Acquire("a", {}, -1, nullptr);  // a is now the most recently used, and busy
  ASSERT_TRUE(busy_a.ok());
  ASSERT_TRUE(mm.Load("c", {}, -1, nullptr).ok());  // evicts b (idle), not a (busy)
  std::vector<std::string> names;
  for (const auto& i : mm.Ps()) names.push_back(i.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "c"}));

  // A memory limit below one model's plan: refused with a clear message.
  ManagerOptions small;
  small.memory_limit = 1 << 20;
  ModelManager tiny_mm(small, Resolve, CountingOpen());
  auto r = tiny_mm.Load("a", {}, 0, nullptr);
  EXPECT_TRUE(r.status().IsResourceExhausted());
  EXPECT_NE(r.status().message().find("needs"), std::string::npos);
}

TEST_F(ManagerTest, OptionsValidatedAndReloaded) {
  ModelManager mm({}, Resolve, CountingOpen());
  LoadOptions bad;
  bad.ctx = 1u << 30;
  EXPECT_TRUE(mm.Acquire("a", bad, 0, nullptr).status().IsInvalidArgument());
  bad = {};
  bad.kv_type = "q4";
  EXPECT_TRUE(mm.Acquire("a", bad, 0, nullptr).status().IsInvalidArgument());
  bad = {};
  bad.backend = "cuda";
  EXPECT_TRUE(mm.Acquire("a", bad, 0, nullptr).status().IsInvalidArgument());
  bad = {};
  bad.ctx = 4096;  // above tiny's 512
  EXPECT_TRUE(mm.Acquire("a", bad, 0, nullptr).status().IsInvalidArgument());
  EXPECT_TRUE(mm.Acquire("missing", {}, 0, nullptr).status().IsNotFound());

  LoadOptions small;
  small.ctx = 128;
  ASSERT_TRUE(mm.Load("a", small, 0, nullptr).ok());
  EXPECT_EQ(mm.Ps()[0].ctx, 128u);
  LoadOptions bigger;
  bigger.ctx = 256;  // idle: reloaded with the new context
  ASSERT_TRUE(mm.Load("a", bigger, 0, nullptr).ok());
  EXPECT_EQ(mm.Ps()[0].ctx, 256u);
  EXPECT_EQ(opens_.load(), 2);
  ASSERT_TRUE(mm.Load("a", {}, 0, nullptr).ok());  // defaults: keep what is loaded
  EXPECT_EQ(opens_.load(), 2);
}

// kv_type "q8_0" (what OLLAMA_KV_CACHE_TYPE=q8_0 / llama.cpp's -ctk q8_0 -ctv q8_0 give): the
// engine opens with a q8_0 cache and the plan prices it at 34 bytes per 32 values instead of 64.
TEST_F(ManagerTest, KvTypeQ8PricesAndOpensAQ8Cache) {
  ModelManager mm({}, Resolve, nullptr);
  auto kv_bytes = [&] {
    uint64_t kv = 0;
    for (const plan::DeviceUse& d : mm.Ps()[0].memory) kv += d.use.kv;
    return kv;
  };
  LoadOptions f16;
  f16.ctx = 256;
  f16.backend = "cpu";
  ASSERT_TRUE(mm.Load("a", f16, 0, nullptr).ok());
  const uint64_t kv16 = kv_bytes();
  LoadOptions q8 = f16;
  q8.kv_type = "q8_0";
  auto st = mm.Load("a", q8, 0, nullptr);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const uint64_t kv8 = kv_bytes();
  EXPECT_GT(kv16, 0u);
  EXPECT_EQ(kv8 * 64, kv16 * 34);
  auto lease = mm.Acquire("a", q8, 0, nullptr);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  // The engine holds what the plan priced (per sequence, parallel sequences in the plan).
  EXPECT_EQ((*lease)->engine().KvBytesPerSequence() * mm.Ps()[0].parallel, kv8);
}

// Backend choice without a GPU: "auto" loads on the CPU, "vulkan" says there is no GPU.
TEST_F(ManagerTest, BackendAutoFallsBackToCpuWithoutAGpu) {
  if (!MachineGpus().empty()) GTEST_SKIP() << "this machine has a Vulkan GPU";
  ManagerOptions o;
  o.default_backend = "auto";
  ModelManager mm(o, Resolve, nullptr);
  auto lease = mm.Acquire("m", {}, 0, nullptr);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ((*lease)->info().backend, "cpu");
  lease->reset();
  LoadOptions vk;
  vk.backend = "vulkan";
  auto refused = mm.Acquire("n", vk, 0, nullptr);
  EXPECT_TRUE(refused.status().IsUnavailable()) << refused.status().ToString();
  LoadOptions bad;
  bad.backend = "metal";
  EXPECT_TRUE(mm.Acquire("m", bad, 0, nullptr).status().IsInvalidArgument());
}

// On a machine with a Vulkan GPU: "vulkan" and "auto" load on it, planned for that GPU, and the
// model generates.
TEST_F(ManagerTest, VulkanLoadWhenAGpuExists) {
  if (MachineGpus().empty()) GTEST_SKIP() << "no Vulkan GPU on this machine";
  for (const char* backend : {"vulkan", "auto"}) {
    ManagerOptions o;
    o.default_backend = backend;
    ModelManager mm(o, Resolve, nullptr);
    auto lease = mm.Acquire("m", {}, 0, nullptr);
    ASSERT_TRUE(lease.ok()) << backend << ": " << lease.status().ToString();
    EXPECT_EQ((*lease)->info().backend, "vulkan");
    EXPECT_EQ((*lease)->info().placement, "GPU 100%");
    auto seq = (*lease)->engine().NewSequence();
    ASSERT_TRUE(seq.ok());
    engine::GenerateRequest req;
    req.max_tokens = 4;
    auto r = (*lease)->engine().Generate(**seq, std::vector<int32_t>{2, 10, 11}, req, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_GT(r->timing.generated_tokens, 0);
  }
}

}  // namespace
}  // namespace garnet::daemon
