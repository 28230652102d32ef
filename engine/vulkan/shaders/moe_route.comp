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
// Method:    softmax with wg_max / wg_sum (each logit loaded once); then every expert's rank in
//            that order (how many experts come before it: one pass over shared p, eight
//            comparisons per step, no early exit); ranks < K are the chosen slots; slot i's
//            weight is then written by invocation i (its scale load in parallel with the others).
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer LBuf { float logits[]; };
layout(binding = 1, std430) readonly buffer SBuf { float expert_scale[]; };
layout(binding = 2, std430) writeonly buffer IBuf { int ids[]; };
layout(binding = 3, std430) writeonly buffer WBuf { float weights[]; };
layout(push_constant) uniform Push {
  uint E;
  uint K;
  uint n_tokens;
  uint has_scale;
} p;

shared float prob[1024];
shared float chosen_p[64];
shared uint chosen_i[64];

// True when (va, ia) ranks before (vb, ib).
bool before(float va, uint ia, float vb, uint ib) { return va > vb || (va == vb && ia < ib); }

void main() {
  const uint t = gl_WorkGroupID.x;
  if (t >= p.n_tokens) return;
  const uint tid = gl_LocalInvocationIndex;
  const uint lb = t * p.E;
  // Each invocation's logits in registers (E <= 1024 logits over the workgroup).
  const uint PER = (1024u + WG - 1u) / WG;
  float lv[PER];
  float mx = -1e30;
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    lv[u] = e < p.E ? logits[lb + e] : -1e30;
    mx = max(mx, lv[u]);
  }
  mx = wg_max(mx);
  float s = 0.0;
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    if (e < p.E) {
      lv[u] = exp(lv[u] - mx);
      s += lv[u];
    }
  }
  const float inv = 1.0 / wg_sum(s);
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    if (e < p.E) prob[e] = lv[u] * inv;
  }
  for (uint k = tid; k < p.K; k += WG) {
    chosen_p[k] = 0.0;
    chosen_i[k] = 0xffffffffu;
  }
  barrier();
  // NaN probabilities (from NaN logits) fail p >= 0 and are never chosen.
  for (uint e = tid; e < p.E; e += WG) {
    const float pe = prob[e];
    if (!(pe >= 0.0)) continue;
    uint rank = 0;
    uint f = 0;
    for (; f + 7u < p.E; f += 8u) {
      [[unroll]] for (uint u = 0; u < 8u; ++u) {
        const float pf = prob[f + u];
        rank += pf >= 0.0 && before(pf, f + u, pe, e) ? 1u : 0u;
      }
    }
    for (; f < p.E; ++f) {
      const float pf = prob[f];
      rank += pf >= 0.0 && before(pf, f, pe, e) ? 1u : 0u;
    }
    if (rank < p.K) {
      chosen_p[rank] = pe;
      chosen_i[rank] = e;
    }
  }
  barrier();
  float sum = 0.0;
  for (uint k = 0; k < p.K; ++k) sum += chosen_p[k];
  for (uint k = tid; k < p.K; k += WG) {
    const uint e = chosen_i[k];
    if (e >= p.E || !(sum > 0.0)) {
      ids[t * p.K + k] = -1;
      weights[t * p.K + k] = 0.0;
      continue;
    }
    float w = chosen_p[k] / sum;
    if (p.has_scale != 0u) w *= expert_scale[e];
    ids[t * p.K + k] = int(e);
    weights[t * p.K + k] = w;
  }
}
