#include "engine/model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <utility>

namespace garnet::sampling {
namespace {

uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// Largest value of v[0..n), NaN ignored (-inf when there is none). Written so the compiler can
// vectorise it: a Gemma 4 vocabulary is 262144 logits per token.
float MaxValue(const float* v, size_t n) {
  // Eight independent running maxima: one chain would wait on each compare's latency.
  constexpr size_t kLanes = 8;
  float m[kLanes];
  std::fill(m, m + kLanes, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) m[j] = v[i + j] > m[j] ? v[i + j] : m[j];
  }
  for (; i < n; ++i) m[0] = v[i] > m[0] ? v[i] : m[0];
  float r = m[0];
  for (size_t j = 1; j < kLanes; ++j) r = m[j] > r ? m[j] : r;
  return r;
}

// (logit, id) ordering of the sampler: higher logit first, lower id on ties.
using Cand = std::pair<float, int32_t>;
bool Better(const Cand& a, const Cand& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// The k best (by Better) of the finite-or-+inf logits of v, best first. One pass: blocks of 64
// whose maximum cannot enter the current top k are skipped after a vectorisable scan, so the
// cost is about that of reading the logits once, not a sort of the vocabulary.
void TopK(const float* v, int32_t n, size_t k, std::vector<Cand>* heap) {
  heap->clear();
  constexpr int32_t kBlock = 64;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int32_t b = 0; b < n; b += kBlock) {
    const int32_t e = std::min(n, b + kBlock);
    if (heap->size() == k && MaxValue(v + b, static_cast<size_t>(e - b)) <= heap->front().first) {
      continue;  // nothing here beats the worst kept (equal values lose to its lower id)
    }
    for (int32_t i = b; i < e; ++i) {
      if (!(v[i] > kNegInf)) continue;  // NaN or -inf: never sampled
      const Cand c{v[i], i};
      if (heap->size() < k) {
        heap->push_back(c);
        std::push_heap(heap->begin(), heap->end(), Better);
      } else if (Better(c, heap->front())) {
        std::pop_heap(heap->begin(), heap->end(), Better);
        heap->back() = c;
        std::push_heap(heap->begin(), heap->end(), Better);
      }
    }
  }
  std::sort_heap(heap->begin(), heap->end(), Better);
}

}  // namespace

SamplerParams SamplerParams::GemmaDefaults(uint64_t seed) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 64;
  p.top_p = 0.95f;
  p.seed = seed;
  return p;
}

Sampler::Sampler(SamplerParams params) : params_(std::move(params)) {
  Reset();
}

void Sampler::Reset() {
  uint64_t x = params_.seed;
  for (auto& s : state_) s = SplitMix64(&x);
  recent_.clear();
}

uint64_t Sampler::NextU64() {
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return result;
}

double Sampler::NextUniform() {
  return static_cast<double>(NextU64() >> 11) * 0x1.0p-53;
}

int32_t GreedyPick(std::span<const float> logits) {
  const float* row = logits.data();
  const float m = MaxValue(row, logits.size());
  if (!(m > -std::numeric_limits<float>::infinity())) return -1;
  return static_cast<int32_t>(std::find(row, row + logits.size(), m) - row);
}

bool Sampler::ChangesLogits() const {
  const bool penalties = params_.penalty_last_n > 0 &&
                         (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                          params_.frequency_penalty != 0.0f);
  return !params_.logit_bias.empty() || penalties;
}

float Sampler::Penalised(float l, int count) const {
  if (params_.repeat_penalty != 1.0f && params_.repeat_penalty > 0.0f) {
    l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
  }
  return l - (params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count));
}

bool Sampler::PlainGreedy() const {
  return params_.temperature <= 0.0f && !ChangesLogits();
}

void Sampler::Accept(int32_t token) {
  if (params_.penalty_last_n <= 0) return;
  recent_.push_back(token);
  while (recent_.size() > static_cast<size_t>(params_.penalty_last_n)) recent_.pop_front();
}

