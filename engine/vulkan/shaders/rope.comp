// rope: NeoX-style ("rotate half") rotary embedding, in place or out of place.
// For token t at position pos[t], head h, pair i < n_rot/2 (partner i + n_rot/2):
//   a = pos[t] * base^(-2i / n_rot) / (freq_factors[i] or 1)
//   y[i]          = x[i] cos a - x[i + n_rot/2] sin a
//   y[i + n_rot/2] = x[i + n_rot/2] cos a + x[i] sin a
// Elements n_rot .. head_dim-1 are copied unchanged. Gemma 4 full layers use n_rot = head_dim
// with rope_freqs factors (1e30 turns a pair off); sliding layers use no factors.
//
// Bindings:  0 x (read, float), 1 pos (read, int[n_tokens]),
//            2 freq_factors (read, float[n_rot/2]; bound but unused when has_ff == 0),
//            3 y (write, float; may be the same memory as x)
// Push:      uint head_dim, n_rot, n_heads, n_tokens, x_tok_stride, y_tok_stride;
//            float base; uint has_ff        (heads are head_dim apart within a token)
// Spec:      0 WG workgroup size
// Grid:      (ceil(head_dim/2 / WG), n_heads, n_tokens); invocation i < n_rot/2 rotates pair i,
//            the others copy two pass-through elements each. head_dim and n_rot are even.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer PBuf { int pos[]; };
layout(binding = 2, std430) readonly buffer FBuf { float ff[]; };
layout(binding = 3, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint head_dim;
  uint n_rot;
  uint n_heads;
  uint n_tokens;
  uint x_tok_stride;
  uint y_tok_stride;
  float base;
  uint has_ff;
} p;

void main() {
  const uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  const uint h = gl_WorkGroupID.y, t = gl_WorkGroupID.z;
  if (i >= p.head_dim / 2u || t >= p.n_tokens) return;
  const uint xb = t * p.x_tok_stride + h * p.head_dim;
  const uint yb = t * p.y_tok_stride + h * p.head_dim;
  const uint half_rot = p.n_rot / 2u;
  if (i < half_rot) {
    float a = float(pos[t]) * pow(p.base, -2.0 * float(i) / float(p.n_rot));
    if (p.has_ff != 0u) a /= ff[i];
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
