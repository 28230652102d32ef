// A small hand-built Gemma-4-style vocabulary for tokenizer and chat tests.
#pragma once

#include <cstdio>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace garnet::testing {

// ids: 0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <|turn>, 5 <turn|>, 6 <|think|>, 7 <|"|> (user
// defined), 8..263 byte tokens <0x00>..<0xFF>, then the normal tokens below from 264.
inline tok::Vocab MakeTestVocab() {
  using TT = tok::TokenType;
  tok::Vocab v;
  auto add = [&](std::string t, TT ty) {
    v.tokens.push_back(std::move(t));
    v.token_types.push_back(static_cast<int32_t>(ty));
  };
  add("<pad>", TT::kControl);
  add("<eos>", TT::kControl);
  add("<bos>", TT::kControl);
  add("<unk>", TT::kUnknown);
  add("<|turn>", TT::kControl);
  add("<turn|>", TT::kControl);
  add("<|think|>", TT::kControl);
  add("<|\"|>", TT::kUserDefined);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, TT::kByte);
  }
  for (const char* t : {"h",
                        "e",
                        "l",
                        "o",
                        "\xE2\x96\x81",
                        "w",
                        "r",
                        "d",
                        "\n",
                        "u",
                        "s",
                        "m",
                        "he",
                        "ll",
                        "llo",
                        "hello",
                        "\xE2\x96\x81w",
                        "or",
                        "\xE2\x96\x81wor",
                        "\n\n",
                        "us",
                        "user",
                        "mo",
                        "model",
                        "<",
                        "|"}) {
    add(t, TT::kNormal);
  }
  v.merges = {"h e",
              "l l",
              "ll o",
              "he llo",
              "\xE2\x96\x81 w",
              "o r",
              "\xE2\x96\x81w or",
              "\n \n",
              "u s",
              "us e",
              "use r",
              "m o",
              "mo d",
              "mod e",
              "mode l"};
  // "use", "mod", "mode" are not tokens: merges through them still work because merging acts
  // on strings; the final symbols must be tokens or fall back to bytes.
  v.bos_id = 2;
  v.eos_id = 1;
  v.unk_id = 3;
  v.pad_id = 0;
  return v;
}

inline int32_t IdOf(const tok::Tokenizer& t, const std::string& s) {
  return t.Find(s);
}

}  // namespace garnet::testing
