// norm_add: a block's output norm and the residual update in one pass. For each row r < rows
// (n elements each):
//   h[r * h_stride + k] = (h[r * h_stride + k] + x[r * x_stride + k] * inv * w[k]) * scale
//   with inv = 1 / sqrt(mean_k(x[r, k]^2) + eps)
// i.e. rmsnorm(x) * w added to the residual stream h, then the layer's output scale (1: none).
// Replaces RmsNorm + Binary(add) [+ Binary(mul)] (two or three dispatches and barriers).
//
// Bindings:  0 h (read and write, float), 1 x (read, float; must not overlap h),
//            2 w (read, float[n])
// Push:      uint n, rows, h_stride, x_stride; float eps, scale
// Spec:      0 WG workgroup size (power of two)
// Grid:      rows workgroups folded into (x, y) (common.glsl); one workgroup per row.
// Variants:  USE_SUBGROUP (subgroupAdd) or not (shared-memory tree) x NEXT_NORMS.
// NEXT_NORMS (next_norms.glsl): also writes nn_count normalised copies of the updated row.
//   extra bindings 3 out (write), 4 w_0, 5 w_1 (read, float[n]); extra push uint nn_count
#version 450
#include "common.glsl"
#define NN_BINDING 3
#include "next_norms.glsl"

layout(binding = 0, std430) buffer HBuf { float h[]; };
layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 2, std430) readonly buffer WBuf { float w[]; };
layout(push_constant) uniform Push {
  uint n;
  uint rows;
  uint h_stride;
  uint x_stride;
  float eps;
  float scale;
#ifdef NEXT_NORMS
  uint nn_count;
#endif
} p;

// Register path (n <= MAXJ * WG): every input of an invocation's elements loaded in one round,
// the next norms' weights included (no memory round trip after the last reduction).
const uint MAXJ = 4u;

void main() {
  const uint row = group_index();
  if (row >= p.rows) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint hb = row * p.h_stride, xb = row * p.x_stride;
  if (p.n <= MAXJ * WG) {
    float xv[MAXJ], hv[MAXJ], wv[MAXJ];
#ifdef NEXT_NORMS
    float n0[MAXJ], n1[MAXJ];
#endif
    float s = 0.0;
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint k = tid + u * WG;
      xv[u] = k < p.n ? x[xb + k] : 0.0;
      hv[u] = k < p.n ? h[hb + k] : 0.0;
      wv[u] = k < p.n ? w[k] : 0.0;
#ifdef NEXT_NORMS
      n0[u] = 0.0;
      n1[u] = 0.0;
      if (k < p.n) nn_load(k, p.nn_count, n0[u], n1[u]);
#endif
      s += xv[u] * xv[u];
    }
    const float inv = 1.0 / sqrt(wg_sum(s) / float(p.n) + p.eps);
#ifdef NEXT_NORMS
    float s2 = 0.0;
#endif
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint k = tid + u * WG;
      hv[u] = (hv[u] + xv[u] * inv * wv[u]) * p.scale;
      if (k < p.n) h[hb + k] = hv[u];
#ifdef NEXT_NORMS
      if (k < p.n) s2 += hv[u] * hv[u];
#endif
    }
#ifdef NEXT_NORMS
    const float inv2 = 1.0 / sqrt(wg_sum(s2) / float(p.n) + p.eps);
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint k = tid + u * WG;
      if (k < p.n) nn_write_w(row, k, p.n, p.nn_count, hv[u], inv2, n0[u], n1[u]);
    }
#ifdef NN_Q8X
    nnq_write(row, p.n, p.nn_count, hv, inv2, n0, n1);
#endif
#endif
    return;
  }
  float s = 0.0;
  for (uint k = tid; k < p.n; k += WG) s += x[xb + k] * x[xb + k];
  const float inv = 1.0 / sqrt(wg_sum(s) / float(p.n) + p.eps);
#ifdef NEXT_NORMS
  float s2 = 0.0;
#endif
  for (uint k = tid; k < p.n; k += WG) {
    const float v = (h[hb + k] + x[xb + k] * inv * w[k]) * p.scale;
    h[hb + k] = v;
#ifdef NEXT_NORMS
    s2 += v * v;
#endif
  }
#ifdef NEXT_NORMS
  // Each invocation reads back only the elements it wrote.
  const float inv2 = 1.0 / sqrt(wg_sum(s2) / float(p.n) + p.eps);
  for (uint k = tid; k < p.n; k += WG) nn_write(row, k, p.n, p.nn_count, h[hb + k], inv2);
#endif
}
