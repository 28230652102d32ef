// garnet's argument parsing and output helpers.
#include <gtest/gtest.h>

#include <cstdio>

#include "cli/args.h"
#include "cli/output.h"

namespace garnet::cli {
namespace {

TEST(CliArgs, FlagsAndPositionals) {
  FlagSet f;
  f.with_value = {"--ctx", "--stop"};
  f.boolean = {"--json"};
  std::string err;
  auto a = ParseArgs(
      {"run", "--ctx", "128", "hello", "--json", "--stop=x", "--stop", "y", "--", "--not-a-flag"},
      f, &err);
  ASSERT_TRUE(a.has_value()) << err;
  EXPECT_EQ(a->positional, (std::vector<std::string>{"run", "hello", "--not-a-flag"}));
  EXPECT_EQ(a->Get("--ctx"), "128");
  EXPECT_TRUE(a->Has("--json"));
  EXPECT_EQ(a->All("--stop"), (std::vector<std::string>{"x", "y"}));
  EXPECT_FALSE(ParseArgs({"--bogus"}, f, &err).has_value());
  EXPECT_NE(err.find("--bogus"), std::string::npos);
  EXPECT_FALSE(ParseArgs({"--ctx"}, f, &err).has_value());
  EXPECT_FALSE(ParseArgs({"--json=1"}, f, &err).has_value());
}

TEST(CliArgs, Numbers) {
  std::string err;
  EXPECT_EQ(ParseIntFlag("--n", "42", 0, 100, &err), 42);
  EXPECT_FALSE(ParseIntFlag("--n", "101", 0, 100, &err).has_value());
  EXPECT_FALSE(ParseIntFlag("--n", "4x", 0, 100, &err).has_value());
  EXPECT_FALSE(ParseIntFlag("--n", "", 0, 100, &err).has_value());
  EXPECT_EQ(ParseSize("16GiB"), 16ull << 30);
  EXPECT_EQ(ParseSize("512mib"), 512ull << 20);
  EXPECT_EQ(ParseSize("1.5GB"), 1500000000ull);
  EXPECT_EQ(ParseSize("1000"), 1000ull);
  EXPECT_FALSE(ParseSize("GiB").has_value());
  EXPECT_FALSE(ParseSize("12 parsecs").has_value());
  EXPECT_FALSE(ParseSize("1e300GB").has_value());
}

TEST(CliOutput, Formats) {
  EXPECT_EQ(Bytes(512), "512 B");
  EXPECT_EQ(Bytes(13303424), "12.7 MiB");
  EXPECT_EQ(Duration(3), "3s");
  EXPECT_EQ(Duration(125), "2m05s");
  EXPECT_EQ(Duration(3720), "1h02m");
  EXPECT_EQ(Count(3316518), "3.3M");
}

TEST(CliOutput, PlainProgressWhenNotATty) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  Progress p(f);
  p.Update("pulling", "x.gguf", 0, 100, 0);
  p.Update("pulling", "x.gguf", 50, 100, 10);  // throttled: same phase within 2 s
  p.Update("verifying", "x.gguf", 100, 100, 10);
  p.Done();
  std::rewind(f);
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const std::string out(buf, n);
  EXPECT_EQ(out.find('\r'), std::string::npos);  // no redraws in a file
  EXPECT_NE(out.find("pulling x.gguf   0%"), std::string::npos) << out;
  EXPECT_NE(out.find("verifying x.gguf 100%"), std::string::npos) << out;
  EXPECT_EQ(out.find(" 50%"), std::string::npos) << out;
}

}  // namespace
}  // namespace garnet::cli
