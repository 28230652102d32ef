#include "daemon/http_api.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "daemon/config.h"
#include "daemon/generation.h"
#include "daemon/metrics.h"
#include "daemon/model_manager.h"
#include "daemon/registry_client.h"

namespace garnet::daemon {
namespace {

using nlohmann::json;

int HttpCode(Code c) {
  switch (c) {
    case Code::kInvalidArgument:
    case Code::kOutOfRange:
      return 400;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kNotFound:
      return 404;
    case Code::kFailedPrecondition:
    case Code::kAlreadyExists:
      return 409;
    case Code::kResourceExhausted:
      return 429;
    case Code::kCancelled:
      return 499;
    case Code::kUnimplemented:
      return 501;
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

json ErrorBody(const Status& s) {
  return json{{"error",
               {{"message", ScrubPaths(s.message())},
                {"type", std::string(CodeName(s.code()))},
                {"code", static_cast<int>(s.code())}}}};
}

void SendError(httplib::Response& res, const Status& s) {
  res.status = HttpCode(s.code());
  res.set_content(ErrorBody(s).dump(), "application/json");
}

// Typed field access that never throws: a wrong type is an InvalidArgument naming the field.
template <typename T>
Status Field(const json& j, const char* key, std::optional<T>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::OK();
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return Status::InvalidArgument(key, "must be a string");
    *out = it->get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Status::InvalidArgument(key, "must be a boolean");
    *out = it->get<bool>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return Status::InvalidArgument(key, "must be a number");
    *out = it->get<double>();
  } else {
    if (!it->is_number_integer()) return Status::InvalidArgument(key, "must be an integer");
    const int64_t v = it->get<int64_t>();
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
      return Status::InvalidArgument(key, "is out of range");
    }
    *out = static_cast<T>(v);
  }
  return Status::OK();
}

// The OpenAI request fields garnet understands -> GenerationRequest.
Status ParseCommon(const json& j, GenerationRequest* g, bool* stream) {
  std::optional<std::string> model;
  GARNET_RETURN_IF_ERROR(Field(j, "model", &model));
  if (!model) return Status::InvalidArgument("model", "is required");
  g->model = *model;
  std::optional<bool> st;
  GARNET_RETURN_IF_ERROR(Field(j, "stream", &st));
  *stream = st.value_or(false);
  std::optional<int64_t> max_tokens, max_completion_tokens, seed;
  GARNET_RETURN_IF_ERROR(Field(j, "max_tokens", &max_tokens));
  GARNET_RETURN_IF_ERROR(Field(j, "max_completion_tokens", &max_completion_tokens));
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens) {
    if (*max_tokens < 0 || *max_tokens > (1 << 20)) {
      return Status::InvalidArgument("max_tokens", "is out of range [0, 1048576]");
    }
    g->max_tokens = static_cast<int32_t>(*max_tokens);
  }
  GARNET_RETURN_IF_ERROR(Field(j, "seed", &seed));
  if (seed) g->sampling.seed = static_cast<uint64_t>(*seed);
  std::optional<double> temperature, top_p, presence, frequency;
  GARNET_RETURN_IF_ERROR(Field(j, "temperature", &temperature));
  GARNET_RETURN_IF_ERROR(Field(j, "top_p", &top_p));
  GARNET_RETURN_IF_ERROR(Field(j, "presence_penalty", &presence));
  GARNET_RETURN_IF_ERROR(Field(j, "frequency_penalty", &frequency));
  if (temperature) g->sampling.temperature = static_cast<float>(*temperature);
  if (top_p) g->sampling.top_p = static_cast<float>(*top_p);
  if (presence) g->sampling.presence_penalty = static_cast<float>(*presence);
  if (frequency) g->sampling.frequency_penalty = static_cast<float>(*frequency);
  if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      g->stops.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) return Status::InvalidArgument("stop", "must be strings");
        g->stops.push_back(s.get<std::string>());
      }
    } else {
      return Status::InvalidArgument("stop", "must be a string or an array of strings");
    }
  }
  return Status::OK();
}

Status ParseMessages(const json& j, GenerationRequest* g) {
  auto it = j.find("messages");
  if (it == j.end() || !it->is_array()) {
    return Status::InvalidArgument("messages", "must be an array");
  }
  for (const auto& m : *it) {
    if (!m.is_object()) return Status::InvalidArgument("messages", "each must be an object");
    std::optional<std::string> role;
    GARNET_RETURN_IF_ERROR(Field(m, "role", &role));
    if (!role) return Status::InvalidArgument("messages", "a message has no role");
    GARNET_ASSIGN_OR_RETURN(chat::Role r, chat::ParseRole(*role == "developer" ? "system" : *role));
    std::string content;
    auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      content.clear();
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      for (const auto& part : *c) {
        if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Status::InvalidArgument("messages", "only text content parts are supported");
        }
        content += part["text"].get<std::string>();
      }
    } else {
      return Status::InvalidArgument("messages", "content must be a string or text parts");
    }
    g->messages.push_back({r, std::move(content)});
  }
  return Status::OK();
}

