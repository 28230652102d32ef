// matvec: dequantising matrix-vector product (decode). For each vector v and row r:
//   y[v * y_stride + r] = sum_k W[r, k] * x[v * x_stride + k],   k < in
// W is `out` rows of `in` elements in a GGUF weight type (weights.glsl), rows back to back.
//
// Bindings:  0 W  (read)  weight rows, type per variant
//            1 x  (read)  float, n_vecs vectors of x_stride elements
//            2 y  (write) float, n_vecs vectors of y_stride elements
// Push:      uint in, out, x_stride, y_stride
// Spec:      0 WG     workgroup size (power of two)
//            1 NROWS  rows per workgroup
//            2 VEC    bit 0: every weight row starts at a multiple of 16 bytes of binding 0 (and
//                     the binding does); the Q4_K loop then reads 16-byte words. bit 1: x (and
//                     nw) can be read as vec4 (binding offsets multiples of 16, x_stride, glu_off
//                     and each vector's start multiples of 4 floats): the Q4_K and Q6_K loops and
//                     the NORM prologue of every type do. 0 is always correct.
// Grid:      ceil(out / NROWS) workgroups folded into (x, y) (see common.glsl), z = n_vecs.
// Variants:  WTYPE_<every weights.glsl type> x USE_SUBGROUP (subgroupAdd vs shared-memory tree)
//            x STORAGE16 (16-bit loads vs 32-bit words; not for F32) x MUL_ID. F32/F16/BF16,
//            Q8_0, Q4_0, Q4_K and Q6_K have their own inner loops; the other types share a generic
//            loop over groups of 8 weights (w_group8).
// IDOT (Q4_K with VEC bit 0, Q6_K, Q8_0, Q5_0): the items use integer dot products (the *_idot
// items of matvec_items.glsl: each item's x values rounded to int8 with one scale); only for
// devices with shaderIntegerDotProduct.
// XQ (with IDOT, Q4_K rows on 16-byte words; not with NORM unless norm_flags skips it, nor with
// GLU_X): x is read already quantised (q8x, below) instead of rounded per item in every
// workgroup; for one input vector (or x_stride 0).
//   extra binding (3; 4 with MUL_ID or NORM) xq (read, q8x of x)
// MUL_ID (MoE experts, decode): W holds n_experts matrices expert_stride bytes apart, and grid z
// is a slot s with expert ids[s]: the product uses matrix ids[s] and vector s (x_stride may be 0:
// every slot reads the same x), writing y[s * y_stride + r]. A slot whose id is outside
// [0, n_experts) (moe_route writes -1 for an empty slot) gets zeros; only the routed experts'
// matrices are read.
//   extra binding 3 ids (read, int[slots]); extra push uint expert_stride, n_experts
// NORM: RMSNorm of each input vector folded in, i.e. the product uses
//   x'[k] = x[v * x_stride + k] / sqrt(mean_k(x^2) + eps) * (has_norm_w ? nw[k] : 1)
//   (the sum of squares is gathered by the main loop's loads and the factor applied to the row
//   sums at the end)
//   extra binding 3 nw (4 with MUL_ID) (read, float[in]); extra push float eps, uint norm_flags
//   (bit 0: times nw, bit 1: skip the normalisation)
// GLU_X (with MUL_ID, MoE down projection): the input is the GeGLU of a [gate | up] row,
//   x'[k] = gelu_tanh(x[v * x_stride + k]) * x[v * x_stride + k + glu_off]  (as gelu_mul.comp)
//   extra push uint glu_off (after n_experts)
// GEGLU (with NORM, not with MUL_ID): Gemma's feed-forward first half in one dispatch. Binding 0
// holds both the gate and the up matrix (gate_offset / up_offset bytes into it; extra push uint
// gate_offset, up_offset) and the output is
//   y[v * y_stride + r] = gelu_tanh(Wg[r] . x'_v) * (Wu[r] . x'_v)   (x' normalised as above)
// ROUTE (with NORM; the MoE router at decode): after the logits are written, the last workgroup
// to finish routes the token as moe_route.comp does (moe_route.glsl), so the routing needs no
// dispatch and no barrier interval of its own. Every workgroup makes its rows visible and counts
// itself in route_counter[vec]; the one that counts last reads all `out` logits of vector vec
// back from y and writes out K ids and weights per vector, then resets the counter to 0 (its
// value between dispatches; the buffer starts zeroed).
//   extra bindings 4 expert scale (read, float[out]), 5 ids (write, int[n_vecs][K]),
//   6 weights (write, float[n_vecs][K]), 7 counter (read and write, uint[n_vecs]); extra push
//   uint route_k, route_has_scale (after norm_flags); out <= 1024, K <= 64.
// RESID (with NORM and ROUTE, F32 / F16 / BF16 weights; the MoE router at decode, one barrier
// interval sooner): the router's input is the attention block's residual update, which this
// dispatch forms itself from its parts instead of reading it, so it runs beside that update:
//   x'[k] = h[k] + so * o[k] * wo[k],  so = 1 / sqrt(mean_k(o^2) + eps)
// (norm_add.comp with scale 1), then the router's RMSNorm of x' as for NORM. By linearity no
// workgroup needs x' itself: each row gathers W . (h nw) and W . (o wo nw), and the sums
// o.o, h.h, h.(o wo) and (o wo).(o wo) give so and |x'|^2 after the one reduction:
//   y[r] = (W[r] . (h nw) + so W[r] . (o wo nw)) / sqrt(|x'|^2 / in + eps)
//   extra bindings 8 o (read, float; same x_stride as h), 9 wo (read, float[in])
//   VEC bit 2: in, x_stride and the starts of x, o, wo and nw are multiples of 4 floats and every
//   weight row starts at a multiple of 4 elements' bytes (16-byte words for F32, 8-byte for
//   F16 / BF16): the loop takes four elements per round.
// Each invocation takes a strided share of the columns (a few elements of one block at a time),
// loads those x values once and accumulates them against all NROWS rows of the workgroup in fp32
// (so x is read once per NROWS rows); then the workgroup reduces each row and invocation 0 writes.
#version 450
#include "common.glsl"
#include "weights.glsl"
#include "matvec_items.glsl"

layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer XBuf4 { vec4 x4[]; };  // the same x (VEC bit 1)
#ifdef ROUTE
layout(binding = 2, std430) coherent buffer YBuf { float y[]; };  // read back by the router
#else
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
#endif
#ifdef XQ
// XQ (Q4_K with VEC bit 0 and IDOT; one input vector, or all slots reading the same x): x as
// q8x (q8x_put.glsl; the residual kernels' NN_Q8X write it): int8 values in blocks of 32, then
// per block a vec4 (d, d * the sum of its first 16 values, d * the sum of its last 16, 0);
// binding 1 is bound but not read.
#if defined(MUL_ID) && defined(NORM)
#define XQ_BINDING 5
#elif defined(MUL_ID) || defined(NORM)
#define XQ_BINDING 4
#else
#define XQ_BINDING 3
#endif
layout(binding = XQ_BINDING, std430) readonly buffer XqWords { uvec4 xq_w[]; };
layout(binding = XQ_BINDING, std430) readonly buffer XqMeta { vec4 xq_m[]; };
#endif
layout(push_constant) uniform Push {
  uint in_;
  uint out_;
  uint x_stride;
  uint y_stride;
#ifdef MUL_ID
  uint expert_stride;
  uint n_experts;
#endif
#ifdef GLU_X
  uint glu_off;
#endif
#ifdef NORM
  float eps;
  uint norm_flags;  // bit 0: multiply by nw; bit 1: no normalisation at all (GEGLU without norm)
#endif
#ifdef GEGLU
  uint gate_offset;  // bytes from the start of binding 0 to the gate matrix
  uint up_offset;    // and to the up matrix
#endif
#ifdef ROUTE
  uint route_k;
  uint route_has_scale;
#endif
} p;
#ifdef MUL_ID
layout(binding = 3, std430) readonly buffer IdBuf { int ids[]; };
#endif
layout(constant_id = 1) const uint NROWS = 1;
layout(constant_id = 2) const uint VEC = 0;
#ifdef PAD_PROBE
// garnet-vkbench --chain only: PAD floats of shared memory the kernel declares (and touches only
// when out is 0xffffffff, never in the probe), to see what a change of a dispatch's shared
// memory size costs next to the same code.
layout(constant_id = 3) const uint PAD = 1;
shared float pad_probe[PAD];
#endif
#if defined(GEGLU) || defined(RESID)
// accumulators: NROWS gate rows, then the same NROWS up rows (GEGLU); NROWS rows' products with
// h, then the same rows' with o (RESID)
const uint NR = 2u * NROWS;
#else
const uint NR = NROWS;
#endif

