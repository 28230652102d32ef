// The per-row inner products of the decode matvec kernel (matvec.comp): one "item" of a weight
// row against its x values, for the types with their own loops. Include after weights.glsl; the
// caller loads the x values and sums the items.

#ifdef IDOT
// Integer dot products (SPV_KHR_integer_dot_product; the device must have
// shaderIntegerDotProduct enabled): the caller rounds an item's x values to int8 with one scale
// (max|x| / 127), and each group of four weights meets four of them in one instruction. Rounding
// x to 8 bits is what the CPU backend's integer kernels do too (engine/cpu/qdot.h, one scale per
// 32 values); here one scale covers an item's 8 to 32 values.
#extension GL_EXT_spirv_intrinsics : require
// OpSDotKHR (4450) / OpSUDotKHR (4452) with the packed 4 x 8-bit format (literal 0): the sum of
// a's signed bytes times b's signed / unsigned bytes. Capabilities DotProductKHR (6019),
// DotProductInput4x8BitPackedKHR (6018).
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450)
int sdot4x8(uint a, uint b, spirv_literal int packed_format);
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4452)
int sudot4x8(uint a, uint b, spirv_literal int packed_format);

// Four floats times inv_scale, rounded to int8 bytes: v + 1.5 * 2^23 has round(v) in the low
// bits of its mantissa (two's complement in the low byte) for |v| < 2^22.
uint q8_pack4(vec4 v, float inv_scale) {
  const uvec4 b = floatBitsToUint(v * inv_scale + 12582912.0) & 0xffu;
  return b.x | (b.y << 8) | (b.z << 16) | (b.w << 24);
}

// 127 / (the largest |x| of an item, from the componentwise maxima m), or 0 for an all-zero item.
float q8_inv_scale(vec4 m) {
  const float amax = max(max(m.x, m.y), max(m.z, m.w));
  return amax > 0.0 ? 127.0 / amax : 0.0;
}
// The x units of one int8 step: 1 / inv (0 for an all-zero item).
float q8_step(float inv) {
  return inv > 0.0 ? 1.0 / inv : 0.0;
}
// Eight x values as two words of int8 with one scale; returns the step.
float q8_quantize8(vec4 a, vec4 b, out uvec2 xp) {
  const float inv = q8_inv_scale(max(abs(a), abs(b)));
  xp = uvec2(q8_pack4(a, inv), q8_pack4(b, inv));
  return q8_step(inv);
}
#endif

