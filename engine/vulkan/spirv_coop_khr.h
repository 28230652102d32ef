// Build-time SPIR-V rewriter: SPV_NV_cooperative_matrix -> SPV_KHR_cooperative_matrix.
//
// Debian 12's glslc (glslang 11.13) compiles GL_NV_cooperative_matrix but not
// GL_KHR_cooperative_matrix, so matmul_coop.comp is written against the NV extension and its KHR
// variants (for AMD / Intel drivers, which only offer VK_KHR_cooperative_matrix) are made from the
// NV SPIR-V by this rewriter (garnet-spirv-coop-khr, run by shaders.cmake).
//
// The two forms differ in:
//   - the capability (CooperativeMatrixNV 5357 -> CooperativeMatrixKHR 6022) and extension name;
//   - the matrix type, which in KHR form also names its use (MatrixA, MatrixB, Accumulator). An NV
//     module may give the A and B operands of a multiply one type; the rewriter follows every
//     value and variable of a cooperative-matrix type (loads, stores, phis, access chains, copies,
//     selects, composites, element-wise arithmetic) to the multiply-add operand it reaches and
//     gives it the type of that use, cloning types (and pointer / array types built on them, and
//     constants of them) per use. A value that reaches two different operands (A and B, say)
//     cannot be given one use: FailedPrecondition. A value that reaches none is an accumulator;
//   - load / store: NV's column-major boolean becomes a MemoryLayout constant (RowMajor 0,
//     ColumnMajor 1) placed before the stride;
//   - the multiply-add and length opcodes (float components only; the KHR form marks signed
//     integer components with operands this rewriter does not produce: Unimplemented).
// The module must already use the Vulkan memory model (SPV_NV_cooperative_matrix requires it).
//
// Constructs the rewriter does not follow (function calls or struct members holding matrices,
// OpCooperativeMatrixLengthNV, spec-constant layouts, any other instruction touching a matrix)
// give Unimplemented naming the opcode, rather than a module that might be wrong.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/base/status.h"

namespace garnet::vk {

// The KHR-form module for the NV-form module `words` (SPIR-V words in host order). Errors:
// InvalidArgument for a malformed word stream (bad header, an instruction of word count 0 or
// running past the end, an operand missing, an id at or above the bound), FailedPrecondition for a
// module that does not declare CooperativeMatrixNV, predates SPIR-V 1.3, lacks the Vulkan memory
// model or has a value used as two different multiply-add operands, Unimplemented as above.
Result<std::vector<uint32_t>> RewriteCoopmatNvToKhr(std::span<const uint32_t> words);

// A SPIR-V literal string (UTF-8 bytes packed little-endian into words, NUL-terminated): the
// characters up to the NUL or the end of `words`.
std::string SpirvString(std::span<const uint32_t> words);

}  // namespace garnet::vk
