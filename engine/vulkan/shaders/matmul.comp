// matmul: tiled shared-memory matrix-matrix product (the portable prefill path). For token t < N
// and row m < M:
//   Y[t * y_stride + m] = sum_k W[m, k] * X[t * x_stride + k],   k < K
// W is M rows of K elements in a GGUF weight type (weights.glsl), dequantised into shared memory
// (element by element for F32/F16/BF16/Q8_0/Q4_0/Q4_K, in groups of 8 for the other block types);
// X and Y are float.
//
// Bindings:  0 W (read), 1 X (read, float), 2 Y (write, float)
// Push:      uint M, N, K, x_stride, y_stride
// Spec:      0 WG = 256 (must be 256: a 16x16 arrangement of invocations)
// Grid:      (ceil(M / 64), ceil(N / 64), 1); each workgroup computes a 64x64 tile of Y, each
//            invocation a 4x4 sub-tile (rows tx + 16i, tokens ty + 16j), stepping K by 16.
// Variants:  WTYPE_<every weights.glsl type> x STORAGE16 (not for F32) x MUL_ID.
// MUL_ID (MoE experts, prefill): the N rows are slots (token t = slot / k_slots, s = slot %
// k_slots) grouped by expert by moe_group.comp (binding 3, read); grid y walks its tile table, so
// each workgroup multiplies 64 slots of ONE expert (matrix te at te * expert_stride bytes) and
// every expert matrix is read only for its own tokens. X row of a slot: t * x_stride + s *
// x_slot_stride (x_slot_stride 0: all k slots of a token share its vector); Y row: slot *
// y_stride. Slots with an out-of-range id get zeros.
//   extra push uint expert_stride, n_experts, k_slots, x_slot_stride, max_tiles
#version 450
#include "common.glsl"
#include "weights.glsl"

// F32/F16/BF16 rows may have any length, so they load element by element. So do Q8_0, Q4_0 and
// Q4_K: on an H100 that was faster for them than groups of 8 on half the invocations (Q4_K 14.6
// vs 10.2 TFLOP/s at 4096x512x4096).
#if defined(W_PER_ELEMENT) || defined(WTYPE_Q8_0) || defined(WTYPE_Q4_0) || defined(WTYPE_Q4_K)
#define MATMUL_W_BY_ELEMENT
#endif

layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint M;
  uint N;
  uint K;
  uint x_stride;
  uint y_stride;
#ifdef MUL_ID
  uint expert_stride;
  uint n_experts;
  uint k_slots;
  uint x_slot_stride;
  uint max_tiles;
#endif
} p;
#ifdef MUL_ID
layout(binding = 3, std430) readonly buffer GBuf { uint g[]; };
#endif

#define BM 64u
#define BN 64u
#define BK 16u
shared float As[BK][BM];
shared float Bs[BK][BN];

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint tx = tid % 16u, ty = tid / 16u;
  const uint m0 = gl_WorkGroupID.x * BM;
  const uint row_bytes = (p.K / W_BLOCK) * W_BLOCK_BYTES;
  // This invocation's four token rows ty + 16i of the tile: where their X rows start and where
  // their Y rows go (0xffffffff: past the end).
  uint xrow[4], yrow[4];
  uint wbase = 0u;
#ifdef MUL_ID
  const uint E1 = p.n_experts + 1u;
  const uint te = g[E1 + p.N + gl_WorkGroupID.y];
  if (te == 0xffffffffu) return;  // uniform: a tile the grid has beyond the table
  const uint j0 = g[E1 + p.N + p.max_tiles + gl_WorkGroupID.y];
  const uint jend = g[te];
  [[unroll]] for (uint i = 0; i < 4u; ++i) {
    const uint j = j0 + ty + 16u * i;
    const uint slot = j < jend ? g[E1 + j] : 0xffffffffu;
    xrow[i] = slot == 0xffffffffu
                  ? 0xffffffffu
                  : (slot / p.k_slots) * p.x_stride + (slot % p.k_slots) * p.x_slot_stride;
    yrow[i] = slot == 0xffffffffu ? 0xffffffffu : slot * p.y_stride;
  }
  if (te == p.n_experts) {  // the slots whose id was out of range: zeros
    [[unroll]] for (uint i = 0; i < 4u; ++i) {
      const uint m = m0 + tx + 16u * i;
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        if (m < p.M && yrow[j] != 0xffffffffu) y[yrow[j] + m] = 0.0;
      }
    }
    return;
  }
  wbase = te * p.expert_stride;
#else
  const uint n0 = gl_WorkGroupID.y * BN;
  [[unroll]] for (uint i = 0; i < 4u; ++i) {
    const uint n = n0 + ty + 16u * i;
    xrow[i] = n < p.N ? n * p.x_stride : 0xffffffffu;
    yrow[i] = n < p.N ? n * p.y_stride : 0xffffffffu;
  }
#endif
  float acc[4][4];
  [[unroll]] for (uint i = 0; i < 4u; ++i) {
    [[unroll]] for (uint j = 0; j < 4u; ++j) acc[i][j] = 0.0;
  }
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    [[unroll]] for (uint i = 0; i < 4u; ++i) {
      const uint idx = tid + 256u * i;
      const uint r = idx / BK, k = idx % BK;
      const uint gk = k0 + k;
#ifdef MATMUL_W_BY_ELEMENT
      const uint gm = m0 + r;
      As[k][r] = (gm < p.M && gk < p.K) ? w_elem(wbase + gm * row_bytes, gk) : 0.0;
#endif
      // r = ty + 16i: this invocation's token row i.
      Bs[k][r] = (xrow[i] != 0xffffffffu && gk < p.K) ? x[xrow[i] + gk] : 0.0;
    }
#ifndef MATMUL_W_BY_ELEMENT
    // Block types: K is a multiple of 32, so a group of 8 is wholly inside or outside K.
    if (tid < BM * BK / 8u) {
      const uint r = tid / (BK / 8u), kg = 8u * (tid % (BK / 8u));
      const uint gm = m0 + r;
      float wv[8];
      if (gm < p.M && k0 + kg < p.K) {
        w_group8(wbase + gm * row_bytes, k0 + kg, wv);
      } else {
        [[unroll]] for (uint j = 0; j < 8u; ++j) wv[j] = 0.0;
      }
      [[unroll]] for (uint j = 0; j < 8u; ++j) As[kg + j][r] = wv[j];
    }
#endif
    barrier();
    [[unroll]] for (uint k = 0; k < BK; ++k) {
      float a[4], b[4];
      [[unroll]] for (uint i = 0; i < 4u; ++i) a[i] = As[k][tx + 16u * i];
      [[unroll]] for (uint j = 0; j < 4u; ++j) b[j] = Bs[k][ty + 16u * j];
      [[unroll]] for (uint i = 0; i < 4u; ++i) {
        [[unroll]] for (uint j = 0; j < 4u; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    barrier();
  }
  [[unroll]] for (uint i = 0; i < 4u; ++i) {
    const uint m = m0 + tx + 16u * i;
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      if (m < p.M && yrow[j] != 0xffffffffu) y[yrow[j] + m] = acc[i][j];
    }
  }
}
