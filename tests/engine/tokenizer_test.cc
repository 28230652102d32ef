#include "engine/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include "tests/engine/test_vocab.h"

namespace garnet::tok {
namespace {

using garnet::testing::IdOf;
using garnet::testing::MakeTestVocab;

std::unique_ptr<Tokenizer> Make() {
  auto t = Tokenizer::Create(MakeTestVocab());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(Tokenizer, MergesByRankIntoMultiCharTokens) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("hello world", /*add_bos=*/false);
  std::vector<int32_t> want = {IdOf(*t, "hello"), IdOf(*t, "\xE2\x96\x81wor"), IdOf(*t, "l"),
                               IdOf(*t, "d")};
  EXPECT_EQ(ids, want);
  EXPECT_EQ(t->Decode(ids), "hello world");
}

TEST(Tokenizer, AddsBos) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("he", /*add_bos=*/true);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], IdOf(*t, "he"));
}

TEST(Tokenizer, ByteFallbackForUnknownCharacters) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("h\xC3\xA9", false);  // "hé"
  std::vector<int32_t> want = {IdOf(*t, "h"), 8 + 0xC3, 8 + 0xA9};
  EXPECT_EQ(ids, want);
  EXPECT_EQ(t->Decode(ids), "h\xC3\xA9");
  std::vector<int32_t> emoji = t->Encode("\xF0\x9F\x98\x80", false);
  std::vector<int32_t> want_emoji = {8 + 0xF0, 8 + 0x9F, 8 + 0x98, 8 + 0x80};
  EXPECT_EQ(emoji, want_emoji);
}

TEST(Tokenizer, SpecialsMatchedWhole) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("<|turn>user\nhello<turn|>", false);
  std::vector<int32_t> want = {4, IdOf(*t, "user"), IdOf(*t, "\n"), IdOf(*t, "hello"), 5};
  EXPECT_EQ(ids, want);
  EXPECT_EQ(t->Decode(ids), "user\nhello");  // control tokens render nothing by default
  EXPECT_EQ(t->Decode(ids, /*render_special=*/true), "<|turn>user\nhello<turn|>");
  // User-defined tokens render as text.
  EXPECT_EQ(t->Encode("<|\"|>", false), std::vector<int32_t>{7});
  EXPECT_EQ(t->Decode({7}), "<|\"|>");
}

TEST(Tokenizer, SpecialsNotParsedWhenOff) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("<|turn>", false, /*parse_special=*/false);
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(ids[0], IdOf(*t, "<"));
  EXPECT_EQ(t->Decode(ids), "<|turn>");
}

TEST(Tokenizer, PartialSpecialIsPlainText) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("<|tur", false);
  EXPECT_EQ(ids[0], IdOf(*t, "<"));
  EXPECT_EQ(t->Decode(ids), "<|tur");
}

TEST(Tokenizer, NewlineRunsSplitAndMergeLeftmost) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("he\n\n\nhe", false);
  std::vector<int32_t> want = {IdOf(*t, "he"), IdOf(*t, "\n\n"), IdOf(*t, "\n"), IdOf(*t, "he")};
  EXPECT_EQ(ids, want);
}

TEST(Tokenizer, MergeChainsThroughNonTokens) {
  auto t = Make();
  // "model" merges via "mod" and "mode", which are not tokens themselves.
  EXPECT_EQ(t->Encode("model", false), std::vector<int32_t>{IdOf(*t, "model")});
}

TEST(Tokenizer, InvalidUtf8BecomesBytes) {
  auto t = Make();
  std::vector<int32_t> ids = t->Encode("\xC3h", false);
  std::vector<int32_t> want = {8 + 0xC3, IdOf(*t, "h")};
  EXPECT_EQ(ids, want);
}

TEST(Tokenizer, RejectsBadVocab) {
  Vocab v = MakeTestVocab();
  v.token_types.pop_back();
  EXPECT_TRUE(Tokenizer::Create(v).status().IsInvalidArgument());
  v = MakeTestVocab();
  v.bos_id = 100000;
  EXPECT_TRUE(Tokenizer::Create(v).status().IsInvalidArgument());
  v = MakeTestVocab();
  v.merges.push_back("nospace");
  EXPECT_TRUE(Tokenizer::Create(v).status().IsInvalidArgument());
  EXPECT_TRUE(Tokenizer::Create(Vocab{}).status().IsInvalidArgument());
}

TEST(Tokenizer, EndOfTurnFoundByText) {
  auto t = Make();
  EXPECT_EQ(t->eot_id(), 5);
}

// Any byte string round-trips: merges, byte fallback (also for invalid UTF-8), newline runs and
// specials. A streaming decode of the same ids yields the same text when the input is valid.
TEST(Tokenizer, RandomTextRoundTrips) {
  auto t = Make();
  const std::vector<std::string> pieces = {"h",
                                           "e",
                                           "l",
                                           "o",
                                           " ",
                                           "w",
                                           "\n",
                                           "\n\n",
                                           "or",
                                           "\xC3\xA9",
                                           "\xF0\x9F\x98\x80",
                                           "<",
                                           "|",
                                           "us",
                                           "<|turn>",
                                           "<turn|>",
                                           "model"};
  uint64_t x = 99;
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const int n = static_cast<int>((x >> 40) % 20);
    for (int i = 0; i < n; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      s += pieces[(x >> 33) % pieces.size()];
    }
    std::vector<int32_t> ids = t->Encode(s, false);
    EXPECT_EQ(t->Decode(ids, /*render_special=*/true), s);
    std::vector<int32_t> plain = t->Encode(s, false, /*parse_special=*/false);
    EXPECT_EQ(t->Decode(plain), s);
    StreamDecoder d(t.get(), true);
    std::string streamed;
    for (int32_t id : ids) streamed += d.Push(id);
    streamed += d.Flush();
    EXPECT_EQ(streamed, s);
  }
  // Arbitrary bytes (invalid UTF-8 included) still round-trip through byte tokens.
  std::string bytes;
  for (int b = 255; b >= 0; --b) bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(t->Decode(t->Encode(bytes, false, false)), bytes);
}

TEST(StreamDecoder, NeverEmitsPartialUtf8) {
  auto t = Make();
  StreamDecoder d(t.get());
  EXPECT_EQ(d.Push(IdOf(*t, "h")), "h");
  EXPECT_EQ(d.Push(8 + 0xF0), "");
  EXPECT_EQ(d.Push(8 + 0x9F), "");
  EXPECT_EQ(d.Push(8 + 0x98), "");
  EXPECT_EQ(d.Push(8 + 0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.Push(8 + 0xC3), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");         // dangling lead byte
  EXPECT_EQ(d.Push(8 + 0x80), "\xEF\xBF\xBD");  // stray continuation byte
  EXPECT_EQ(d.PushBytes("\xC3"
                        "a"),
            "\xEF\xBF\xBD"
            "a");  // broken sequence
}

}  // namespace
}  // namespace garnet::tok