#ifdef ROUTE
layout(binding = 4, std430) readonly buffer RSBuf { float route_scale[]; };
layout(binding = 5, std430) writeonly buffer RIBuf { int route_ids[]; };
layout(binding = 6, std430) writeonly buffer RWBuf { float route_weights[]; };
layout(binding = 7, std430) coherent buffer RCBuf { uint route_counter[]; };
#define ROUTE_LOGIT(i) y[i]
#include "moe_route.glsl"
#include "last_group.glsl"
#endif

#ifdef RESID
layout(binding = 8, std430) readonly buffer OBuf { float o_in[]; };
layout(binding = 8, std430) readonly buffer OBuf4 { vec4 o_in4[]; };
layout(binding = 9, std430) readonly buffer WoBuf { float wo[]; };
layout(binding = 9, std430) readonly buffer WoBuf4 { vec4 wo4[]; };
// Four weights at once (VEC bit 2): the rows as 16-byte (F32) or 8-byte words.
#if defined(WTYPE_F32)
layout(binding = 0, std430) readonly buffer WBufR4 { vec4 w_f32x4[]; };
#else
layout(binding = 0, std430) readonly buffer WBufR2 { uvec2 w_u32x2[]; };
#endif
vec4 w4_at(uint row_byte, uint k) {  // elements k .. k+3, k a multiple of 4
#if defined(WTYPE_F32)
  return w_f32x4[(row_byte >> 4) + (k >> 2)];
#else
  const uvec2 v = w_u32x2[(row_byte >> 3) + (k >> 2)];
#if defined(WTYPE_F16)
  return vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
#else
  return uintBitsToFloat(uvec4(v.x << 16, v.x & 0xffff0000u, v.y << 16, v.y & 0xffff0000u));
#endif
#endif
}
#endif

#ifdef NORM
#ifdef MUL_ID
layout(binding = 4, std430) readonly buffer NBuf { float nw[]; };
layout(binding = 4, std430) readonly buffer NBuf4 { vec4 nw4[]; };
#else
layout(binding = 3, std430) readonly buffer NBuf { float nw[]; };
layout(binding = 3, std430) readonly buffer NBuf4 { vec4 nw4[]; };
#endif
// The loops load every element of the vector exactly once per workgroup, so the sum of squares
// is gathered on the way (g_ss) and the 1 / rms factor applied to the row sums at the end:
// W . (x s nw) = s (W . (x nw)). No prologue, no barrier before the weights are read.
float g_ss = 0.0;  // this invocation's share of sum(x^2)
uint g_xb = 0;     // index of the vector's first element
float load_x(uint i) {
  const float v = x[i];
  g_ss += v * v;
  return (p.norm_flags & 1u) != 0u ? v * nw[i - g_xb] : v;
}
vec4 load_x4_aligned(uint i) {  // i a multiple of 4, VEC bit 1 set
  const vec4 v = x4[i >> 2];
  g_ss += dot(v, v);
  return (p.norm_flags & 1u) != 0u ? v * nw4[(i - g_xb) >> 2] : v;
}
#elif defined(GLU_X)
float load_x(uint i) {
  const float g = x[i];
  const float z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
  return g / (1.0 + exp(min(-2.0 * z, 80.0))) * x[i + p.glu_off];
}
vec4 load_x4_aligned(uint i) {
  const vec4 g = x4[i >> 2];
  const vec4 z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
  return g / (1.0 + exp(min(-2.0 * z, vec4(80.0)))) * x4[(i + p.glu_off) >> 2];
}
#else
float load_x(uint i) { return x[i]; }
vec4 load_x4_aligned(uint i) { return x4[i >> 2]; }
#endif
// x'[i .. i+3].
vec4 load_x4(uint i) {
  if ((VEC & 2u) != 0u) return load_x4_aligned(i);
  return vec4(load_x(i), load_x(i + 1u), load_x(i + 2u), load_x(i + 3u));
}

