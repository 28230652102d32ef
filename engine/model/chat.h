// Gemma 4 chat format and stop conditions (../shared/docs/gemma4.md §3.4).
//
//   <bos><|turn>system\n{system}<turn|>\n<|turn>user\n{user}<turn|>\n<|turn>model\n
//
// Thinking mode puts <|think|> at the start of the system turn (a system turn holding only
// <|think|> is created when there is no system message). Model replies end with <turn|> (id 106),
// which is a stop token together with <eos> (id 1).
//
// Message text is user input: FormatChatTokens encodes it with special-token parsing off, so a
// message that contains "<|turn>" cannot forge a turn boundary. FormatChat (a string) is for
// display and for callers that trust their text.
//
// Thread-safety: free functions are pure; a StopMatcher belongs to one stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"

namespace garnet::tok {
class Tokenizer;
}

namespace garnet::chat {

enum class Role { kSystem, kUser, kModel };

// "system", "user", "model" (also "assistant" for model). InvalidArgument otherwise.
Result<Role> ParseRole(std::string_view name);
std::string_view RoleName(Role role);

struct Message {
  Role role = Role::kUser;
  std::string content;
};

struct ChatOptions {
  bool enable_thinking = false;
  bool add_generation_prompt = true;  // end with "<|turn>model\n"
};

// The prompt text without <bos> (the tokenizer adds it as a token).
std::string FormatChat(const std::vector<Message>& messages, const ChatOptions& options);

// Token ids of the prompt: <bos> (when the tokenizer adds one), template pieces with specials
// parsed, message contents with specials NOT parsed.
std::vector<int32_t> FormatChatTokens(const tok::Tokenizer& tokenizer,
                                      const std::vector<Message>& messages,
                                      const ChatOptions& options);

// Stop token ids for generation: eos and end-of-turn (<turn|>) when the vocabulary has them.
std::vector<int32_t> StopTokenIds(const tok::Tokenizer& tokenizer);

// Finds user stop strings in a stream of text pieces, across piece boundaries. Text that might
// be the start of a stop string is held back until it is decided.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  struct Output {
    std::string text;      // safe to emit now (never contains a stop string)
    bool stopped = false;  // a stop string was found; text ends right before it
  };
  // Feeds the next piece. After a stop, further pushes return nothing.
  Output Push(std::string_view piece);
  // End of stream: returns the held text (no stop matched).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace garnet::chat
