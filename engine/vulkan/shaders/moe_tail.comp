// moe_tail: the end of Gemma 4's MoE feed-forward block for one token per workgroup, in one
// pass (row length n, k routed slots per token, t < n_tokens):
//   m[j] = sum_{i < k, wt[t*k+i] != 0} wt[t*k+i] * down[(t*k + i) * n + j]   (expert combine;
//          slots in order, a slot of weight 0 skipped)
//   y[j] = d[j] * rd * w1[j] + m[j] * rm * w2[j]          d = dense[t*n + j] (dense MLP output)
//   h[t*n + j] = (h[t*n + j] + y[j] * ry * w[j]) * scale
// where rd, rm, ry = 1 / sqrt(mean(v^2) + eps) of d, m and y: post_ffw_norm_1(dense) +
// post_ffw_norm_2(experts), then post_ffw_norm, the residual add and the layer output scale.
// Side outputs: dense[t*n + j] = y[j], mo[t*n + j] = m[j].
// Replaces the expert combine, three rmsnorms, two adds and the scale (up to 7 dispatches). Every
// invocation reads back only the elements it wrote itself, so no barrier is needed between the
// passes beyond those inside wg_sum.
//
// Bindings:  0 h (read and write), 1 dense (read and write), 2 down (read, float[n_tokens*k][n]),
//            3 wt (read, float[n_tokens][k]), 4 mo (write), 5 w1, 6 w2, 7 w (read, float[n])
// Push:      uint n, k, n_tokens; float eps, scale
// Spec:      0 WG workgroup size (power of two)
// Grid:      n_tokens workgroups folded into (x, y) (common.glsl).
// Variants:  USE_SUBGROUP (subgroupAdd) or not (shared-memory tree) x NEXT_NORMS.
// NEXT_NORMS (next_norms.glsl): also writes nn_count normalised copies of the updated h row.
//   extra bindings 8 out (write), 9 w_0, 10 w_1 (read, float[n]); extra push uint nn_count
#version 450
#define WG_SUM2
#include "common.glsl"
#define NN_BINDING 8
#include "next_norms.glsl"

layout(binding = 0, std430) buffer HBuf { float h[]; };
layout(binding = 1, std430) buffer DBuf { float dense[]; };
layout(binding = 2, std430) readonly buffer DownBuf { float down[]; };
layout(binding = 3, std430) readonly buffer WtBuf { float wt[]; };
layout(binding = 4, std430) buffer MoBuf { float mo[]; };
layout(binding = 5, std430) readonly buffer W1Buf { float w1[]; };
layout(binding = 6, std430) readonly buffer W2Buf { float w2[]; };
layout(binding = 7, std430) readonly buffer WBuf { float w[]; };
layout(push_constant) uniform Push {
  uint n;
  uint k;
  uint n_tokens;
  float eps;
  float scale;
#ifdef NEXT_NORMS
  uint nn_count;
#endif
} p;

// Register path (n <= MAXJ * WG, the decode case with a 1024-wide workgroup): each invocation
// loads every input of its elements in one round (all k slots' expert rows unconditionally,
// weights from shared memory, and the next norms' weights too), keeps them in registers through
// the reductions (the dense and expert sums of squares in one, wg_sum2) and writes once.
// Otherwise the loop below, which reads its own writes back.
const uint MAXJ = 4u;
shared float wt_s[64];  // the token's slot weights (k <= 64)

