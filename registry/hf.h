// Resolving `hf.co/<org>/<repo>[:quant]` to concrete files, from the hub's tree listing
// (GET <base>/api/models/<org>/<repo>/tree/<rev>?recursive=true: a JSON array of
// {"type": "file", "path": ..., "size": ..., "lfs": {"oid": "<sha256>", "size": ...}}).
//
// Selection: .gguf files only, never vision/audio projectors ("mmproj"). With a quant tag, the
// files whose name contains the tag as a whole token (case-insensitive; token boundaries are
// '-', '_', '.', '/' and the ends); without one, Q4_K_M if present, else the only model, else an
// error listing the choices. Split sets ("...-00001-of-00003.gguf") are returned as all their
// parts in order, and must be complete. Every path from the listing is validated like catalog
// paths (no "..", no odd bytes) before use.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "registry/catalog.h"
#include "registry/reference.h"

namespace garnet::registry {

// "<base>/api/models/<org>/<repo>/tree/<revision>?recursive=true"
std::string HfTreeUrl(std::string_view base_url, const Reference& ref, std::string_view revision);

struct HfSelection {
  std::vector<SourceFile> files;  // repo/revision/path plus size/sha256 from the listing
  std::string quant;              // the tag that selected them, as spelled in the file name
};

// Picks the files for `ref` (kind kHuggingFace) out of a tree listing.
Result<HfSelection> SelectHfFiles(std::string_view tree_json, const Reference& ref,
                                  std::string_view revision);

}  // namespace garnet::registry
