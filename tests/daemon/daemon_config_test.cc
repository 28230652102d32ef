// garnetd configuration: precedence (defaults < file < env < flags), validation, loopback rules.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>

#include "daemon/config.h"
#include "tests/daemon/harness.h"

namespace garnet::daemon {
namespace {

struct FakeEnv {
  std::map<std::string, std::string> vars;
  std::function<const char*(const char*)> fn() {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

TEST(DaemonConfig, DefaultsAndSocketPath) {
  FakeEnv env;
  env.vars["XDG_RUNTIME_DIR"] = "/run/user/1000";
  auto c = LoadConfig({}, env.fn());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->socket, "/run/user/1000/garnet/garnetd.sock");
  EXPECT_EQ(c->default_ctx, 4096u);
  EXPECT_EQ(c->keep_alive_seconds, 300);
  EXPECT_EQ(c->backend, "cpu");
  EXPECT_TRUE(ValidateConfig(*c).ok());

  FakeEnv none;
  auto d = LoadConfig({}, none.fn());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->socket.rfind("/tmp/garnet-", 0), 0u);
}

TEST(DaemonConfig, FileThenEnvThenFlags) {
  testing::TempDir tmp;
  const std::string file = tmp.path() + "/garnetd.json";
  std::ofstream(file) << R"({"data_dir": "/from/file", "parallel": 2, "default_ctx": 1024,
                             "memory_limit": "2GiB", "keep_alive_seconds": 60})";
  FakeEnv env;
  env.vars["GARNET_PARALLEL"] = "3";
  env.vars["GARNET_HOME"] = "/from/env";
  auto c = LoadConfig({"--config", file, "--parallel=5", "--socket", "/s/x.sock"}, env.fn());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->data_dir, "/from/env");
  EXPECT_EQ(c->parallel, 5u);
  EXPECT_EQ(c->default_ctx, 1024u);
  EXPECT_EQ(c->keep_alive_seconds, 60);
  EXPECT_EQ(c->memory_limit, 2ull << 30);
  EXPECT_EQ(c->socket, "/s/x.sock");
  EXPECT_EQ(c->config_file, file);
}

TEST(DaemonConfig, Errors) {
  FakeEnv env;
  EXPECT_TRUE(LoadConfig({"--bogus", "1"}, env.fn()).status().IsInvalidArgument());
  EXPECT_TRUE(LoadConfig({"--parallel", "0"}, env.fn()).status().IsInvalidArgument());
  EXPECT_TRUE(LoadConfig({"--parallel", "x"}, env.fn()).status().IsInvalidArgument());
  EXPECT_TRUE(LoadConfig({"--ctx"}, env.fn()).status().IsInvalidArgument());
  EXPECT_TRUE(LoadConfig({"--base-url", "ftp://x"}, env.fn()).status().IsInvalidArgument());
  EXPECT_TRUE(LoadConfig({"--backend", "cuda"}, env.fn()).status().IsInvalidArgument());
  EXPECT_EQ(LoadConfig({"--backend", "auto"}, env.fn())->backend, "auto");
  FakeEnv vk;
  vk.vars["GARNET_BACKEND"] = "vulkan";
  EXPECT_EQ(LoadConfig({}, vk.fn())->backend, "vulkan");
  EXPECT_TRUE(
      LoadConfig({"--config", "/nonexistent/garnetd.json"}, env.fn()).status().IsNotFound());
  testing::TempDir tmp;
  const std::string file = tmp.path() + "/bad.json";
  std::ofstream(file) << R"({"typo_key": 1})";
  auto c = LoadConfig({"--config", file}, env.fn());
  EXPECT_TRUE(c.status().IsInvalidArgument());
  EXPECT_NE(c.status().message().find("typo_key"), std::string::npos);
  std::ofstream(file) << "not json";
  EXPECT_TRUE(LoadConfig({"--config", file}, env.fn()).status().IsInvalidArgument());
}

TEST(DaemonConfig, NonLoopbackNeedsToken) {
  Config c;
  c.socket = "/tmp/x.sock";
  c.listen = "0.0.0.0:7420";
  EXPECT_TRUE(ValidateConfig(c).IsPermissionDenied());
  c.token = "t";
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.token.clear();
  c.listen = "127.0.0.1:7420";
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.listen = "nocolon";
  EXPECT_TRUE(ValidateConfig(c).IsInvalidArgument());
  c.listen.clear();
  c.socket = "off";
  EXPECT_TRUE(ValidateConfig(c).IsInvalidArgument());
  c.socket = "relative.sock";
  EXPECT_TRUE(ValidateConfig(c).IsInvalidArgument());
}

TEST(DaemonConfig, Loopback) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:1"));
  EXPECT_TRUE(IsLoopbackAddress("127.1.2.3:1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:80"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:80"));
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0:80"));
  EXPECT_FALSE(IsLoopbackAddress("[::]:80"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1:80"));
  EXPECT_FALSE(IsLoopbackAddress("127.evil.com:80"));
  EXPECT_FALSE(IsLoopbackAddress("127.0.0.1.evil.com:80"));
}

}  // namespace
}  // namespace garnet::daemon
