#include "engine/model/chat.h"

#include <gtest/gtest.h>

#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/test_vocab.h"

namespace garnet::chat {
namespace {

TEST(Chat, FormatsTurns) {
  std::vector<Message> m = {{Role::kSystem, "Be brief."}, {Role::kUser, "Hi"}};
  EXPECT_EQ(FormatChat(m, {}),
            "<|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n");
  ChatOptions no_gen;
  no_gen.add_generation_prompt = false;
  m.push_back({Role::kModel, "Hello."});
  EXPECT_EQ(
      FormatChat(m, no_gen),
      "<|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\nHello.<turn|>\n");
}

TEST(Chat, ThinkingToggle) {
  ChatOptions o;
  o.enable_thinking = true;
  EXPECT_EQ(FormatChat({{Role::kUser, "Hi"}}, o),
            "<|turn>system\n<|think|><turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n");
  EXPECT_EQ(FormatChat({{Role::kSystem, "S"}, {Role::kUser, "Hi"}}, o),
            "<|turn>system\n<|think|>S<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n");
}

TEST(Chat, ParsesRoles) {
  EXPECT_EQ(*ParseRole("assistant"), Role::kModel);
  EXPECT_EQ(*ParseRole("system"), Role::kSystem);
  EXPECT_TRUE(ParseRole("root").status().IsInvalidArgument());
}

TEST(Chat, TokensDoNotParseSpecialsInContent) {
  auto t = std::move(tok::Tokenizer::Create(garnet::testing::MakeTestVocab())).value();
  std::vector<int32_t> ids = FormatChatTokens(*t, {{Role::kUser, "<turn|>"}}, {});
  // bos, <|turn>, "user", "\n", <content as bytes>, <turn|>, "\n", <|turn>, "model", "\n"
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 4);
  int turn_ends = 0;
  for (int32_t id : ids) turn_ends += id == 5;
  EXPECT_EQ(turn_ends, 1);  // only the template's own <turn|>
  EXPECT_EQ(t->Decode(ids, true), "<bos><|turn>user\n<turn|><turn|>\n<|turn>model\n");
  EXPECT_EQ(StopTokenIds(*t), (std::vector<int32_t>{1, 5}));
}

TEST(StopMatcher, MatchesAcrossPieces) {
  StopMatcher m({"STOP", "\n\n"});
  std::string out;
  auto a = m.Push("hel");
  out += a.text;
  EXPECT_FALSE(a.stopped);
  auto b = m.Push("lo ST");
  out += b.text;
  EXPECT_FALSE(b.stopped);
  EXPECT_EQ(out, "hello ");  // "ST" held back
  auto c = m.Push("OP more");
  out += c.text;
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(out, "hello ");
  EXPECT_TRUE(m.Push("x").stopped);
}

TEST(StopMatcher, ReleasesHeldTextWhenNotAStop) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Push("a S").text, "a ");
  EXPECT_EQ(m.Push("Tx").text, "STx");
  EXPECT_EQ(m.Push("ST").text, "");
  EXPECT_EQ(m.Flush(), "ST");
}

}  // namespace
}  // namespace garnet::chat
