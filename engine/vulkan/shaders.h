// The SPIR-V of every compute shader, compiled from shaders/*.comp by glslc at build time and
// embedded in the library (see shaders.cmake: one variant per glslc -D set).
//
// Thread-safety: immutable data; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace garnet::vk {

struct SpirvShader {
  std::string_view name;  // the variant name, e.g. "matvec_q8_0_sg"
  const uint32_t* words;  // SPIR-V words, static storage
  size_t word_count;
};

// All embedded variants, sorted by name.
std::span<const SpirvShader> AllShaders();

// The variant called `name`, or nullptr when no such variant was built.
const SpirvShader* FindShader(std::string_view name);

}  // namespace garnet::vk