#if defined(WTYPE_Q4_K)
// Q4_K as 16-byte words: item u < 8 of the block whose first word (d, dmin, scales[12]) is
// w_v4[b4]. Word u (chunk c = u / 2, half h = u % 2) holds weights 64c + 16h + i (low nibbles,
// sub-block 2c) and 64c + 32 + 16h + i (high nibbles, sub-block 2c + 1), i < 16; xl / xh are
// those x values, sum_l / sum_h their sums.
// 6-bit scale and min of sub-blocks 2c (lo) and 2c + 1 (hi) from the block's first word; scale
// bytes s[0..11] are hd.y, hd.z, hd.w little-endian.
void q4k_scales(uvec4 hd, uint c, out uint sc_lo, out uint mn_lo, out uint sc_hi,
                out uint mn_hi) {
  if (c < 2u) {  // sub-blocks 0..3: s[j] & 63, s[j + 4] & 63
    const uint sh = 16u * c;
    sc_lo = (hd.y >> sh) & 63u;
    sc_hi = (hd.y >> (sh + 8u)) & 63u;
    mn_lo = (hd.z >> sh) & 63u;
    mn_hi = (hd.z >> (sh + 8u)) & 63u;
  } else {  // sub-blocks 4..7: low nibble of s[j + 4] | top bits of s[j - 4] (and s[j])
    const uint sh = 16u * (c - 2u);
    const uint a = hd.w >> sh, bs = hd.y >> sh, bm = hd.z >> sh;
    sc_lo = (a & 15u) | (((bs >> 6) & 3u) << 4);
    sc_hi = ((a >> 8) & 15u) | (((bs >> 14) & 3u) << 4);
    mn_lo = ((a >> 4) & 15u) | (((bm >> 6) & 3u) << 4);
    mn_hi = ((a >> 12) & 15u) | (((bm >> 14) & 3u) << 4);
  }
}
// q4k_item16_words: the same item from words already loaded (hd = w_v4[b4], q = w_v4[b4 + 1 + u]).
float q4k_item16_words(uvec4 hd, uvec4 q, uint u, vec4 xl[4], vec4 xh[4], float sum_l,
                       float sum_h) {
  const uint c = u >> 1;
  uint sc_lo, mn_lo, sc_hi, mn_hi;
  q4k_scales(hd, c, sc_lo, mn_lo, sc_hi, mn_hi);
  // Nibbles to floats without int-to-float conversions (a slow instruction on some GPUs): the
  // bits 0x4B000000 | v are the float 2^23 + v, exact for v < 2^23.
  float slo = 0.0, shi = 0.0;
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    const uvec4 bytes = (uvec4(q[j]) >> uvec4(0u, 8u, 16u, 24u)) & 0xffu;
    const vec4 lo = uintBitsToFloat((bytes & 15u) | 0x4B000000u) - 8388608.0;
    const vec4 hi = uintBitsToFloat((bytes >> 4) | 0x4B000000u) - 8388608.0;
    slo += dot(lo, xl[j]);
    shi += dot(hi, xh[j]);
  }
  const vec2 dm = unpackHalf2x16(hd.x);
  return dm.x * (float(sc_lo) * slo + float(sc_hi) * shi) -
         dm.y * (float(mn_lo) * sum_l + float(mn_hi) * sum_h);
}
float q4k_item16(uint b4, uint u, vec4 xl[4], vec4 xh[4], float sum_l, float sum_h) {
  return q4k_item16_words(w_v4[b4], w_v4[b4 + 1u + u], u, xl, xh, sum_l, sum_h);
}
#ifdef IDOT
// The Q4_K item with integer dot products: each group of four nibbles meets four int8 x values in
// one OpSUDotKHR; the row's min term still uses the float sums of x.
//
// q4k_quantize_x: the item's x values as int8 (xlq / xhq: the words q4k_item16_idot pairs with
// the low and high nibbles); returns the step that turns integer sums back into x units.
float q4k_quantize_x(vec4 xl[4], vec4 xh[4], out uvec4 xlq, out uvec4 xhq) {
  vec4 m = max(abs(xl[0]), abs(xh[0]));
  [[unroll]] for (uint j = 1; j < 4u; ++j) m = max(m, max(abs(xl[j]), abs(xh[j])));
  const float inv = q8_inv_scale(m);
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    xlq[j] = q8_pack4(xl[j], inv);
    xhq[j] = q8_pack4(xh[j], inv);
  }
  return q8_step(inv);
}