// Sums each of the NR accumulators (and, for NORM, the sum of squares `extra`) over the
// workgroup; the results are valid in invocation 0. With subgroups: every row's subgroup sums go
// to shared memory together, one barrier for all rows (instead of two per row through wg_sum),
// when the subgroups fit the table (at least 4 invocations each).
#ifdef RESID
const uint NX = 4u;  // o.o, h.h, h.(o wo), (o wo).(o wo)
#elif defined(NORM)
const uint NX = 1u;
#else
const uint NX = 0u;
#endif
const uint NXA = NX > 0u ? NX : 1u;  // array size
#ifdef USE_SUBGROUP
shared float rows_red[(NR + NX) * (WG / 4u)];
#endif
void reduce_rows(inout float acc[NR], inout float extra[NXA]) {
#ifdef USE_SUBGROUP
  if (gl_NumSubgroups * 4u <= WG) {
    const uint per = WG / 4u;
    for (uint r = 0; r < NR; ++r) {
      const float v = subgroupAdd(acc[r]);
      if (subgroupElect()) rows_red[r * per + gl_SubgroupID] = v;
    }
    for (uint e = 0; e < NX; ++e) {
      const float v = subgroupAdd(extra[e]);
      if (subgroupElect()) rows_red[(NR + e) * per + gl_SubgroupID] = v;
    }
    barrier();
    if (gl_LocalInvocationIndex == 0u) {
      for (uint r = 0; r < NR + NX; ++r) {
        float t = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; ++i) t += rows_red[r * per + i];
        if (r < NR) {
          acc[r] = t;
        } else {
          extra[r - NR] = t;
        }
      }
    }
    return;
  }
#endif
  for (uint r = 0; r < NR; ++r) acc[r] = wg_sum(acc[r]);
  for (uint e = 0; e < NX; ++e) extra[e] = wg_sum(extra[e]);
}

