// rope: NeoX-style ("rotate half") rotary embedding, in place or out of place.
// For token t at position pos[t], head h, pair i < n_rot/2 (partner i + n_rot/2):
//   a = pos[t] * theta[i]          theta[i] = base^(-2i / n_rot) / freq_factor[i], from the host
//   y[i]           = x[i] cos a - x[i + n_rot/2] sin a
//   y[i + n_rot/2] = x[i + n_rot/2] cos a + x[i] sin a
// Elements n_rot .. head_dim-1 are copied unchanged. Gemma 4 full layers use n_rot = head_dim
// with rope_freqs factors (1e30 turns a pair off); sliding layers use no factors.
//
// Precision: theta comes as an fp32 pair (hi + lo, computed in double on the host). The angle is
// formed exactly as hi*pos + error(hi*pos) + lo*pos (Veltkamp/Dekker product, `precise` so no
// contraction or reassociation) and reduced modulo 2*pi with a three-part Cody-Waite constant
// whose first two parts multiply k exactly for k < 2^16, i.e. angles below ~411 000 rad (every
// position up to 411 774 when theta <= 1, as it is for RoPE). The angle error then stays ~2e-7
// rad instead of growing as ~1e-7 * pos with a plain fp32 product.
//
// Bindings:  0 x (read, float), 1 pos (read, int[n_tokens]),
//            2 theta (read, vec2[n_rot/2]: hi, lo), 3 y (write, float; may be the same as x)
// Push:      uint head_dim, n_rot, n_heads, n_tokens, x_tok_stride, y_tok_stride
//            (heads are head_dim apart within a token)
// Spec:      0 WG workgroup size
// Grid:      (ceil(head_dim/2 / WG), n_heads, n_tokens); invocation i < n_rot/2 rotates pair i,
//            the others copy two pass-through elements each. head_dim and n_rot are even.
//
// Variant NORM (rope_norm, rope_norm_sg with USE_SUBGROUP): the per-head RMSNorm first, in the
// same dispatch (q_norm / k_norm then RoPE), i.e. x above is replaced by
//   x'[d] = x[d] / sqrt(mean_d(x[d]^2) + eps) * (has_weight ? w[d] : 1)   over the head's head_dim
// Extra binding 4 w (read, float[head_dim]); push adds float eps, uint has_weight.
// Grid (1, n_heads, n_tokens): one workgroup per head, invocations loop over the pairs.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer PBuf { int pos[]; };
layout(binding = 2, std430) readonly buffer TBuf { vec2 theta[]; };
layout(binding = 3, std430) writeonly buffer YBuf { float y[]; };
#ifdef NORM
layout(binding = 4, std430) readonly buffer NBuf { float nw[]; };
#endif
layout(push_constant) uniform Push {
  uint head_dim;
  uint n_rot;
  uint n_heads;
  uint n_tokens;
  uint x_tok_stride;
  uint y_tok_stride;
#ifdef NORM
  float eps;
  uint has_weight;
#endif
} p;

#include "rope_angle.glsl"

#ifdef NORM
void main() {
  const uint h = gl_WorkGroupID.y, t = gl_WorkGroupID.z;
  if (t >= p.n_tokens) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint xb = t * p.x_tok_stride + h * p.head_dim;
  const uint yb = t * p.y_tok_stride + h * p.head_dim;
  float ss = 0.0;
  for (uint d = tid; d < p.head_dim; d += WG) ss += x[xb + d] * x[xb + d];
  // Every read of x happens before this barrier-separated sum, so y may alias x.
  const float inv = 1.0 / sqrt(wg_sum(ss) / float(p.head_dim) + p.eps);
  const bool wt = p.has_weight != 0u;
  const uint half_rot = p.n_rot / 2u;
  for (uint i = tid; i < p.head_dim / 2u; i += WG) {
    if (i < half_rot) {
      const uint j = i + half_rot;
      const float x0 = x[xb + i] * inv * (wt ? nw[i] : 1.0);
      const float x1 = x[xb + j] * inv * (wt ? nw[j] : 1.0);
      const float a = reduced_angle(float(pos[t]), theta[i]);
      const float c = cos(a), s = sin(a);
      y[yb + i] = x0 * c - x1 * s;
      y[yb + j] = x1 * c + x0 * s;
    } else {
      const uint e = p.n_rot + 2u * (i - half_rot);
      y[yb + e] = x[xb + e] * inv * (wt ? nw[e] : 1.0);
      y[yb + e + 1u] = x[xb + e + 1u] * inv * (wt ? nw[e + 1u] : 1.0);
    }
  }
}
#else
void main() {
  const uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  const uint h = gl_WorkGroupID.y, t = gl_WorkGroupID.z;
  if (i >= p.head_dim / 2u || t >= p.n_tokens) return;
  const uint xb = t * p.x_tok_stride + h * p.head_dim;
  const uint yb = t * p.y_tok_stride + h * p.head_dim;
  const uint half_rot = p.n_rot / 2u;
  if (i < half_rot) {
    const float a = reduced_angle(float(pos[t]), theta[i]);
    const float c = cos(a), s = sin(a);
    const float x0 = x[xb + i], x1 = x[xb + i + half_rot];
    y[yb + i] = x0 * c - x1 * s;
    y[yb + i + half_rot] = x1 * c + x0 * s;
  } else {
    const uint e = p.n_rot + 2u * (i - half_rot);
    y[yb + e] = x[xb + e];
    y[yb + e + 1u] = x[xb + e + 1u];
  }
}
#endif
