// Process-wide counters and histograms for /metrics (Prometheus text format 0.0.4): requests by
// API/method/code, prompt and generated tokens, TTFT and decode-rate histograms; loaded models
// and their planned memory per device come from the ModelManager at render time.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

namespace garnet::daemon {

class ModelManager;

class Metrics {
 public:
  static Metrics& Global();

  void CountRequest(const std::string& api, const std::string& method, const std::string& code);
  void ObserveGeneration(int64_t prompt_tokens, int64_t generated_tokens, double ttft_s,
                         double decode_tok_s);
  std::string Render(const ModelManager* models) const;

 private:
  static constexpr std::array<double, 10> kTtftBuckets = {0.01, 0.025, 0.05, 0.1, 0.25,
                                                          0.5,  1,     2.5,  5,   10};
  static constexpr std::array<double, 9> kRateBuckets = {1, 5, 10, 20, 50, 100, 200, 500, 1000};
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  std::array<uint64_t, kTtftBuckets.size()> ttft_counts_{};
  uint64_t ttft_count_ = 0;
  double ttft_sum_ = 0;
  std::array<uint64_t, kRateBuckets.size()> rate_counts_{};
  uint64_t rate_count_ = 0;
  double rate_sum_ = 0;
};

}  // namespace garnet::daemon
