// DecodeBatcher / GenerateBatched on the tiny model: concurrent generations give the tokens a
// serial Engine::Generate gives (same seeds), their steps really run batched, and cancellation,
// stop strings and a slow consumer behave per request.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "daemon/decode_batcher.h"
#include "engine/model/engine.h"
#include "tests/daemon/harness.h"
#include "tools/mkmodel/generator.h"

namespace garnet::daemon {
namespace {

using std::chrono::milliseconds;

class BatcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    const std::string path = tmp_->path() + "/tiny.gguf";
    ASSERT_TRUE(mkmodel::WritePreset("tiny", "", path).ok());
    engine::EngineOptions eo;
    eo.n_ctx = 256;
    eo.n_threads = 1;
    auto e = engine::Engine::Open(path, eo);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value().release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete tmp_;
  }

  static engine::GenerateRequest Request(uint64_t seed, int32_t max_tokens) {
    engine::GenerateRequest r;
    r.max_tokens = max_tokens;
    r.sampler = sampling::SamplerParams::GemmaDefaults(seed);
    r.sampler.temperature = 0.9f;
    r.stop_ids = {-1};  // never stop on a token: every run has the same length
    return r;
  }
  static std::vector<int32_t> Prompt(int i) {
    std::vector<int32_t> p = {2};
    for (int k = 0; k < 5 + i; ++k) p.push_back(10 + (i * 7 + k * 3) % 200);
    return p;
  }

  static testing::TempDir* tmp_;
  static engine::Engine* engine_;
};
testing::TempDir* BatcherTest::tmp_ = nullptr;
engine::Engine* BatcherTest::engine_ = nullptr;

TEST_F(BatcherTest, ConcurrentGenerationsMatchSerialAndBatch) {
  constexpr int kN = 8;
  std::vector<std::vector<int32_t>> serial(kN);
  for (int i = 0; i < kN; ++i) {
    auto seq = engine_->NewSequence();
    ASSERT_TRUE(seq.ok());
    auto r = engine_->Generate(**seq, Prompt(i), Request(100 + i, 24), nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    serial[i] = r->tokens;
  }
  DecodeBatcher batcher(engine_);
  std::vector<Result<BatchedResult>> got(kN, Status::Internal("test", "not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      auto seq = engine_->NewSequence();
      if (!seq.ok()) return;
      got[i] = GenerateBatched(batcher, **seq, Prompt(i), Request(100 + i, 24), nullptr);
    });
  }
  for (auto& t : threads) t.join();
  size_t max_batch = 0;
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(got[i].ok()) << i << ": " << got[i].status().ToString();
    EXPECT_EQ(got[i]->result.tokens, serial[i]) << "request " << i;
    EXPECT_EQ(got[i]->result.timing.generated_tokens, 24);
    EXPECT_GT(got[i]->result.timing.ttft_seconds, 0);
    max_batch = std::max(max_batch, got[i]->max_batch);
  }
  const DecodeBatcher::Stats st = batcher.stats();
  EXPECT_GT(max_batch, 1u);
  EXPECT_GT(st.batched_steps, 0u);
  EXPECT_EQ(st.sequence_steps, static_cast<uint64_t>(kN) * 23);  // the last token is not fed
  EXPECT_LT(st.steps, st.sequence_steps);                        // fewer passes than tokens
  EXPECT_LE(st.max_batch, static_cast<uint64_t>(kN));
}

TEST_F(BatcherTest, CancelAndStopStringConcernOnlyTheirRequest) {
  DecodeBatcher batcher(engine_);
  std::atomic<bool> cancel{false};
  Result<BatchedResult> a = Status::Internal("test", "not run");
  Result<BatchedResult> b = Status::Internal("test", "not run");
  Result<BatchedResult> c = Status::Internal("test", "not run");
  std::thread ta([&] {
    auto seq = engine_->NewSequence();
    engine::GenerateRequest r = Request(1, 200);
    r.cancel = &cancel;
    int n = 0;
    a = GenerateBatched(batcher, **seq, Prompt(1), r, [&](int32_t, std::string_view) {
      if (++n == 3) cancel = true;
      return true;
    });
  });
  std::thread tb([&] {
    auto seq = engine_->NewSequence();
    int n = 0;
    // The consumer says stop after two tokens.
    b = GenerateBatched(batcher, **seq, Prompt(2), Request(2, 200),
                        [&](int32_t, std::string_view) { return ++n < 2; });
  });
  std::thread tc([&] {
    auto seq = engine_->NewSequence();
    // A slow consumer: the others are not held up beyond the batcher's wait.
    c = GenerateBatched(batcher, **seq, Prompt(3), Request(3, 20), [&](int32_t, std::string_view) {
      std::this_thread::sleep_for(milliseconds(5));
      return true;
    });
  });
  ta.join();
  tb.join();
  tc.join();
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->result.finish, engine::FinishReason::kCancelled);
  EXPECT_LE(a->result.timing.generated_tokens, 4);
  EXPECT_EQ(b->result.finish, engine::FinishReason::kCancelled);
  EXPECT_EQ(b->result.timing.generated_tokens, 2);
  EXPECT_EQ(c->result.finish, engine::FinishReason::kMaxTokens);
  EXPECT_EQ(c->result.timing.generated_tokens, 20);
}

TEST_F(BatcherTest, FullContextIsReportedPerRequest) {
  DecodeBatcher batcher(engine_);
  auto seq = engine_->NewSequence();
  ASSERT_TRUE(seq.ok());
  std::vector<int32_t> prompt(250, 5);
  prompt[0] = 2;
  auto r = GenerateBatched(batcher, **seq, prompt, Request(9, 100), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->result.finish, engine::FinishReason::kContextFull);
  EXPECT_EQ((*seq)->n_past(), 256);
  // A stop string cuts the text before it.
  auto seq2 = engine_->NewSequence();
  engine::GenerateRequest req = Request(9, 40);
  auto full = GenerateBatched(batcher, **seq2, Prompt(4), req, nullptr);
  ASSERT_TRUE(full.ok());
  ASSERT_GT(full->result.text.size(), 6u);
  req.stop_strings = {full->result.text.substr(3, 3)};
  auto seq3 = engine_->NewSequence();
  auto cut = GenerateBatched(batcher, **seq3, Prompt(4), req, nullptr);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut->result.finish, engine::FinishReason::kStopString);
  EXPECT_EQ(cut->result.text,
            full->result.text.substr(0, full->result.text.find(req.stop_strings[0])));
}

}  // namespace
}  // namespace garnet::daemon
