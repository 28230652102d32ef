// Weight rows as stored in GGUF (ggml block layouts, ../shared/docs/gemma4.md §6.2 and
// engine/quant/blocks.h), bound at binding 0, read-only. Exactly one WTYPE_<type> is defined:
// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS.
// 16-bit weights are read through ld16(byte address) which uses 16-bit storage when STORAGE16 is
// defined and 32-bit words otherwise (the fallback); every block size is even, so 2-byte aligned
// loads work either way.
//
//   W_BLOCK        elements per block;  W_BLOCK_BYTES  bytes per block
//   w_elem(row_byte, k)        element k of the row that starts at byte row_byte (any type)
//   w_group8(row_byte, k0, w)  elements k0 .. k0+7 (k0 a multiple of 8) of that row; within a
//                              group every element shares one sub-block scale, so this decodes
//                              the scales once. The kernels' generic paths use it.

#if !defined(WTYPE_F32) && !defined(WTYPE_F16) && !defined(WTYPE_BF16) && \
    !defined(WTYPE_Q8_0) && !defined(WTYPE_Q4_0) && !defined(WTYPE_Q4_1) && \
    !defined(WTYPE_Q5_0) && !defined(WTYPE_Q5_1) && !defined(WTYPE_Q2_K) && \
    !defined(WTYPE_Q3_K) && !defined(WTYPE_Q4_K) && !defined(WTYPE_Q5_K) && \
    !defined(WTYPE_Q6_K) && !defined(WTYPE_IQ4_NL) && !defined(WTYPE_IQ4_XS)
#error "define one WTYPE_<type> (see weights.glsl)"
#endif

#if defined(WTYPE_F32)
layout(binding = 0, std430) readonly buffer WBuf { float w_f32[]; };
#define W_BLOCK 1u
#define W_BLOCK_BYTES 4u
#else
// The same bytes as 16-byte words (kernels that know their rows are 16-byte aligned).
layout(binding = 0, std430) readonly buffer WBuf4 { uvec4 w_v4[]; };
#ifdef STORAGE16
layout(binding = 0, std430) readonly buffer WBuf { uint16_t w_u16[]; };
uint ld16(uint a) { return uint(w_u16[a >> 1]); }
#else
layout(binding = 0, std430) readonly buffer WBuf { uint w_u32[]; };
uint ld16(uint a) { return (w_u32[a >> 2] >> ((a & 2u) * 8u)) & 0xffffu; }
#endif
uint ld8(uint a) { return (ld16(a & ~1u) >> ((a & 1u) * 8u)) & 0xffu; }
float ldf16(uint a) { return unpackHalf2x16(ld16(a)).x; }
int sext8(uint b) { return bitfieldExtract(int(b), 0, 8); }
// Four bytes at a 2-aligned byte address, little-endian.
uint ld32(uint a) { return ld16(a) | (ld16(a + 2u) << 16); }
// Byte i (0..3) of a word.
uint byte_of(uint v, uint i) { return (v >> (8u * i)) & 0xffu; }
#endif

