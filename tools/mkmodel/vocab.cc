#include "tools/mkmodel/vocab.h"

#include <cstdio>
#include <map>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace garnet::mkmodel {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"

struct Special {
  uint32_t id;
  std::string_view text;
  TokenType type;
};

// §3.4 ids. The seven tokens llama.cpp forces to USER_DEFINED so they render are marked so.
constexpr Special kSpecials[] = {
    {0, "<pad>", kControl},
    {1, "<eos>", kControl},
    {2, "<bos>", kControl},
    {3, "<unk>", kUnknown},
    {46, "<|tool>", kControl},
    {47, "<tool|>", kControl},
    {48, "<|tool_call>", kUserDefined},
    {49, "<tool_call|>", kUserDefined},
    {50, "<|tool_response>", kUserDefined},
    {51, "<tool_response|>", kUserDefined},
    {52, "<|\"|>", kUserDefined},
    {98, "<|think|>", kControl},
    {100, "<|channel>", kUserDefined},
    {101, "<channel|>", kUserDefined},
    {105, "<|turn>", kControl},
    {106, "<turn|>", kControl},
    {255999, "<|image>", kControl},
    {256000, "<|audio>", kControl},
    {258880, "<|image|>", kControl},
    {258881, "<|audio|>", kControl},
    {258882, "<image|>", kControl},
    {258883, "<audio|>", kControl},
    {258884, "<|video|>", kControl},
};

// Training text for the merges (written for this tool). Common English words appear often so the
// learned merges form whole-word tokens such as "▁the", "▁and", "ing".
constexpr std::string_view kCorpus =
    "The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into "
    "the forest.\n"
    "It is a truth that every model needs a tokenizer, and that the tokenizer should turn text "
    "into tokens and tokens back into text without losing anything.\n"
    "When you write a test, you want the input to be small and the result to be clear. A good "
    "test tells you what went wrong and where to look.\n"
    "There are many ways to learn a language. Some people read books, some people listen to "
    "music, and some people talk with their friends every day.\n"
    "The weather this morning was cold and the sky was grey, but in the afternoon the sun came "
    "out and the children went outside to play in the park.\n"
    "Please tell me the answer to this question: what is the capital of France? The capital of "
    "France is Paris, and the capital of Italy is Rome.\n"
    "In the beginning there was nothing but a blank page, and then the writer started writing "
    "one word after another until the story was finished.\n"
    "We have been working on this project for a long time, and we are happy with the results "
    "that we have seen so far. Thank you for your help!\n"
    "How are you today? I am fine, thank you. Would you like some tea or coffee? I would like "
    "a cup of tea with milk, please.\n"
    "Computers process information by following instructions. A program is a list of "
    "instructions that the computer can understand and execute.\n"
    "The number of the items in the list is 1234567890, which is more than the number of "
    "people living in the city.\n"
    "She said that she would come back later, but she never did. He waited for her until the "
    "evening and then he went home.\n"
    "Yesterday my neighbour fixed an old bicycle, painted the kitchen yellow, and quietly "
    "baked twelve jars of plum jam before midnight.\n"
    "Mountains, rivers, valleys and deserts shape the climate of each region; glaciers "
    "retreat while oceans slowly warm.\n"
    "Quantum physics explains why electrons behave strangely, yet engineers still build "
    "reliable transistors, lasers and magnetic sensors.\n"
    "Our journey began at dawn: we packed sandwiches, checked the map, crossed a wooden "
    "bridge and followed a narrow path through the jungle.\n"
    "Good software needs careful design, honest documentation, thorough reviews and "
    "automated checks that run whenever somebody changes the code.\n"
    "Which vegetables grow best in sandy soil? Carrots, onions, potatoes and zucchini "
    "usually thrive, although tomatoes prefer richer ground.\n"
    "Several orchestras performed symphonies by famous composers, and the audience "
    "applauded enthusiastically after every movement.\n"
    "Hospitals employ doctors, nurses, pharmacists and technicians who work together "
    "to diagnose illness and provide treatment.\n"
    "The library opens at nine o'clock on weekdays; visitors may borrow novels, "
    "magazines, newspapers and educational videos.\n";

// Splits UTF-8 text into code points (the corpus is ASCII plus "▁").
std::vector<std::string> Symbols(std::string_view word) {
  std::vector<std::string> out;
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    const auto c = static_cast<unsigned char>(word[i]);
    if (c >= 0xF0)
      len = 4;
    else if (c >= 0xE0)
      len = 3;
    else if (c >= 0xC0)
      len = 2;
    out.emplace_back(word.substr(i, len));
    i += len;
  }
  return out;
}

// Words of the corpus with spaces escaped: each word carries its leading "▁".
std::map<std::string, int> CorpusWords() {
  std::map<std::string, int> words;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) ++words[cur];
    cur.clear();
  };
  for (char c : kCorpus) {
    if (c == '\n') {
      flush();
    } else if (c == ' ') {
      flush();
      cur = std::string(kSpace);
    } else {
      cur += c;
    }
  }
  flush();
  return words;
}