void main() {
  const uint row0 = group_index() * NROWS;
  if (row0 >= p.out_) return;  // uniform across the workgroup
  const uint tid = gl_LocalInvocationIndex;
  const uint vec = gl_WorkGroupID.z;
  const uint xb = vec * p.x_stride;
  const uint nb = p.in_ / W_BLOCK;
  const uint row_bytes = nb * W_BLOCK_BYTES;
  uint wb = 0;  // byte offset of the matrix
#ifdef MUL_ID
  const int id = ids[vec];
  if (id < 0 || uint(id) >= p.n_experts) {  // uniform across the workgroup
    if (gl_LocalInvocationIndex == 0) {
      for (uint r = 0; r < NROWS && row0 + r < p.out_; ++r) y[vec * p.y_stride + row0 + r] = 0.0;
    }
    return;
  }
  wb = uint(id) * p.expert_stride;
#endif
#ifdef NORM
  g_xb = xb;  // RMSNorm folded in: see load_x
#endif
  // Byte offset of each row; rows past the end repeat the last one (their sums are dropped).
  uint rb[NR];
  float acc[NR];
  for (uint r = 0; r < NR; ++r) {
#ifdef GEGLU
    const uint base = r < NROWS ? p.gate_offset : p.up_offset;
    rb[r] = base + min(row0 + r % NROWS, p.out_ - 1u) * row_bytes;
#else
    rb[r] = wb + min(row0 + r, p.out_ - 1u) * row_bytes;
#endif
    acc[r] = 0.0;
  }
#if defined(RESID)
  float ex[NXA];
  for (uint e = 0; e < NXA; ++e) ex[e] = 0.0;
  if ((VEC & 4u) != 0u) {
    // Four elements per round: h, o and both norms' weights as vec4s, the weights as one word.
    for (uint k = 4u * tid; k < p.in_; k += 4u * WG) {
      const vec4 rn = (p.norm_flags & 1u) != 0u ? nw4[k >> 2] : vec4(1.0);
      const vec4 hv = x4[(xb + k) >> 2];
      const vec4 ov = o_in4[(xb + k) >> 2];
      const vec4 pv = ov * wo4[k >> 2];
      ex[0] += dot(ov, ov);
      ex[1] += dot(hv, hv);
      ex[2] += dot(hv, pv);
      ex[3] += dot(pv, pv);
      const vec4 hn = hv * rn, pn = pv * rn;
      for (uint r = 0; r < NROWS; ++r) {
        const vec4 wv = w4_at(rb[r], k);
        acc[r] += dot(wv, hn);
        acc[NROWS + r] += dot(wv, pn);
      }
    }
  } else
  for (uint k = tid; k < p.in_; k += WG) {
    const float rn = (p.norm_flags & 1u) != 0u ? nw[k] : 1.0;
    const float hv = x[xb + k];
    const float ov = o_in[xb + k];
    const float pv = ov * wo[k];
    ex[0] += ov * ov;
    ex[1] += hv * hv;
    ex[2] += hv * pv;
    ex[3] += pv * pv;
    const float hn = hv * rn, pn = pv * rn;
    for (uint r = 0; r < NROWS; ++r) {
#if defined(WTYPE_F32)
      const float wv = w_f32[rb[r] / 4u + k];
#elif defined(WTYPE_F16)
      const float wv = ldf16(rb[r] + 2u * k);
#else
      const float wv = uintBitsToFloat(ld16(rb[r] + 2u * k) << 16);
#endif
      acc[r] += wv * hn;
      acc[NROWS + r] += wv * pn;
    }
  }
#elif defined(W_PER_ELEMENT)
  for (uint k = tid; k < p.in_; k += WG) {
    const float xv = load_x(xb + k);
    for (uint r = 0; r < NR; ++r) {
#if defined(WTYPE_F32)
      acc[r] += w_f32[rb[r] / 4u + k] * xv;
#elif defined(WTYPE_F16)
      acc[r] += ldf16(rb[r] + 2u * k) * xv;
#else
      acc[r] += uintBitsToFloat(ld16(rb[r] + 2u * k) << 16) * xv;
#endif
    }
  }
#elif defined(WTYPE_Q8_0)
  // 4 items per block, 8 weights each.
  for (uint it = tid; it < nb * 4u; it += WG) {
    const uint blk = it >> 2, part = it & 3u;
    const uint xo = xb + blk * 32u + part * 8u;
    float xv[8];
    [[unroll]] for (uint j = 0; j < 8u; ++j) xv[j] = load_x(xo + j);
#ifdef IDOT
    uvec2 xp;
    const float xs =
        q8_quantize8(vec4(xv[0], xv[1], xv[2], xv[3]), vec4(xv[4], xv[5], xv[6], xv[7]), xp);
    for (uint r = 0; r < NR; ++r) acc[r] += q80_item_idot(rb[r] + blk * 34u, part, xp, xs);
#else
    for (uint r = 0; r < NR; ++r) acc[r] += q80_item(rb[r] + blk * 34u, part, xv);
#endif
  }
#elif defined(WTYPE_Q4_0)
  // 4 items per block: bytes qs[4*part .. +4] hold weights 4*part+i (low nibbles) and
  // 16+4*part+i (high nibbles).
  for (uint it = tid; it < nb * 4u; it += WG) {
    const uint blk = it >> 2, part = it & 3u;
    const uint xo = xb + blk * 32u + part * 4u;
    float xl[4], xh[4];
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      xl[j] = load_x(xo + j);
      xh[j] = load_x(xo + 16u + j);
    }
    for (uint r = 0; r < NR; ++r) {
      const uint b = rb[r] + blk * 18u;
      float s = 0.0;
      [[unroll]] for (uint j = 0; j < 2u; ++j) {
        const uint v = ld16(b + 2u + part * 4u + 2u * j);
        const uint b0 = v & 0xffu, b1 = v >> 8;
        s += (float(b0 & 15u) - 8.0) * xl[2u * j] + (float(b1 & 15u) - 8.0) * xl[2u * j + 1u] +
             (float(b0 >> 4) - 8.0) * xh[2u * j] + (float(b1 >> 4) - 8.0) * xh[2u * j + 1u];
      }
      acc[r] += ldf16(b) * s;
    }
  }
