// The synthetic tokenizer: special ids, byte tokens, merges consistent with the tokens.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "tools/mkmodel/vocab.h"

namespace garnet::mkmodel {
namespace {

const std::string kSp = "\xE2\x96\x81";  // "▁"

TEST(MkmodelVocabTest, SpecialTokensAtRealIds) {
  auto v = BuildVocab(1024);
  ASSERT_TRUE(v.ok());
  const std::map<int, std::pair<std::string, int>> want = {
      {0, {"<pad>", kControl}},
      {1, {"<eos>", kControl}},
      {2, {"<bos>", kControl}},
      {3, {"<unk>", kUnknown}},
      {46, {"<|tool>", kControl}},
      {47, {"<tool|>", kControl}},
      {48, {"<|tool_call>", kUserDefined}},
      {49, {"<tool_call|>", kUserDefined}},
      {50, {"<|tool_response>", kUserDefined}},
      {51, {"<tool_response|>", kUserDefined}},
      {52, {"<|\"|>", kUserDefined}},
      {98, {"<|think|>", kControl}},
      {100, {"<|channel>", kUserDefined}},
      {101, {"<channel|>", kUserDefined}},
      {105, {"<|turn>", kControl}},
      {106, {"<turn|>", kControl}},
  };
  for (const auto& [id, tt] : want) {
    EXPECT_EQ(v->tokens[id], tt.first) << id;
    EXPECT_EQ(v->types[id], tt.second) << id;
  }
}

TEST(MkmodelVocabTest, TokensUniqueBytesPresentMergesConsistent) {
  for (uint32_t n : {512u, 1024u, 262144u}) {
    auto v = BuildVocab(n);
    ASSERT_TRUE(v.ok());
    ASSERT_EQ(v->tokens.size(), n);
    ASSERT_EQ(v->scores.size(), n);
    ASSERT_EQ(v->types.size(), n);
    std::set<std::string> seen;
    for (const auto& t : v->tokens) {
      EXPECT_FALSE(t.empty());
      EXPECT_TRUE(seen.insert(t).second) << "duplicate token " << t;
    }
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      EXPECT_TRUE(seen.count(buf)) << buf;
    }
    EXPECT_TRUE(seen.count(kSp));
    EXPECT_TRUE(seen.count("\n"));
    EXPECT_TRUE(seen.count("a"));
    ASSERT_FALSE(v->merges.empty());
    for (const auto& m : v->merges) {
      const size_t sp = m.find(' ', 1);  // the separator (the left part may not be empty)
      ASSERT_NE(sp, std::string::npos) << m;
      const std::string a = m.substr(0, sp), b = m.substr(sp + 1);
      EXPECT_TRUE(seen.count(a)) << m;
      EXPECT_TRUE(seen.count(b)) << m;
      EXPECT_TRUE(seen.count(a + b)) << m;
    }
    if (n >= 262144) {
      EXPECT_EQ(v->tokens[258880], "<|image|>");
      EXPECT_EQ(v->types[258880], kControl);
    }
  }
}

TEST(MkmodelVocabTest, LearnsWholeWordMerges) {
  auto v = BuildVocab(1024);
  ASSERT_TRUE(v.ok());
  std::set<std::string> tokens(v->tokens.begin(), v->tokens.end());
  for (const char* w : {"the", "and", "to", "you"}) {
    EXPECT_TRUE(tokens.count(kSp + w)) << w;
  }
  // A 1024 vocabulary is full: no UNUSED fillers needed.
  int unused = 0;
  for (int t : v->types) unused += t == kUnused;
  EXPECT_EQ(unused, 0);
}

TEST(MkmodelVocabTest, DeterministicAndRejectsSmall) {
  auto a = BuildVocab(700), b = BuildVocab(700);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->merges, b->merges);
  EXPECT_TRUE(BuildVocab(511).status().IsInvalidArgument());
}

}  // namespace
}  // namespace garnet::mkmodel
