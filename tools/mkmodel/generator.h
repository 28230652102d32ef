// Writes a synthetic Gemma 4 GGUF from a ModelPlan: metadata keys exactly as llama.cpp's
// converter writes them (../shared/docs/gemma4.md §3.2, §3.4) and random weights streamed
// through gguf::Writer producers, so memory use stays at a few rows per thread whatever the
// model size.
//
// Determinism: row r of tensor T is generated from its own xoshiro256** stream seeded with
// (seed, FNV-1a(T's name), r), with libm-free normal deviates (prng.h) and the deterministic
// quantisers of engine/quant. Same plan + seed -> byte-identical file, whatever the thread count,
// chunking, machine or compiler.
//
// Thread-safety: functions are reentrant; WriteModel uses `threads` worker threads internally.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gguf.h"
#include "tools/mkmodel/plan.h"

namespace garnet::mkmodel {

struct GenOptions {
  uint64_t seed = 0;
  uint32_t threads = 0;  // 0: std::thread::hardware_concurrency()
  // Called from the writing thread after each produced chunk with the tensor bytes done so far
  // and the total (ModelPlan::data_bytes()). Optional.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// The float values of one row (ne[0] elements) of a planned tensor, before quantisation.
void GenerateRow(const PlannedTensor& t, uint64_t seed, uint64_t row, float* out);

// Declares the plan's metadata and tensors on `writer` (the caller then calls Finish). The
// producers copy what they need: `plan` may be destroyed before Finish. InvalidArgument when the
// vocabulary cannot be built.
Status AddModel(const ModelPlan& plan, const GenOptions& opts, gguf::Writer& writer);

// AddModel + Writer::Finish(path). Returns the file size. On failure no file is left at `path`.
Result<uint64_t> WriteModel(const ModelPlan& plan, const GenOptions& opts, const std::string& path);

// The same model as a llama.cpp gguf-split set of `n_parts` files named
// gguf::SplitPath(prefix, i, n_parts) (Writer::FinishSplit). Returns the part paths in order.
Result<std::vector<std::string>> WriteModelSplit(const ModelPlan& plan, const GenOptions& opts,
                                                 const std::string& prefix, uint32_t n_parts);

// One call for tests and tools: PresetSpec(preset) -> MakePlan(type; "" = the preset's default)
// -> WriteModel(path). Errors from each step pass through (NotFound for an unknown preset,
// InvalidArgument for a bad type).
Result<uint64_t> WritePreset(std::string_view preset, std::string_view type,
                             const std::string& path, uint64_t seed = 0);

}  // namespace garnet::mkmodel