#elif defined(WTYPE_Q4_K)
  if ((VEC & 1u) != 0u) {
    // 8 items per block, one 16-byte word of qs each (q4k_item16).
    for (uint it = tid; it < nb * 8u; it += WG) {
      const uint blk = it >> 3, u = it & 7u;
      const uint c = u >> 1;
      const uint xo = xb + blk * 256u + 64u * c + 16u * (u & 1u);
#ifdef XQ
      // x already as int8 (q8x): the item's low 16 values are half u & 1 of 32-block xe / 32,
      // its high 16 the same half of the next block; each block has its own scale.
      const uint xe = blk * 256u + 64u * c + 16u * (u & 1u);
      const uvec4 xlq = xq_w[xe >> 4], xhq = xq_w[(xe >> 4) + 2u];
      const vec4 ml = xq_m[(p.in_ >> 4) + (xe >> 5)], mh = xq_m[(p.in_ >> 4) + (xe >> 5) + 1u];
      const float sum_l = (u & 1u) != 0u ? ml.z : ml.y, sum_h = (u & 1u) != 0u ? mh.z : mh.y;
      for (uint r = 0; r < NR; ++r) {
        acc[r] += q4k_item16_idot_xq((rb[r] >> 4) + blk * 9u, u, xlq, xhq, ml.x, mh.x, sum_l, sum_h);
      }
#else
      vec4 xl[4], xh[4];
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        xl[j] = load_x4(xo + 4u * j);
        xh[j] = load_x4(xo + 32u + 4u * j);
      }
      const float sum_l = dot(xl[0] + xl[1] + xl[2] + xl[3], vec4(1.0));
      const float sum_h = dot(xh[0] + xh[1] + xh[2] + xh[3], vec4(1.0));
#ifdef IDOT
      uvec4 xlq, xhq;
      const float xs = q4k_quantize_x(xl, xh, xlq, xhq);
      for (uint r = 0; r < NR; ++r) {
        acc[r] += q4k_item16_idot((rb[r] >> 4) + blk * 9u, u, xlq, xhq, xs, sum_l, sum_h);
      }
#else
      for (uint r = 0; r < NR; ++r) {
        acc[r] += q4k_item16((rb[r] >> 4) + blk * 9u, u, xl, xh, sum_l, sum_h);
      }
#endif
#endif  // XQ
    }
  } else
  // 16 items per block: chunk c (64 weights) and quarter q: bytes qs[32c + 8q .. +8] hold weights
  // 64c + 8q + i (low nibbles, sub-block 2c) and 64c + 32 + 8q + i (high, sub-block 2c+1).
  for (uint it = tid; it < nb * 16u; it += WG) {
    const uint blk = it >> 4, part = it & 15u;
    const uint c = part >> 2, q = part & 3u;
    const uint xo = xb + blk * 256u + 64u * c + 8u * q;
    float xl[8], xh[8];
    float sum_l = 0.0, sum_h = 0.0;
    [[unroll]] for (uint j = 0; j < 8u; ++j) {
      xl[j] = load_x(xo + j);
      xh[j] = load_x(xo + 32u + j);
      sum_l += xl[j];
      sum_h += xh[j];
    }
    for (uint r = 0; r < NR; ++r) {
      const uint b = rb[r] + blk * 144u;
      const vec2 lo = q4k_scale_min(b, 2u * c);
      const vec2 hi = q4k_scale_min(b, 2u * c + 1u);
      float slo = 0.0, shi = 0.0;
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        const uint v = ld16(b + 16u + 32u * c + 8u * q + 2u * j);
        const uint b0 = v & 0xffu, b1 = v >> 8;
        slo += float(b0 & 15u) * xl[2u * j] + float(b1 & 15u) * xl[2u * j + 1u];
        shi += float(b0 >> 4) * xh[2u * j] + float(b1 >> 4) * xh[2u * j + 1u];
      }
      acc[r] += ldf16(b) * (lo.x * slo + hi.x * shi) - ldf16(b + 2u) * (lo.y * sum_l + hi.y * sum_h);
    }
  }
#elif defined(WTYPE_Q6_K)
  // 16 items per block: half h (weights 128h ..) and l4 (q6k_item).
  for (uint it = tid; it < nb * 16u; it += WG) {
    const uint blk = it >> 4, part = it & 15u;
    const uint h = part >> 3, l4 = part & 7u;
    const uint xo = xb + blk * 256u + 128u * h + 4u * l4;
    vec4 xq[4];
    [[unroll]] for (uint g = 0; g < 4u; ++g) xq[g] = load_x4(xo + 32u * g);
#ifdef IDOT
    uvec4 xp;
    ivec4 xsum;
    const float xs = q6k_quantize_x(xq, xp, xsum);
    for (uint r = 0; r < NR; ++r) acc[r] += q6k_item_idot(rb[r] + blk * 210u, h, l4, xp, xsum, xs);
#else
    for (uint r = 0; r < NR; ++r) acc[r] += q6k_item(rb[r] + blk * 210u, h, l4, xq);
#endif
  }
