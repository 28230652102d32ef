// A synthetic Gemma 4 tokenizer vocabulary: real special tokens at their real ids, byte-fallback
// tokens, single characters and BPE merges learned from a small built-in English text, so BPE
// tokenisation of English yields multi-character tokens (e.g. "▁the").
//
// Format facts: ../shared/docs/gemma4.md §3.4 (tokenizer.ggml.model "gemma4": BPE with merges,
// spaces escaped as U+2581 "▁", byte fallback "<0xXX>", token types NORMAL 1, UNKNOWN 2,
// CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).
//
// Layout (every vocab size >= 512): ids 0..3 <pad> <eos> <bos> <unk>; 46..52 the tool tokens and
// <|"|>; 98 <|think|>; 100/101 <|channel> <channel|>; 105/106 <|turn> <turn|>; multimodal ids
// (255999, 256000, 258880..258884) when the vocab reaches them. The remaining ids, in ascending
// order, hold the 256 byte tokens, then the characters (printable ASCII with "▁" for space, and
// "\n"), then one token per merge, then "<unused{k}>" (UNUSED) fillers.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/base/status.h"

namespace garnet::mkmodel {

enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocab {
  std::vector<std::string> tokens;  // UTF-8
  std::vector<float> scores;        // 0 for special/byte tokens, -rank for the others
  std::vector<int32_t> types;       // TokenType
  std::vector<std::string> merges;  // "left right", in priority order
};

// Deterministic. InvalidArgument when n_vocab < 512.
Result<Vocab> BuildVocab(uint32_t n_vocab);

// The Jinja chat template written to tokenizer.chat_template (Gemma 4 turn format).
const std::string& ChatTemplate();

}  // namespace garnet::mkmodel
