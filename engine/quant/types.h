// ggml tensor types as stored in GGUF files: ids, block geometry and byte sizes.
//
// This header is the one place the ids and block sizes live (facts from ggml-common.h, see
// ../shared/docs/gemma4.md §3.1 and §6.2). The GGUF reader uses it to size tensors; the quant
// library (quant.h) dequantises and quantises the types marked `supported`.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "engine/base/status.h"

namespace garnet {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct TypeTraits {
  GgmlType type;
  std::string_view name;  // lower-case, as llama.cpp prints it: "q4_k", "bf16"
  uint32_t block_elems;   // elements per block (1 for plain float/int types)
  uint32_t block_bytes;   // bytes per block
  bool supported;         // garnet can dequantise (and quantise) this type
};

// Geometry of a type id read from a file, or nullopt when the id is unknown. Known but
// unsupported types (IQ*, Q2_K, ...) still have geometry so the reader can size and skip them.
std::optional<TypeTraits> LookupType(uint32_t id);
const TypeTraits& Traits(GgmlType type);  // for ids from the enum above; always valid
std::string_view TypeName(GgmlType type);
// Parses a name such as "q8_0", "Q4_K", "bf16". Returns nullopt when unknown.
std::optional<GgmlType> ParseTypeName(std::string_view name);

// Bytes of one row of `ne0` elements. InvalidArgument when ne0 is not a multiple of the block
// size (the error names the type and the length).
Result<uint64_t> RowBytes(GgmlType type, uint64_t ne0);

// Bytes of a whole tensor with dims ne[0..n_dims). Checks block alignment of ne[0] and every
// multiplication for overflow; OutOfRange on overflow.
Result<uint64_t> TensorBytes(GgmlType type, const uint64_t* ne, uint32_t n_dims);

}  // namespace garnet