#if defined(WTYPE_IQ4_NL) || defined(WTYPE_IQ4_XS)
const float kIq4nl[16] = float[16](-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0,
                                   13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
#endif

#if defined(WTYPE_F16)
#define W_BLOCK 1u
#define W_BLOCK_BYTES 2u
#elif defined(WTYPE_BF16)
#define W_BLOCK 1u
#define W_BLOCK_BYTES 2u
#elif defined(WTYPE_Q8_0)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 34u
#elif defined(WTYPE_Q4_1)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 20u
#elif defined(WTYPE_Q5_0)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 22u
#elif defined(WTYPE_Q5_1)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 24u
#elif defined(WTYPE_IQ4_NL)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 18u
#elif defined(WTYPE_Q2_K)
#define W_BLOCK 256u
#define W_BLOCK_BYTES 84u
#elif defined(WTYPE_Q3_K)
#define W_BLOCK 256u
#define W_BLOCK_BYTES 110u
#elif defined(WTYPE_Q6_K)
#define W_BLOCK 256u
#define W_BLOCK_BYTES 210u
#elif defined(WTYPE_IQ4_XS)
#define W_BLOCK 256u
#define W_BLOCK_BYTES 136u
#elif defined(WTYPE_Q4_0)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 18u
#elif defined(WTYPE_Q4_K) || defined(WTYPE_Q5_K)
#define W_BLOCK 256u
#if defined(WTYPE_Q4_K)
#define W_BLOCK_BYTES 144u
#else
#define W_BLOCK_BYTES 176u
#endif
// 6-bit (scale, min) of sub-block j (0..7) of the Q4_K/Q5_K block at byte b.
vec2 q4k_scale_min(uint b, uint j) {
  const uint s = b + 4u;  // scales[12]
  uint sc, mn;
  if (j < 4u) {
    sc = ld8(s + j) & 63u;
    mn = ld8(s + j + 4u) & 63u;
  } else {
    sc = (ld8(s + j + 4u) & 0xfu) | ((ld8(s + j - 4u) >> 6) << 4);
    mn = (ld8(s + j + 4u) >> 4) | ((ld8(s + j) >> 6) << 4);
  }
  return vec2(float(sc), float(mn));
}
#endif


#if defined(WTYPE_F32) || defined(WTYPE_F16) || defined(WTYPE_BF16)
#define W_PER_ELEMENT  // unblocked: rows of any length, read element by element
#endif

// Elements k0 .. k0+7 of the row that starts at byte row_byte; k0 % 8 == 0 (and k0 + 8 <= the
// row length for the unblocked types).
void w_group8(uint row_byte, uint k0, out float w[8]) {
#if defined(WTYPE_F32)
  [[unroll]] for (uint j = 0; j < 8u; ++j) w[j] = w_f32[row_byte / 4u + k0 + j];
#elif defined(WTYPE_F16) || defined(WTYPE_BF16)
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    const uint v = ld32(row_byte + 2u * k0 + 4u * j);
#if defined(WTYPE_F16)
    const vec2 f = unpackHalf2x16(v);
    w[2u * j] = f.x;
    w[2u * j + 1u] = f.y;
#else
    w[2u * j] = uintBitsToFloat(v << 16);
    w[2u * j + 1u] = uintBitsToFloat(v & 0xffff0000u);
#endif
  }
#elif defined(WTYPE_Q8_0)
  const uint b = row_byte + (k0 / 32u) * 34u;
  const float d = ldf16(b);
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    const uint v = ld16(b + 2u + k0 % 32u + 2u * j);
    w[2u * j] = d * float(sext8(v & 0xffu));
    w[2u * j + 1u] = d * float(sext8(v >> 8));
  }
#elif defined(WTYPE_Q4_0) || defined(WTYPE_Q4_1) || defined(WTYPE_Q5_0) || \
    defined(WTYPE_Q5_1) || defined(WTYPE_IQ4_NL)
  // 32-element blocks; byte j of qs holds element j (low nibble) and j + 16 (high nibble).
  const uint b = row_byte + (k0 / 32u) * W_BLOCK_BYTES;
  const uint e = k0 % 32u;
  const uint shift = e >= 16u ? 4u : 0u;
  const float d = ldf16(b);
#if defined(WTYPE_Q4_0) || defined(WTYPE_IQ4_NL)
  const uint qs = b + 2u;
#elif defined(WTYPE_Q4_1)
  const uint qs = b + 4u;
  const float m = ldf16(b + 2u);
#elif defined(WTYPE_Q5_0)
  const uint qs = b + 6u;
  const uint qh = ld32(b + 2u) >> e;
#else  // Q5_1
  const uint qs = b + 8u;
  const float m = ldf16(b + 2u);
  const uint qh = ld32(b + 4u) >> e;
