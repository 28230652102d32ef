#include "engine/model/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

namespace garnet::sampling {
namespace {

TEST(Sampler, GreedyPicksArgmax) {
  Sampler s({});
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.Sample(l), 1);  // lowest id on ties
}

// GreedyPick, the rule a backend's device-side pick follows: lowest id of the largest value,
// NaN and -inf never, -1 when nothing qualifies; and when a Sampler is exactly that rule.
TEST(Sampler, GreedyPickRuleAndPlainGreedy) {
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(GreedyPick(std::vector<float>{1, 3, kNan, 3, 2}), 1);
  EXPECT_EQ(GreedyPick(std::vector<float>{kNan, -kInf, kNan}), -1);
  EXPECT_EQ(GreedyPick(std::vector<float>{}), -1);
  EXPECT_EQ(GreedyPick(std::vector<float>{0, kInf, 5, kInf}), 1);
  EXPECT_EQ(GreedyPick(std::vector<float>{-kInf, -1e30f}), 1);
  SamplerParams p;
  EXPECT_TRUE(Sampler(p).PlainGreedy());
  const std::vector<float> row = {0.5f, 2.0f, kNan, 2.0f, -1.0f};
  EXPECT_EQ(Sampler(p).Sample(row), GreedyPick(row));
  SamplerParams t = p;
  t.temperature = 0.8f;
  EXPECT_FALSE(Sampler(t).PlainGreedy());
  SamplerParams b = p;
  b.logit_bias = {{3, -1.0f}};
  EXPECT_FALSE(Sampler(b).PlainGreedy());
  SamplerParams r = p;
  r.repeat_penalty = 1.1f;
  EXPECT_FALSE(Sampler(r).PlainGreedy());
  r.penalty_last_n = 0;  // no window: the penalty never applies
  EXPECT_TRUE(Sampler(r).PlainGreedy());
  SamplerParams f = p;
  f.frequency_penalty = 0.5f;
  EXPECT_FALSE(Sampler(f).PlainGreedy());
}

// A top-k sampler draws the same from the row's best k (TopCandidates, as a backend returns
// them) as from the whole row, step for step with the same seed; CandidatesNeeded says when.
TEST(Sampler, SampleTopEqualsSampleOverTheRow) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> row(5000);
  for (SamplerParams p : {SamplerParams::GemmaDefaults(11), SamplerParams::GemmaDefaults(12)}) {
    for (int variant = 0; variant < 3; ++variant) {
      if (variant == 1) {
        p.top_k = 40;
        p.top_p = 0.9f;
        p.temperature = 0.8f;
      }
      if (variant == 2) {
        p.top_k = 7;
        p.top_p = 1.0f;
        p.min_p = 0.05f;
      }
      Sampler a(p), b(p);
      ASSERT_EQ(a.CandidatesNeeded(64), p.top_k);
      std::vector<std::pair<float, int32_t>> top;
      for (int step = 0; step < 200; ++step) {
        for (float& v : row) v = std::round(nd(rng) * 4.0f) / 4.0f;  // ties
        row[static_cast<size_t>(step) % row.size()] = std::numeric_limits<float>::quiet_NaN();
        TopCandidates(row, static_cast<size_t>(p.top_k), &top);
        ASSERT_EQ(top.size(), static_cast<size_t>(p.top_k));
        ASSERT_EQ(a.SampleTop(top), b.Sample(row)) << "variant " << variant << " step " << step;
      }
    }
  }
  SamplerParams q = SamplerParams::GemmaDefaults(1);
  EXPECT_EQ(Sampler(q).CandidatesNeeded(32), 0);  // top_k 64 above what the backend returns
  q.top_k = 0;
  EXPECT_EQ(Sampler(q).CandidatesNeeded(64), 0);  // the whole vocabulary
  q.top_k = 20;
  q.repeat_penalty = 1.1f;
  EXPECT_EQ(Sampler(q).CandidatesNeeded(64), 0);  // 20 + the 64-token window
  EXPECT_EQ(Sampler(q).CandidatesNeeded(128), 84);
  q.repeat_penalty = 0.9f;  // raises repeated tokens: any could enter
  EXPECT_EQ(Sampler(q).CandidatesNeeded(128), 0);
  q.repeat_penalty = 1.0f;
  q.presence_penalty = -0.5f;
  EXPECT_EQ(Sampler(q).CandidatesNeeded(128), 0);
  q.presence_penalty = 0.0f;
  q.logit_bias = {{4, 1.0f}};
  EXPECT_EQ(Sampler(q).CandidatesNeeded(64), 0);
  q.logit_bias.clear();
  EXPECT_EQ(Sampler(q).CandidatesNeeded(64), 20);
  q.temperature = 0.0f;
  EXPECT_EQ(Sampler(q).CandidatesNeeded(64), 0);  // greedy: PlainGreedy's case
  // Fewer candidates than k (the rest banned) and none at all.
  Sampler c(SamplerParams::GemmaDefaults(3));
  const std::vector<std::pair<float, int32_t>> two = {{2.0f, 9}, {1.0f, 4}};
  const int32_t t = c.SampleTop(two);
  EXPECT_TRUE(t == 9 || t == 4);
  EXPECT_EQ(c.SampleTop({}), -1);
}

