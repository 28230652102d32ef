// garnet-run: generate text from a Gemma 4 GGUF with the chat template, streaming to stdout.
//
//   garnet-run --model PATH [--prompt TEXT] [--system TEXT] [--chat] [--think] [--raw]
//              [--max-tokens N] [--temp T] [--top-k K] [--top-p P] [--min-p P]
//              [--repeat-penalty R] [--seed S] [--threads N] [--ctx N] [--ubatch N]
//              [--kv-type f16|q8_0|f32] [--stop TEXT]... [--backend cpu|vulkan] [--device N|NAME]
//
// --backend vulkan runs the forward pass on a Vulkan device (--device: its index or a
// substring of its name, default the best one; the KV cache is f16); without a Vulkan device it
// fails with a message saying so.
//
// Without --chat, one reply to --prompt is generated. With --chat, turns are read from stdin
// (one line per user turn) and the conversation continues until EOF. --raw skips the chat
// template (plain completion of --prompt). Timing goes to stderr: TTFT, prompt tok/s, decode
// tok/s. Sampling defaults to Gemma's (temperature 1.0, top-k 64, top-p 0.95); --temp 0 is
// greedy.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/chat.h"
#include "engine/model/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/run/args.h"

namespace {

using garnet::engine::Engine;
using garnet::engine::EngineOptions;

void Usage() {
  std::fprintf(stderr,
               "usage: garnet-run --model PATH [--prompt TEXT] [--system TEXT] [--chat] [--think]\n"
               "                  [--raw] [--max-tokens N] [--temp T] [--top-k K] [--top-p P]\n"
               "                  [--min-p P] [--repeat-penalty R] [--seed S] [--threads N]\n"
               "                  [--ctx N] [--ubatch N] [--kv-type f16|q8_0|f32] [--stop TEXT]\n"
               "                  [--backend cpu|vulkan] [--device N|NAME]\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace garnet;
  std::string model_path, prompt, system, backend = "cpu", device;
  bool chat_loop = false, think = false, raw = false;
  int64_t max_tokens = 256, seed = 0, threads = 0, ctx = 4096, ubatch = 0;
  sampling::SamplerParams sp = sampling::SamplerParams::GemmaDefaults();
  model::KvType kv_type = model::KvType::kF16;
  std::vector<std::string> stops;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    bool ok = true;
    int64_t iv = 0;
    if (a == "--model") {
      model_path = need();
    } else if (a == "--prompt") {
      prompt = need();
    } else if (a == "--system") {
      system = need();
    } else if (a == "--chat") {
      chat_loop = true;
    } else if (a == "--think") {
      think = true;
    } else if (a == "--raw") {
      raw = true;
    } else if (a == "--max-tokens") {
      ok = tools::ParseInt(a, need(), &max_tokens);
    } else if (a == "--temp") {
      ok = tools::ParseFloat(a, need(), &sp.temperature);
    } else if (a == "--top-k") {
      ok = tools::ParseInt(a, need(), &iv);
      sp.top_k = static_cast<int32_t>(iv);
    } else if (a == "--top-p") {
      ok = tools::ParseFloat(a, need(), &sp.top_p);
    } else if (a == "--min-p") {
      ok = tools::ParseFloat(a, need(), &sp.min_p);
    } else if (a == "--repeat-penalty") {
      ok = tools::ParseFloat(a, need(), &sp.repeat_penalty);
    } else if (a == "--seed") {
      ok = tools::ParseInt(a, need(), &seed);
    } else if (a == "--threads") {
      ok = tools::ParseInt(a, need(), &threads);
    } else if (a == "--ctx") {
      ok = tools::ParseInt(a, need(), &ctx);
    } else if (a == "--ubatch") {
      ok = tools::ParseInt(a, need(), &ubatch);
    } else if (a == "--kv-type") {
      const std::optional<model::KvType> t = model::KvTypeFromName(need());
      if (t) {
        kv_type = *t;
      } else {
        std::fprintf(stderr, "error: --kv-type wants f16, q8_0 or f32\n");
        ok = false;
      }
    } else if (a == "--stop") {
      stops.push_back(need());
    } else if (a == "--backend") {
      backend = need();
      if (backend != "cpu" && backend != "vulkan") {
        std::fprintf(stderr, "error: --backend wants cpu or vulkan\n");
        ok = false;
      }
    } else if (a == "--device") {
      device = need();
    } else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else {
      std::fprintf(stderr, "error: unknown flag %s\n", a.c_str());
      Usage();
      return 2;
    }
    if (!ok) return 2;
  }
  if (model_path.empty() || (!chat_loop && prompt.empty())) {
    Usage();
    return 2;
  }
  sp.seed = static_cast<uint64_t>(seed);
  EngineOptions opt;
  opt.n_ctx = ctx;
  opt.n_ubatch = ubatch;
  opt.n_threads = static_cast<int>(threads);
  opt.kv_type = kv_type;
  opt.backend = backend;
  opt.device = device;
  auto engine_or = Engine::Open(model_path, opt);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "error: %s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Engine> engine = std::move(engine_or).value();
  const tok::Tokenizer* tk = engine->tokenizer();
  if (tk == nullptr) {
    std::fprintf(stderr, "error: %s has no tokenizer\n", model_path.c_str());
    return 1;
  }
  std::vector<chat::Message> history;
  if (!system.empty()) history.push_back({chat::Role::kSystem, system});
  chat::ChatOptions copt;
  copt.enable_thinking = think;
  std::unique_ptr<engine::Sequence> seq;

  auto run_turn = [&](const std::string& user_text) -> bool {
    std::vector<int32_t> ids;
    if (raw) {
      ids = tk->Encode(user_text, /*add_bos=*/true);
    } else {
      history.push_back({chat::Role::kUser, user_text});
      ids = chat::FormatChatTokens(*tk, history, copt);
    }
    // Reuse the sequence when it holds a prefix of this prompt; else start over.
    std::vector<int32_t> feed = ids;
    if (seq && seq->n_past() < static_cast<int64_t>(ids.size()) &&
        std::equal(seq->tokens().begin(), seq->tokens().end(), ids.begin())) {
      feed.assign(ids.begin() + seq->n_past(), ids.end());
    } else {
      auto s = engine->NewSequence();
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.status().ToString().c_str());
        return false;
      }
      seq = std::move(s).value();
    }
    engine::GenerateRequest req;
    req.max_tokens = static_cast<int32_t>(max_tokens);
    req.sampler = sp;
    req.stop_strings = stops;
    auto res = engine->Generate(*seq, feed, req, [](int32_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    if (!res.ok()) {
      std::fprintf(stderr, "error: %s\n", res.status().ToString().c_str());
      return false;
    }
    const auto& t = res->timing;
    std::fprintf(stderr,
                 "[%s] prompt %lld tok, %.1f tok/s | TTFT %.1f ms | generated %lld tok, "
                 "%.2f tok/s | finish %s\n",
                 std::string(engine->backend_name()).c_str(),
                 static_cast<long long>(t.prompt_tokens), t.prompt_tok_s(), t.ttft_seconds * 1e3,
                 static_cast<long long>(t.generated_tokens), t.decode_tok_s(),
                 std::string(engine::FinishReasonName(res->finish)).c_str());
    if (!raw) history.push_back({chat::Role::kModel, res->text});
    return true;
  };

  if (!chat_loop) return run_turn(prompt) ? 0 : 1;
  if (!prompt.empty() && !run_turn(prompt)) return 1;
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (!run_turn(line)) return 1;
  }
  return 0;
}