int32_t Sampler::Sample(std::span<const float> logits) {
  const int32_t n = static_cast<int32_t>(logits.size());
  if (n == 0) return -1;
  // The logits as sampled: the caller's row itself unless a bias or a penalty changes some of
  // them (then a copy; 1 MiB for Gemma 4's vocabulary, a sizeable part of a decoded token's
  // host time when copied for nothing).
  const bool penalise =
      !recent_.empty() && (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                           params_.frequency_penalty != 0.0f);
  const float* row = logits.data();
  if (penalise || !params_.logit_bias.empty()) {
    work_.assign(logits.begin(), logits.end());
    row = work_.data();
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= 0 && id < n) work_[static_cast<size_t>(id)] += bias;
  }
  if (penalise) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : recent_) {
      if (t >= 0 && t < n) ++counts[t];
    }
    for (const auto& [t, c] : counts) {
      float& l = work_[static_cast<size_t>(t)];
      l = Penalised(l, c);
    }
  }
  const float kNegInf = -std::numeric_limits<float>::infinity();
  if (params_.temperature <= 0.0f) return GreedyPick(std::span<const float>(row, logits.size()));
  // The candidates, best first, and the softmax normaliser over what the distribution covers:
  // the top k with top_k, else the whole vocabulary, of which only the sorted prefix that top-p,
  // min-p or the draw reaches is selected (TopK with a growing k; a full sort of 262144 logits
  // took ~44 ms a token).
  const double inv_t = 1.0 / params_.temperature;
  const float mx = MaxValue(row, logits.size());
  if (!(mx > kNegInf)) return -1;
  auto weight = [&](float v) { return std::exp((static_cast<double>(v) - mx) * inv_t); };
  double total = 0;   // softmax denominator (0: the prefix's own sum, top_k)
  double need = 1.0;  // probability mass the prefix must reach (whole vocabulary)
  bool drawn = false;
  double r = 0;
  if (params_.top_k > 0) {
    TopK(row, n, static_cast<size_t>(params_.top_k), &top_);
  } else {
    size_t valid = 0, above_min_p = 0;
    for (int32_t i = 0; i < n; ++i) {
      const float l = row[i];
      if (!(l > kNegInf)) continue;  // NaN or -inf
      const double e = weight(l);
      total += e;
      ++valid;
      if (params_.min_p > 0.0f && e >= params_.min_p) ++above_min_p;  // p >= min_p * p_max
    }
    if (params_.top_p < 1.0f) {
      need = params_.top_p;
    } else if (params_.min_p <= 0.0f) {  // nothing cuts: the draw decides how far to look
      r = NextUniform();
      drawn = true;
      need = r;
    }
    size_t k = std::max<size_t>(64, above_min_p + 1);
    for (;;) {
      k = std::min(k, valid);
      TopK(row, n, k, &top_);
      double acc = 0;
      for (const Cand& c : top_) acc += weight(c.first) / total;
      if (acc > need || k == valid) break;
      k *= 4;
    }
  }
  return DrawFromTop(mx, total, drawn, r);
}

// The draw over top_ (best first): softmax weights relative to mx at the sampler's temperature,
// normalised by `total` (0: their own sum), cut by top-p and min-p, then one uniform draw (or
// `r` when already drawn).
int32_t Sampler::DrawFromTop(float mx, double total, bool drawn, double r) {
  const double inv_t = 1.0 / params_.temperature;
  auto weight = [&](float v) { return std::exp((static_cast<double>(v) - mx) * inv_t); };
  idx_.clear();
  for (const Cand& c : top_) idx_.push_back(c.second);
  if (idx_.empty()) return -1;
  const size_t k = idx_.size();
  std::vector<double> p(k);
  double sum = 0;
  for (size_t i = 0; i < k; ++i) sum += (p[i] = weight(top_[i].first));
  const double norm = total > 0 ? total : sum;
  for (auto& v : p) v /= norm;
  size_t keep = k;
  if (params_.top_p < 1.0f) {
    double acc = 0;
    for (size_t i = 0; i < k; ++i) {
      acc += p[i];
      if (acc >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0.0f) {
    const double floor = params_.min_p * p[0];
    size_t m = 1;
    while (m < keep && p[m] >= floor) ++m;
    keep = m;
  }
  if (!drawn) {
    double mass = 0;
    for (size_t i = 0; i < keep; ++i) mass += p[i];
    r = NextUniform() * mass;
  }
  for (size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r < 0) return idx_[i];
  }
  return idx_[keep - 1];
}

int32_t Sampler::CandidatesNeeded(int32_t max_k) const {
  if (params_.temperature <= 0.0f || params_.top_k <= 0 || !params_.logit_bias.empty()) return 0;
  int64_t need = params_.top_k;
  const bool penalties = params_.penalty_last_n > 0 &&
                         (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                          params_.frequency_penalty != 0.0f);
  if (penalties) {
    // Penalties that only lower logits move a token down past at most the penalised ones
    // (at most penalty_last_n distinct ids): the best top_k after them are among the best
    // top_k + penalty_last_n before. A penalty that raises a logit could lift any token.
    const bool lowers = !(params_.repeat_penalty > 0.0f && params_.repeat_penalty < 1.0f) &&
                        params_.presence_penalty >= 0.0f && params_.frequency_penalty >= 0.0f;
    if (!lowers) return 0;
    need += params_.penalty_last_n;
  }
  return need <= max_k ? static_cast<int32_t>(need) : 0;
}

int32_t Sampler::SampleTop(std::span<const std::pair<float, int32_t>> top) {
  top_.clear();
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (const auto& c : top) {
    if (!(c.first > kNegInf)) break;  // padding: nothing after
    top_.push_back(c);
  }
  const bool penalise =
      !recent_.empty() && (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                           params_.frequency_penalty != 0.0f);
  if (penalise) {  // Sample's penalties on the candidates, then their order again
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : recent_) ++counts[t];
    for (auto& c : top_) {
      if (auto it = counts.find(c.second); it != counts.end())
        c.first = Penalised(c.first, it->second);
    }
    std::erase_if(top_, [&](const Cand& c) { return !(c.first > kNegInf); });
    std::sort(top_.begin(), top_.end(), Better);
  }
  if (top_.size() > static_cast<size_t>(params_.top_k))
    top_.resize(static_cast<size_t>(params_.top_k));
  if (top_.empty()) return -1;
  return DrawFromTop(top_.front().first, 0.0, false, 0.0);
}

void TopCandidates(std::span<const float> logits, size_t k,
                   std::vector<std::pair<float, int32_t>>* out) {
  TopK(logits.data(), static_cast<int32_t>(logits.size()), k, out);
}

}  // namespace garnet::sampling
