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
// Variants:  USE_SUBGROUP (subgroupAdd) or not (shared-memory tree).
#version 450
#include "common.glsl"

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
} p;

// Register path (n <= MAXJ * WG): every input of an invocation's elements loaded in one round.
const uint MAXJ = 4u;

void main() {
  const uint row = group_index();
  if (row >= p.rows) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint hb = row * p.h_stride, xb = row * p.x_stride;
  if (p.n <= MAXJ * WG) {
    float xv[MAXJ], hv[MAXJ], wv[MAXJ];
    float s = 0.0;
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint k = tid + u * WG;
      xv[u] = k < p.n ? x[xb + k] : 0.0;
      hv[u] = k < p.n ? h[hb + k] : 0.0;
      wv[u] = k < p.n ? w[k] : 0.0;
      s += xv[u] * xv[u];
    }
    const float inv = 1.0 / sqrt(wg_sum(s) / float(p.n) + p.eps);
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint k = tid + u * WG;
      if (k < p.n) h[hb + k] = (hv[u] + xv[u] * inv * wv[u]) * p.scale;
    }
    return;
  }
  float s = 0.0;
  for (uint k = tid; k < p.n; k += WG) s += x[xb + k] * x[xb + k];
  const float inv = 1.0 / sqrt(wg_sum(s) / float(p.n) + p.eps);
  for (uint k = tid; k < p.n; k += WG) {
    h[hb + k] = (h[hb + k] + x[xb + k] * inv * w[k]) * p.scale;
  }
}
