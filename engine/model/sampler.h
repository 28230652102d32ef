// Token sampling from logits: greedy, temperature, top-k, top-p, min-p, repetition / presence /
// frequency penalties over a recent window, logit bias, seeded and reproducible.
//
// Order of operations on each call of Sample():
//   1. logit bias (added; -inf bans a token)
//   2. penalties over the last `penalty_last_n` accepted tokens: repetition (CTRL style: positive
//      logits divided by the penalty, negative multiplied), presence (minus once per seen token),
//      frequency (minus per occurrence)
//   3. temperature <= 0: argmax (lowest id on ties); done
//   4. top-k (k <= 0: all), softmax of logit / temperature, top-p (smallest set whose mass
//      reaches p, at least one token), min-p (drop tokens below min_p × max prob)
//   5. draw from the renormalised distribution with the sampler's own PRNG (xoshiro256**, seeded
//      by splitmix64 from `seed`): the same seed and inputs give the same tokens on every machine.
//
// Thread-safety: a Sampler belongs to one sequence (one thread at a time).
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <utility>
#include <vector>

namespace garnet::sampling {

struct SamplerParams {
  float temperature = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;         // <= 0: no limit
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  float repeat_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t penalty_last_n = 64;
  uint64_t seed = 0;
  std::vector<std::pair<int32_t, float>> logit_bias;  // ids outside the vocabulary are ignored

  // Gemma 4's commonly quoted defaults: temperature 1.0, top_k 64, top_p 0.95.
  static SamplerParams GemmaDefaults(uint64_t seed = 0);
};

// The greedy pick of a logits row: the lowest id holding the largest logit; NaN and -inf never
// win; -1 when no logit qualifies (or the row is empty). What Sample() returns at temperature
// <= 0 without bias or penalties, and what a backend's device-side pick computes.
int32_t GreedyPick(std::span<const float> logits);

// The k best logits of a row as (logit, id), best first: higher logit first, lower id on ties;
// NaN and -inf never (fewer than k when fewer qualify). What Sample() draws from with top_k = k,
// and what a backend's device-side candidates reproduce.
void TopCandidates(std::span<const float> logits, size_t k,
                   std::vector<std::pair<float, int32_t>>* out);

class Sampler {
 public:
  explicit Sampler(SamplerParams params);

  // Picks a token from `logits` (one per vocabulary id). Does not record it; call Accept()
  // with the token actually used (generation does this). Returns -1 only for an empty span or
  // when every token is banned.
  int32_t Sample(std::span<const float> logits);
  // Records a token into the penalty window (prompt tokens may be accepted too).
  void Accept(int32_t token);
  // Forgets the window and reseeds.
  void Reset();

  const SamplerParams& params() const { return params_; }
  // Whether Sample() is exactly GreedyPick of the logits: temperature <= 0, no logit bias, no
  // penalty that changes a logit. Generation then needs only the pick, not the logits row.
  bool PlainGreedy() const;
  // How many of a row's best logits Sample() needs (temperature > 0, top_k >= 1, no bias):
  // top_k, plus penalty_last_n when penalties are on and only lower logits (repeat penalty >= 1,
  // presence and frequency >= 0); 0 when that exceeds max_k or the whole row is needed. Then
  // SampleTop over exactly those (TopCandidates(row, k)) draws what Sample(row) would, with the
  // same PRNG steps.
  int32_t CandidatesNeeded(int32_t max_k) const;
  // Sample() from the row's best CandidatesNeeded() candidates, best first (TopCandidates'
  // order; entries after the first -inf or NaN are ignored): the penalties applied to them,
  // the best top_k kept, the draw. -1 when there is none.
  int32_t SampleTop(std::span<const std::pair<float, int32_t>> top);

 private:
  uint64_t NextU64();
  double NextUniform();  // [0, 1)
  int32_t DrawFromTop(float mx, double total, bool drawn, double r);
  bool ChangesLogits() const;                     // a bias or an active penalty
  float Penalised(float logit, int count) const;  // the penalties of a token seen `count` times

  SamplerParams params_;
  uint64_t state_[4];
  std::deque<int32_t> recent_;
  std::vector<float> work_;
  std::vector<int32_t> idx_;
  std::vector<std::pair<float, int32_t>> top_;  // TopK's heap (logit, id)
};

}  // namespace garnet::sampling
