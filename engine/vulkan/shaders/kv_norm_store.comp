// kv_norm_store: the K/V tail of Gemma 4's attention input for one kv head of one token per
// workgroup, in one dispatch: K gets its per-head RMSNorm (times k_norm) and NeoX RoPE, V its
// per-head RMSNorm without weight, and both go to the f16 ring cache as kv_store.comp writes it.
// For token t at position ps = pos[t] (ps < 0: skipped), kv head g, d < D:
//   k'  = rope(k[t * src_tok_stride + g * D + .] * inv_k * kw[.])    (rope.comp's formula, n_rot)
//   v'  = v[t * src_tok_stride + g * D + .] * inv_v                  inv = 1 / sqrt(mean(^2) + eps)
//   Kc[(g * ring_size + ps % ring_size) * D + d] = half_bits(k'[d])  (Vc alike with v')
// k and v may be the same range (Gemma's K = V layers: V is the raw K projection).
// Replaces NormRope(k) + RmsNorm(v) + kv_store (and the K -> V copy).
//
// Bindings:  0 k (read, float), 1 v (read, float), 2 pos (read, int[n_tokens]),
//            3 theta (read, vec2[n_rot/2]), 4 kw (read, float[D]),
//            5 Kc (write, uint: two halves per word), 6 Vc (write, uint)
// Push:      uint D, n_rot, n_kv_heads, n_tokens, ring_size, src_tok_stride; float eps
//            uint scale_base (KVQ8 only, as kv_store.comp)
// Spec:      0 WG workgroup size, 1 MAXD (largest D; the shared staging row)
// Grid:      (n_kv_heads, n_tokens, 2): z = 0 writes K, z = 1 writes V. D even, n_rot even.
// Variant KVQ8: the q8_0 cache of engine/vulkan/kv_format.h (D a multiple of 32): invocation b
//            quantises the staged row's block b (kv_q8.glsl).
#version 450
#include "common.glsl"
#include "half_bits.glsl"
#include "rope_angle.glsl"

layout(binding = 0, std430) readonly buffer KBuf { float k[]; };
layout(binding = 1, std430) readonly buffer VBuf { float v[]; };
layout(binding = 2, std430) readonly buffer PBuf { int pos[]; };
layout(binding = 3, std430) readonly buffer TBuf { vec2 theta[]; };
layout(binding = 4, std430) readonly buffer KwBuf { float kw[]; };
#ifdef KVQ8
layout(binding = 5, std430) buffer KcBuf { uint kc[]; };  // atomics on the scale words
layout(binding = 6, std430) buffer VcBuf { uint vc[]; };
#include "kv_q8.glsl"
#else
layout(binding = 5, std430) writeonly buffer KcBuf { uint kc[]; };
layout(binding = 6, std430) writeonly buffer VcBuf { uint vc[]; };
#endif
layout(push_constant) uniform Push {
  uint D;
  uint n_rot;
  uint n_kv_heads;
  uint n_tokens;
  uint ring_size;
  uint src_tok_stride;
  float eps;
  uint scale_base;  // KVQ8: word index of the scale plane (as kv_store.comp)
} p;
layout(constant_id = 1) const uint MAXD = 512;
shared float row[MAXD];

void main() {
  const uint g = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const bool is_k = gl_WorkGroupID.z == 0u;
  if (t >= p.n_tokens || g >= p.n_kv_heads) return;  // uniform across the workgroup
  const int ps = pos[t];
  if (ps < 0) return;  // uniform
  const uint tid = gl_LocalInvocationIndex;
  const uint src = t * p.src_tok_stride + g * p.D;
  float ss = 0.0;
  for (uint d = tid; d < p.D; d += WG) {
    const float x = is_k ? k[src + d] : v[src + d];
    ss += x * x;
  }
  const float inv = 1.0 / sqrt(wg_sum(ss) / float(p.D) + p.eps);
  if (is_k) {
    const uint half_rot = p.n_rot / 2u;
    for (uint i = tid; i < p.D / 2u; i += WG) {
      if (i < half_rot) {
        const uint j = i + half_rot;
        const float x0 = k[src + i] * inv * kw[i];
        const float x1 = k[src + j] * inv * kw[j];
        const float a = reduced_angle(float(ps), theta[i]);
        const float c = cos(a), s = sin(a);
        row[i] = x0 * c - x1 * s;
        row[j] = x1 * c + x0 * s;
      } else {
        const uint e = p.n_rot + 2u * (i - half_rot);
        row[e] = k[src + e] * inv * kw[e];
        row[e + 1u] = k[src + e + 1u] * inv * kw[e + 1u];
      }
    }
  } else {
    for (uint d = tid; d < p.D; d += WG) row[d] = v[src + d] * inv;
  }
  barrier();
#ifdef KVQ8
  const uint e0 = (g * p.ring_size + uint(ps) % p.ring_size) * p.D;
  for (uint b = tid; b < p.D / 32u; b += WG) {
    float x[32];
    uint w[8];
    [[unroll]] for (uint j = 0u; j < 32u; ++j) x[j] = row[32u * b + j];
    const uint dh = kv_q8_quantize(x, w);
    const uint e = e0 + 32u * b;
    if (is_k) {
      [[unroll]] for (uint j = 0u; j < 8u; ++j) kc[e / 4u + j] = w[j];
      KV_Q8_STORE_HALF(kc, 2u * p.scale_base + e / 32u, dh);
    } else {
      [[unroll]] for (uint j = 0u; j < 8u; ++j) vc[e / 4u + j] = w[j];
      KV_Q8_STORE_HALF(vc, 2u * p.scale_base + e / 32u, dh);
    }
  }
#else
  const uint dst = ((g * p.ring_size + uint(ps) % p.ring_size) * p.D) >> 1;
  for (uint w = tid; w < p.D / 2u; w += WG) {
    const uint word = half_bits(row[2u * w]) | (half_bits(row[2u * w + 1u]) << 16);
    if (is_k) {
      kc[dst + w] = word;
    } else {
      vc[dst + w] = word;
    }
  }
#endif
}
