// kv_store: writes a micro-batch's K and V rows (fp32) into an f16 KV cache kept as a ring.
// For token t < n_tokens at position p = pos[t] (tokens with p < 0 are skipped), kv head
// g < n_kv_heads and element d < D:
//   slot = p mod ring_size
//   Kc[(g * ring_size + slot) * D + d] = f16(K[t * src_tok_stride + g * D + d])     (V alike)
// i.e. the cache layout attn_decode.comp reads with kv_head_stride = ring_size * D and
// slot_stride = D. f16(): round to nearest even, |x| >= 65520 to infinity, NaN stays NaN —
// computed with integer operations (engine/quant/fp16.h's rules), so every device rounds exactly
// as the CPU backend does, whatever its float-to-half conversion would do.
//
// Bindings:  0 K (read, float), 1 V (read, float), 2 pos (read, int[n_tokens]),
//            3 Kc (write, uint: two halves per word), 4 Vc (write, uint)
// Push:      uint D, n_kv_heads, n_tokens, ring_size, src_tok_stride     (D even)
//            uint scale_base (KVQ8: the word index of the scale plane, E / 2 with E = n_kv_heads *
//            ring_size * D; unused otherwise)
// Spec:      0 WG workgroup size
// Grid:      (ceil(n_kv_heads * D / 2 / WG), n_tokens, 1); invocation i writes elements 2i, 2i+1
//            of the token's n_kv_heads * D row (one 32-bit word of each cache).
// Variant KVQ8: the q8_0 cache format of engine/vulkan/kv_format.h (D a multiple of 32);
//            grid (ceil(n_kv_heads * D / 32 / WG), n_tokens, 1), invocation i quantises elements
//            32i .. 32i + 31 (kv_q8.glsl) into 8 quant words and one scale of each cache.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer KBuf { float k[]; };
layout(binding = 1, std430) readonly buffer VBuf { float v[]; };
layout(binding = 2, std430) readonly buffer PBuf { int pos[]; };
#ifdef KVQ8
layout(binding = 3, std430) buffer KcBuf { uint kc[]; };  // atomics on the scale words
layout(binding = 4, std430) buffer VcBuf { uint vc[]; };
#else
layout(binding = 3, std430) writeonly buffer KcBuf { uint kc[]; };
layout(binding = 4, std430) writeonly buffer VcBuf { uint vc[]; };
#endif
layout(push_constant) uniform Push {
  uint D;
  uint n_kv_heads;
  uint n_tokens;
  uint ring_size;
  uint src_tok_stride;
  uint scale_base;
} p;

#include "half_bits.glsl"

#ifdef KVQ8
#include "kv_q8.glsl"

void main() {
  const uint t = gl_WorkGroupID.y;
  const uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  const uint row = p.n_kv_heads * p.D;
  if (t >= p.n_tokens || 32u * i >= row) return;
  const int ps = pos[t];
  if (ps < 0) return;
  const uint e = 32u * i;  // first element of the block; D % 32 == 0 keeps it in one head
  const uint g = e / p.D, d = e % p.D;
  const uint src = t * p.src_tok_stride + e;
  const uint dst = (g * p.ring_size + uint(ps) % p.ring_size) * p.D + d;
  float x[32];
  uint w[8];
  [[unroll]] for (uint j = 0u; j < 32u; ++j) x[j] = k[src + j];
  uint dh = kv_q8_quantize(x, w);
  [[unroll]] for (uint j = 0u; j < 8u; ++j) kc[dst / 4u + j] = w[j];
  KV_Q8_STORE_HALF(kc, 2u * p.scale_base + dst / 32u, dh);
  [[unroll]] for (uint j = 0u; j < 32u; ++j) x[j] = v[src + j];
  dh = kv_q8_quantize(x, w);
  [[unroll]] for (uint j = 0u; j < 8u; ++j) vc[dst / 4u + j] = w[j];
  KV_Q8_STORE_HALF(vc, 2u * p.scale_base + dst / 32u, dh);
}
#else
void main() {
  const uint t = gl_WorkGroupID.y;
  const uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  const uint row = p.n_kv_heads * p.D;
  if (t >= p.n_tokens || 2u * i >= row) return;
  const int ps = pos[t];
  if (ps < 0) return;
  const uint e = 2u * i;  // element within the row; D is even so e, e+1 share a head
  const uint g = e / p.D, d = e % p.D;
  const uint slot = uint(ps) % p.ring_size;
  const uint src = t * p.src_tok_stride + e;
  const uint dst = ((g * p.ring_size + slot) * p.D + d) >> 1;
  kc[dst] = half_bits(k[src]) | (half_bits(k[src + 1u]) << 16);
  vc[dst] = half_bits(v[src]) | (half_bits(v[src + 1u]) << 16);
}
#endif
