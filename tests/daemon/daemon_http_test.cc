// The OpenAI-compatible HTTP endpoint of a real garnetd, with real HTTP requests: models,
// chat/completions (plain and SSE streaming), completions, /metrics, Host allowlist (DNS
// rebinding), body size limit, bearer token, error bodies without paths.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "daemon/http_api.h"
#include "tests/daemon/harness.h"

namespace garnet::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

TEST(HttpHelpers, HostAllowlist) {
  using daemon::HostAllowed;
  EXPECT_TRUE(HostAllowed("localhost", {}));
  EXPECT_TRUE(HostAllowed("localhost:11435", {}));
  EXPECT_TRUE(HostAllowed("127.0.0.1:80", {}));
  EXPECT_TRUE(HostAllowed("[::1]:80", {}));
  EXPECT_TRUE(HostAllowed("LOCALHOST", {}));
  EXPECT_FALSE(HostAllowed("", {}));
  EXPECT_FALSE(HostAllowed("evil.com", {}));
  EXPECT_FALSE(HostAllowed("localhost.evil.com", {}));
  EXPECT_FALSE(HostAllowed("127.0.0.1.nip.io", {}));
  EXPECT_FALSE(HostAllowed("localhost:80x", {}));
  EXPECT_TRUE(HostAllowed("box.lan:8080", {"box.lan"}));
}

TEST(HttpHelpers, ScrubPaths) {
  using daemon::ScrubPaths;
  EXPECT_EQ(ScrubPaths("loading x: cannot open /var/lib/garnet/blobs/sha256-ab: no such file"),
            "loading x: cannot open <path>: no such file");
  EXPECT_EQ(ScrubPaths("file \"/etc/passwd\" is bad"), "file \"<path>\" is bad");
  EXPECT_EQ(ScrubPaths("hf.co/org/repo not found"), "hf.co/org/repo not found");
}

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new World();
    daemon_ = new World::Daemon(world_->StartDaemon({"--http-listen", "127.0.0.1:0"}));
    ASSERT_FALSE(daemon_->http_url.empty()) << daemon_->proc->Err();
    CliResult r = world_->Cli(daemon_->target, {"pull", "gemma4:tiny"});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  static void TearDownTestSuite() {
    daemon_->proc->Signal(SIGTERM);
    EXPECT_EQ(daemon_->proc->Wait(milliseconds(10000)), 0);
    delete daemon_;
    delete world_;
  }
  static httplib::Client Client() {
    httplib::Client c(daemon_->http_url);
    c.set_read_timeout(30, 0);
    return c;
  }
  static World* world_;
  static World::Daemon* daemon_;
};
World* HttpTest::world_ = nullptr;
World::Daemon* HttpTest::daemon_ = nullptr;

TEST_F(HttpTest, Models) {
  auto c = Client();
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "gemma4:tiny");
}

TEST_F(HttpTest, ChatCompletion) {
  auto c = Client();
  json req = {{"model", "gemma4:tiny"},
              {"messages",
               {{{"role", "system"}, {"content", "Be brief."}},
                {{"role", "user"}, {"content", "Why is the sky blue?"}}}},
              {"max_tokens", 6},
              {"temperature", 0}};
  auto res = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
  const int completion = j["usage"]["completion_tokens"];
  EXPECT_LE(completion, 6);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 5);
  if (j["choices"][0]["finish_reason"] == "length") EXPECT_EQ(completion, 6);
}

TEST_F(HttpTest, ChatCompletionStreamsSse) {
  auto c = Client();
  json req = {{"model", "gemma4:tiny"},
              {"messages", {{{"role", "user"}, {"content", "Count to ten."}}}},
              {"max_tokens", 8},
              {"temperature", 0},
              {"stream", true}};
  std::string body;
  auto res = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  body = res->body;
  // Events: role chunk, one per token, a final chunk with finish_reason, then [DONE].
  size_t events = 0, pos = 0;
  std::string streamed, finish;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    const std::string data = body.substr(pos + 6, end - pos - 6);
    pos = end + 2;
    ++events;
    if (data == "[DONE]") break;
    json ev = json::parse(data);
    EXPECT_EQ(ev["object"], "chat.completion.chunk");
    const auto& ch = ev["choices"][0];
    if (ch["delta"].contains("content")) streamed += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos);
  EXPECT_FALSE(finish.empty());
  EXPECT_GE(events, 3u);
  // Same text as the non-streaming call.
  req["stream"] = false;
  auto plain = c.Post("/v1/chat/completions", req.dump(), "application/json");
  ASSERT_TRUE(plain);
  EXPECT_EQ(json::parse(plain->body)["choices"][0]["message"]["content"], streamed);
}