// With penalties that only lower logits, the best top_k + penalty_last_n candidates suffice:
// SampleTop applies the penalties to them and draws what Sample draws from the penalised row,
// step for step, while the drawn tokens (which stay near the top) fill the window.
TEST(Sampler, SampleTopWithPenaltiesEqualsSampleOverTheRow) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> base(3000);
  for (float& v : base) v = nd(rng) * 2.0f;
  for (int i = 0; i < 30; ++i)
    base[static_cast<size_t>(i * 97)] = 9.0f + 0.1f * i;  // a few favourites
  SamplerParams p = SamplerParams::GemmaDefaults(21);
  p.top_k = 40;
  p.top_p = 0.9f;
  p.temperature = 0.8f;
  p.repeat_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.penalty_last_n = 24;
  Sampler a(p), b(p);
  const int32_t k = a.CandidatesNeeded(128);
  ASSERT_EQ(k, 64);
  std::vector<float> row(base.size());
  std::vector<std::pair<float, int32_t>> top;
  std::set<int32_t> seen;
  for (int step = 0; step < 300; ++step) {
    for (size_t i = 0; i < row.size(); ++i) row[i] = std::round((base[i] + nd(rng)) * 4.0f) / 4.0f;
    TopCandidates(row, static_cast<size_t>(k), &top);
    const int32_t ta = a.SampleTop(top), tb = b.Sample(row);
    ASSERT_EQ(ta, tb) << "step " << step;
    ASSERT_GE(ta, 0);
    a.Accept(ta);
    b.Accept(tb);
    seen.insert(ta);
  }
  EXPECT_GT(seen.size(), 10u);  // the penalties moved the draws around
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

namespace garnet::sampling {
namespace {

// The whole-vocabulary path (top_k = 0), which selects only the sorted prefix it needs, against
// an oracle that sorts every usable logit: for top-p, min-p, both and neither.
TEST(Sampler, WholeVocabularyMatchesAFullSort) {
  const int32_t n = 65536;  // a quarter of Gemma's vocabulary keeps the oracle's sort quick
  std::vector<float> l(static_cast<size_t>(n));
  uint64_t x = 777;
  for (auto& v : l) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(static_cast<int64_t>(x >> 41) % 4000) / 400.0f;  // 0 .. 10, ties
  }
  l[11] = std::numeric_limits<float>::quiet_NaN();
  l[12] = -std::numeric_limits<float>::infinity();
  std::vector<int32_t> order;
  for (int32_t i = 0; i < n; ++i) {
    if (l[static_cast<size_t>(i)] > -std::numeric_limits<float>::infinity()) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return l[static_cast<size_t>(a)] > l[static_cast<size_t>(b)];
  });
  struct Case {
    float top_p, min_p, temperature;
  };
  for (const Case& c : {Case{0.9f, 0.0f, 0.7f}, Case{1.0f, 0.05f, 1.0f}, Case{0.5f, 0.2f, 1.3f},
                        Case{1.0f, 0.0f, 0.4f}}) {
    SamplerParams p;
    p.temperature = c.temperature;
    p.top_k = 0;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.seed = 99;
    Sampler s(p);
    // The oracle's probabilities over the sorted list.
    std::vector<double> pr(order.size());
    double sum = 0;
    const double mx = l[static_cast<size_t>(order[0])];
    for (size_t i = 0; i < order.size(); ++i) {
      sum += (pr[i] = std::exp((l[static_cast<size_t>(order[i])] - mx) / c.temperature));
    }
    for (double& v : pr) v /= sum;
    size_t keep = pr.size();
    if (c.top_p < 1.0f) {
      double acc = 0;
      for (size_t i = 0; i < pr.size(); ++i) {
        if ((acc += pr[i]) >= c.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    if (c.min_p > 0.0f) {
      size_t m = 1;
      while (m < keep && pr[m] >= c.min_p * pr[0]) ++m;
      keep = m;
    }
    double mass = 0;
    for (size_t i = 0; i < keep; ++i) mass += pr[i];
    // Every token lies in the oracle's kept prefix, and the most likely one is drawn about as
    // often as its probability says.
    int top_hits = 0;
    const int draws = 100;
    for (int i = 0; i < draws; ++i) {
      const int32_t t = s.Sample(l);
      const auto it = std::find(order.begin(), order.begin() + static_cast<ptrdiff_t>(keep), t);
      ASSERT_NE(it, order.begin() + static_cast<ptrdiff_t>(keep))
          << "token " << t << " outside the kept prefix of " << keep;
      top_hits += t == order[0];
    }
    const double want = pr[0] / mass * draws;
    EXPECT_NEAR(top_hits, want, 4 * std::sqrt(want) + 2) << "top_p " << c.top_p;
  }
}

}  // namespace
}  // namespace garnet::sampling
