// Gemma 4 tokenizer: BPE over merges, as GGUF files with tokenizer.ggml.model = "gemma4" encode it.
//
// Facts: ../shared/docs/gemma4.md §3.4. Encoding of a text:
//   1. Special tokens (types CONTROL and USER_DEFINED) are matched whole in the text, longest match
//      first, when parse_special is set; the text between them is encoded as plain text.
//   2. Plain text is split into runs of non-newline and runs of newline characters.
//   3. In each run, ' ' becomes U+2581 "▁"; the run is cut into UTF-8 characters, and adjacent
//      symbols are merged repeatedly, always the pair with the lowest merge rank (rank = index in
//      tokenizer.ggml.merges; leftmost pair on ties), while the merged string is a merge.
//   4. Each final symbol maps to its vocabulary id; a symbol that is not in the vocabulary becomes
//      one byte token "<0xXX>" per byte (or the unknown id when even that token is missing).
// There is no byte-to-unicode mapping and no space prefix. Invalid UTF-8 in the input is
// tolerated: each invalid byte is its own symbol (and so falls back to a byte token).
//
// Decoding: NORMAL and USER_DEFINED tokens render their text with "▁" turned back into ' ', BYTE
// tokens render their raw byte, CONTROL/UNKNOWN/UNUSED tokens render nothing unless asked for.
// StreamDecoder emits only complete UTF-8 characters.
//
// Thread-safety: a Tokenizer is immutable after construction; any number of threads may use it.
// A StreamDecoder belongs to one stream (one thread at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/base/status.h"

namespace garnet::gguf {
class Model;
}

namespace garnet::tok {

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Vocab {
  std::vector<std::string> tokens;   // id -> text
  std::vector<float> scores;         // optional (empty or one per token); unused by BPE
  std::vector<int32_t> token_types;  // empty (all NORMAL) or one per token
  std::vector<std::string> merges;   // "left right", rank = index
  int32_t bos_id = 2;
  int32_t eos_id = 1;
  int32_t unk_id = 3;
  int32_t pad_id = 0;
  int32_t eot_id = -1;  // end of turn (<turn|>); -1: looked up by text "<turn|>"
  bool add_bos = true;
};

class Tokenizer {
 public:
  // Validates and indexes the vocabulary. InvalidArgument when it is empty, when scores/types
  // have the wrong length, a type value is unknown, a special id is out of range, or a merge
  // has no separating space.
  static Result<std::unique_ptr<Tokenizer>> Create(Vocab vocab);
  // Reads tokenizer.ggml.{model,tokens,scores,token_type,merges,bos_token_id,eos_token_id,
  // unknown_token_id,padding_token_id,add_bos_token}. FailedPrecondition when the model is not
  // "gemma4" (other tokenizers are not implemented); NotFound/InvalidArgument naming the key.
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const gguf::Model& model);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Encodes `text`. add_bos prepends bos_id (when the vocab's add_bos flag is set).
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool parse_special = true) const;

  // The bytes of one token (see decoding rules above). Out-of-range ids render nothing.
  std::string TokenToPiece(int32_t id, bool render_special = false) const;
  // Concatenation of TokenToPiece over ids.
  std::string Decode(const std::vector<int32_t>& ids, bool render_special = false) const;

  // Id of an exact token text, or -1.
  int32_t Find(std::string_view text) const;

  int32_t n_vocab() const { return static_cast<int32_t>(vocab_.tokens.size()); }
  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  int32_t eot_id() const { return vocab_.eot_id; }
  bool add_bos() const { return vocab_.add_bos; }
  TokenType type(int32_t id) const;
  const std::string& text(int32_t id) const { return vocab_.tokens[static_cast<size_t>(id)]; }

 private:
  explicit Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}
  Status Index();
  void EncodeRun(std::string_view run, std::vector<int32_t>* out) const;
  void EncodePlain(std::string_view text, std::vector<int32_t>* out) const;
  void EmitSymbol(std::string_view sym, std::vector<int32_t>* out) const;

  Vocab vocab_;
  std::unordered_map<std::string_view, int32_t> token_ids_;  // views into vocab_.tokens
  std::unordered_map<std::string, int32_t> merge_rank_;      // "left right" -> rank
  std::vector<int32_t> specials_;                            // sorted by text length, longest first
  int32_t byte_ids_[256];
  bool first_byte_special_[256] = {};
};

// Turns a stream of token pieces into valid UTF-8 text: bytes of a character split across tokens
// are held until the character completes; invalid bytes become U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer* tokenizer, bool render_special = false)
      : tok_(tokenizer), render_special_(render_special) {}
  // Appends the piece of `id`; returns the text that is now complete (possibly empty).
  std::string Push(int32_t id);
  // Appends raw bytes (same rules).
  std::string PushBytes(std::string_view bytes);
  // Returns whatever is held (an incomplete tail becomes U+FFFD) and resets.
  std::string Flush();

 private:
  const Tokenizer* tok_;
  bool render_special_;
  std::string pending_;
};

// Length of the UTF-8 sequence starting with lead byte c: 1..4, or 0 for a continuation/invalid
// lead byte.
int Utf8SeqLen(unsigned char c);

}  // namespace garnet::tok
