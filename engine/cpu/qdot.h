// Integer dot products of quantised weight rows with 8-bit quantised activations.
//
// For Q8_0, Q4_0, Q4_K and Q6_K weights the matmul quantises each activation row once into
// blocks of 32 (BlockQ8A: scale d = max|x| / 127, q = round(x / d), plus the integer sums of each
// half) and computes every weight-row dot product in integers per block, scaling once per block
// (or sub-block). This is how CPU engines run quantised models fast (AVX2 maddubs: 32 products
// per instruction); the extra error is that of rounding activations to 8 bits (~0.4 % of a
// block's max, relative), far below the weights' own quantisation error.
//
// The scalar versions are exact integer sums with float scaling — the oracle for the AVX2 ones,
// which must agree up to float summation order. Facts on the block layouts: engine/quant/blocks.h
// and ../shared/docs/gemma4.md §6.2.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "engine/quant/types.h"

namespace garnet::cpu {

struct BlockQ8A {
  float d;
  int16_t s16[2];  // sums of qs[0..15] and qs[16..31]
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8A) == 40);

// x[0..n) -> n / 32 blocks (n must be a multiple of 32), one scale per block.
void QuantizeActivations(const float* x, int64_t n, BlockQ8A* out);
// The same blocks with one scale shared by each run of 8 blocks (256 values, n a multiple of
// 256): the K-quant kernels then scale sub-blocks in integers and convert once per 256.
void QuantizeActivationsK(const float* x, int64_t n, BlockQ8A* out);
// True when `type`'s fast kernel needs QuantizeActivationsK activations (Q4_K, Q6_K).
bool NeedsKActivations(GgmlType type);

// Scalar kernels accept either activation format; the AVX2 Q4_K/Q6_K kernels need the K format.
// Dot product of one weight row (n elements in the weight type's blocks) with n quantised
// activations.
using QDotFn = float (*)(const uint8_t* w, const BlockQ8A* a, int64_t n);

// Four activation rows at a, a + stride, a + 2 * stride, a + 3 * stride (strides in blocks)
// against one weight row: out[0..4). The weight blocks are unpacked once for all four.
using QDot4Fn = void (*)(const uint8_t* w, const BlockQ8A* a, int64_t stride, int64_t n,
                         float* out);

// The kernel for `type`, or null when the type has no integer path. `fast` picks AVX2 when the
// CPU has it (and GARNET_CPU_KERNELS is not "ref"); otherwise the scalar version.
QDotFn QDotFor(GgmlType type, bool fast);
// The 4-row kernel (AVX2 only); null when there is none: call the QDotFn four times instead.
QDot4Fn QDot4For(GgmlType type);

}  // namespace garnet::cpu
