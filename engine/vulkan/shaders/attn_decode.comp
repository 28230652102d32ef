// attn_decode: attention of a few query tokens over an f16 KV cache (decode; small prefill
// batches), one workgroup per (query head, query token), with an online (streaming) softmax in
// fp32. Sliding-window and causal masks over a ring cache; grouped-query heads.
//
// For query token t at position p = pos[t] and query head h (kv head g = h / (n_q_heads /
// n_kv_heads)), over keys at absolute positions j in [lo, p] where
//   lo = max(kv_first, window > 0 ? p - window + 1 : 0)
// (kv_first: the oldest position still held in the cache), stored in slot j % ring_size:
//   s_j = scale * dot(Q[t, h, :], K[g, slot(j), :])
//   O[t, h, :] = sum_j softmax_j(s) V[g, slot(j), :]
// A query with no key in range (p < lo, e.g. a negative position) gets zeros. Slots are always
// taken modulo ring_size, so any pos value stays inside the cache.
//
// Split mode (flash-decoding), n_splits > 1: the key range of each query is cut into n_splits
// contiguous slices, one workgroup each (grid z), which write unnormalised partial results
//   part[((t * n_q_heads + h) * n_splits + split) * (D + 2) + {0: max m, 1: sum l, 2..: acc}]
// for attn_combine.comp to merge. With n_splits == 1 the workgroup writes O directly.
//
// Bindings:  0 Q (read, float)   [n_tokens][q_tok_stride], head h at h * D
//            1 K (read, f16)     element (g, slot, d) at g * kv_head_stride + slot * slot_stride + d
//            2 V (read, f16)     same layout as K
//            3 pos (read, int[n_tokens])
//            4 O (write, float)  [n_tokens][o_tok_stride], head h at h * D (n_splits == 1)
//            5 part (write, float) partial results (n_splits > 1; bound but unused otherwise)
// Push:      uint n_q_heads, n_kv_heads, n_tokens, ring_size, kv_first, window, q_tok_stride,
//            o_tok_stride, kv_head_stride, slot_stride; float scale; uint n_splits, scale_base
// Spec:      0 WG workgroup size (power of two), 1 D head dim, 2 KVEC: 1 when every K row starts
//            at a multiple of 8 elements of a 16-byte aligned binding (keys then read 16 bytes
//            at a time; 0 is always correct)
// Grid:      (n_q_heads, n_tokens, n_splits)
// Method:    keys in chunks of WG: invocation i scores key (chunk + i) over all D dims; the
//            workgroup takes the chunk's max, rescales the running sum and accumulators, and each
//            invocation accumulates output dims i, i + WG, ... from V (reads coalesced in d).
// Variants:  STORAGE16 (f16 loads) or 32-bit words; USE_SUBGROUP for the max/sum reductions;
//            KVQ8: K and V in the q8_0 cache format of engine/vulkan/kv_format.h (scale plane at
//            word scale_base of each binding; KVEC then means rows start at multiples of 32
//            elements of a 16-byte aligned binding).
#version 450
#include "common.glsl"

layout(constant_id = 1) const uint D = 256;
layout(constant_id = 2) const uint KVEC = 0;
layout(binding = 1, std430) readonly buffer KBuf4 { uvec4 k4[]; };  // K again (KVEC)

layout(binding = 3, std430) readonly buffer PBuf { int pos[]; };
#include "attn_decode_common.glsl"

layout(binding = 0, std430) readonly buffer QBuf { float q[]; };
#if defined(KVQ8)
// q8_0 cache (engine/vulkan/kv_format.h): quants four per word, then the f16 scale plane at word
// p.scale_base.
layout(binding = 1, std430) readonly buffer KBuf { uint kq[]; };
layout(binding = 2, std430) readonly buffer VBuf { uint vq[]; };
float q8_scale(uint w, uint e) { return unpackHalf2x16(w)[(e >> 5) & 1u]; }
float ldk(uint e) {
  return float(bitfieldExtract(int(kq[e >> 2]), int((e & 3u) * 8u), 8)) *
         q8_scale(kq[p.scale_base + (e >> 6)], e);
}
float ldv(uint e) {
  return float(bitfieldExtract(int(vq[e >> 2]), int((e & 3u) * 8u), 8)) *
         q8_scale(vq[p.scale_base + (e >> 6)], e);
}
// The four int8 of a word as floats (byte j is element j).
vec4 q8_unpack(uint w) {
  return vec4(ivec4(int(w) << 24, int(w) << 16, int(w) << 8, int(w)) >> 24);
}
#elif defined(STORAGE16)
layout(binding = 1, std430) readonly buffer KBuf { float16_t k16[]; };
layout(binding = 2, std430) readonly buffer VBuf { float16_t v16[]; };
float ldk(uint e) { return float(k16[e]); }
float ldv(uint e) { return float(v16[e]); }
#else
layout(binding = 1, std430) readonly buffer KBuf { uint k32[]; };
layout(binding = 2, std430) readonly buffer VBuf { uint v32[]; };
float ldk(uint e) { return unpackHalf2x16(k32[e >> 1])[e & 1u]; }
float ldv(uint e) { return unpackHalf2x16(v32[e >> 1])[e & 1u]; }
#endif
layout(binding = 4, std430) writeonly buffer OBuf { float o[]; };
layout(binding = 5, std430) writeonly buffer PartBuf { float part[]; };

shared float q_s[D];
shared vec4 q4_s[(D + 3) / 4];
shared float prob[WG];