#endif
  const uint v[2] = uint[2](ld32(qs + (e & 15u)), ld32(qs + (e & 15u) + 4u));
  [[unroll]] for (uint j = 0; j < 8u; ++j) {
    const uint q = (byte_of(v[j / 4u], j % 4u) >> shift) & 15u;
#if defined(WTYPE_Q4_0)
    w[j] = d * (float(q) - 8.0);
#elif defined(WTYPE_IQ4_NL)
    w[j] = d * kIq4nl[q];
#elif defined(WTYPE_Q4_1)
    w[j] = d * float(q) + m;
#elif defined(WTYPE_Q5_0)
    w[j] = d * (float(q | (((qh >> j) & 1u) << 4)) - 16.0);
#else
    w[j] = d * float(q | (((qh >> j) & 1u) << 4)) + m;
#endif
  }
#elif defined(WTYPE_Q2_K) || defined(WTYPE_Q3_K)
  // Output e (h = e / 128, j = e % 128 / 32, l = e % 32) takes bits 2j..2j+1 of qs[32h + l].
  const uint b = row_byte + (k0 / 256u) * W_BLOCK_BYTES;
  const uint e = k0 % 256u;
  const uint h = e / 128u, jj = (e % 128u) / 32u, l = e % 32u;
#if defined(WTYPE_Q2_K)
  const uint sc = ld8(b + e / 16u);
  const float dl = ldf16(b + 80u) * float(sc & 15u);
  const float ml = ldf16(b + 82u) * float(sc >> 4);
  const uint qs = b + 16u + 32u * h + l;
#else
  const uint s = e / 16u;
  const uint low6 = s < 8u ? (ld8(b + 96u + s) & 15u) : (ld8(b + 88u + s) >> 4);
  const uint high6 = (ld8(b + 104u + s % 4u) >> (2u * (s / 4u))) & 3u;
  const float dl = ldf16(b + 108u) * (float(low6 | (high6 << 4)) - 32.0);
  const uint qs = b + 32u + 32u * h + l;
  const uint hm[2] = uint[2](ld32(b + l), ld32(b + l + 4u));
#endif
  const uint v[2] = uint[2](ld32(qs), ld32(qs + 4u));
  [[unroll]] for (uint j = 0; j < 8u; ++j) {
    const uint q = (byte_of(v[j / 4u], j % 4u) >> (2u * jj)) & 3u;
#if defined(WTYPE_Q2_K)
    w[j] = dl * float(q) - ml;
#else
    const uint hb = (byte_of(hm[j / 4u], j % 4u) >> (4u * h + jj)) & 1u;
    w[j] = dl * (float(q + 4u * hb) - 4.0);
#endif
  }
#elif defined(WTYPE_Q4_K) || defined(WTYPE_Q5_K)
  // Chunk c of 64 uses qs[32c + l]: low nibbles are sub-block 2c, high nibbles 2c + 1.
  const uint b = row_byte + (k0 / 256u) * W_BLOCK_BYTES;
  const uint e = k0 % 256u;
  const uint c = e / 64u, hi = (e / 32u) & 1u, l = e % 32u;
  const vec2 sm = q4k_scale_min(b, 2u * c + hi);
  const float dl = ldf16(b) * sm.x, ml = ldf16(b + 2u) * sm.y;
#if defined(WTYPE_Q4_K)
  const uint qs = b + 16u + 32u * c + l;
#else
  const uint qs = b + 48u + 32u * c + l;
  const uint qh[2] = uint[2](ld32(b + 16u + l), ld32(b + 20u + l));
#endif
  const uint v[2] = uint[2](ld32(qs), ld32(qs + 4u));
  [[unroll]] for (uint j = 0; j < 8u; ++j) {
    uint q = (byte_of(v[j / 4u], j % 4u) >> (4u * hi)) & 15u;
#if defined(WTYPE_Q5_K)
    q |= ((byte_of(qh[j / 4u], j % 4u) >> (2u * c + hi)) & 1u) << 4;
#endif
    w[j] = dl * float(q) - ml;
  }
