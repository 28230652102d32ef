// `garnet run MODEL [PROMPT]`: one-shot generation streamed to stdout, or an interactive chat
// when no prompt is given and stdin is a terminal. Pulls the model first when it is missing.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/commands.h"
#include "cli/output.h"
#include "garnet/v1/garnet.grpc.pb.h"

namespace garnet::cli {

namespace pb = ::garnet::v1;

namespace {

const char* FinishText(pb::FinishReason r) {
  switch (r) {
    case pb::FINISH_REASON_STOP:
      return "stop";
    case pb::FINISH_REASON_STOP_STRING:
      return "stop string";
    case pb::FINISH_REASON_LENGTH:
      return "length";
    case pb::FINISH_REASON_CANCELLED:
      return "cancelled";
    case pb::FINISH_REASON_CONTEXT_FULL:
      return "context full";
    default:
      return "?";
  }
}

void PrintTiming(const pb::Done& d) {
  const pb::Timing& t = d.timing();
  std::string load;
  if (t.load_seconds() > 0.0005)
    load = "load " + std::to_string(t.load_seconds()).substr(0, 5) + "s, ";
  std::fprintf(
      stderr,
      "\n%sprompt %lld tok %.1f tok/s, ttft %.3fs, %lld tok %.1f tok/s, finish %s, "
      "backend %s (%s)\n",
      load.c_str(), static_cast<long long>(t.prompt_tokens()), t.prompt_tokens_per_second(),
      t.ttft_seconds(), static_cast<long long>(t.generated_tokens()), t.decode_tokens_per_second(),
      FinishText(d.finish_reason()), d.path().backend().c_str(), d.path().placement().c_str());
}

struct Options {
  pb::Sampling sampling;
  int32_t max_tokens = 0;
  std::vector<std::string> stops;
  pb::ModelOptions model_options;
  int64_t keep_alive = 0;
  double timeout = 0;
  bool think = false;
  bool quiet = false;
};

// Reads the stream; prints text as it comes (or JSON lines). Returns the status; *text gets the
// whole reply.
template <typename Reader>
grpc::Status Stream(Ctx& ctx, Reader& reader, const Options& o, std::string* text) {
  pb::GenerateResponse msg;
  bool ended_with_newline = true;
  while (reader->Read(&msg)) {
    if (ctx.json) {
      std::string out;
      google::protobuf::util::JsonPrintOptions jo;
      jo.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(msg, &out, jo);
      std::printf("%s\n", out.c_str());
      std::fflush(stdout);
      continue;
    }
    if (!msg.text().empty()) {
      std::fwrite(msg.text().data(), 1, msg.text().size(), stdout);
      std::fflush(stdout);
      ended_with_newline = msg.text().back() == '\n';
      *text += msg.text();
    }
    if (msg.has_done()) {
      if (!ended_with_newline) std::fputc('\n', stdout);
      std::fflush(stdout);
      if (!o.quiet) PrintTiming(msg.done());
    }
  }
  return reader->Finish();
}

bool NotPulled(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::NOT_FOUND &&
         s.error_message().find("is not pulled") != std::string::npos;
}

grpc::Status GenerateOnce(Ctx& ctx, const std::string& model, const std::string& prompt,
                          const std::string& system, bool raw, const Options& o) {
  pb::GenerateRequest req;
  req.set_model(model);
  req.set_prompt(prompt);
  req.set_system(system);
  req.set_raw(raw);
  *req.mutable_sampling() = o.sampling;
  req.set_max_tokens(o.max_tokens);
  for (const auto& s : o.stops) req.add_stop(s);
  *req.mutable_options() = o.model_options;
  req.set_keep_alive_seconds(o.keep_alive);
  req.set_think(o.think);
  auto c = NewContext(ctx.conn, o.timeout);
  auto reader = pb::Inference::NewStub(ctx.conn.channel)->Generate(c.get(), req);
  std::string text;
  return Stream(ctx, reader, o, &text);
}

grpc::Status ChatTurn(Ctx& ctx, const std::string& model, std::vector<pb::ChatMessage>& history,
                      const Options& o) {
  pb::ChatRequest req;
  req.set_model(model);
  for (const auto& m : history) *req.add_messages() = m;
  *req.mutable_sampling() = o.sampling;
  req.set_max_tokens(o.max_tokens);
  for (const auto& s : o.stops) req.add_stop(s);
  *req.mutable_options() = o.model_options;
  req.set_keep_alive_seconds(o.keep_alive);
  req.set_think(o.think);
  auto c = NewContext(ctx.conn, o.timeout);
  auto reader = pb::Inference::NewStub(ctx.conn.channel)->Chat(c.get(), req);
  std::string text;
  grpc::Status s = Stream(ctx, reader, o, &text);
  if (s.ok()) {
    pb::ChatMessage reply;
    reply.set_role(pb::ROLE_MODEL);
    reply.set_content(text);
    history.push_back(reply);
  }
  return s;
}

}  // namespace

int CmdRun(Ctx& ctx, const Args& args) {
  if (args.positional.empty()) {
    return Usage(
        "usage: garnet run MODEL [PROMPT] [--system S] [--max-tokens N] [--temp T] "
        "[--top-k K] [--top-p P] [--seed S] [--stop S]... [--ctx N] [--raw] [--think]");
  }
  const std::string model = args.positional[0];
  std::string prompt;
  for (size_t i = 1; i < args.positional.size(); ++i) {
    prompt += (i > 1 ? " " : "") + args.positional[i];
  }
  Options o;
  std::string err;
  auto float_flag = [&](const char* flag, auto setter) -> bool {
    if (auto v = args.Get(flag)) {
      char* end = nullptr;
      const float f = std::strtof(v->c_str(), &end);
      if (v->empty() || end != v->c_str() + v->size()) {
        err = std::string(flag) + ": \"" + *v + "\" is not a number";
        return false;
      }
      setter(f);
    }
    return true;
  };
  if (!float_flag("--temp", [&](float f) { o.sampling.set_temperature(f); }) ||
      !float_flag("--top-p", [&](float f) { o.sampling.set_top_p(f); }) ||
      !float_flag("--min-p", [&](float f) { o.sampling.set_min_p(f); }) ||
      !float_flag("--repeat-penalty", [&](float f) { o.sampling.set_repeat_penalty(f); }) ||
      !float_flag("--timeout", [&](float f) { o.timeout = f; })) {
    return Usage(err);
  }
  if (auto v = args.Get("--top-k")) {
    auto n = ParseIntFlag("--top-k", *v, 0, 1 << 20, &err);
    if (!n) return Usage(err);
    o.sampling.set_top_k(static_cast<int32_t>(*n));
  }
  if (auto v = args.Get("--seed")) {
    auto n = ParseIntFlag("--seed", *v, 0, INT64_MAX, &err);
    if (!n) return Usage(err);
    o.sampling.set_seed(static_cast<uint64_t>(*n));
  }
  if (auto v = args.Get("--max-tokens")) {
    // Passed through as given: the daemon answers out-of-range values with INVALID_ARGUMENT.
    auto n = ParseIntFlag("--max-tokens", *v, INT32_MIN, INT32_MAX, &err);
    if (!n) return Usage(err);
    o.max_tokens = static_cast<int32_t>(*n);
  }
  if (auto v = args.Get("--ctx")) {
    auto n = ParseIntFlag("--ctx", *v, 0, UINT32_MAX, &err);
    if (!n) return Usage(err);
    o.model_options.set_ctx(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--parallel")) {
    auto n = ParseIntFlag("--parallel", *v, 0, 1 << 20, &err);
    if (!n) return Usage(err);
    o.model_options.set_parallel(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--backend")) o.model_options.set_backend(*v);
  if (auto v = args.Get("--keep-alive")) {
    auto n = ParseIntFlag("--keep-alive", *v, -1, int64_t{365} * 86400, &err);
    if (!n) return Usage(err);
    o.keep_alive = *n;
  }
  o.stops = args.All("--stop");
  o.think = args.Has("--think");
  o.quiet = args.Has("--quiet");
  const std::string system = args.Get("--system").value_or("");
  const bool raw = args.Has("--raw");

  const bool interactive = prompt.empty() && (args.Has("--chat") || isatty(0));
  if (prompt.empty() && !interactive) {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    while (!prompt.empty() && prompt.back() == '\n') prompt.pop_back();
    if (prompt.empty()) return Usage("run: empty prompt on stdin");
  }

  auto with_pull = [&](const std::function<grpc::Status()>& call) {
    grpc::Status s = call();
    if (NotPulled(s) && !args.Has("--no-pull")) {
      if (!o.quiet && !ctx.json)
        std::fprintf(stderr, "%s is not pulled; pulling it\n", model.c_str());
      grpc::Status p = PullWithProgress(ctx, model, o.quiet);
      if (!p.ok()) return p;
      s = call();
    }
    return s;
  };

  if (!interactive) {
    grpc::Status s = with_pull([&] { return GenerateOnce(ctx, model, prompt, system, raw, o); });
    return s.ok() ? kExitOk : Fail(s, ctx.conn);
  }

  std::vector<pb::ChatMessage> history;
  if (!system.empty()) {
    pb::ChatMessage m;
    m.set_role(pb::ROLE_SYSTEM);
    m.set_content(system);
    history.push_back(m);
  }
  std::fprintf(stderr, "chatting with %s; /bye or Ctrl-D to end\n", model.c_str());
  std::string line;
  for (;;) {
    std::fprintf(stderr, ">>> ");
    std::fflush(stderr);
    if (!std::getline(std::cin, line)) break;
    if (line == "/bye" || line == "/exit") break;
    if (line.empty()) continue;
    pb::ChatMessage m;
    m.set_role(pb::ROLE_USER);
    m.set_content(line);
    history.push_back(m);
    grpc::Status s = with_pull([&] { return ChatTurn(ctx, model, history, o); });
    if (!s.ok()) {
      history.pop_back();
      Fail(s, ctx.conn);
      if (IsNotRunning(s, ctx.conn)) return kExitError;
    }
  }
  std::fprintf(stderr, "\n");
  return kExitOk;
}

}  // namespace garnet::cli
