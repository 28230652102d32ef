// One generation request, transport-neutral: validation, model slot, chat template, prompt
// checks, engine generation with streaming callback, timing. Used by the gRPC Inference service
// and the OpenAI-compatible HTTP endpoint.
//
// Thread-safety: RunGeneration blocks (model load, slot wait, decoding); call it from a worker
// thread. It may be called from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/config.h"
#include "daemon/model_manager.h"
#include "engine/base/status.h"
#include "engine/model/chat.h"
#include "engine/model/engine.h"

namespace garnet::daemon {

// Unset fields keep Gemma's defaults (temperature 1.0, top-k 64, top-p 0.95); an unset seed is
// random.
struct SamplingOptions {
  std::optional<float> temperature, top_p, min_p, repeat_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int32_t> top_k;
  std::optional<uint64_t> seed;
};

struct GenerationRequest {
  std::string model;
  bool raw = false;                     // complete `prompt` as is
  std::string prompt;                   // raw
  std::vector<chat::Message> messages;  // chat template (when !raw)
  bool think = false;
  SamplingOptions sampling;
  int32_t max_tokens = 0;  // 0: 256
  std::vector<std::string> stops;
  LoadOptions options;
  int64_t keep_alive_s = 0;
};

struct GenerationResult {
  engine::GenerateResult result;
  LoadedInfo model;  // name, placement, layers/experts on host
  std::string backend;
  double load_seconds = 0;
  double queue_seconds = 0;
  double total_seconds = 0;
  size_t max_decode_batch = 0;  // the most sequences one of its decode steps ran with
};

// Called for each generated token; returning false cancels.
using PieceFn = std::function<bool(int32_t token, std::string_view text)>;

// Validates the request (InvalidArgument naming the field), acquires a slot (the manager's
// errors: NotFound, ResourceExhausted "busy", ...), checks the prompt fits the context, runs the
// engine (decode steps batched with the model's other requests: decode_batcher.h). Cancelled when
// `cancel` was set or `on_piece` returned false.
Result<GenerationResult> RunGeneration(ModelManager& models, const Config& config,
                                       const GenerationRequest& request, const PieceFn& on_piece,
                                       const std::atomic<bool>& cancel);

// Sampling options -> sampler parameters (validated).
Result<sampling::SamplerParams> MakeSampler(const SamplingOptions& s);

}  // namespace garnet::daemon