std::string FinishName(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kMaxTokens:
    case engine::FinishReason::kContextFull:
      return "length";
    default:
      return "stop";
  }
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%llx%llx", prefix, static_cast<unsigned long long>(Now()),
                static_cast<unsigned long long>(++counter));
  return buf;
}

}  // namespace

bool HostAllowed(const std::string& header, const std::vector<std::string>& allowed) {
  std::string host = header;
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    if (close == std::string::npos) return false;
    const std::string rest = host.substr(close + 1);
    if (!rest.empty() &&
        (rest[0] != ':' || rest.find_first_not_of("0123456789", 1) != std::string::npos))
      return false;
    host = host.substr(0, close + 1);
  } else if (const size_t colon = host.find(':'); colon != std::string::npos) {
    if (host.find_first_not_of("0123456789", colon + 1) != std::string::npos) return false;
    host = host.substr(0, colon);
  }
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (host == "localhost" || host == "127.0.0.1" || host == "[::1]") return true;
  for (const std::string& a : allowed) {
    if (host == a) return true;
  }
  return false;
}

std::string ScrubPaths(const std::string& m) {
  std::string out;
  for (size_t i = 0; i < m.size();) {
    const bool boundary = i == 0 || m[i - 1] == ' ' || m[i - 1] == '"' || m[i - 1] == '\'' ||
                          m[i - 1] == '(' || m[i - 1] == '=';
    if (m[i] == '/' && boundary && i + 1 < m.size() && m[i + 1] != ' ') {
      size_t j = i;
      while (j < m.size() && m[j] != ' ' && m[j] != '"' && m[j] != '\'' && m[j] != ')' &&
             m[j] != ',' && !(m[j] == ':' && (j + 1 == m.size() || m[j + 1] == ' ')))
        ++j;
      out += "<path>";
      i = j;
    } else {
      out += m[i++];
    }
  }
  return out;
}

struct HttpApi::Impl {
  HttpOptions options;
  const Config* config = nullptr;
  ModelManager* models = nullptr;
  RegistryClient* registry = nullptr;
  httplib::Server server;
  std::thread thread;
  std::string base_url;

  void Generate(const httplib::Request& req, httplib::Response& res, bool chat);
};

void HttpApi::Impl::Generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto t0 = std::chrono::steady_clock::now();
  const char* method = chat ? "chat.completions" : "completions";
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  GenerationRequest g;
  bool stream = false;
  Status st;
  if (body.is_discarded() || !body.is_object()) {
    st = Status::InvalidArgument("request body", "is not a JSON object");
  }
  if (st.ok()) st = ParseCommon(body, &g, &stream);
  if (st.ok()) {
    if (chat) {
      st = ParseMessages(body, &g);
    } else {
      std::optional<std::string> prompt;
      st = Field(body, "prompt", &prompt);
      if (st.ok() && !prompt) st = Status::InvalidArgument("prompt", "must be a string");
      if (st.ok()) {
        g.raw = true;
        g.prompt = *prompt;
      }
    }
  }
  if (!st.ok()) {
    Metrics::Global().CountRequest("http", method, std::string(CodeName(st.code())));
    SendError(res, st);
    return;
  }
  const std::string id = NewId(chat ? "chatcmpl" : "cmpl");
  const int64_t created = Now();
  auto finish_log = [method, t0, g](const Status& s, const GenerationResult* r) {
    Metrics::Global().CountRequest("http", method, std::string(CodeName(s.code())));
    if (r != nullptr) {
      const auto& t = r->result.timing;
      Metrics::Global().ObserveGeneration(t.prompt_tokens, t.generated_tokens, t.ttft_seconds,
                                          t.decode_tok_s());
    }
    std::fprintf(stderr, "garnetd: http %s %s %s %.3fs\n", method, g.model.substr(0, 128).c_str(),
                 s.ok() ? "ok" : std::string(CodeName(s.code())).c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };

  if (!stream) {
    std::atomic<bool> cancel{false};
    std::string text;
    auto r = RunGeneration(
        *models, *config, g,
        [&](int32_t, std::string_view piece) {
          text += piece;
          return true;
        },
        cancel);
    finish_log(r.status(), r.ok() ? &*r : nullptr);
    if (!r.ok()) {
      SendError(res, r.status());
      return;
    }
    const auto& t = r->result.timing;
    json choice = {{"index", 0}, {"finish_reason", FinishName(r->result.finish)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", r->result.text}};
    } else {
      choice["text"] = r->result.text;
    }
    json out = {{"id", id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", r->model.name},
                {"choices", json::array({choice})},
                {"usage",
                 {{"prompt_tokens", t.prompt_tokens},
                  {"completion_tokens", t.generated_tokens},
                  {"total_tokens", t.prompt_tokens + t.generated_tokens}}}};
    res.set_content(out.dump(), "application/json");
    return;
  }

  // Streaming: run the generation inside the content provider, one SSE event per token.
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [this, g, chat, id, created, finish_log](
                                                            size_t, httplib::DataSink& sink) {
    std::atomic<bool> cancel{false};
    auto chunk = [&](const json& delta_or_text, const json& finish) {
      json choice = {{"index", 0}, {"finish_reason", finish}};
      if (chat) {
        choice["delta"] = delta_or_text;
      } else {
        choice["text"] = delta_or_text;
      }
      json ev = {{"id", id},
                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", created},
                 {"model", g.model},
                 {"choices", json::array({choice})}};
      const std::string line = "data: " + ev.dump() + "\n\n";
      return sink.write(line.data(), line.size());
    };
    bool open = true;
    if (chat) open = chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr);
    auto r = RunGeneration(
        *models, *config, g,
        [&](int32_t, std::string_view piece) {
          if (!open) return false;
          if (piece.empty()) return true;
          open = chat ? chunk(json{{"content", std::string(piece)}}, nullptr)
                      : chunk(std::string(piece), nullptr);
          return open;
        },
        cancel);
    finish_log(r.status(), r.ok() ? &*r : nullptr);
    if (open) {
      if (r.ok()) {
        chunk(chat ? json::object() : json(""), FinishName(r->result.finish));
      } else {
        const std::string err = "data: " + ErrorBody(r.status()).dump() + "\n\n";
        sink.write(err.data(), err.size());
      }
      const std::string done = "data: [DONE]\n\n";
      sink.write(done.data(), done.size());
    }
    sink.done();
    return true;
  });
}

