// matvec: dequantising matrix-vector product (decode). For each vector v and row r:
//   y[v * y_stride + r] = sum_k W[r, k] * x[v * x_stride + k],   k < in
// W is `out` rows of `in` elements in a GGUF weight type (weights.glsl), rows back to back.
//
// Bindings:  0 W  (read)  weight rows, type per variant
//            1 x  (read)  float, n_vecs vectors of x_stride elements
//            2 y  (write) float, n_vecs vectors of y_stride elements
// Push:      uint in, out, x_stride, y_stride
// Spec:      0 WG     workgroup size (power of two)
//            1 NROWS  rows per workgroup
// Grid:      ceil(out / NROWS) workgroups folded into (x, y) (see common.glsl), z = n_vecs.
// Variants:  WTYPE_{F32,F16,Q8_0,Q4_0,Q4_K} x USE_SUBGROUP (subgroupAdd vs shared-memory tree)
//            x STORAGE16 (16-bit loads vs 32-bit words; not for F32).
// Each invocation accumulates a strided share of the row in fp32 (a few elements of one block at
// a time), then the workgroup reduces; invocation 0 writes.
#version 450
#include "common.glsl"
#include "weights.glsl"

layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint in_;
  uint out_;
  uint x_stride;
  uint y_stride;
} p;
layout(constant_id = 1) const uint NROWS = 1;

float row_dot(uint rb, uint xb, uint tid) {
  const uint nb = p.in_ / W_BLOCK;
  float a = 0.0;
#if defined(WTYPE_F32)
  for (uint k = tid; k < p.in_; k += WG) a += w_f32[rb / 4u + k] * x[xb + k];
#elif defined(WTYPE_F16)
  for (uint k = tid; k < p.in_; k += WG) a += ldf16(rb + 2u * k) * x[xb + k];
#elif defined(WTYPE_Q8_0)
  // 4 items per block, 8 weights each.
  for (uint it = tid; it < nb * 4u; it += WG) {
    const uint blk = it >> 2, part = it & 3u;
    const uint b = rb + blk * 34u;
    const uint xo = xb + blk * 32u + part * 8u;
    const uint qa = b + 2u + part * 8u;
    float s = 0.0;
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      const uint v = ld16(qa + 2u * j);
      s += float(sext8(v & 0xffu)) * x[xo + 2u * j] + float(sext8(v >> 8)) * x[xo + 2u * j + 1u];
    }
    a += ldf16(b) * s;
  }
#elif defined(WTYPE_Q4_0)
  // 4 items per block: bytes qs[4*part .. +4] hold weights 4*part+i (low nibbles) and
  // 16+4*part+i (high nibbles).
  for (uint it = tid; it < nb * 4u; it += WG) {
    const uint blk = it >> 2, part = it & 3u;
    const uint b = rb + blk * 18u;
    const uint xo = xb + blk * 32u + part * 4u;
    float s = 0.0;
    [[unroll]] for (uint j = 0; j < 2u; ++j) {
      const uint v = ld16(b + 2u + part * 4u + 2u * j);
      const uint b0 = v & 0xffu, b1 = v >> 8;
      s += (float(b0 & 15u) - 8.0) * x[xo + 2u * j] + (float(b1 & 15u) - 8.0) * x[xo + 2u * j + 1u] +
           (float(b0 >> 4) - 8.0) * x[xo + 16u + 2u * j] +
           (float(b1 >> 4) - 8.0) * x[xo + 16u + 2u * j + 1u];
    }
    a += ldf16(b) * s;
  }
#elif defined(WTYPE_Q4_K)
  // 16 items per block: chunk c (64 weights) and quarter q: bytes qs[32c + 8q .. +8] hold weights
  // 64c + 8q + i (low nibbles, sub-block 2c) and 64c + 32 + 8q + i (high, sub-block 2c+1).
  for (uint it = tid; it < nb * 16u; it += WG) {
    const uint blk = it >> 4, part = it & 15u;
    const uint c = part >> 2, q = part & 3u;
    const uint b = rb + blk * 144u;
    const vec2 lo = q4k_scale_min(b, 2u * c);
    const vec2 hi = q4k_scale_min(b, 2u * c + 1u);
    const uint xo = xb + blk * 256u + 64u * c + 8u * q;
    float slo = 0.0, shi = 0.0, xlo = 0.0, xhi = 0.0;
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      const uint v = ld16(b + 16u + 32u * c + 8u * q + 2u * j);
      const uint b0 = v & 0xffu, b1 = v >> 8;
      const float x0 = x[xo + 2u * j], x1 = x[xo + 2u * j + 1u];
      const float x2 = x[xo + 32u + 2u * j], x3 = x[xo + 32u + 2u * j + 1u];
      slo += float(b0 & 15u) * x0 + float(b1 & 15u) * x1;
      shi += float(b0 >> 4) * x2 + float(b1 >> 4) * x3;
      xlo += x0 + x1;
      xhi += x2 + x3;
    }
    a += ldf16(b) * (lo.x * slo + hi.x * shi) - ldf16(b + 2u) * (lo.y * xlo + hi.y * xhi);
  }
#endif
  return a;
}

void main() {
  const uint row0 = group_index() * NROWS;
  if (row0 >= p.out_) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint vec = gl_WorkGroupID.z;
  const uint row_bytes = (p.in_ / W_BLOCK) * W_BLOCK_BYTES;
  for (uint r = 0; r < NROWS; ++r) {
    const uint row = row0 + r;
    const float a = row < p.out_ ? row_dot(row * row_bytes, vec * p.x_stride, tid) : 0.0;
    const float t = wg_sum(a);
    if (tid == 0 && row < p.out_) y[vec * p.y_stride + row] = t;
  }
}
