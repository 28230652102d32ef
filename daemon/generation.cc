#include "daemon/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "daemon/decode_batcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace garnet::daemon {
namespace {

constexpr int32_t kDefaultMaxTokens = 256;
constexpr int32_t kMaxMaxTokens = 1 << 20;
constexpr size_t kMaxStops = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr size_t kMaxMessages = 4096;

Status Validate(const GenerationRequest& j, const Config& config) {
  if (j.model.empty()) return Status::InvalidArgument("model", "no model given");
  if (j.max_tokens < 0 || j.max_tokens > kMaxMaxTokens) {
    return Status::InvalidArgument("max_tokens", std::to_string(j.max_tokens) +
                                                     " is out of range [0, " +
                                                     std::to_string(kMaxMaxTokens) + "]");
  }
  if (j.stops.size() > kMaxStops) {
    return Status::InvalidArgument("stop", "at most " + std::to_string(kMaxStops) + " strings");
  }
  for (const auto& s : j.stops) {
    if (s.empty() || s.size() > kMaxStopBytes) {
      return Status::InvalidArgument(
          "stop", "each string must have 1.." + std::to_string(kMaxStopBytes) + " bytes");
    }
  }
  if (!j.raw && j.messages.empty()) return Status::InvalidArgument("messages", "none given");
  if (j.messages.size() > kMaxMessages) {
    return Status::InvalidArgument("messages", "more than " + std::to_string(kMaxMessages));
  }
  uint64_t bytes = j.prompt.size();
  for (const auto& m : j.messages) bytes += m.content.size();
  if (bytes > config.max_prompt_bytes) {
    return Status::InvalidArgument("prompt", std::to_string(bytes) + " bytes exceed the limit of " +
                                                 std::to_string(config.max_prompt_bytes) +
                                                 " (max_prompt_bytes)");
  }
  if (j.keep_alive_s > int64_t{365} * 86400) {
    return Status::InvalidArgument("keep_alive_seconds", "exceeds one year");
  }
  return ModelManager::ValidateOptions(j.options);
}

}  // namespace

Result<sampling::SamplerParams> MakeSampler(const SamplingOptions& s) {
  const uint64_t seed = s.seed ? *s.seed : std::random_device{}();
  sampling::SamplerParams p = sampling::SamplerParams::GemmaDefaults(seed);
  auto bad = [](const char* field, const char* why) {
    return Status::InvalidArgument(std::string("sampling ") + field, why);
  };
  auto finite = [](float v) { return std::isfinite(v); };
  if (s.temperature) {
    if (!finite(*s.temperature) || *s.temperature < 0 || *s.temperature > 100)
      return bad("temperature", "must be in [0, 100]");
    p.temperature = *s.temperature;
  }
  if (s.top_k) {
    if (*s.top_k < 0) return bad("top_k", "must be >= 0");
    p.top_k = *s.top_k;
  }
  if (s.top_p) {
    if (!finite(*s.top_p) || *s.top_p <= 0 || *s.top_p > 1)
      return bad("top_p", "must be in (0, 1]");
    p.top_p = *s.top_p;
  }
  if (s.min_p) {
    if (!finite(*s.min_p) || *s.min_p < 0 || *s.min_p > 1) return bad("min_p", "must be in [0, 1]");
    p.min_p = *s.min_p;
  }
  if (s.repeat_penalty) {
    if (!finite(*s.repeat_penalty) || *s.repeat_penalty <= 0 || *s.repeat_penalty > 10)
      return bad("repeat_penalty", "must be in (0, 10]");
    p.repeat_penalty = *s.repeat_penalty;
  }
  if (s.presence_penalty) {
    if (!finite(*s.presence_penalty) || std::fabs(*s.presence_penalty) > 10)
      return bad("presence_penalty", "must be in [-10, 10]");
    p.presence_penalty = *s.presence_penalty;
  }
  if (s.frequency_penalty) {
    if (!finite(*s.frequency_penalty) || std::fabs(*s.frequency_penalty) > 10)
      return bad("frequency_penalty", "must be in [-10, 10]");
    p.frequency_penalty = *s.frequency_penalty;
  }
  return p;
}

Result<GenerationResult> RunGeneration(ModelManager& models, const Config& config,
                                       const GenerationRequest& req, const PieceFn& on_piece,
                                       const std::atomic<bool>& cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  GARNET_RETURN_IF_ERROR(Validate(req, config));
  GARNET_ASSIGN_OR_RETURN(sampling::SamplerParams sampler, MakeSampler(req.sampling));
  GARNET_ASSIGN_OR_RETURN(std::unique_ptr<ModelManager::Lease> lease,
                          models.Acquire(req.model, req.options, req.keep_alive_s, &cancel));
  engine::Engine& eng = lease->engine();
  const tok::Tokenizer& tk = *eng.tokenizer();
  std::vector<int32_t> prompt;
  if (req.raw) {
    prompt = tk.Encode(req.prompt, /*add_bos=*/true, /*parse_special=*/false);
  } else {
    chat::ChatOptions co;
    co.enable_thinking = req.think;
    prompt = chat::FormatChatTokens(tk, req.messages, co);
  }
  const int64_t n_ctx = eng.options().n_ctx;
  if (prompt.empty()) return Status::InvalidArgument("prompt", "is empty");
  if (static_cast<int64_t>(prompt.size()) >= n_ctx) {
    return Status::InvalidArgument(
        "prompt", std::to_string(prompt.size()) + " tokens do not fit the context of " +
                      std::to_string(n_ctx) + " tokens; shorten it or load with a larger ctx");
  }
  GARNET_ASSIGN_OR_RETURN(std::unique_ptr<engine::Sequence> seq, eng.NewSequence());
  engine::GenerateRequest gr;
  gr.max_tokens = req.max_tokens > 0 ? req.max_tokens : kDefaultMaxTokens;
  gr.max_tokens = static_cast<int32_t>(
      std::min<int64_t>(gr.max_tokens, n_ctx - static_cast<int64_t>(prompt.size())));
  gr.sampler = sampler;
  gr.stop_strings = req.stops;
  gr.cancel = &cancel;
  GenerationResult out;
  GARNET_ASSIGN_OR_RETURN(BatchedResult batched,
                          GenerateBatched(lease->batcher(), *seq, prompt, gr, on_piece));
  out.result = std::move(batched.result);
  out.max_decode_batch = batched.max_batch;
  if (cancel.load() || out.result.finish == engine::FinishReason::kCancelled) {
    return Status::Cancelled("generate", "the client cancelled");
  }
  out.model = lease->info();
  out.backend = std::string(eng.backend_name());
  out.load_seconds = lease->load_seconds();
  out.queue_seconds = lease->queue_seconds();
  seq.reset();
  lease.reset();  // frees the slot before the client sees the end of the stream
  out.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace garnet::daemon
