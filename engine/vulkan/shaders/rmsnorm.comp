// rmsnorm: for each row r < rows (n elements each):
//   y[r * y_stride + k] = x[r * x_stride + k] / sqrt(mean_k(x[r, k]^2) + eps) * (w[k] or 1)
// Per-head normalisation (q_norm/k_norm/v_norm) is the same call with rows = tokens * heads,
// n = head_dim, one weight vector shared by all heads.
//
// Bindings:  0 x (read, float), 1 w (read, float[n]; bound but unused when has_weight == 0),
//            2 y (write, float; may be the same memory as x)
// Push:      uint n, rows, x_stride, y_stride; float eps; uint has_weight
// Spec:      0 WG workgroup size (power of two)
// Grid:      rows workgroups folded into (x, y) (common.glsl); one workgroup per row.
// Variants:  USE_SUBGROUP (subgroupAdd) or not (shared-memory tree).
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer WBuf { float w[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  uint rows;
  uint x_stride;
  uint y_stride;
  float eps;
  uint has_weight;
} p;

void main() {
  const uint row = group_index();
  if (row >= p.rows) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint xb = row * p.x_stride, yb = row * p.y_stride;
  float s = 0.0;
  for (uint k = tid; k < p.n; k += WG) s += x[xb + k] * x[xb + k];
  const float scale = 1.0 / sqrt(wg_sum(s) / float(p.n) + p.eps);
  for (uint k = tid; k < p.n; k += WG) {
    const float v = x[xb + k] * scale;
    y[yb + k] = p.has_weight != 0u ? v * w[k] : v;
  }
}