#elif defined(WTYPE_Q6_K)
  // Half h uses ql[64h ..] and qh[32h ..]; quadrant qd of 32: ql[64h + 32(qd & 1) + l] (low
  // nibble for qd < 2), bits 2qd..2qd+1 of qh[32h + l]; w = d * scales[e / 16] * (q - 32).
  const uint b = row_byte + (k0 / 256u) * 210u;
  const uint e = k0 % 256u;
  const uint h = e / 128u, qd = (e % 128u) / 32u, l = e % 32u;
  const float dl = ldf16(b + 208u) * float(sext8(ld8(b + 192u + e / 16u)));
  const uint ql = b + 64u * h + 32u * (qd & 1u) + l;
  const uint qh = b + 128u + 32u * h + l;
  const uint v[2] = uint[2](ld32(ql), ld32(ql + 4u));
  const uint u[2] = uint[2](ld32(qh), ld32(qh + 4u));
  [[unroll]] for (uint j = 0; j < 8u; ++j) {
    const uint lo = (byte_of(v[j / 4u], j % 4u) >> (qd >= 2u ? 4u : 0u)) & 15u;
    const uint hb = (byte_of(u[j / 4u], j % 4u) >> (2u * qd)) & 3u;
    w[j] = dl * (float(lo | (hb << 4)) - 32.0);
  }
#elif defined(WTYPE_IQ4_XS)
  // Sub-block k of 32 uses qs[16k ..] in Q4_0's nibble order with a 6-bit scale.
  const uint b = row_byte + (k0 / 256u) * 136u;
  const uint e = k0 % 256u;
  const uint k = e / 32u, i = e % 32u;
  const uint ls = ((ld8(b + 4u + k / 2u) >> (4u * (k % 2u))) & 15u) |
                  (((ld16(b + 2u) >> (2u * k)) & 3u) << 4);
  const float dl = ldf16(b) * (float(ls) - 32.0);
  const uint qs = b + 8u + 16u * k + (i & 15u);
  const uint shift = i >= 16u ? 4u : 0u;
  const uint v[2] = uint[2](ld32(qs), ld32(qs + 4u));
  [[unroll]] for (uint j = 0; j < 8u; ++j) {
    w[j] = dl * kIq4nl[(byte_of(v[j / 4u], j % 4u) >> shift) & 15u];
  }
#endif
}

float w_elem(uint row_byte, uint k) {
#if defined(WTYPE_F32)
  return w_f32[row_byte / 4u + k];
#elif defined(WTYPE_F16)
  return ldf16(row_byte + 2u * k);
#elif defined(WTYPE_BF16)
  return uintBitsToFloat(ld16(row_byte + 2u * k) << 16);
#elif defined(WTYPE_Q8_0)
  const uint b = row_byte + (k / 32u) * 34u;
  return ldf16(b) * float(sext8(ld8(b + 2u + k % 32u)));
#elif defined(WTYPE_Q4_0)
  const uint b = row_byte + (k / 32u) * 18u;
  const uint j = k % 32u;
  const uint q = ld8(b + 2u + (j & 15u));
  return ldf16(b) * (float(j < 16u ? (q & 0xfu) : (q >> 4)) - 8.0);
#elif defined(WTYPE_Q4_K)
  const uint b = row_byte + (k / 256u) * 144u;
  const uint e = k % 256u;
  const uint c = e / 64u;          // chunk of 64
  const uint hi = (e / 32u) & 1u;  // high nibbles: second sub-block of the chunk
  const uint l = e % 32u;
  const uint q = (ld8(b + 16u + 32u * c + l) >> (4u * hi)) & 0xfu;
  const vec2 sm = q4k_scale_min(b, 2u * c + hi);
  return ldf16(b) * sm.x * float(q) - ldf16(b + 2u) * sm.y;
#else
  // The other block types decode the element's group of 8 (w_elem is for gathers, not hot loops).
  float g[8];
  w_group8(row_byte, k & ~7u, g);
  return g[k & 7u];
#endif
}