// Output dims owned by one invocation: d = tid + WG * i.
#define NACC ((D + WG - 1) / WG)

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint tid = gl_LocalInvocationIndex;
  const uint g = h / (p.n_q_heads / p.n_kv_heads);
  const uint qb = t * p.q_tok_stride + h * D;
  const uint ob = t * p.o_tok_stride + h * D;
  const uint kvb = g * p.kv_head_stride;

  for (uint d = tid; d < D; d += WG) q_s[d] = q[qb + d];
  barrier();
  for (uint d = tid; d < D / 4u; d += WG) {
    q4_s[d] = vec4(q_s[4u * d], q_s[4u * d + 1u], q_s[4u * d + 2u], q_s[4u * d + 3u]);
  }
  barrier();

  const uint split = gl_WorkGroupID.z;
  int lo, hi;
  decode_key_range(t, split, lo, hi);

  float m = -1e30;  // running max (finite: no inf arithmetic on any driver)
  float l = 0.0;         // running sum of exp(s - m)
  float acc[NACC];
  [[unroll]] for (uint i = 0; i < NACC; ++i) acc[i] = 0.0;

  for (int c0 = lo; c0 <= hi; c0 += int(WG)) {
    const int j = c0 + int(tid);
    float s = -1e30;
    if (j <= hi) {
      const uint kb = kvb + (uint(j) % p.ring_size) * p.slot_stride;
      float dot = 0.0;
#ifdef KVQ8
      if (KVEC != 0u) {
        // One thread per key: per block of 32, its scale and two 16-byte loads of quants.
        for (uint d = 0; d < D; d += 32u) {
          const uvec4 w0 = k4[(kb + d) >> 4], w1 = k4[((kb + d) >> 4) + 1u];
          const vec4 a = q8_unpack(w0.x) * q4_s[d >> 2] + q8_unpack(w0.y) * q4_s[(d >> 2) + 1u] +
                         q8_unpack(w0.z) * q4_s[(d >> 2) + 2u] + q8_unpack(w0.w) * q4_s[(d >> 2) + 3u];
          const vec4 b = q8_unpack(w1.x) * q4_s[(d >> 2) + 4u] +
                         q8_unpack(w1.y) * q4_s[(d >> 2) + 5u] +
                         q8_unpack(w1.z) * q4_s[(d >> 2) + 6u] + q8_unpack(w1.w) * q4_s[(d >> 2) + 7u];
          const vec4 t = a + b;
          dot += q8_scale(kq[p.scale_base + ((kb + d) >> 6)], kb + d) * ((t.x + t.y) + (t.z + t.w));
        }
      } else {
        for (uint d = 0; d < D; ++d) dot += q_s[d] * ldk(kb + d);
      }
#else
      if (KVEC != 0u) {
        // One thread per key: 16-byte loads of its row, four independent partial sums.
        vec4 a = vec4(0.0), b = vec4(0.0);
        for (uint d = 0; d < D; d += 8u) {
          const uvec4 w = k4[(kb + d) >> 3];
          a += vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)) * q4_s[d >> 2];
          b += vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)) * q4_s[(d >> 2) + 1u];
        }
        const vec4 t = a + b;
        dot = (t.x + t.y) + (t.z + t.w);
      } else {
        for (uint d = 0; d < D; ++d) dot += q_s[d] * ldk(kb + d);
      }
#endif
      s = dot * p.scale;
    }
    const float m_new = max(m, wg_max(s));
    const float e = j <= hi ? exp(s - m_new) : 0.0;
    const float alpha = exp(m - m_new);  // 0 on the first chunk
    prob[tid] = e;
    l = l * alpha + wg_sum(e);
    m = m_new;
    // wg_sum ended with a barrier, so every prob[] is visible.
    const uint n = uint(min(int(WG), hi - c0 + 1));
    [[unroll]] for (uint i = 0; i < NACC; ++i) {
      const uint d = tid + WG * i;
      if (d < D) {
        // Four independent sums: four V loads in flight instead of one dependent chain.
        vec4 a = vec4(acc[i] * alpha, 0.0, 0.0, 0.0);
        uint c = 0;
        for (; c + 3u < n; c += 4u) {
          const uint s0 = uint(c0 + int(c));
          a += vec4(prob[c], prob[c + 1u], prob[c + 2u], prob[c + 3u]) *
               vec4(ldv(kvb + (s0 % p.ring_size) * p.slot_stride + d),
                    ldv(kvb + ((s0 + 1u) % p.ring_size) * p.slot_stride + d),
                    ldv(kvb + ((s0 + 2u) % p.ring_size) * p.slot_stride + d),
                    ldv(kvb + ((s0 + 3u) % p.ring_size) * p.slot_stride + d));
        }
        for (; c < n; ++c) {
          a.x += prob[c] * ldv(kvb + (uint(c0 + int(c)) % p.ring_size) * p.slot_stride + d);
        }
        acc[i] = (a.x + a.y) + (a.z + a.w);
      }
    }
    barrier();  // prob[] is rewritten by the next chunk
  }
  if (p.n_splits > 1u) {
    const uint pb = ((t * p.n_q_heads + h) * p.n_splits + split) * (D + 2u);
    if (tid == 0) {
      part[pb] = m;
      part[pb + 1u] = l;
    }
    [[unroll]] for (uint i = 0; i < NACC; ++i) {
      const uint d = tid + WG * i;
      if (d < D) part[pb + 2u + d] = acc[i];
    }
    return;
  }
  const float inv = l > 0.0 ? 1.0 / l : 0.0;
  [[unroll]] for (uint i = 0; i < NACC; ++i) {
    const uint d = tid + WG * i;
    if (d < D) o[ob + d] = acc[i] * inv;
  }
}