// From words already loaded (hd = w_v4[b4], q = w_v4[b4 + 1 + u]).
float q4k_item16_idot_words(uvec4 hd, uvec4 q, uint u, uvec4 xlq, uvec4 xhq, float x_scale,
                            float sum_l, float sum_h) {
  const uint c = u >> 1;
  uint sc_lo, mn_lo, sc_hi, mn_hi;
  q4k_scales(hd, c, sc_lo, mn_lo, sc_hi, mn_hi);
  int il = 0, ih = 0;
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    il += sudot4x8(xlq[j], q[j] & 0x0f0f0f0fu, 0);
    ih += sudot4x8(xhq[j], (q[j] >> 4) & 0x0f0f0f0fu, 0);
  }
  const vec2 dm = unpackHalf2x16(hd.x);
  return dm.x * x_scale * float(int(sc_lo) * il + int(sc_hi) * ih) -
         dm.y * (float(mn_lo) * sum_l + float(mn_hi) * sum_h);
}
float q4k_item16_idot(uint b4, uint u, uvec4 xlq, uvec4 xhq, float x_scale, float sum_l,
                      float sum_h) {
  return q4k_item16_idot_words(w_v4[b4], w_v4[b4 + 1u + u], u, xlq, xhq, x_scale, sum_l, sum_h);
}
// The same with the low and high values on scales of their own (matvec.comp XQ: they lie in
// two 32-blocks of a q8x vector).
float q4k_item16_idot_xq(uint b4, uint u, uvec4 xlq, uvec4 xhq, float xl_scale, float xh_scale,
                         float sum_l, float sum_h) {
  const uvec4 hd = w_v4[b4], q = w_v4[b4 + 1u + u];
  uint sc_lo, mn_lo, sc_hi, mn_hi;
  q4k_scales(hd, u >> 1, sc_lo, mn_lo, sc_hi, mn_hi);
  int il = 0, ih = 0;
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    il += sudot4x8(xlq[j], q[j] & 0x0f0f0f0fu, 0);
    ih += sudot4x8(xhq[j], (q[j] >> 4) & 0x0f0f0f0fu, 0);
  }
  const vec2 dm = unpackHalf2x16(hd.x);
  return dm.x * (xl_scale * float(int(sc_lo) * il) + xh_scale * float(int(sc_hi) * ih)) -
         dm.y * (float(mn_lo) * sum_l + float(mn_hi) * sum_h);
}
#endif
#endif

#if defined(WTYPE_Q6_K)
// Q6_K: item (h, l4) of the block at byte b, h < 2, l4 < 8: the words ql[64h + 4 l4 ..],
// ql[64h + 32 + 4 l4 ..] and qh[32h + 4 l4 ..] hold quadrant g's weights 128h + 32g + 4 l4 + i
// (i < 4): low nibbles of the first word (g 0) and of the second (g 1), high nibbles of the first
// (g 2) and of the second (g 3), with qh bits 2g, 2g + 1 on top; the scale of quadrant g is
// scales[8h + 2g + l4 / 4]; w = d * scale * (q - 32). xq[g] are those x values. Blocks are 210
// bytes, so only 2-byte aligned: words are read as 16-bit halves.
// q6k_words: the item's 6-bit values as four words (byte i of q[g]: quadrant g's weight i, 0..63)
// and the byte address of quadrant 0's scale (quadrant g's is 2g further).
uint q6k_words(uint b, uint h, uint l4, out uint q[4]) {
  const uint qa = ld32(b + 64u * h + 4u * l4);
  const uint qb = ld32(b + 64u * h + 32u + 4u * l4);
  const uint qh = ld32(b + 128u + 32u * h + 4u * l4);
  q[0] = (qa & 0x0f0f0f0fu) | ((qh << 4) & 0x30303030u);
  q[1] = (qb & 0x0f0f0f0fu) | ((qh << 2) & 0x30303030u);
  q[2] = ((qa >> 4) & 0x0f0f0f0fu) | (qh & 0x30303030u);
  q[3] = ((qb >> 4) & 0x0f0f0f0fu) | ((qh >> 2) & 0x30303030u);
  return b + 192u + 8u * h + (l4 >> 2);
}
float q6k_item(uint b, uint h, uint l4, vec4 xq[4]) {
  uint q[4];
  const uint sb = q6k_words(b, h, l4, q);
  float t = 0.0;
  [[unroll]] for (uint g = 0; g < 4u; ++g) {
    const uvec4 bytes = (uvec4(q[g]) >> uvec4(0u, 8u, 16u, 24u)) & 0xffu;
    // 2^23 + q as float bits, minus 2^23 + 32: q - 32 exactly, no int-to-float conversion.
    const vec4 wq = uintBitsToFloat(bytes | 0x4B000000u) - 8388640.0;
    t += float(sext8(ld8(sb + 2u * g))) * dot(wq, xq[g]);
  }
  return ldf16(b + 208u) * t;
}
#ifdef IDOT
// The item's 16 x values as int8 with one scale (returned), and each group's integer sum.
float q6k_quantize_x(vec4 xq[4], out uvec4 xp, out ivec4 xsum) {
  const float inv = q8_inv_scale(max(max(abs(xq[0]), abs(xq[1])), max(abs(xq[2]), abs(xq[3]))));
  [[unroll]] for (uint g = 0; g < 4u; ++g) {
    xp[g] = q8_pack4(xq[g], inv);
    xsum[g] = sdot4x8(xp[g], 0x01010101u, 0);
  }
  return q8_step(inv);
}
// q6k_item with integer dot products: sum_g scale_g * (sum_i q_i x_i - 32 sum_i x_i) in integers.
float q6k_item_idot(uint b, uint h, uint l4, uvec4 xp, ivec4 xsum, float x_scale) {
  uint q[4];
  const uint sb = q6k_words(b, h, l4, q);
  int t = 0;
  [[unroll]] for (uint g = 0; g < 4u; ++g) {
    t += sext8(ld8(sb + 2u * g)) * (sudot4x8(xp[g], q[g], 0) - 32 * xsum[g]);
  }
  return ldf16(b + 208u) * x_scale * float(t);
}
#endif
#endif

