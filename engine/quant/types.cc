#include "engine/quant/types.h"

#include <array>
#include <cctype>
#include <string>

namespace garnet {
namespace {

constexpr std::array kTypes = {
    TypeTraits{GgmlType::kF32, "f32", 1, 4, true},
    TypeTraits{GgmlType::kF16, "f16", 1, 2, true},
    TypeTraits{GgmlType::kQ4_0, "q4_0", 32, 18, true},
    TypeTraits{GgmlType::kQ4_1, "q4_1", 32, 20, true},
    TypeTraits{GgmlType::kQ5_0, "q5_0", 32, 22, true},
    TypeTraits{GgmlType::kQ5_1, "q5_1", 32, 24, true},
    TypeTraits{GgmlType::kQ8_0, "q8_0", 32, 34, true},
    TypeTraits{GgmlType::kQ8_1, "q8_1", 32, 36, false},
    TypeTraits{GgmlType::kQ2_K, "q2_k", 256, 84, true},
    TypeTraits{GgmlType::kQ3_K, "q3_k", 256, 110, true},
    TypeTraits{GgmlType::kQ4_K, "q4_k", 256, 144, true},
    TypeTraits{GgmlType::kQ5_K, "q5_k", 256, 176, true},
    TypeTraits{GgmlType::kQ6_K, "q6_k", 256, 210, true},
    TypeTraits{GgmlType::kQ8_K, "q8_k", 256, 292, false},
    TypeTraits{GgmlType::kIQ2_XXS, "iq2_xxs", 256, 66, false},
    TypeTraits{GgmlType::kIQ2_XS, "iq2_xs", 256, 74, false},
    TypeTraits{GgmlType::kIQ3_XXS, "iq3_xxs", 256, 98, false},
    TypeTraits{GgmlType::kIQ1_S, "iq1_s", 256, 50, false},
    TypeTraits{GgmlType::kIQ4_NL, "iq4_nl", 32, 18, true},
    TypeTraits{GgmlType::kIQ3_S, "iq3_s", 256, 110, false},
    TypeTraits{GgmlType::kIQ2_S, "iq2_s", 256, 82, false},
    TypeTraits{GgmlType::kIQ4_XS, "iq4_xs", 256, 136, true},
    TypeTraits{GgmlType::kI8, "i8", 1, 1, false},
    TypeTraits{GgmlType::kI16, "i16", 1, 2, false},
    TypeTraits{GgmlType::kI32, "i32", 1, 4, false},
    TypeTraits{GgmlType::kI64, "i64", 1, 8, false},
    TypeTraits{GgmlType::kF64, "f64", 1, 8, false},
    TypeTraits{GgmlType::kIQ1_M, "iq1_m", 256, 56, false},
    TypeTraits{GgmlType::kBF16, "bf16", 1, 2, true},
    TypeTraits{GgmlType::kTQ1_0, "tq1_0", 256, 54, false},
    TypeTraits{GgmlType::kTQ2_0, "tq2_0", 256, 66, false},
    TypeTraits{GgmlType::kMXFP4, "mxfp4", 32, 17, false},
};

}  // namespace

std::optional<TypeTraits> LookupType(uint32_t id) {
  for (const auto& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == id) return t;
  }
  return std::nullopt;
}

const TypeTraits& Traits(GgmlType type) {
  for (const auto& t : kTypes) {
    if (t.type == type) return t;
  }
  return kTypes[0];  // unreachable for enum values; keeps the function total
}

std::string_view TypeName(GgmlType type) {
  return Traits(type).name;
}

std::optional<GgmlType> ParseTypeName(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& t : kTypes) {
    if (t.name == lower) return t.type;
  }
  return std::nullopt;
}

Result<uint64_t> RowBytes(GgmlType type, uint64_t ne0) {
  const TypeTraits& t = Traits(type);
  if (ne0 % t.block_elems != 0) {
    return Status::InvalidArgument("row length " + std::to_string(ne0),
                                   "not a multiple of the " + std::string(t.name) + " block size " +
                                       std::to_string(t.block_elems));
  }
  const uint64_t blocks = ne0 / t.block_elems;
  if (blocks > UINT64_MAX / t.block_bytes) {
    return Status::OutOfRange("row length " + std::to_string(ne0), "byte size overflows 64 bits");
  }
  return blocks * t.block_bytes;
}

Result<uint64_t> TensorBytes(GgmlType type, const uint64_t* ne, uint32_t n_dims) {
  if (n_dims == 0) return Status::InvalidArgument("tensor", "has no dimensions");
  GARNET_ASSIGN_OR_RETURN(uint64_t bytes, RowBytes(type, ne[0]));
  for (uint32_t i = 1; i < n_dims; ++i) {
    if (ne[i] != 0 && bytes > UINT64_MAX / ne[i]) {
      return Status::OutOfRange("tensor size", "overflows 64 bits");
    }
    bytes *= ne[i];
  }
  return bytes;
}

}  // namespace garnet
