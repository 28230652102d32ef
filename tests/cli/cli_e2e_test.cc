// The real `garnet` binary against a real garnetd: every verb a user types, exit codes, --json,
// the not-running message, and run's auto-pull.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include "tests/daemon/harness.h"

namespace garnet::testing {
namespace {

using std::chrono::milliseconds;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world_ = new World();
    daemon_ = new World::Daemon(world_->StartDaemon());
    ASSERT_FALSE(daemon_->target.empty()) << daemon_->proc->Err();
  }
  static void TearDownTestSuite() {
    daemon_->proc->Signal(SIGTERM);
    EXPECT_EQ(daemon_->proc->Wait(milliseconds(10000)), 0);
    delete daemon_;
    delete world_;
  }
  static CliResult Cli(const std::vector<std::string>& args) {
    return world_->Cli(daemon_->target, args);
  }
  static World* world_;
  static World::Daemon* daemon_;
};
World* CliTest::world_ = nullptr;
World::Daemon* CliTest::daemon_ = nullptr;

TEST_F(CliTest, FullFlow) {
  CliResult r = Cli({"version"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("garnetd 0.1.0"), std::string::npos) << r.out;

  r = Cli({"pull", "gemma4:tiny"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("pulled gemma4:tiny"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos);  // not a TTY: plain lines

  r = Cli({"ls"});
  ASSERT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("gemma4:tiny"), std::string::npos);
  EXPECT_NE(r.out.find("7d6b959ffa0a"), std::string::npos);

  r = Cli({"--json", "list"});
  ASSERT_EQ(r.rc, 0);
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["models"][0]["name"], "gemma4:tiny");

  r = Cli({"show", "gemma4:tiny"});
  ASSERT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("architecture  gemma4"), std::string::npos) << r.out;

  r = Cli({"fit", "gemma4:tiny", "--vram", "16GiB", "--ctx", "256"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("gemma4:tiny at context 256: fits"), std::string::npos) << r.out;
  // A list plans for several GPUs; "none" (or "0") for a machine without one.
  r = Cli({"fit", "gemma4:tiny", "--vram", "16GiB,8GiB", "--ctx", "256"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("layers: 6 of 6 on GPU"), std::string::npos) << r.out;
  r = Cli({"fit", "gemma4:tiny", "--vram", "none", "--ctx", "256"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("layers: 0 of 6 on GPU"), std::string::npos) << r.out;

  r = Cli({"catalog"});
  ASSERT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("gemma4:e4b"), std::string::npos);

  r = Cli({"run", "gemma4:tiny", "Why is the sky blue?", "--max-tokens", "8", "--seed", "3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("backend cpu"), std::string::npos) << r.err;

  r = Cli({"bench", "gemma4:tiny", "--prompt-tokens", "64,128,2048", "--tokens", "8"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("DECODE TOK/S"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n64 "), std::string::npos) << r.out;  // exact prompt lengths
  EXPECT_NE(r.out.find("\n128 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("RESERVED KV"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("skipping 2048"), std::string::npos) << r.err;  // beyond tiny's 512

  r = Cli({"--json", "ps"});
  ASSERT_EQ(r.rc, 0);
  j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(j["models"][0]["name"], "gemma4:tiny") << r.out;

  r = Cli({"ps"});
  EXPECT_NE(r.out.find("CPU 100%"), std::string::npos) << r.out;

  r = Cli({"stop", "gemma4:tiny"});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = Cli({"load", "gemma4:tiny", "--ctx", "128"});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = Cli({"unload", "gemma4:tiny"});
  EXPECT_EQ(r.rc, 0) << r.err;

  r = Cli({"verify"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("all ok"), std::string::npos);

  r = Cli({"rm", "gemma4:tiny"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = Cli({"prune"});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = Cli({"run", "gemma4:tiny", "hi", "--no-pull"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("garnet pull gemma4:tiny"), std::string::npos) << r.err;

  // run pulls a missing model first.
  r = Cli({"run", "gemma4:tiny", "hi", "--max-tokens", "4"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("pulling it"), std::string::npos) << r.err;

  // Prompt from stdin (not a TTY here: /dev/null gives an empty prompt -> usage).
  r = Cli({"run", "gemma4:tiny"});
  EXPECT_EQ(r.rc, 2) << r.err;
}

TEST_F(CliTest, ErrorsAndExitCodes) {
  CliResult r = Cli({"frobnicate"});
  EXPECT_EQ(r.rc, 2);
  r = Cli({"fit"});
  EXPECT_EQ(r.rc, 2);
  r = Cli({"fit", "gemma4:tiny", "--vram", "lots"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--vram"), std::string::npos);
  r = Cli({"fit", "gemma4:tiny", "--vram", "16GiB,,8GiB"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("empty item"), std::string::npos) << r.err;
  r = Cli({"run", "gemma4:tiny", "hi", "--max-tokens", "-5"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("max_tokens"), std::string::npos) << r.err;
  r = Cli({"show", "../../etc/passwd"});
  EXPECT_EQ(r.rc, 1);
  r = Cli({"pull", "gemma4:nope"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("not in the catalog"), std::string::npos) << r.err;

  r = world_->Cli("unix:" + world_->dir() + "/nobody-home.sock", {"ps"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("garnetd is not running at unix:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("garnet serve"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace garnet::testing
