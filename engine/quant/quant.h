// Reference (scalar) dequantisation and quantisation of one row of a ggml tensor.
//
// Supported types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
// IQ4_NL and IQ4_XS (block layouts in blocks.h and ../shared/docs/gemma4.md §6.2). These are the
// correctness reference for the fast CPU/GPU kernels, and the quantiser used by garnet-mkmodel.
//
// Determinism: the quantisers use only + - * /, comparisons, std::fabs, exact conversions and
// rounding by adding and subtracting 1.5 * 2^23, and the library is built with
// -ffp-contract=off, so the same input gives the same bytes on every machine and compiler. They
// need not match llama.cpp bit for bit; they produce valid blocks whose error is at or below the
// usual amax-scale method (tests/quant bound it).
//
// Thread-safety: pure functions; distinct rows may be processed from any number of threads.
#pragma once

#include <cstdint>

#include "engine/base/status.h"
#include "engine/quant/types.h"

namespace garnet {

// True for the types DequantizeRow/QuantizeRow accept (Traits(type).supported).
bool IsQuantSupported(GgmlType type);

// Decodes `n` elements stored as `type` at `src` (exactly RowBytes(type, n) bytes, any alignment)
// into dst[0..n). Errors, with dst untouched: InvalidArgument when n < 0 or n is not a multiple
// of the type's block size; Unimplemented for a type that is not supported.
Status DequantizeRow(GgmlType type, const uint8_t* src, float* dst, int64_t n);

// Encodes src[0..n) as `type` into dst (exactly RowBytes(type, n) bytes, any alignment). Same
// errors as DequantizeRow, plus InvalidArgument when the input holds a NaN or infinity for a
// block-quantised type (F32/F16/BF16 store them as is). On error dst may be partly written.
Status QuantizeRow(GgmlType type, const float* src, uint8_t* dst, int64_t n);

}  // namespace garnet