void main() {
  const uint t = group_index();
  if (t >= p.n_tokens) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint rb = t * p.n;
  if (p.n <= MAXJ * WG && p.k <= 64u) {
    for (uint i = tid; i < p.k; i += WG) wt_s[i] = wt[t * p.k + i];
    barrier();
    float mv[MAXJ], dv[MAXJ], hv[MAXJ], w1v[MAXJ], w2v[MAXJ], wv[MAXJ];
#ifdef NEXT_NORMS
    float n0[MAXJ], n1[MAXJ];
#endif
    float sd = 0.0, sm = 0.0;
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint j = tid + u * WG;
      mv[u] = 0.0;
      dv[u] = 0.0;
      hv[u] = 0.0;
      w1v[u] = 0.0;
      w2v[u] = 0.0;
      wv[u] = 0.0;
#ifdef NEXT_NORMS
      n0[u] = 0.0;
      n1[u] = 0.0;
#endif
      if (j < p.n) {
        dv[u] = dense[rb + j];
        hv[u] = h[rb + j];
        w1v[u] = w1[j];
        w2v[u] = w2[j];
        wv[u] = w[j];
#ifdef NEXT_NORMS
        nn_load(j, p.nn_count, n0[u], n1[u]);
#endif
        float m = 0.0;
        for (uint i0 = 0; i0 < p.k; i0 += 8u) {
          float xs[8];
          [[unroll]] for (uint i = 0; i < 8u; ++i) {
            xs[i] = i0 + i < p.k ? down[(t * p.k + i0 + i) * p.n + j] : 0.0;
          }
          [[unroll]] for (uint i = 0; i < 8u; ++i) {
            const float wi = i0 + i < p.k ? wt_s[i0 + i] : 0.0;
            m += wi != 0.0 ? wi * xs[i] : 0.0;  // a slot of weight 0 is skipped (NaN-safe)
          }
        }
        mv[u] = m;
        sd += dv[u] * dv[u];
        sm += m * m;
      }
    }
    // Both sums in one reduction (one pair of barriers instead of two).
    const vec2 sdm = wg_sum2(vec2(sd, sm));
    const float rd = 1.0 / sqrt(sdm.x / float(p.n) + p.eps);
    const float rm = 1.0 / sqrt(sdm.y / float(p.n) + p.eps);
    float sy = 0.0;
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      dv[u] = dv[u] * rd * w1v[u] + mv[u] * rm * w2v[u];  // y
      sy += dv[u] * dv[u];
    }
    const float ry = 1.0 / sqrt(wg_sum(sy) / float(p.n) + p.eps);
#ifdef NEXT_NORMS
    float sh = 0.0;
#endif
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint j = tid + u * WG;
      hv[u] = (hv[u] + dv[u] * ry * wv[u]) * p.scale;
      if (j < p.n) {
        mo[rb + j] = mv[u];
        dense[rb + j] = dv[u];
        h[rb + j] = hv[u];
#ifdef NEXT_NORMS
        sh += hv[u] * hv[u];
#endif
      }
    }
#ifdef NEXT_NORMS
    const float rh = 1.0 / sqrt(wg_sum(sh) / float(p.n) + p.eps);
    [[unroll]] for (uint u = 0; u < MAXJ; ++u) {
      const uint j = tid + u * WG;
      if (j < p.n) nn_write_w(t, j, p.n, p.nn_count, hv[u], rh, n0[u], n1[u]);
    }
#ifdef NN_Q8X
    nnq_write(t, p.n, p.nn_count, hv, rh, n0, n1);
#endif
#endif
    return;
  }
  float sd = 0.0, sm = 0.0;
  for (uint j = tid; j < p.n; j += WG) {
    float m = 0.0;
    for (uint i = 0u; i < p.k; ++i) {
      const float wi = wt[t * p.k + i];
      if (wi != 0.0) m += wi * down[(t * p.k + i) * p.n + j];
    }
    mo[rb + j] = m;
    const float d = dense[rb + j];
    sd += d * d;
    sm += m * m;
  }
  const float rd = 1.0 / sqrt(wg_sum(sd) / float(p.n) + p.eps);
  const float rm = 1.0 / sqrt(wg_sum(sm) / float(p.n) + p.eps);
  float sy = 0.0;
  for (uint j = tid; j < p.n; j += WG) {
    const float y = dense[rb + j] * rd * w1[j] + mo[rb + j] * rm * w2[j];
    dense[rb + j] = y;
    sy += y * y;
  }
  const float ry = 1.0 / sqrt(wg_sum(sy) / float(p.n) + p.eps);
#ifdef NEXT_NORMS
  float sh = 0.0;
#endif
  for (uint j = tid; j < p.n; j += WG) {
    const float v = (h[rb + j] + dense[rb + j] * ry * w[j]) * p.scale;
    h[rb + j] = v;
#ifdef NEXT_NORMS
    sh += v * v;
#endif
  }
#ifdef NEXT_NORMS
  const float rh = 1.0 / sqrt(wg_sum(sh) / float(p.n) + p.eps);
  for (uint j = tid; j < p.n; j += WG) nn_write(t, j, p.n, p.nn_count, h[rb + j], rh);
#endif
}
