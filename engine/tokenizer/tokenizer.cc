#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <queue>

namespace garnet::tok {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool IsSpecialType(int32_t t) {
  return t == static_cast<int32_t>(TokenType::kControl) ||
         t == static_cast<int32_t>(TokenType::kUserDefined);
}

// Parses "<0xXX>" into its byte value; -1 when the text has another form.
int ParseByteToken(std::string_view s) {
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = s[static_cast<size_t>(i)];
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                     : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// Length of the valid UTF-8 character at s[i] (1 for an invalid byte, so every byte is covered).
size_t CharLen(std::string_view s, size_t i) {
  int n = Utf8SeqLen(static_cast<unsigned char>(s[i]));
  if (n <= 1) return 1;
  if (i + static_cast<size_t>(n) > s.size()) return 1;
  for (int k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0xC0) != 0x80) return 1;
  }
  return static_cast<size_t>(n);
}

}  // namespace

int Utf8SeqLen(unsigned char c) {
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;  // continuation byte or overlong lead
  if (c < 0xE0) return 2;
  if (c < 0xF0) return 3;
  if (c < 0xF5) return 4;
  return 0;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocab vocab) {
  std::unique_ptr<Tokenizer> t(new Tokenizer(std::move(vocab)));
  GARNET_RETURN_IF_ERROR(t->Index());
  return t;
}

Status Tokenizer::Index() {
  const size_t n = vocab_.tokens.size();
  if (n == 0) return Status::InvalidArgument("tokenizer", "vocabulary is empty");
  if (n > static_cast<size_t>(INT32_MAX)) return Status::InvalidArgument("tokenizer", "too large");
  if (!vocab_.scores.empty() && vocab_.scores.size() != n) {
    return Status::InvalidArgument("tokenizer", "scores length " +
                                                    std::to_string(vocab_.scores.size()) +
                                                    " != token count " + std::to_string(n));
  }
  if (vocab_.token_types.empty()) {
    vocab_.token_types.assign(n, static_cast<int32_t>(TokenType::kNormal));
  } else if (vocab_.token_types.size() != n) {
    return Status::InvalidArgument("tokenizer", "token_type length " +
                                                    std::to_string(vocab_.token_types.size()) +
                                                    " != token count " + std::to_string(n));
  }
  for (size_t i = 0; i < n; ++i) {
    int32_t ty = vocab_.token_types[i];
    if (ty < 0 || ty > 6) {
      return Status::InvalidArgument(
          "tokenizer", "token " + std::to_string(i) + " has unknown type " + std::to_string(ty));
    }
  }
  auto check_id = [&](int32_t id, const char* what, bool optional) -> Status {
    if ((optional && id == -1) || (id >= 0 && static_cast<size_t>(id) < n)) return Status::OK();
    return Status::InvalidArgument("tokenizer", std::string(what) + " id " + std::to_string(id) +
                                                    " out of range [0, " + std::to_string(n) + ")");
  };
  GARNET_RETURN_IF_ERROR(check_id(vocab_.bos_id, "bos", true));
  GARNET_RETURN_IF_ERROR(check_id(vocab_.eos_id, "eos", true));
  GARNET_RETURN_IF_ERROR(check_id(vocab_.unk_id, "unknown", true));
  GARNET_RETURN_IF_ERROR(check_id(vocab_.pad_id, "padding", true));
  GARNET_RETURN_IF_ERROR(check_id(vocab_.eot_id, "end-of-turn", true));

  token_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // First occurrence wins for duplicate texts.
    token_ids_.emplace(std::string_view(vocab_.tokens[i]), static_cast<int32_t>(i));
  }
  merge_rank_.reserve(vocab_.merges.size());
  for (size_t r = 0; r < vocab_.merges.size(); ++r) {
    const std::string& m = vocab_.merges[r];
    size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return Status::InvalidArgument("tokenizer",
                                     "merge #" + std::to_string(r) + " has no 'left right' form");
    }
    merge_rank_.emplace(m, static_cast<int32_t>(r));
  }
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    byte_ids_[b] = Find(buf);
  }
  for (size_t i = 0; i < n; ++i) {
    if (IsSpecialType(vocab_.token_types[i]) && !vocab_.tokens[i].empty()) {
      specials_.push_back(static_cast<int32_t>(i));
      first_byte_special_[static_cast<unsigned char>(vocab_.tokens[i][0])] = true;
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
    return vocab_.tokens[static_cast<size_t>(a)].size() >
           vocab_.tokens[static_cast<size_t>(b)].size();
  });
  if (vocab_.eot_id < 0) vocab_.eot_id = Find("<turn|>");
  return Status::OK();
}

int32_t Tokenizer::Find(std::string_view text) const {
  auto it = token_ids_.find(text);
  return it == token_ids_.end() ? -1 : it->second;
}

