#include "engine/model/chat.h"

#include <algorithm>

#include "engine/tokenizer/tokenizer.h"

namespace garnet::chat {
namespace {

constexpr std::string_view kTurnStart = "<|turn>";
constexpr std::string_view kTurnEnd = "<turn|>";
constexpr std::string_view kThink = "<|think|>";

// Calls emit(text, is_template) for each piece of the formatted prompt, in order.
template <typename Emit>
void Walk(const std::vector<Message>& messages, const ChatOptions& options, Emit emit) {
  size_t first = 0;
  bool system_done = false;
  if (!messages.empty() && messages[0].role == Role::kSystem) {
    emit(
        std::string(kTurnStart) + "system\n" + (options.enable_thinking ? std::string(kThink) : ""),
        true);
    emit(messages[0].content, false);
    emit(std::string(kTurnEnd) + "\n", true);
    first = 1;
    system_done = true;
  }
  if (!system_done && options.enable_thinking) {
    emit(std::string(kTurnStart) + "system\n" + std::string(kThink) + std::string(kTurnEnd) + "\n",
         true);
  }
  for (size_t i = first; i < messages.size(); ++i) {
    emit(std::string(kTurnStart) + std::string(RoleName(messages[i].role)) + "\n", true);
    emit(messages[i].content, false);
    emit(std::string(kTurnEnd) + "\n", true);
  }
  if (options.add_generation_prompt) emit(std::string(kTurnStart) + "model\n", true);
}

}  // namespace

Result<Role> ParseRole(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "user") return Role::kUser;
  if (name == "model" || name == "assistant") return Role::kModel;
  return Status::InvalidArgument(
      "chat role", "unknown role '" + std::string(name) + "' (want system, user or model)");
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kModel:
      return "model";
  }
  return "user";
}

std::string FormatChat(const std::vector<Message>& messages, const ChatOptions& options) {
  std::string out;
  Walk(messages, options, [&](const std::string& piece, bool) { out += piece; });
  return out;
}

std::vector<int32_t> FormatChatTokens(const tok::Tokenizer& tokenizer,
                                      const std::vector<Message>& messages,
                                      const ChatOptions& options) {
  std::vector<int32_t> ids;
  if (tokenizer.add_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  Walk(messages, options, [&](const std::string& piece, bool is_template) {
    std::vector<int32_t> part = tokenizer.Encode(piece, /*add_bos=*/false, is_template);
    ids.insert(ids.end(), part.begin(), part.end());
  });
  return ids;
}

std::vector<int32_t> StopTokenIds(const tok::Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  if (tokenizer.eos_id() >= 0) ids.push_back(tokenizer.eos_id());
  if (tokenizer.eot_id() >= 0 && tokenizer.eot_id() != tokenizer.eos_id()) {
    ids.push_back(tokenizer.eot_id());
  }
  return ids;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) {
      max_len_ = std::max(max_len_, s.size());
      stops_.push_back(std::move(s));
    }
  }
}

StopMatcher::Output StopMatcher::Push(std::string_view piece) {
  Output out;
  if (stopped_) {
    out.stopped = true;
    return out;
  }
  held_.append(piece);
  // Earliest complete stop string.
  size_t best = std::string::npos;
  for (const auto& s : stops_) best = std::min(best, held_.find(s));
  if (best != std::string::npos) {
    out.text = held_.substr(0, best);
    out.stopped = true;
    stopped_ = true;
    held_.clear();
    return out;
  }
  // Hold the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& s : stops_) {
    size_t lim = std::min(s.size() - 1, held_.size());
    for (size_t k = lim; k > keep; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  out.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out = stopped_ ? std::string() : held_;
  held_.clear();
  return out;
}

}  // namespace garnet::chat
