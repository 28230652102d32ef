// attn_combine: merges the partial results of attn_decode.comp's split mode (flash-decoding).
// For query token t and head h, over splits s with l_s > 0 (others held no key):
//   M = max_s m_s,  L = sum_s l_s exp(m_s - M)
//   O[t, h, d] = sum_s exp(m_s - M) acc_s[d] / L        (0 when no split held a key)
//
// Bindings:  0 part (read, float): [(t * n_q_heads + h) * n_splits + s] blocks of (D + 2) floats:
//              m, l, acc[0..D)
//            1 O (write, float): [n_tokens][o_tok_stride], head h at h * D
// Push:      uint n_q_heads, n_tokens, n_splits, o_tok_stride
// Spec:      0 WG workgroup size, 1 D head dim
// Grid:      (n_q_heads, n_tokens, 1); invocation i writes dims i, i + WG, ...
#version 450
#include "common.glsl"

layout(constant_id = 1) const uint D = 256;

layout(binding = 0, std430) readonly buffer PartBuf { float part[]; };
layout(binding = 1, std430) writeonly buffer OBuf { float o[]; };
layout(push_constant) uniform Push {
  uint n_q_heads;
  uint n_tokens;
  uint n_splits;
  uint o_tok_stride;
} p;

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint tid = gl_LocalInvocationIndex;
  const uint base = (t * p.n_q_heads + h) * p.n_splits * (D + 2u);
  float mx = -1e30;
  for (uint s = 0; s < p.n_splits; ++s) {
    const uint b = base + s * (D + 2u);
    if (part[b + 1u] > 0.0) mx = max(mx, part[b]);
  }
  float total = 0.0;
  for (uint s = 0; s < p.n_splits; ++s) {
    const uint b = base + s * (D + 2u);
    if (part[b + 1u] > 0.0) total += part[b + 1u] * exp(part[b] - mx);
  }
  const float inv = total > 0.0 ? 1.0 / total : 0.0;
  for (uint d = tid; d < D; d += WG) {
    float a = 0.0;
    for (uint s = 0; s < p.n_splits; ++s) {
      const uint b = base + s * (D + 2u);
      if (part[b + 1u] > 0.0) a += exp(part[b] - mx) * part[b + 2u + d];
    }
    o[t * p.o_tok_stride + h * D + d] = a * inv;
  }
}
