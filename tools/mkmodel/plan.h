// The tensor plan of a synthetic Gemma 4 model: every tensor's name, ggml type, shape and how
// its values are drawn — computed without writing anything, so tools and tests can inspect a
// 17 GB model's layout instantly.
//
// Names and shapes: ../shared/docs/gemma4.md §3.3 (llama.cpp's converter). Type rules: §6.1 —
// 1-D tensors always F32; the MoE router (ffn_gate_inp) and per_layer_model_proj are never
// quantised (F32 for tiny presets or --type f32, else BF16); the q4_k_m mix; and the row-length
// fallbacks for block types (rows not a multiple of 256: Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0,
// Q2_K/Q3_K/IQ4_XS->IQ4_NL; then F16 when not a multiple of 32).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/base/status.h"
#include "engine/quant/types.h"
#include "tools/mkmodel/spec.h"

namespace garnet::mkmodel {

// How a tensor's values are produced (each row from its own seeded stream, see generator.h).
enum class Init : uint8_t {
  kNormal,     // mean + std * N(0, 1)
  kRopeFreqs,  // [1] * rope_pairs ++ [1e30] * rest (§2.3); no randomness
};

struct PlannedTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<uint64_t> ne;  // ne[0] innermost
  Init init = Init::kNormal;
  float mean = 0;
  float std = 0;
  uint32_t rope_pairs = 0;  // for kRopeFreqs

  uint64_t elements() const;
  uint64_t rows() const;  // product of ne[1..]
};

// Weight-type choice. `base` is a type name (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k,
// q2_k, q3_k, q5_k, q6_k, iq4_nl, iq4_xs) or the mix "q4_k_m". Overrides (first matching wins,
// before the row-length fallback) apply to quantisable matrices only: `embd` to token_embd.weight,
// then each (substring, type) to tensors whose name contains the substring.
struct TypeOptions {
  std::string base;  // empty: the preset's default_type
  std::optional<GgmlType> embd;
  std::vector<std::pair<std::string, GgmlType>> overrides;
};

struct ModelPlan {
  ModelSpec spec;
  std::string type_name;   // the base type actually used, e.g. "q4_k_m"
  uint32_t file_type = 0;  // general.file_type (llama_ftype)
  std::vector<PlannedTensor> tensors;

  uint64_t data_bytes() const;  // sum of the tensors' byte sizes (no alignment padding)
  const PlannedTensor* Find(std::string_view name) const;
};

// Builds the plan. InvalidArgument for an invalid spec (ValidateSpec) or an unknown /
// unsupported type name.
Result<ModelPlan> MakePlan(const ModelSpec& spec, const TypeOptions& types);

// The type a row of ne0 elements can actually use when `type` was asked for (see top).
GgmlType FallbackForRow(GgmlType type, uint64_t ne0);

// llama.cpp's use_more_bits(i, n): the first and last eighth, and every third in between.
bool UseMoreBits(uint32_t i, uint32_t n);

// general.file_type for a base type name ("q4_k_m" -> 15, "q8_0" -> 7, ...); nullopt if unknown.
std::optional<uint32_t> FileTypeFor(std::string_view base);

}  // namespace garnet::mkmodel
