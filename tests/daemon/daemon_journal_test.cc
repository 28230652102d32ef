// PullJournal: what stays on disk for the next start, and damaged or hostile files ignored.
#include <gtest/gtest.h>

#include <fstream>

#include "daemon/pull_journal.h"
#include "tests/daemon/harness.h"

namespace garnet::daemon {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(PullJournal, KeepsOnlyPullsInterruptedByAStop) {
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/garnetd-pulls.json";
  {
    PullJournal j(path);
    EXPECT_TRUE(j.interrupted().empty());
    ASSERT_TRUE(j.Begin("a:1").ok());
    ASSERT_TRUE(j.Begin("b:1").ok());
    ASSERT_TRUE(j.Begin("b:1").ok());  // a second client pulling the same model
    ASSERT_TRUE(j.Begin("c:1").ok());
    ASSERT_TRUE(j.End("a:1", /*keep=*/false).ok());  // finished (or failed, or client cancel)
    ASSERT_TRUE(j.End("b:1", false).ok());           // the other pull of b still runs
    ASSERT_TRUE(j.End("c:1", /*keep=*/true).ok());   // cancelled by the stop
    EXPECT_EQ(j.Names(), (std::vector<std::string>{"b:1", "c:1"}));
  }  // b:1 never ended: a crash
  PullJournal again(path);
  EXPECT_EQ(again.interrupted(), (std::vector<std::string>{"b:1", "c:1"}));
  ASSERT_TRUE(again.Drop("b:1").ok());
  EXPECT_EQ(PullJournal(path).interrupted(), (std::vector<std::string>{"c:1"}));
}

TEST(PullJournal, IgnoresDamagedFiles) {
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/garnetd-pulls.json";
  for (const std::string& bad :
       {std::string("not json"), std::string("{\"a\": 1}"), std::string("[1, 2]"),
        std::string("[\"\"]"), "[\"" + std::string(2000, 'x') + "\"]",
        "[" + std::string(70000, ' ') + "]"}) {
    Write(path, bad);
    PullJournal j(path);
    EXPECT_TRUE(j.interrupted().empty()) << bad.substr(0, 40);
    // Still usable: the next change rewrites a valid file.
    ASSERT_TRUE(j.Begin("x:1").ok());
    ASSERT_TRUE(j.End("x:1", true).ok());
    EXPECT_EQ(PullJournal(path).interrupted(), (std::vector<std::string>{"x:1"}));
  }
  EXPECT_TRUE(PullJournal(tmp.path() + "/absent.json").interrupted().empty());
}

}  // namespace
}  // namespace garnet::daemon