#elif defined(WTYPE_Q5_0) && defined(IDOT)
  // 4 items per block (q50_item_idot): weights 4 part + i and 16 + 4 part + i, i < 4.
  for (uint it = tid; it < nb * 4u; it += WG) {
    const uint blk = it >> 2, part = it & 3u;
    const uint xo = xb + blk * 32u + part * 4u;
    const vec4 xl = vec4(load_x(xo), load_x(xo + 1u), load_x(xo + 2u), load_x(xo + 3u));
    const vec4 xh =
        vec4(load_x(xo + 16u), load_x(xo + 17u), load_x(xo + 18u), load_x(xo + 19u));
    uvec2 xp;
    const float xs = q8_quantize8(xl, xh, xp);
    const int xsum = sdot4x8(xp.x, 0x01010101u, 0) + sdot4x8(xp.y, 0x01010101u, 0);
    for (uint r = 0; r < NR; ++r) acc[r] += q50_item_idot(rb[r] + blk * 22u, part, xp, xsum, xs);
  }
#else
  // The other block types: one item is a group of 8 consecutive weights (one sub-block scale),
  // decoded by w_group8; neighbouring invocations take neighbouring groups.
  for (uint it = tid; it < p.in_ / 8u; it += WG) {
    float xv[8];
    [[unroll]] for (uint j = 0; j < 8u; ++j) xv[j] = load_x(xb + 8u * it + j);
    for (uint r = 0; r < NR; ++r) {
      float wv[8];
      w_group8(rb[r], 8u * it, wv);
      float s = 0.0;
      [[unroll]] for (uint j = 0; j < 8u; ++j) s += wv[j] * xv[j];
      acc[r] += s;
    }
  }
#endif
#if defined(RESID)
  reduce_rows(acc, ex);  // invocation 0 now holds every row's two sums and the four dots
  {
    const float n = float(p.in_);
    const float so = inversesqrt(ex[0] / n + p.eps);
    const float xx = max(ex[1] + 2.0 * so * ex[2] + so * so * ex[3], 0.0);  // |x'|^2
    const float xscale = inversesqrt(xx / n + p.eps);
    for (uint r = 0; r < NROWS; ++r) acc[r] = (acc[r] + so * acc[NROWS + r]) * xscale;
  }
#elif defined(NORM)
  float ss[NXA];
  ss[0] = g_ss;
  reduce_rows(acc, ss);  // invocation 0 now holds every row's sum and sum(x^2)
  if ((p.norm_flags & 2u) == 0u) {
    const float xscale = inversesqrt(ss[0] / float(p.in_) + p.eps);
    for (uint r = 0; r < NR; ++r) acc[r] *= xscale;
  }
#else
  float unused[NXA];
  unused[0] = 0.0;
  reduce_rows(acc, unused);  // invocation 0 now holds every row's sum
#endif
#ifdef GEGLU
  // y = gelu_tanh(g) * u, gelu_tanh computed as in gelu_mul.comp.
  for (uint r = 0; r < NROWS; ++r) {
    const float g = acc[r];
    const float u = acc[NROWS + r];
    const float z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    if (tid == 0 && row0 + r < p.out_) {
      y[vec * p.y_stride + row0 + r] = g / (1.0 + exp(min(-2.0 * z, 80.0))) * u;
    }
  }
#else
  for (uint r = 0; r < NROWS; ++r) {
    if (tid == 0 && row0 + r < p.out_) y[vec * p.y_stride + row0 + r] = acc[r];
  }
#endif
#ifdef PAD_PROBE
  if (p.out_ == 0xffffffffu) {  // uniform; never taken by the probe
    pad_probe[tid % PAD] = acc[0];
    barrier();
    y[tid] = pad_probe[(tid + 1u) % PAD];
  }
#endif
#ifdef ROUTE
  // Rows visible before the count (last_group.glsl); the workgroups past the end returned above
  // without counting.
  last_group_release();
  uint before = 0u;
  if (tid == 0u) before = LAST_GROUP_COUNT(route_counter[vec]);
  if (!last_group_acquire(before, (p.out_ + NROWS - 1u) / NROWS)) return;  // uniform
  moe_route_token(vec, vec * p.y_stride, p.out_, p.route_k, p.route_has_scale != 0u);
  // Reset for the next dispatch with an atomic, as the counting is done (docs/CORRECTNESS.md: with
  // a plain store here an early test binary failed on an H200 every time; later ones did not).
  if (tid == 0u) atomicExchange(route_counter[vec], 0u);
#endif
}