TokenType Tokenizer::type(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return TokenType::kUndefined;
  return static_cast<TokenType>(vocab_.token_types[static_cast<size_t>(id)]);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  if (!parse_special || specials_.empty()) {
    EncodePlain(text, &out);
    return out;
  }
  size_t plain_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (first_byte_special_[static_cast<unsigned char>(text[i])]) {
      int32_t match = -1;
      for (int32_t id : specials_) {  // longest first
        const std::string& s = vocab_.tokens[static_cast<size_t>(id)];
        if (text.compare(i, s.size(), s) == 0) {
          match = id;
          break;
        }
      }
      if (match >= 0) {
        EncodePlain(text.substr(plain_start, i - plain_start), &out);
        out.push_back(match);
        i += vocab_.tokens[static_cast<size_t>(match)].size();
        plain_start = i;
        continue;
      }
    }
    ++i;
  }
  EncodePlain(text.substr(plain_start), &out);
  return out;
}

void Tokenizer::EncodePlain(std::string_view text, std::vector<int32_t>* out) const {
  size_t i = 0;
  while (i < text.size()) {
    bool nl = text[i] == '\n';
    size_t j = i;
    while (j < text.size() && (text[j] == '\n') == nl) ++j;
    EncodeRun(text.substr(i, j - i), out);
    i = j;
  }
}

void Tokenizer::EmitSymbol(std::string_view sym, std::vector<int32_t>* out) const {
  int32_t id = Find(sym);
  if (id >= 0) {
    out->push_back(id);
    return;
  }
  for (char c : sym) {
    int32_t b = byte_ids_[static_cast<unsigned char>(c)];
    if (b >= 0) {
      out->push_back(b);
    } else if (vocab_.unk_id >= 0) {
      out->push_back(vocab_.unk_id);
    }
  }
}

void Tokenizer::EncodeRun(std::string_view run, std::vector<int32_t>* out) const {
  if (run.empty()) return;
  std::string s;
  s.reserve(run.size() * 2);
  for (char c : run) {
    if (c == ' ') {
      s.append(kSpaceMark);
    } else {
      s.push_back(c);
    }
  }
  struct Sym {
    int prev, next;
    size_t start, len;
  };
  std::vector<Sym> syms;
  for (size_t i = 0; i < s.size();) {
    size_t l = CharLen(s, i);
    int idx = static_cast<int>(syms.size());
    syms.push_back({idx - 1, idx + 1, i, l});
    i += l;
  }
  syms.back().next = -1;

  struct Bigram {
    int32_t rank;
    int left, right;
    size_t size;  // combined byte length when queued (stale entries are skipped)
    bool operator<(const Bigram& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Bigram> queue;
  std::string key;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Sym& a = syms[static_cast<size_t>(left)];
    const Sym& b = syms[static_cast<size_t>(right)];
    key.assign(s, a.start, a.len);
    key.push_back(' ');
    key.append(s, b.start, b.len);
    auto it = merge_rank_.find(key);
    if (it == merge_rank_.end()) return;
    queue.push({it->second, left, right, a.len + b.len});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i)
    try_add(static_cast<int>(i), static_cast<int>(i + 1));
  while (!queue.empty()) {
    Bigram bg = queue.top();
    queue.pop();
    Sym& a = syms[static_cast<size_t>(bg.left)];
    Sym& b = syms[static_cast<size_t>(bg.right)];
    if (a.len == 0 || b.len == 0 || a.next != bg.right || a.len + b.len != bg.size) continue;
    a.len += b.len;
    a.next = b.next;
    b.len = 0;
    if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = bg.left;
    try_add(a.prev, bg.left);
    try_add(bg.left, a.next);
  }
  for (int i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
    const Sym& sy = syms[static_cast<size_t>(i)];
    if (sy.len > 0) EmitSymbol(std::string_view(s).substr(sy.start, sy.len), out);
  }
}

std::string Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  if (id < 0 || id >= n_vocab()) return {};
  const std::string& t = vocab_.tokens[static_cast<size_t>(id)];
  switch (type(id)) {
    case TokenType::kByte: {
      int b = ParseByteToken(t);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
    }
    case TokenType::kControl:
    case TokenType::kUnknown:
    case TokenType::kUnused:
      return render_special ? t : std::string();
    default:
      break;
  }
  std::string out;
  out.reserve(t.size());
  for (size_t i = 0; i < t.size();) {
    if (t.compare(i, kSpaceMark.size(), kSpaceMark) == 0) {
      out.push_back(' ');
      i += kSpaceMark.size();
    } else {
      out.push_back(t[i++]);
    }
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool render_special) const {
  std::string out;
  for (int32_t id : ids) out += TokenToPiece(id, render_special);
  return out;
}

std::string StreamDecoder::Push(int32_t id) {
  return PushBytes(tok_->TokenToPiece(id, render_special_));
}

std::string StreamDecoder::PushBytes(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    unsigned char c = static_cast<unsigned char>(pending_[i]);
    int n = Utf8SeqLen(c);
    if (n == 0) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    // Check continuation bytes that are present.
    size_t have = std::min(pending_.size() - i, static_cast<size_t>(n));
    bool bad = false;
    for (size_t k = 1; k < have; ++k) {
      if ((static_cast<unsigned char>(pending_[i + k]) & 0xC0) != 0x80) {
        bad = true;
        break;
      }
    }
    if (bad) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    if (have < static_cast<size_t>(n)) break;  // incomplete: hold
    out.append(pending_, i, static_cast<size_t>(n));
    i += static_cast<size_t>(n);
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out;
  if (!pending_.empty()) out.append(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace garnet::tok
