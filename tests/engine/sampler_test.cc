#include "engine/model/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

namespace garnet::sampling {
namespace {

TEST(Sampler, GreedyPicksArgmax) {
  Sampler s({});
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(l), 1);  // lowest id on ties
}

TEST(Sampler, LogitBiasBans) {
  SamplerParams p;
  p.logit_bias = {{1, -std::numeric_limits<float>::infinity()}, {99, 5.0f}};
  Sampler s(p);
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 1.5f};
  EXPECT_EQ(s.Sample(l), 3);
}

TEST(Sampler, RepetitionAndPresencePenalty) {
  SamplerParams p;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l = {1.0f, 1.5f};
  s.Accept(1);
  EXPECT_EQ(s.Sample(l), 0);  // 1.5 / 2 < 1.0
  SamplerParams q;
  q.presence_penalty = 1.0f;
  Sampler s2(q);
  s2.Accept(1);
  s2.Accept(1);
  EXPECT_EQ(s2.Sample(l), 0);
  SamplerParams w;
  w.repeat_penalty = 2.0f;
  w.penalty_last_n = 1;
  Sampler s3(w);
  s3.Accept(1);
  s3.Accept(0);  // pushes 1 out of the window
  EXPECT_EQ(s3.Sample(l), 1);
}

TEST(Sampler, SeedIsReproducible) {
  std::vector<float> l(100);
  for (size_t i = 0; i < l.size(); ++i) l[i] = std::sin(static_cast<float>(i));
  Sampler a(SamplerParams::GemmaDefaults(42)), b(SamplerParams::GemmaDefaults(42));
  Sampler c(SamplerParams::GemmaDefaults(43));
  int diff = 0;
  for (int i = 0; i < 50; ++i) {
    int32_t x = a.Sample(l), y = b.Sample(l), z = c.Sample(l);
    EXPECT_EQ(x, y);
    diff += x != z;
  }
  EXPECT_GT(diff, 0);
  a.Reset();
  Sampler d(SamplerParams::GemmaDefaults(42));
  EXPECT_EQ(a.Sample(l), d.Sample(l));
}

TEST(Sampler, MatchesDistribution) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  Sampler s(p);
  std::vector<float> l = {0.0f, std::log(3.0f)};
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.Sample(l) == 1;
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.015);
}

TEST(Sampler, TopKTopPMinPNarrow) {
  std::vector<float> l = {1.0f, 3.0f, 2.9f, 0.0f};
  SamplerParams k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  SamplerParams p1;
  p1.temperature = 1.0f;
  p1.top_p = 0.01f;
  SamplerParams m1;
  m1.temperature = 1.0f;
  m1.min_p = 0.99f;
  SamplerParams k2;
  k2.temperature = 1.0f;
  k2.top_k = 2;
  Sampler a(k1), b(p1), c(m1), d(k2);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(a.Sample(l), 1);
    EXPECT_EQ(b.Sample(l), 1);
    EXPECT_EQ(c.Sample(l), 1);
    int32_t x = d.Sample(l);
    EXPECT_TRUE(x == 1 || x == 2);
  }
}

TEST(Sampler, AllBannedReturnsMinusOne) {
  SamplerParams p;
  p.temperature = 0.7f;
  p.logit_bias = {{0, -std::numeric_limits<float>::infinity()}};
  Sampler s(p);
  EXPECT_EQ(s.Sample(std::vector<float>{1.0f}), -1);
  EXPECT_EQ(s.Sample(std::vector<float>{}), -1);
}

}  // namespace
}  // namespace garnet::sampling

namespace garnet::sampling {
namespace {

// A Gemma-sized vocabulary (262144) with ties, NaN and -inf scattered in: greedy takes the
// lowest id of the largest logit, and top-k sampling only ever returns one of the k best by
// (logit, lower id) — what the block-skipping selection must preserve.
TEST(Sampler, LargeVocabularyGreedyAndTopKKeepTheOrdering) {
  const int32_t n = 262144;
  std::vector<float> l(static_cast<size_t>(n));
  uint64_t x = 12345;
  for (auto& v : l) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>((x >> 40) % 1000) / 100.0f;  // many ties
  }
  l[7] = std::numeric_limits<float>::quiet_NaN();
  l[100000] = -std::numeric_limits<float>::infinity();
  l[200001] = 11.0f;  // the maximum, twice
  l[250000] = 11.0f;
  Sampler greedy(SamplerParams{});
  EXPECT_EQ(greedy.Sample(l), 200001);
  // The reference top 5: sort every usable id by (logit desc, id asc).
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < n; ++i) {
    if (l[static_cast<size_t>(i)] > -std::numeric_limits<float>::infinity()) ids.push_back(i);
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return l[static_cast<size_t>(a)] > l[static_cast<size_t>(b)];
  });
  const std::vector<int32_t> top(ids.begin(), ids.begin() + 5);
  SamplerParams p;
  p.temperature = 100.0f;  // nearly uniform over the k kept
  p.top_k = 5;
  p.seed = 3;
  Sampler s(p);
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.Sample(l);
    EXPECT_NE(std::find(top.begin(), top.end(), t), top.end()) << t;
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), top.size());  // all five are reachable
}

}  // namespace
}  // namespace garnet::sampling