HttpApi::HttpApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpApi::~HttpApi() {
  Stop();
}

std::string HttpApi::base_url() const {
  return impl_->base_url;
}

void HttpApi::Stop() {
  if (impl_ && impl_->thread.joinable()) {
    impl_->server.stop();
    impl_->thread.join();
  }
}

Result<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpOptions& options, const Config* config,
                                                ModelManager* models, RegistryClient* registry) {
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("http listen \"" + options.listen + "\"", "is not host:port");
  }
  if (!IsLoopbackAddress(options.listen) && options.token.empty()) {
    return Status::PermissionDenied("http listen " + options.listen,
                                    "non-loopback addresses need a token");
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(options.listen.substr(colon + 1));
  } catch (...) {
    return Status::InvalidArgument("http listen \"" + options.listen + "\"", "bad port");
  }

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->config = config;
  impl->models = models;
  impl->registry = registry;
  Impl* p = impl.get();
  httplib::Server& svr = impl->server;
  svr.new_task_queue = [] { return new httplib::ThreadPool(32); };
  svr.set_payload_max_length(options.max_body_bytes);
  svr.set_pre_routing_handler([p](const httplib::Request& req, httplib::Response& res) {
    if (!HostAllowed(req.get_header_value("Host"), p->options.allowed_hosts)) {
      SendError(res, Status::PermissionDenied("host", "this Host header is not allowed"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!p->options.token.empty() &&
        req.get_header_value("Authorization") != "Bearer " + p->options.token) {
      SendError(res, Status::Unauthenticated("garnetd", "missing or wrong bearer token"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!p->options.cors_origin.empty()) {
      res.set_header("Access-Control-Allow-Origin", p->options.cors_origin);
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  svr.Get("/metrics", [p](const httplib::Request&, httplib::Response& res) {
    res.set_content(Metrics::Global().Render(p->models), "text/plain; version=0.0.4");
  });
  svr.Get("/v1/models", [p](const httplib::Request&, httplib::Response& res) {
    auto rows = p->registry->List();
    if (!rows.ok()) {
      SendError(res, rows.status());
      return;
    }
    json data = json::array();
    for (const auto& m : *rows) {
      data.push_back(
          {{"id", m.name}, {"object", "model"}, {"created", m.created_at}, {"owned_by", "garnet"}});
    }
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  });
  svr.Post("/v1/chat/completions", [p](const httplib::Request& req, httplib::Response& res) {
    p->Generate(req, res, /*chat=*/true);
  });
  svr.Post("/v1/completions", [p](const httplib::Request& req, httplib::Response& res) {
    p->Generate(req, res, /*chat=*/false);
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      const Status s = res.status == 413   ? Status::InvalidArgument("request", "body too large")
                       : res.status == 404 ? Status::NotFound("route", "no such endpoint")
                                           : Status::InvalidArgument("request", "rejected");
      res.set_content(ErrorBody(s).dump(), "application/json");
    }
  });

  const int bound =
      port == 0 ? svr.bind_to_any_port(host) : (svr.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return Status::Unavailable("http", "cannot listen on " + options.listen);
  impl->base_url = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                   ":" + std::to_string(bound);
  impl->thread = std::thread([p] { p->server.listen_after_bind(); });
  return std::unique_ptr<HttpApi>(new HttpApi(std::move(impl)));
}

}  // namespace garnet::daemon
