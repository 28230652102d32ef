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
  uint n_splits;  // at most 64 (AttentionSplits)
  uint o_tok_stride;
} p;

shared float coef[64];  // per split: exp(m_s - M) / L, 0 for a split without keys

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint tid = gl_LocalInvocationIndex;
  const uint base = (t * p.n_q_heads + h) * p.n_splits * (D + 2u);
  // Every split's (m, l) in one round of loads (invocation s reads split s), then two
  // workgroup reductions; the accumulators are then read without any data-dependent branch, so
  // each invocation has its loads in flight together.
  float ms = -1e30, ls = 0.0;
  if (tid < p.n_splits) {
    ms = part[base + tid * (D + 2u)];
    ls = part[base + tid * (D + 2u) + 1u];
  }
  const float mx = wg_max(ls > 0.0 ? ms : -1e30);
  const float e = ls > 0.0 ? exp(ms - mx) : 0.0;
  const float total = wg_sum(ls * e);
  if (tid < p.n_splits) coef[tid] = total > 0.0 ? e / total : 0.0;
  barrier();
  for (uint d = tid; d < D; d += WG) {
    vec4 a = vec4(0.0);
    uint s = 0;
    for (; s + 3u < p.n_splits; s += 4u) {
      const uint b = base + s * (D + 2u) + 2u + d;
      a += vec4(coef[s], coef[s + 1u], coef[s + 2u], coef[s + 3u]) *
           vec4(part[b], part[b + (D + 2u)], part[b + 2u * (D + 2u)], part[b + 3u * (D + 2u)]);
    }
    for (; s < p.n_splits; ++s) a.x += coef[s] * part[base + s * (D + 2u) + 2u + d];
    o[t * p.o_tok_stride + h * D + d] = (a.x + a.y) + (a.z + a.w);
  }
}