// BPE training on the corpus: repeatedly merges the most frequent adjacent pair (ties go to the
// lexicographically smallest pair) until every corpus word is a single token. The whole merge
// sequence does not depend on the vocabulary size — BuildVocab takes a prefix of it — so it is
// learned once per process.
const std::vector<std::pair<std::string, std::string>>& AllMerges() {
  static const std::vector<std::pair<std::string, std::string>> kMerges = [] {
    std::vector<std::string> names;
    std::map<std::string, int32_t> ids;
    auto intern = [&](const std::string& sym) {
      auto [it, fresh] = ids.emplace(sym, static_cast<int32_t>(names.size()));
      if (fresh) names.push_back(sym);
      return it->second;
    };
    std::vector<std::pair<std::vector<int32_t>, int>> words;
    for (const auto& [w, n] : CorpusWords()) {
      std::vector<int32_t> syms;
      for (const auto& sym : Symbols(w)) syms.push_back(intern(sym));
      words.emplace_back(std::move(syms), n);
    }
    std::vector<std::pair<std::string, std::string>> merges;
    std::unordered_map<uint64_t, int> counts;
    auto key = [](int32_t a, int32_t b) {
      return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
    };
    for (;;) {
      counts.clear();
      for (const auto& [syms, n] : words) {
        for (size_t i = 0; i + 1 < syms.size(); ++i) counts[key(syms[i], syms[i + 1])] += n;
      }
      if (counts.empty()) break;
      int32_t best_a = -1, best_b = -1;
      int best_count = 0;
      for (const auto& [k, n] : counts) {
        const auto a = static_cast<int32_t>(k >> 32), b = static_cast<int32_t>(k & 0xffffffffu);
        if (n > best_count || (n == best_count && std::tie(names[a], names[b]) <
                                                      std::tie(names[best_a], names[best_b]))) {
          best_count = n;
          best_a = a;
          best_b = b;
        }
      }
      const int32_t merged = intern(names[best_a] + names[best_b]);
      merges.emplace_back(names[best_a], names[best_b]);
      for (auto& [syms, n] : words) {
        size_t out = 0;
        for (size_t i = 0; i < syms.size(); ++i) {
          if (i + 1 < syms.size() && syms[i] == best_a && syms[i + 1] == best_b) {
            syms[out++] = merged;
            ++i;
          } else {
            syms[out++] = syms[i];
          }
        }
        syms.resize(out);
      }
    }
    return merges;
  }();
  return kMerges;
}

}  // namespace

Result<Vocab> BuildVocab(uint32_t n_vocab) {
  if (n_vocab < 512) {
    return Status::InvalidArgument("vocab size " + std::to_string(n_vocab), "must be >= 512");
  }
  Vocab v;
  v.tokens.resize(n_vocab);
  v.scores.assign(n_vocab, 0.0f);
  v.types.assign(n_vocab, kNormal);
  std::vector<bool> used(n_vocab, false);
  std::set<std::string> known;
  for (const Special& s : kSpecials) {
    if (s.id >= n_vocab) continue;
    v.tokens[s.id] = std::string(s.text);
    v.types[s.id] = s.type;
    used[s.id] = true;
    known.insert(v.tokens[s.id]);
  }
  uint32_t next = 0;
  auto place = [&](std::string text, TokenType type, float score) {
    while (used[next]) ++next;
    v.tokens[next] = std::move(text);
    v.types[next] = type;
    v.scores[next] = score;
    used[next] = true;
  };
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    place(buf, kByte, 0.0f);
    known.insert(buf);
  }
  // Characters, then merges; scores fall with rank so a score-based tokenizer agrees with the
  // merge order.
  std::vector<std::string> chars = {std::string(kSpace), "\n"};
  for (char c = '!'; c <= '~'; ++c) chars.emplace_back(1, c);
  float rank = 0;
  for (const auto& c : chars) {
    place(c, kNormal, -(rank++));
    known.insert(c);
  }
  size_t free_ids = 0;
  for (bool u : used) free_ids += !u;
  // "\n\n" first, as Gemma vocabularies carry newline runs as tokens.
  if (free_ids > 0) {
    place("\n\n", kNormal, -(rank++));
    known.insert("\n\n");
    v.merges.push_back("\n \n");
    --free_ids;
  }
  for (const auto& [a, b] : AllMerges()) {
    const std::string merged = a + b;
    if (!known.count(merged)) {
      if (free_ids == 0) break;
      place(merged, kNormal, -(rank++));
      known.insert(merged);
      --free_ids;
    }
    v.merges.push_back(a + " " + b);
  }
  uint32_t unused = 0;
  for (uint32_t id = 0; id < n_vocab; ++id) {
    if (used[id]) continue;
    v.tokens[id] = "<unused" + std::to_string(unused++) + ">";
    v.types[id] = kUnused;
    used[id] = true;
  }
  return v;
}

const std::string& ChatTemplate() {
  static const std::string kTemplate =
      "{{ bos_token }}{% for message in messages %}"
      "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
      "{% else %}{% set role = message['role'] %}{% endif %}"
      "<|turn>{{ role }}\n{{ message['content'] | trim }}<turn|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|turn>model\n{% endif %}";
  return kTemplate;
}

}  // namespace garnet::mkmodel
