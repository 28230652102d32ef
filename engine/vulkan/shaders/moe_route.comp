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
// Method:    softmax with wg_max / wg_sum; then every expert's rank in that order (how many
//            experts come before it: one pass over shared p, no further barriers); ranks < K
//            are the chosen slots.
//
// Variant ROUTER_<F32|F16|BF16> (decode): the router matvec first, in the same workgroup, so the
// routed experts' matvecs need not wait for a separate routing dispatch:
//   logits[t, e] = sum_i W[e, i] * x[t, i] / sqrt(mean_i x[t, i]^2 + eps) * norm_w[i]
// (Kernels::MatvecNorm's formula), also written to binding 0. The normalised x is staged in
// shared memory (H <= MAXH); each subgroup takes rows e = subgroup, + subgroups, ... reading
// 16 bytes of W per lane at a time (rows 16-byte aligned: H a multiple of 8, 4 for F32); without
// subgroup arithmetic each invocation takes whole rows.
//   extra bindings 4 W (read, 16-byte words), 5 x (read, float[n_tokens][H]),
//   6 norm_w (read, float[H]); binding 0 is written; extra push uint H, float eps
#version 450
#include "common.glsl"

#ifdef ROUTER
layout(binding = 0, std430) writeonly buffer LBuf { float logits[]; };
layout(binding = 4, std430) readonly buffer RwBuf { uvec4 rw[]; };
layout(binding = 5, std430) readonly buffer XBuf { float x[]; };
layout(binding = 6, std430) readonly buffer NwBuf { float norm_w[]; };
#define MAXH 6144u
shared float xs[MAXH];
#if defined(ROUTER_F32)
#define RPER 4u  // weights per 16-byte word
#else
#define RPER 8u
#endif
// The weights of word w as floats (RPER of them, in order), dotted with xs[i0 ..].
float rdot(uvec4 w, uint i0) {
#if defined(ROUTER_F32)
  return dot(uintBitsToFloat(w), vec4(xs[i0], xs[i0 + 1u], xs[i0 + 2u], xs[i0 + 3u]));
#else
  float s = 0.0;
  [[unroll]] for (uint j = 0u; j < 4u; ++j) {
#if defined(ROUTER_BF16)
    const vec2 v = vec2(uintBitsToFloat(w[j] << 16), uintBitsToFloat(w[j] & 0xffff0000u));
#else
    const vec2 v = unpackHalf2x16(w[j]);
#endif
    s += v.x * xs[i0 + 2u * j] + v.y * xs[i0 + 2u * j + 1u];
  }
  return s;
#endif
}
#else
layout(binding = 0, std430) readonly buffer LBuf { float logits[]; };
#endif
layout(binding = 1, std430) readonly buffer SBuf { float expert_scale[]; };
layout(binding = 2, std430) writeonly buffer IBuf { int ids[]; };
layout(binding = 3, std430) writeonly buffer WBuf { float weights[]; };
layout(push_constant) uniform Push {
  uint E;
  uint K;
  uint n_tokens;
  uint has_scale;
#ifdef ROUTER
  uint H;
  float eps;
#endif
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
#ifdef ROUTER
  {
    float ss = 0.0;
    for (uint i = tid; i < p.H; i += WG) ss += x[t * p.H + i] * x[t * p.H + i];
    const float inv = 1.0 / sqrt(wg_sum(ss) / float(p.H) + p.eps);
    for (uint i = tid; i < p.H; i += WG) xs[i] = x[t * p.H + i] * inv * norm_w[i];
    barrier();
    const uint words = p.H / RPER;  // per row
#ifdef USE_SUBGROUP
    for (uint e = gl_SubgroupID; e < p.E; e += gl_NumSubgroups) {
      float d = 0.0;
      for (uint c = gl_SubgroupInvocationID; c < words; c += gl_SubgroupSize) {
        d += rdot(rw[e * words + c], c * RPER);
      }
      d = subgroupAdd(d);
      if (subgroupElect()) prob[e] = d;
    }
#else
    for (uint e = tid; e < p.E; e += WG) {
      float d = 0.0;
      for (uint c = 0u; c < words; ++c) d += rdot(rw[e * words + c], c * RPER);
      prob[e] = d;
    }
#endif
    barrier();
    for (uint e = tid; e < p.E; e += WG) logits[lb + e] = prob[e];
  }
#define LOGIT(e) prob[e]
#else
#define LOGIT(e) logits[lb + (e)]
#endif
  float mx = -1e30;
  for (uint e = tid; e < p.E; e += WG) mx = max(mx, LOGIT(e));
  mx = wg_max(mx);
  float s = 0.0;
  for (uint e = tid; e < p.E; e += WG) {
    const float v = exp(LOGIT(e) - mx);
    prob[e] = v;
    s += v;
  }
  const float inv = 1.0 / wg_sum(s);  // wg_sum ends with a barrier: prob[] is complete
  for (uint e = tid; e < p.E; e += WG) prob[e] *= inv;
  barrier();

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
    for (uint f = 0; f < p.E && rank < p.K; ++f) {
      const float pf = prob[f];
      if (pf >= 0.0 && before(pf, f, pe, e)) ++rank;
    }
    if (rank < p.K) {
      chosen_p[rank] = pe;
      chosen_i[rank] = e;
    }
  }
  barrier();
  if (tid == 0) {
    float sum = 0.0;
    for (uint k = 0; k < p.K; ++k) sum += chosen_p[k];
    for (uint k = 0; k < p.K; ++k) {
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
}
