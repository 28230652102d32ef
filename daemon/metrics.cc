#include "daemon/metrics.h"

#include <cstdio>
#include <sstream>

#include "daemon/model_manager.h"

namespace garnet::daemon {
namespace {

// Label values are method names, status code names and model references: escape \ " and \n.
std::string Esc(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  return o;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

Metrics& Metrics::Global() {
  static Metrics m;
  return m;
}

void Metrics::CountRequest(const std::string& api, const std::string& method,
                           const std::string& code) {
  std::lock_guard lock(mu_);
  requests_[{api, method, code}]++;
}

void Metrics::ObserveGeneration(int64_t prompt_tokens, int64_t generated_tokens, double ttft_s,
                                double decode_tok_s) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(std::max<int64_t>(prompt_tokens, 0));
  generated_tokens_ += static_cast<uint64_t>(std::max<int64_t>(generated_tokens, 0));
  if (ttft_s > 0) {
    for (size_t i = 0; i < kTtftBuckets.size(); ++i) {
      if (ttft_s <= kTtftBuckets[i]) ttft_counts_[i]++;
    }
    ttft_count_++;
    ttft_sum_ += ttft_s;
  }
  if (decode_tok_s > 0) {
    for (size_t i = 0; i < kRateBuckets.size(); ++i) {
      if (decode_tok_s <= kRateBuckets[i]) rate_counts_[i]++;
    }
    rate_count_++;
    rate_sum_ += decode_tok_s;
  }
}

std::string Metrics::Render(const ModelManager* models) const {
  std::ostringstream o;
  {
    std::lock_guard lock(mu_);
    o << "# HELP garnet_requests_total Requests by API, method and status code.\n"
         "# TYPE garnet_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      o << "garnet_requests_total{api=\"" << Esc(std::get<0>(key)) << "\",method=\""
        << Esc(std::get<1>(key)) << "\",code=\"" << Esc(std::get<2>(key)) << "\"} " << n << "\n";
    }
    o << "# HELP garnet_prompt_tokens_total Prompt tokens processed.\n"
         "# TYPE garnet_prompt_tokens_total counter\n"
         "garnet_prompt_tokens_total "
      << prompt_tokens_
      << "\n# HELP garnet_generated_tokens_total Tokens generated.\n"
         "# TYPE garnet_generated_tokens_total counter\n"
         "garnet_generated_tokens_total "
      << generated_tokens_ << "\n";
    o << "# HELP garnet_ttft_seconds Time to first token.\n# TYPE garnet_ttft_seconds histogram\n";
    for (size_t i = 0; i < kTtftBuckets.size(); ++i) {
      o << "garnet_ttft_seconds_bucket{le=\"" << Num(kTtftBuckets[i]) << "\"} " << ttft_counts_[i]
        << "\n";
    }
    o << "garnet_ttft_seconds_bucket{le=\"+Inf\"} " << ttft_count_ << "\n"
      << "garnet_ttft_seconds_sum " << Num(ttft_sum_) << "\ngarnet_ttft_seconds_count "
      << ttft_count_ << "\n";
    o << "# HELP garnet_decode_tokens_per_second Decode rate per request.\n"
         "# TYPE garnet_decode_tokens_per_second histogram\n";
    for (size_t i = 0; i < kRateBuckets.size(); ++i) {
      o << "garnet_decode_tokens_per_second_bucket{le=\"" << Num(kRateBuckets[i]) << "\"} "
        << rate_counts_[i] << "\n";
    }
    o << "garnet_decode_tokens_per_second_bucket{le=\"+Inf\"} " << rate_count_ << "\n"
      << "garnet_decode_tokens_per_second_sum " << Num(rate_sum_)
      << "\ngarnet_decode_tokens_per_second_count " << rate_count_ << "\n";
  }
  if (models != nullptr) {
    const auto loaded = models->Ps();
    o << "# HELP garnet_loaded_models Models loaded.\n# TYPE garnet_loaded_models gauge\n"
      << "garnet_loaded_models " << loaded.size() << "\n";
    o << "# HELP garnet_model_memory_bytes Planned memory of loaded models per device.\n"
         "# TYPE garnet_model_memory_bytes gauge\n";
    for (const LoadedInfo& m : loaded) {
      for (const auto& d : m.memory) {
        o << "garnet_model_memory_bytes{model=\"" << Esc(m.name) << "\",device=\"" << Esc(d.name)
          << "\"} " << d.use.total() << "\n";
      }
    }
    // Counters of the loaded models (they restart when a model reloads).
    struct Series {
      const char* name;
      const char* help;
      uint64_t LoadedInfo::*field;
    };
    const Series series[] = {
        {"garnet_decode_steps_total", "Batched decode forward passes of loaded models.",
         &LoadedInfo::decode_steps},
        {"garnet_decode_sequence_steps_total",
         "Sequences advanced by those passes (divided by steps: the mean decode batch).",
         &LoadedInfo::decode_sequence_steps},
        {"garnet_decode_batched_steps_total", "Decode passes that advanced more than one sequence.",
         &LoadedInfo::decode_batched_steps},
    };
    for (const Series& s : series) {
      o << "# HELP " << s.name << " " << s.help << "\n# TYPE " << s.name << " counter\n";
      for (const LoadedInfo& m : loaded) {
        o << s.name << "{model=\"" << Esc(m.name) << "\"} " << m.*s.field << "\n";
      }
    }
    o << "# HELP garnet_decode_max_batch Largest decode batch of a loaded model.\n"
         "# TYPE garnet_decode_max_batch gauge\n";
    for (const LoadedInfo& m : loaded) {
      o << "garnet_decode_max_batch{model=\"" << Esc(m.name) << "\"} " << m.decode_max_batch
        << "\n";
    }
  }
  return o.str();
}

}  // namespace garnet::daemon
