// The managed catalog: which ids garnet knows, and where each model's files come from.
//
// The catalog is data: registry/catalog.json is compiled into the binary (Catalog::Builtin()),
// and an optional user catalog file with the same schema adds entries or overrides entries with
// the same id (Catalog::Merge). Schema (one object):
//
//   { "version": 1,
//     "defaults": { "<family>": "<id>" },          // `gemma4` alone resolves to this id
//     "models": [ {
//        "id": "gemma4:e4b-q4_k_m", "aliases": ["gemma4:e4b"],
//        "family": "gemma4", "variant": "e4b", "moe": false,
//        "total_params": 7460000000, "active_params": 7460000000,
//        "quant": "Q4_K_M",
//        "files": [ { "repo": "org/name", "revision": "main", "path": "file.gguf",
//                     "size": 123, "sha256": "<64 hex>" } ],   // or { "url": "https://..." }
//        "default_context": 8192, "max_context": 131072,
//        "license": "...", "note": "..." } ] }
//
// `size` and `sha256` are optional (unknown offline: learned on first pull). A split model
// lists its parts in order. Every field is validated by Parse(); errors name the entry and field.
//
// Thread-safety: a Catalog is a value; const methods may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "registry/reference.h"

namespace garnet::registry {

struct SourceFile {
  // Either a Hugging Face-style location (repo + revision + path) or a full URL.
  std::string repo;  // "org/name"
  std::string revision = "main";
  std::string path;  // may contain '/' (sub folders); components validated
  std::string url;   // http:// or https://; used instead of repo/path when set
  std::optional<uint64_t> size;
  std::string sha256;  // 64 lower-case hex, or empty when unknown

  // "<repo>/resolve/<revision>/<path>" (empty for url sources): the hub's URL path shape, also
  // what the mirror serves.
  std::string ResolvePath() const;
  // Full URL against `base_url` ("https://huggingface.co"), or `url`.
  std::string Url(std::string_view base_url) const;
  // The file's base name (last path component, or of the URL).
  std::string FileName() const;
};

struct CatalogEntry {
  std::string id;  // canonical reference "family:tag"
  std::vector<std::string> aliases;
  std::string family;
  std::string variant;
  bool moe = false;
  uint64_t total_params = 0;
  uint64_t active_params = 0;
  std::string quant;
  std::vector<SourceFile> files;
  uint32_t default_context = 0;
  uint32_t max_context = 0;
  std::string license;
  std::string note;
};

class Catalog {
 public:
  Catalog() = default;

  // Parses and validates a catalog document. `origin` names it in errors ("builtin catalog",
  // a file path). Failure: InvalidArgument naming the entry and field.
  static Result<Catalog> Parse(std::string_view json, std::string_view origin);
  // The catalog compiled into the binary.
  static Result<Catalog> Builtin();
  // Builtin() merged with the user catalog at `user_path` (skipped when empty; NotFound when the
  // file is named but missing).
  static Result<Catalog> Load(const std::string& user_path);

  // Adds `other`'s entries; an entry with an existing id replaces it (aliases included), and
  // `other`'s defaults replace ours per family. Fails with InvalidArgument when an alias of
  // `other` collides with a different remaining entry's id or alias (then *this is unchanged).
  Status Merge(const Catalog& other);

  // Resolves a catalog reference (id, alias, or bare family name). NotFound lists the known
  // tags of the family (or the families) so a user can correct the typo.
  Result<const CatalogEntry*> Resolve(const Reference& ref) const;
  Result<const CatalogEntry*> Resolve(std::string_view ref) const;
  // The entry whose id is exactly `id`, or null.
  const CatalogEntry* FindId(std::string_view id) const;

  const std::vector<CatalogEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& defaults() const { return defaults_; }

 private:
  Status Index();
  std::vector<CatalogEntry> entries_;
  std::map<std::string, std::string> defaults_;  // family -> id
  std::map<std::string, size_t> by_name_;        // id or alias -> entry index
};

// The embedded catalog.json text (generated at build time).
std::string_view BuiltinCatalogJson();

}  // namespace garnet::registry
