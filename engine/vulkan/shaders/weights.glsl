// Weight rows as stored in GGUF (ggml block layouts, ../shared/docs/gemma4.md §6.2), bound at
// binding 0, read-only. Exactly one of WTYPE_F32, WTYPE_F16, WTYPE_Q8_0, WTYPE_Q4_0, WTYPE_Q4_K
// is defined. 16-bit weights are read through ld16(byte address) which uses 16-bit storage when
// STORAGE16 is defined and 32-bit words otherwise (the fallback), so block types that are only
// 2-byte aligned (Q8_0: 34 bytes, Q4_0: 18 bytes) work either way.
//
//   W_BLOCK        elements per block;  W_BLOCK_BYTES  bytes per block
//   w_elem(row_byte, k)   element k of the row that starts at byte row_byte (any type)

#if !defined(WTYPE_F32) && !defined(WTYPE_F16) && !defined(WTYPE_Q8_0) && \
    !defined(WTYPE_Q4_0) && !defined(WTYPE_Q4_K)
#error "define one of WTYPE_F32, WTYPE_F16, WTYPE_Q8_0, WTYPE_Q4_0, WTYPE_Q4_K"
#endif

#if defined(WTYPE_F32)
layout(binding = 0, std430) readonly buffer WBuf { float w_f32[]; };
#define W_BLOCK 1u
#define W_BLOCK_BYTES 4u
#else
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
#endif

#if defined(WTYPE_F16)
#define W_BLOCK 1u
#define W_BLOCK_BYTES 2u
#elif defined(WTYPE_Q8_0)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 34u
#elif defined(WTYPE_Q4_0)
#define W_BLOCK 32u
#define W_BLOCK_BYTES 18u
#elif defined(WTYPE_Q4_K)
#define W_BLOCK 256u
#define W_BLOCK_BYTES 144u
// 6-bit (scale, min) of sub-block j (0..7) of the Q4_K block at byte b.
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

float w_elem(uint row_byte, uint k) {
#if defined(WTYPE_F32)
  return w_f32[row_byte / 4u + k];
#elif defined(WTYPE_F16)
  return ldf16(row_byte + 2u * k);
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
#endif
}
