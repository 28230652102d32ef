// attn_coop: prefill attention on tensor cores (cooperative matrices, f16 x f16 -> fp32), flash-
// attention style: one workgroup owns BQ = ROWS (16 or 32) query rows of one kv head and streams
// that head's keys in chunks of 64 with an online softmax. Same formula, masks, layouts and push constants as
// attn_prefill.comp (read attn_decode.comp's header for the formula): for query row r = t * G + i
// (token t, query head h = g * G + i of kv head g, G = n_q_heads / n_kv_heads) at position
// p = pos[t], keys at positions j in [lo, p], lo = max(kv_first, window > 0 ? p - window + 1 : 0),
// in slot j % ring_size;  O[t, h, :] = sum_j softmax_j(scale * Q[t, h, :] . K[g, slot(j), :])
// V[g, slot(j), :], zeros for a row with no key.
//
// Per chunk of 64 keys (4 subgroups of 32 invocations):
//   1. scores: subgroup s multiplies the tile's Q (BQ x D, f16 in shared memory) by K^T of keys
//      16 s .. 16 s + 15 of the chunk, D / 16 steps of 16x16x16 per 16-row block, and stores the
//      fp32 blocks into the shared score tile;
//   2. softmax: subgroup s takes rows BQ / 4 * s .. + BQ / 4 - 1, 32 / (BQ / 4) invocations a
//      row (clustered reductions): running max and sum per row (fp32), probabilities
//      exp(s - m) as f16 into shared memory (0 outside the row's range), alpha =
//      exp(m_old - m_new) per row;
//   3. output: subgroup s owns output dims s * D / 4 .. + D / 4 - 1 (D / 64 accumulators of
//      16x16 per row block): scales them by alpha per row, then adds P (BQ x 64) times V (64 x
//      its dims).
// K and V go straight from the cache into cooperative matrices (each K / V element is read once
// per workgroup, no shared staging), except for a 16-key step that leaves the tile's key range
// [lo, hi] (union of its rows' ranges) or wraps around the ring: that step goes through a small
// per-subgroup shared block in which keys outside [lo, hi] are zeros (their slots may hold
// anything, even NaN, and a zero probability times NaN would still be NaN).
// Rows of an accumulator: element e of an invocation's share of a 16x16 fp32 matrix belongs to
// row rid[e], read from a matrix loaded from a table of row numbers (the element-to-invocation
// mapping is the implementation's, but the same for every matrix of one type).
//
// Bindings:  0 Q (read, float)   [n_tokens][q_tok_stride], head h at h * D
//            1 K (read, f16)     element (g, slot, d) at g * kv_head_stride + slot * slot_stride + d
//            2 V (read, f16)     same layout as K
//            3 pos (read, int[n_tokens])
//            4 O (write, float)  [n_tokens][o_tok_stride], head h at h * D
// Push:      as attn_prefill.comp: uint n_q_heads, n_kv_heads, n_tokens, ring_size, kv_first,
//            window, q_tok_stride, o_tok_stride, kv_head_stride, slot_stride; float scale
// Spec:      0 WG = 128 (4 subgroups of 32: the device's subgroup size must be 32)
// Defines:   HEAD_DIM (64, 128, 256 or 512), ROWS (16; 32 fits 48 KiB of shared memory up to
//            D = 256, and on the H200 was correct but not faster, so the build makes 16 only).
//            kv_head_stride, slot_stride and the K / V binding offsets must be multiples of 8
//            halves (16 bytes: cooperative-matrix loads).
// Grid:      (ceil(n_tokens * G / ROWS), n_kv_heads, 1)
#version 450
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_clustered : require
#include "common.glsl"

#define D HEAD_DIM
#define BQ ROWS          // query rows per workgroup: 16 or 32
#define RB (BQ / 16u)    // row blocks
#define LPR (32u / (BQ / 4u))  // softmax: invocations per row (8 or 4)
#define KPL (CK / LPR)         // softmax: keys per invocation (8 or 16)
#define CK 64u           // keys per chunk (16 per subgroup)
#define DS (D / 4u)      // output dims per subgroup
#define NO (DS / 16u)    // output accumulators per subgroup
#define QLD (D + 8u)     // shared Q row stride (halves; 16-byte aligned rows)
#define PLD (CK + 8u)    // shared P row stride (halves)
#define SLD (CK + 4u)    // shared score row stride (floats)

layout(binding = 0, std430) readonly buffer QBuf { float q[]; };
layout(binding = 1, std430) readonly buffer KBuf { float16_t kh[]; };
layout(binding = 1, std430) readonly buffer KBuf4 { uvec4 k4[]; };
layout(binding = 2, std430) readonly buffer VBuf { float16_t vh[]; };
layout(binding = 2, std430) readonly buffer VBuf4 { uvec4 v4[]; };
layout(binding = 3, std430) readonly buffer PBuf { int pos[]; };
layout(binding = 4, std430) writeonly buffer OBuf { float o[]; };
layout(push_constant) uniform Push {
  uint n_q_heads;
  uint n_kv_heads;
  uint n_tokens;
  uint ring_size;
  uint kv_first;
  uint window;
  uint q_tok_stride;
  uint o_tok_stride;
  uint kv_head_stride;
  uint slot_stride;
  float scale;
} p;

