// Model references and digests: the grammar users type, validated before anything touches a path.
//
//   catalog reference   name[:tag]                 gemma4, gemma4:e4b, gemma4:31b-q8_0
//   Hugging Face        hf.co/<org>/<repo>[:quant] hf.co/unsloth/gemma-4-E4B-it-GGUF:Q8_0
//                       (huggingface.co/ is accepted as a synonym for hf.co/)
//   local path          /abs/path.gguf, ./rel.gguf, ../x.gguf, ~/x.gguf  (import only)
//
// Catalog names and tags are case-insensitive and normalised to lower case; they use
// [a-z0-9._-] and start with a letter or digit. Hugging Face org/repo keep their case and use
// [A-Za-z0-9._-]; a quant tag uses [A-Za-z0-9._-]. Every component is 1..128 characters, is
// never "." and never contains "..", never starts with '.' or '-'. Anything else (a '/', NUL, a
// control character, non-ASCII bytes, an empty component) is rejected with InvalidArgument naming
// the component and the offending character.
//
// A digest is "sha256-" followed by exactly 64 lower-case hex characters ("sha256:" is accepted
// on input and normalised to '-').
//
// Thread-safety: pure functions on values.
#pragma once

#include <string>
#include <string_view>

#include "engine/base/status.h"

namespace garnet::registry {

inline constexpr size_t kMaxComponentLength = 128;
inline constexpr size_t kMaxReferenceLength = 512;

struct Reference {
  enum class Kind { kCatalog, kHuggingFace, kLocalPath };
  Kind kind = Kind::kCatalog;
  // kCatalog: name = "gemma4", tag = "e4b" (empty: the family default).
  // kHuggingFace: name = "<org>/<repo>", org, repo; tag = quant (empty: repo default).
  // kLocalPath: path as given (tilde not expanded).
  std::string name;
  std::string tag;
  std::string org;
  std::string repo;
  std::string path;

  // Canonical text: "gemma4:e4b", "gemma4", "hf.co/org/repo:Q8_0", or the path.
  std::string ToString() const;
};

// Parses and validates. Failure: InvalidArgument with a message such as
//   `model reference "gemma4:../x": tag "../x": '/' is not allowed`.
Result<Reference> ParseReference(std::string_view text);

// Validates one catalog-style component ("name" or "tag" in messages via `what`).
Status ValidateComponent(std::string_view what, std::string_view value, bool allow_upper);

// Validates and normalises a digest ("sha256:<hex>" or "sha256-<hex>", hex any case on input is
// NOT accepted: upper case hex is rejected so two spellings never name two files). Returns the
// canonical "sha256-<hex>".
Result<std::string> NormalizeDigest(std::string_view digest);
// True for exactly "sha256-" + 64 lower-case hex.
bool IsValidDigest(std::string_view digest);
// True for exactly 64 lower-case hex characters.
bool IsLowerHex64(std::string_view hex);

}  // namespace garnet::registry