TEST_F(HttpTest, Completions) {
  auto c = Client();
  json req = {{"model", "gemma4:tiny"}, {"prompt", "The sky is"}, {"max_tokens", 4}, {"seed", 1}};
  auto res = c.Post("/v1/completions", req.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(j["choices"][0]["text"].is_string());
  req["stream"] = true;
  auto s = c.Post("/v1/completions", req.dump(), "application/json");
  ASSERT_TRUE(s);
  EXPECT_NE(s->body.find("data: [DONE]"), std::string::npos);
}

TEST_F(HttpTest, Metrics) {
  auto c = Client();
  ASSERT_TRUE(c.Post("/v1/completions",
                     json{{"model", "gemma4:tiny"}, {"prompt", "x"}, {"max_tokens", 2}}.dump(),
                     "application/json"));
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(
      res->body.find("garnet_requests_total{api=\"http\",method=\"completions\",code=\"ok\"}"),
      std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("garnet_generated_tokens_total"), std::string::npos);
  EXPECT_NE(res->body.find("garnet_ttft_seconds_bucket{le=\"+Inf\"}"), std::string::npos);
  EXPECT_NE(res->body.find("garnet_model_memory_bytes{model=\"gemma4:tiny\",device=\"host\"}"),
            std::string::npos);
}

TEST_F(HttpTest, HostileRequestsAreRefused) {
  auto c = Client();
  // DNS rebinding: a page served from evil.com resolving to 127.0.0.1 sends Host: evil.com.
  auto res = c.Get("/v1/models", {{"Host", "evil.com"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 403);
  EXPECT_TRUE(res->get_header_value("Access-Control-Allow-Origin").empty());
  // Body too large.
  res = c.Post("/v1/completions", std::string(8 << 20, 'x'), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 413);
  // Malformed JSON and wrong types.
  res = c.Post("/v1/chat/completions", "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/chat/completions", json{{"model", "gemma4:tiny"}, {"messages", "hi"}}.dump(),
               "application/json");
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/chat/completions", json{{"model", 5}, {"messages", json::array()}}.dump(),
               "application/json");
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/completions",
               json{{"model", "gemma4:tiny"}, {"prompt", "x"}, {"max_tokens", -5}}.dump(),
               "application/json");
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/completions", json{{"model", "../../etc/passwd"}, {"prompt", "x"}}.dump(),
               "application/json");
  EXPECT_EQ(res->status, 400);
  res = c.Post("/v1/completions", json{{"model", "gemma4:e4b"}, {"prompt", "x"}}.dump(),
               "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(res->body.find(world_->dir()), std::string::npos);  // no absolute paths
  // Still serving.
  EXPECT_EQ(c.Get("/v1/models")->status, 200);
}

TEST_F(HttpTest, TokenRequiredWhenConfigured) {
  World::Daemon d = world_->StartDaemon({"--http-listen", "127.0.0.1:0", "--token", "t0k"});
  ASSERT_FALSE(d.http_url.empty()) << d.proc->Err();
  httplib::Client c(d.http_url);
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  res = c.Get("/v1/models", {{"Authorization", "Bearer t0k"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  d.proc->Signal(SIGTERM);
  EXPECT_EQ(d.proc->Wait(milliseconds(5000)), 0);

  World::Daemon open = world_->StartDaemon({"--http-listen", "0.0.0.0:0"});
  EXPECT_TRUE(open.target.empty());
  EXPECT_EQ(open.proc->Wait(milliseconds(5000)), 1);
}

}  // namespace
}  // namespace garnet::testing
