// `garnet bench MODEL`: fixed prompt lengths (default 512 and 2048 tokens, capped by the
// model's context), then N generated tokens (greedy); prints TTFT, prompt tok/s, decode tok/s,
// then the memory shape of the loaded model (weights, KV, scratch, overhead per device).
#include <google/protobuf/util/json_util.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/output.h"
#include "garnet/v1/garnet.grpc.pb.h"

namespace garnet::cli {

namespace pb = ::garnet::v1;

int CmdBench(Ctx& ctx, const Args& args) {
  if (args.positional.size() != 1) {
    return Usage("usage: garnet bench MODEL [--prompt-tokens 512,2048] [--tokens N]");
  }
  const std::string model = args.positional[0];
  std::string err;
  int64_t gen = 64;
  if (auto v = args.Get("--tokens")) {
    auto n = ParseIntFlag("--tokens", *v, 1, 1 << 16, &err);
    if (!n) return Usage(err);
    gen = *n;
  }
  std::vector<int64_t> lengths = {512, 2048};
  if (auto v = args.Get("--prompt-tokens")) {
    lengths.clear();
    size_t start = 0;
    while (start <= v->size()) {
      const size_t comma = v->find(',', start);
      auto n = ParseIntFlag(
          "--prompt-tokens",
          v->substr(start, comma == std::string::npos ? std::string::npos : comma - start), 1,
          1 << 20, &err);
      if (!n) return Usage(err);
      lengths.push_back(*n);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  auto models = pb::Models::NewStub(ctx.conn.channel);
  auto inference = pb::Inference::NewStub(ctx.conn.channel);

  // The model's trained context bounds the prompt lengths.
  pb::ShowRequest sreq;
  sreq.set_model(model);
  pb::ShowResponse show;
  {
    auto c = NewContext(ctx.conn, 30);
    grpc::Status s = models->Show(c.get(), sreq, &show);
    if (!s.ok()) return Fail(s, ctx.conn);
  }
  const int64_t trained = show.model().summary().context_length();
  int64_t longest = 0;
  std::vector<int64_t> runs;
  for (int64_t len : lengths) {
    if (trained > 0 && len + gen + 8 > trained) {
      std::fprintf(stderr,
                   "skipping %lld prompt tokens: with %lld generated they exceed the "
                   "model's context of %lld\n",
                   static_cast<long long>(len), static_cast<long long>(gen),
                   static_cast<long long>(trained));
      continue;
    }
    runs.push_back(len);
    longest = std::max(longest, len);
  }
  if (runs.empty()) return Usage("bench: no prompt length fits the model's context");
  const uint32_t bench_ctx = static_cast<uint32_t>(
      trained > 0 ? std::min<int64_t>(trained, longest + gen + 8) : longest + gen + 8);

  // A prompt of exactly N tokens: tokenize a long text, keep N - 1 tokens (the bos is added).
  std::string text;
  while (text.size() < static_cast<size_t>(longest) * 8) {
    text += "The quick brown fox jumps over the lazy dog while the sky stays blue. ";
  }
  pb::TokenizeRequest treq;
  treq.set_model(model);
  treq.set_text(text);
  pb::TokenizeResponse toks;
  {
    auto c = NewContext(ctx.conn);
    grpc::Status s = inference->Tokenize(c.get(), treq, &toks);
    if (!s.ok()) return Fail(s, ctx.conn);
  }

  std::vector<std::vector<std::string>> rows = {
      {"PROMPT", "GENERATED", "TTFT", "PROMPT TOK/S", "DECODE TOK/S", "BACKEND"}};
  for (int64_t len : runs) {
    pb::DetokenizeRequest dreq;
    dreq.set_model(model);
    for (int64_t i = 0; i < len - 1 && i < toks.tokens_size(); ++i) dreq.add_tokens(toks.tokens(i));
    pb::DetokenizeResponse prompt;
    {
      auto c = NewContext(ctx.conn);
      grpc::Status s = inference->Detokenize(c.get(), dreq, &prompt);
      if (!s.ok()) return Fail(s, ctx.conn);
    }
    pb::GenerateRequest g;
    g.set_model(model);
    g.set_prompt(prompt.text());
    g.set_raw(true);
    g.set_max_tokens(static_cast<int32_t>(gen));
    g.mutable_sampling()->set_temperature(0);
    g.mutable_options()->set_ctx(bench_ctx);
    auto c = NewContext(ctx.conn);
    auto reader = inference->Generate(c.get(), g);
    pb::GenerateResponse msg;
    pb::Done done;
    while (reader->Read(&msg)) {
      if (msg.has_done()) done = msg.done();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) return Fail(s, ctx.conn);
    const pb::Timing& t = done.timing();
    char ttft[32], pr[32], dr[32];
    std::snprintf(ttft, sizeof ttft, "%.3fs", t.ttft_seconds());
    std::snprintf(pr, sizeof pr, "%.1f", t.prompt_tokens_per_second());
    std::snprintf(dr, sizeof dr, "%.1f", t.decode_tokens_per_second());
    rows.push_back({std::to_string(t.prompt_tokens()), std::to_string(t.generated_tokens()), ttft,
                    pr, dr, done.path().backend() + " (" + done.path().placement() + ")"});
  }
  PrintTable(rows);

  // Memory shape of the model as loaded for the benchmark.
  pb::PsResponse ps;
  auto c = NewContext(ctx.conn, 10);
  grpc::Status s = inference->Ps(c.get(), {}, &ps);
  if (!s.ok()) return Fail(s, ctx.conn);
  for (const auto& m : ps.models()) {
    if (m.name() != show.model().name()) continue;
    std::printf("\nmemory (ctx %u x %u sequences):\n", m.ctx(), m.parallel());
    std::vector<std::vector<std::string>> mem = {
        {"  DEVICE", "WEIGHTS", "RUNTIME BUFFERS", "RESERVED KV", "OVERHEAD", "TOTAL"}};
    for (const auto& d : m.memory()) {
      mem.push_back({"  " + d.name(), Bytes(d.weights()), Bytes(d.scratch()), Bytes(d.kv()),
                     Bytes(d.overhead()), Bytes(d.total())});
    }
    PrintTable(mem);
    std::printf("  offloaded: %s\n", m.placement().c_str());
  }
  return kExitOk;
}

}  // namespace garnet::cli
