// moe_route: mixture-of-experts routing for one token per workgroup.
//   p = softmax(logits[t, 0..E))                                   (fp32)
//   S = the K experts with the largest p, largest first; equal p: lower expert id first
//   ids[t, i] = S[i],  weights[t, i] = p[S[i]] / sum_{j in S} p[j] * (expert_scale[S[i]] or 1)
// (Gemma 4 26B-A4B: E = 128, K = 8, per-expert scale from ffn_down_exps.scale.)
// Logits with NaN leave slots without a candidate: those get id -1 and weight 0, so a consumer
// skips them; nothing is ever indexed out of bounds.
//
// Bindings:  0 logits (read, float[n_tokens][E]), 1 expert_scale (read, float[E]; bound but
//            unused when has_scale == 0), 2 ids (write, int[n_tokens][K]),
//            3 weights (write, float[n_tokens][K])
// Push:      uint E, K, n_tokens, has_scale        (E <= 1024, K <= E, K <= 64)
// Spec:      0 WG workgroup size (power of two)
// Grid:      (n_tokens, 1, 1)
// Method:    moe_route.glsl (shared with the router matvec that routes in its last workgroup).
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer LBuf { float logits[]; };
layout(binding = 1, std430) readonly buffer SBuf { float route_scale[]; };
layout(binding = 2, std430) writeonly buffer IBuf { int route_ids[]; };
layout(binding = 3, std430) writeonly buffer WBuf { float route_weights[]; };
layout(push_constant) uniform Push {
  uint E;
  uint K;
  uint n_tokens;
  uint has_scale;
} p;

#define ROUTE_LOGIT(i) logits[i]
#include "moe_route.glsl"

void main() {
  const uint t = gl_WorkGroupID.x;
  if (t >= p.n_tokens) return;
  moe_route_token(t, t * p.E, p.E, p.K, p.has_scale != 0u);
}
