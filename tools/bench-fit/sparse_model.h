// A synthetic model file whose header is real and whose tensor data is a hole: the same bytes
// garnet-mkmodel would write up to the data section, then ftruncate() to the full file size, so a
// 17 GB model costs a few MB of disk and milliseconds to write. The GGUF reader opens it exactly
// as the full file (the data reads as zeros), which is what the fit benchmark and planner tests
// need: everything the planner looks at is in the header.
//
// Thread-safety: reentrant; each call writes its own files.
#pragma once

#include <cstdint>
#include <string>

#include "engine/base/status.h"
#include "tools/mkmodel/plan.h"

namespace garnet::benchfit {

// Writes `plan` (metadata from mkmodel::AddModel with seed 0, tensor infos in plan order) to
// `path` with the data section left sparse. Returns the file size. On failure no file is left at
// `path`; the scratch file `path + ".meta"` is always removed.
Result<uint64_t> WriteSparseModel(const mkmodel::ModelPlan& plan, const std::string& path);

}  // namespace garnet::benchfit