#if defined(WTYPE_Q8_0)
// Q8_0: quarter `part` (weights 8 part .. 8 part + 7) of the block at byte b against xv.
float q80_item(uint b, uint part, float xv[8]) {
  const uint qa = b + 2u + part * 8u;
  float s = 0.0;
  [[unroll]] for (uint j = 0; j < 4u; ++j) {
    // int8 to float through the exponent bits: (b ^ 0x80) is b + 128 as an unsigned byte.
    const uint v = ld16(qa + 2u * j) ^ 0x8080u;
    const vec2 q = uintBitsToFloat(uvec2(v & 0xffu, v >> 8) | 0x4B000000u) - 8388736.0;
    s += q.x * xv[2u * j] + q.y * xv[2u * j + 1u];
  }
  return ldf16(b) * s;
}
#ifdef IDOT
// q80_item with integer dot products (x: the quarter's 8 values through q8_quantize8): the
// block's int8 weights meet x in two OpSDotKHR.
float q80_item_idot(uint b, uint part, uvec2 xp, float x_scale) {
  const uint qa = b + 2u + part * 8u;
  const int t = sdot4x8(xp.x, ld32(qa), 0) + sdot4x8(xp.y, ld32(qa + 4u), 0);
  return ldf16(b) * x_scale * float(t);
}
#endif
#endif

#if defined(WTYPE_Q5_0) && defined(IDOT)
// Q5_0 (22-byte blocks: f16 d, u32 qh, 16 bytes qs; w = d * ((nibble | high bit << 4) - 16)),
// quarter `part` of the block at byte b: qs bytes 4 part + i hold weights 4 part + i (low
// nibbles, 5th bit qh bit 4 part + i) and 16 + 4 part + i (high nibbles, qh bit 16 + 4 part + i),
// i < 4. xp holds those x values as int8 (low four, high four), xsum their integer sum.
uint q50_spread4(uint bits) {  // bits 0..3 to bit 4 of bytes 0..3
  return ((bits & 1u) << 4) | ((bits & 2u) << 11) | ((bits & 4u) << 18) | ((bits & 8u) << 25);
}
float q50_item_idot(uint b, uint part, uvec2 xp, int xsum, float x_scale) {
  const uint qs = ld32(b + 6u + 4u * part);
  const uint qh = ld32(b + 2u);
  const uint lo = (qs & 0x0f0f0f0fu) | q50_spread4(qh >> (4u * part));
  const uint hi = ((qs >> 4) & 0x0f0f0f0fu) | q50_spread4(qh >> (16u + 4u * part));
  const int t = sudot4x8(xp.x, lo, 0) + sudot4x8(xp.y, hi, 0) - 16 * xsum;
  return ldf16(b) * x_scale * float(t);
}
#endif