shared float16_t Qs[BQ * QLD];   // the tile's query rows (zeros past the last row)
shared float Ss[BQ * SLD];       // the chunk's scores
shared float16_t Ps[BQ * PLD];   // the chunk's probabilities
shared float16_t Stg[4u * 256u]; // per-subgroup 16 keys x 16 dims (steps off the fast path)
shared float Cs[4u * 256u];      // per-subgroup 16x16 output staging
shared float Rid[256];           // Rid[r * 16 + c] = r
shared float alpha_s[BQ];        // per row: exp(m_old - m_new) of this chunk
shared float inv_s[BQ];          // per row: 1 / final sum (0 for none)
shared int lo_s[BQ];             // per row: key range [lo, hi]; empty (1, 0) for none
shared int hi_s[BQ];

// Keys j0 .. j0 + 15, dims d0 .. d0 + 15 of `base` (K or V of this kv head) into this subgroup's
// block of Stg as [key][dim]; keys outside [lo, hi] as zeros. One 16-byte word per invocation.
void stage(bool is_v, uint kvb, int j0, uint d0, int lo, int hi) {
  const uint lane = gl_SubgroupInvocationID, sg = gl_SubgroupID;
  const uint kk = lane / 2u, hh = 8u * (lane % 2u);
  const int j = j0 + int(kk);
  uvec4 w = uvec4(0u);
  if (j >= lo && j <= hi) {
    const uint e = kvb + (uint(j) % p.ring_size) * p.slot_stride + d0 + hh;
    w = is_v ? v4[e / 8u] : k4[e / 8u];
  }
  subgroupBarrier();  // the previous block's readers are done
  [[unroll]] for (uint c = 0; c < 4u; ++c) {
    const f16vec2 h2 = unpackFloat2x16(w[c]);
    Stg[sg * 256u + kk * 16u + hh + 2u * c] = h2.x;
    Stg[sg * 256u + kk * 16u + hh + 2u * c + 1u] = h2.y;
  }
  subgroupMemoryBarrierShared();
  subgroupBarrier();
}

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
  const uint g = gl_WorkGroupID.y;
  const uint G = p.n_q_heads / p.n_kv_heads;
  const uint n_rows = p.n_tokens * G;
  const uint r0 = gl_WorkGroupID.x * BQ;
  const uint kvb = g * p.kv_head_stride;

  for (uint idx = tid; idx < BQ * D; idx += WG) {
    const uint i = idx / D, d = idx - i * D;
    const uint r = r0 + i;
    float v = 0.0;
    if (r < n_rows) {
      const uint t = r / G, h = g * G + (r - t * G);
      v = q[t * p.q_tok_stride + h * D + d];
    }
    Qs[i * QLD + d] = float16_t(v);
  }
  for (uint idx = tid; idx < 256u; idx += WG) Rid[idx] = float(idx / 16u);
  if (tid < BQ) {
    int lo = 1, hi = 0;
    const uint r = r0 + tid;
    if (r < n_rows) {
      const int pq = pos[r / G];
      int l0 = int(p.kv_first);
      if (p.window > 0u) l0 = max(l0, pq - int(p.window) + 1);
      if (pq >= l0) {
        lo = l0;
        hi = pq;
      }
    }
    lo_s[tid] = lo;
    hi_s[tid] = hi;
  }
  barrier();

  // The union of the rows' ranges (uniform: every invocation reads the same shared values).
  int tile_lo = 0, tile_hi = -1;
  bool any = false;
  for (uint i = 0; i < BQ; ++i) {
    if (hi_s[i] >= lo_s[i]) {
      tile_lo = any ? min(tile_lo, lo_s[i]) : lo_s[i];
      tile_hi = any ? max(tile_hi, hi_s[i]) : hi_s[i];
      any = true;
    }
  }
  // Chunk count in unsigned arithmetic, so extreme positions cannot make the loop run forever.
  const uint n_chunks = any ? uint(tile_hi - tile_lo) / CK + 1u : 0u;

  fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> rid;
  coopMatLoadNV(rid, Rid, 0, 16, false);
  fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[RB * NO];  // [row block][dim block]
  [[unroll]] for (uint j = 0; j < RB * NO; ++j) {
    acc[j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
  }
  // Softmax: this invocation's row (running max, finite start; running sum) and its KPL keys of
  // each chunk; the LPR invocations of a row are adjacent lanes.
  const uint my_row = (BQ / 4u) * sg + lane / LPR, my_k0 = KPL * (lane % LPR);
  float m = -1e30, l = 0.0;

  for (uint chunk = 0; chunk < n_chunks; ++chunk) {
    const int c0 = tile_lo + int(chunk * CK);
    // 1. Scores of keys c0 + 16 sg .. + 15 for every row block. With one row block, two
    // accumulators (even and odd 16-dim steps) halve the dependent multiply-add chain.
    {
      const int j0 = c0 + int(16u * sg);
      fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> sc[2];
      sc[0] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
      sc[1] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
      if (j0 <= tile_hi) {
        const uint slot0 = uint(j0) % p.ring_size;
        const bool direct = j0 + 15 <= tile_hi && slot0 + 16u <= p.ring_size;
        const uint kb = kvb + slot0 * p.slot_stride;
        [[unroll]] for (uint d0 = 0; d0 < D; d0 += 16u) {
          fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> b;
          // B = K^T (dims x keys): key rows are columns.
          if (direct) {
            coopMatLoadNV(b, kh, kb + d0, p.slot_stride, true);
          } else {
            stage(false, kvb, j0, d0, tile_lo, tile_hi);
            coopMatLoadNV(b, Stg, sg * 256u, 16u, true);
          }
          [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a;
            coopMatLoadNV(a, Qs, rb * 16u * QLD + d0, QLD, false);
            const uint ai = RB == 1u ? (d0 / 16u) % 2u : rb;
            sc[ai] = coopMatMulAddNV(a, b, sc[ai]);
          }
        }
      }
      if (RB == 1u) {
        for (int e = 0; e < sc[0].length(); ++e) sc[0][e] += sc[1][e];
      }
      [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
        coopMatStoreNV(sc[rb], Ss, rb * 16u * SLD + 16u * sg, SLD, false);
      }
    }
    barrier();

    // 2. Online softmax: this invocation's row, keys c0 + my_k0 .. + KPL - 1.
    {
      const int lo = lo_s[my_row], hi = hi_s[my_row];
      float sv[KPL];
      float cmax = -1e30;
      [[unroll]] for (uint c = 0; c < KPL; ++c) {
        const int j = c0 + int(my_k0 + c);
        sv[c] = j >= lo && j <= hi ? Ss[my_row * SLD + my_k0 + c] * p.scale : -1e30;
        cmax = max(cmax, sv[c]);
      }
      const float mx = max(m, subgroupClusteredMax(cmax, LPR));
      float sum = 0.0;
      [[unroll]] for (uint c = 0; c < KPL; ++c) {
        const float16_t e = float16_t(sv[c] > -1e30 ? exp(sv[c] - mx) : 0.0);
        Ps[my_row * PLD + my_k0 + c] = e;
        sum += float(e);
      }
      const float alpha = exp(m - mx);  // 0 on the row's first key, 1 without new keys
      l = l * alpha + subgroupClusteredAdd(sum, LPR);
      m = mx;
      if (lane % LPR == 0u) alpha_s[my_row] = alpha;
    }
    barrier();

    // 3. O[:, this subgroup's dims] = alpha * O + P V.
    [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
      [[unroll]] for (uint j = 0; j < NO; ++j) {
        for (int e = 0; e < acc[rb * NO + j].length(); ++e) {
          acc[rb * NO + j][e] *= alpha_s[rb * 16u + uint(rid[e])];
        }
      }
    }
    [[unroll]] for (uint ks = 0; ks < CK / 16u; ++ks) {
      const int jk = c0 + int(16u * ks);
      if (jk > tile_hi) break;  // uniform
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a[RB];
      [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
        coopMatLoadNV(a[rb], Ps, rb * 16u * PLD + 16u * ks, PLD, false);
      }
      const uint slot0 = uint(jk) % p.ring_size;
      const bool direct = jk + 15 <= tile_hi && slot0 + 16u <= p.ring_size;
      [[unroll]] for (uint j = 0; j < NO; ++j) {
        const uint d0 = sg * DS + 16u * j;
        fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> b;
        if (direct) {
          coopMatLoadNV(b, vh, kvb + slot0 * p.slot_stride + d0, p.slot_stride, false);
        } else {
          stage(true, kvb, jk, d0, tile_lo, tile_hi);
          coopMatLoadNV(b, Stg, sg * 256u, 16u, false);
        }
        [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
          acc[rb * NO + j] = coopMatMulAddNV(a[rb], b, acc[rb * NO + j]);
        }
      }
    }
    // The next chunk's step 1 writes only Ss; its barrier orders this step's reads of Ps and
    // alpha_s before step 2 rewrites them.
  }

  if (lane % LPR == 0u) inv_s[my_row] = l > 0.0 ? 1.0 / l : 0.0;
  barrier();
  [[unroll]] for (uint rb = 0; rb < RB; ++rb) {
    [[unroll]] for (uint j = 0; j < NO; ++j) {
      fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> res = acc[rb * NO + j];
      for (int e = 0; e < res.length(); ++e) res[e] *= inv_s[rb * 16u + uint(rid[e])];
      coopMatStoreNV(res, Cs, sg * 256u, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      [[unroll]] for (uint e = 0; e < 8u; ++e) {
        const uint idx = lane + 32u * e;
        const uint r = r0 + rb * 16u + idx / 16u;
        if (r < n_rows) {
          const uint t = r / G, h = g * G + (r - t * G);
          o[t * p.o_tok_stride + h * D + sg * DS + 16u * j + idx % 16u] = Cs[sg * 256u + idx];
        }
      }
      subgroupBarrier();
    }
  }
}
