// attn_prefill: attention of many query tokens over an f16 KV cache (prefill), flash-attention
// style: one workgroup owns a tile of BQ query rows of one kv head and streams that head's keys
// through shared memory once per tile, with an online (streaming) softmax in fp32.
//
// Same formula, masks and layouts as attn_decode.comp (read its header): for query token t at
// position p = pos[t] and query head h of kv head g, keys at absolute positions j in [lo, p],
//   lo = max(kv_first, window > 0 ? p - window + 1 : 0), stored in slot j % ring_size,
//   O[t, h, :] = sum_j softmax_j(scale * Q[t, h, :] . K[g, slot(j), :]) V[g, slot(j), :]
// and a query with no key in range gets zeros.
//
// Rows: the G = n_q_heads / n_kv_heads query heads of kv head g share its keys (GQA), so the
// rows of kv head g are r = t * G + i (token t, query head g * G + i), and tile x holds rows
// [x * BQ, x * BQ + BQ). Each row keeps its own key range; the tile streams the union of them.
//
// Bindings:  0 Q (read, float)   [n_tokens][q_tok_stride], head h at h * D
//            1 K (read, f16)     element (g, slot, d) at g * kv_head_stride + slot * slot_stride + d
//                                (kv_head_stride and slot_stride even: read as 32-bit words)
//            2 V (read, f16)     same layout as K
//            3 pos (read, int[n_tokens])
//            4 O (write, float)  [n_tokens][o_tok_stride], head h at h * D
// Push:      uint n_q_heads, n_kv_heads, n_tokens, ring_size, kv_first, window, q_tok_stride,
//            o_tok_stride, kv_head_stride, slot_stride; float scale
// Spec:      0 WG workgroup size, 1 D head dim (a multiple of 4), 2 BQ rows per tile, 3 BK keys
//            per chunk (a multiple of 4, WG % BK == 0; BQ a multiple of WG / BK, or below it)
// Grid:      (ceil(n_tokens * G / BQ), n_kv_heads, 1)
// Method:    per chunk of BK keys: K chunk -> shared (f16 pairs, rows padded against bank
//            conflicts); scores: invocation (key c = tid % BK, row group tid / BK) dots its rows
//            with key c, 4 dims a step; row statistics: invocation i < BQ takes row i's chunk max, turns its
//            scores into exp(s - m) and rescales its running sum, while all load the V chunk
//            into the same shared array; then invocation tid accumulates output dim pairs
//            tid, tid + WG, ... of all BQ rows (fp32 registers), 4 keys a step, each row's 4
//            probabilities one vec4 load.
// Shared:    BQ * D * 4 + BK * (D / 2 + 1) * 4 + BQ * BK * 4 + small; the host picks BQ and BK so
//            this fits the device (48 KiB: D 256 BQ 16 BK 32, ~35 KiB; D 512 BQ 16 BK 8, ~41 KiB;
//            32 KiB as on lavapipe: D 256 BQ 16 BK 16; D 512 BQ 8 BK 8).
// Variants:  one (32-bit loads only: no 16-bit storage needed).
#version 450
#include "common.glsl"

layout(constant_id = 1) const uint D = 256;
layout(constant_id = 2) const uint BQ = 16;
layout(constant_id = 3) const uint BK = 32;

layout(binding = 0, std430) readonly buffer QBuf { float q[]; };
// K/V as 32-bit words (f16 pairs): the host requires even strides, so every row starts on a word.
layout(binding = 1, std430) readonly buffer KBuf { uint k32[]; };
layout(binding = 2, std430) readonly buffer VBuf { uint v32[]; };
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

#define DW (D / 2)                  // f16 pairs per K/V row
#define KVS (DW + 1)                // padded row stride of kv_s in words
#define RG (WG / BK)                // row groups of the score phase
#define NR ((BQ + RG - 1) / RG)     // rows per invocation in the score phase (some idle)
#define NP ((DW + WG - 1) / WG)     // output dim pairs per invocation
#define DQ (D / 4)                  // vec4s per query row (D a multiple of 4)

shared vec4 q_s[BQ * DQ];    // the tile's query rows (zeros for rows past the end)
shared uint kv_s[BK * KVS];  // the chunk's K, then its V, as packed f16 pairs
shared vec4 p_s[BQ * BK / 4];  // scores, then exp(s - m) (0 for keys outside the row's range),
                               // row i's key c at [i * BK / 4 + c / 4][c % 4]
shared float alpha_s[BQ];    // per row: exp(m_old - m_new) of this chunk
shared int lo_s[BQ];         // per row: key range [lo, hi]; empty (1, 0) for no key / no row
shared int hi_s[BQ];
shared uint any_s[BK];       // per chunk key: in some row's range (else its V is read as 0)
shared float l_s[BQ];        // per row: the final sum

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint g = gl_WorkGroupID.y;
  const uint G = p.n_q_heads / p.n_kv_heads;
  const uint n_rows = p.n_tokens * G;
  const uint r0 = gl_WorkGroupID.x * BQ;
  const uint kvb = g * p.kv_head_stride;

  for (uint idx = tid; idx < BQ * DQ; idx += WG) {
    const uint i = idx / DQ, w = idx - i * DQ;
    const uint r = r0 + i;
    vec4 v = vec4(0.0);
    if (r < n_rows) {
      const uint t = r / G, h = g * G + (r - t * G);
      const uint qb = t * p.q_tok_stride + h * D + 4u * w;
      v = vec4(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]);
    }
    q_s[idx] = v;
  }
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
  const uint n_chunks = any ? uint(tile_hi - tile_lo) / BK + 1u : 0u;

  float m = -1e30;  // row tid's running max (tid < BQ; finite: no inf arithmetic on any driver)
  float l = 0.0;    // row tid's running sum of exp(s - m)
  vec2 acc[BQ * NP];
  [[unroll]] for (uint a = 0; a < BQ * NP; ++a) acc[a] = vec2(0.0);

  const uint kc = tid % BK, rg = tid / BK;  // score phase: key kc, rows rg + RG * a
  for (uint chunk = 0; chunk < n_chunks; ++chunk) {
    const int c0 = tile_lo + int(chunk * BK);
    const uint n = min(BK, uint(tile_hi - c0) + 1u);  // keys of this chunk inside the union
    for (uint idx = tid; idx < BK * DW; idx += WG) {
      const uint c = idx / DW, w = idx - c * DW;
      uint v = 0u;
      if (c < n) {
        v = k32[(kvb + (uint(c0 + int(c)) % p.ring_size) * p.slot_stride) / 2u + w];
      }
      kv_s[c * KVS + w] = v;
    }
    if (tid < BK) {
      const int j = c0 + int(tid);
      uint in_range = 0u;
      for (uint i = 0; i < BQ; ++i) {
        if (tid < n && j >= lo_s[i] && j <= hi_s[i]) in_range = 1u;
      }
      any_s[tid] = in_range;
    }
    barrier();

    // Scores of rows rg + RG * a with key kc.
    {
      float dot[NR];
      [[unroll]] for (uint a = 0; a < NR; ++a) dot[a] = 0.0;
      if (rg < BQ) {
        // 4 dims per step: two K words, one vec4 of Q per row (a broadcast load).
        for (uint w = 0; w < DQ; ++w) {
          const vec2 k0 = unpackHalf2x16(kv_s[kc * KVS + 2u * w]);
          const vec2 k1 = unpackHalf2x16(kv_s[kc * KVS + 2u * w + 1u]);
          [[unroll]] for (uint a = 0; a < NR; ++a) {
            const vec4 qq = q_s[min(rg + RG * a, BQ - 1u) * DQ + w];
            dot[a] += qq.x * k0.x + qq.y * k0.y + qq.z * k1.x + qq.w * k1.y;
          }
        }
      }
      [[unroll]] for (uint a = 0; a < NR; ++a) {
        if (rg + RG * a < BQ) p_s[((rg + RG * a) * BK + kc) / 4u][kc % 4u] = dot[a] * p.scale;
      }
    }
    barrier();

    // Row statistics (invocations < BQ) while everyone loads the V chunk.
    if (tid < BQ) {
      const int lo = lo_s[tid], hi = hi_s[tid];
      float mx = m;
      for (uint c = 0; c < n; ++c) {
        const int j = c0 + int(c);
        if (j >= lo && j <= hi) mx = max(mx, p_s[(tid * BK + c) / 4u][c % 4u]);
      }
      float sum = 0.0;
      for (uint c = 0; c < BK; ++c) {
        const int j = c0 + int(c);
        const uint pi = (tid * BK + c) / 4u;
        const float e = c < n && j >= lo && j <= hi ? exp(p_s[pi][c % 4u] - mx) : 0.0;
        p_s[pi][c % 4u] = e;
        sum += e;
      }
      const float alpha = exp(m - mx);  // 0 on the row's first key
      l = l * alpha + sum;
      m = mx;
      alpha_s[tid] = alpha;
    }
    for (uint idx = tid; idx < BK * DW; idx += WG) {
      const uint c = idx / DW, w = idx - c * DW;
      uint v = 0u;
      // A key outside every row's range is never read: its slot may hold anything (even NaN).
      if (any_s[c] != 0u) {
        v = v32[(kvb + (uint(c0 + int(c)) % p.ring_size) * p.slot_stride) / 2u + w];
      }
      kv_s[c * KVS + w] = v;
    }
    barrier();

    // Output pairs tid + WG * b; a pair past the row (D / 2 not a multiple of WG) reads word 0
    // and is never written out.
    uint wv[NP];
    [[unroll]] for (uint b = 0; b < NP; ++b) wv[b] = tid + WG * b < DW ? tid + WG * b : 0u;
    [[unroll]] for (uint i = 0; i < BQ; ++i) {
      const float alpha = alpha_s[i];
      [[unroll]] for (uint b = 0; b < NP; ++b) acc[i * NP + b] *= alpha;
    }
    // 4 keys per step (keys n.. of the last step have p = 0 and V = 0): one vec4 of
    // probabilities per row (a broadcast load) for all of this invocation's pairs.
    for (uint c = 0; c < n; c += 4u) {
      vec2 vv[4 * NP];
      [[unroll]] for (uint u = 0; u < 4u; ++u) {
        [[unroll]] for (uint b = 0; b < NP; ++b) {
          vv[u * NP + b] = unpackHalf2x16(kv_s[(c + u) * KVS + wv[b]]);
        }
      }
      [[unroll]] for (uint i = 0; i < BQ; ++i) {
        const vec4 pr = p_s[(i * BK + c) / 4u];
        [[unroll]] for (uint b = 0; b < NP; ++b) {
          acc[i * NP + b] += pr.x * vv[b] + pr.y * vv[NP + b] + pr.z * vv[2u * NP + b] +
                             pr.w * vv[3u * NP + b];
        }
      }
    }
    barrier();  // kv_s, p_s and alpha_s are rewritten by the next chunk
  }

  if (tid < BQ) l_s[tid] = l;
  barrier();
  [[unroll]] for (uint i = 0; i < BQ; ++i) {
    const uint r = r0 + i;
    if (r >= n_rows) break;
    const uint t = r / G, h = g * G + (r - t * G);
    const float inv = l_s[i] > 0.0 ? 1.0 / l_s[i] : 0.0;
    const uint ob = t * p.o_tok_stride + h * D;
    [[unroll]] for (uint b = 0; b < NP; ++b) {
      const uint w = tid + WG * b;
      if (w < DW) {
        const vec2 r2 = acc[i * NP + b] * inv;
        o[ob + 2u * w] = r2.x;
        o[ob + 2u * w + 1u] = r2.y;
      }
    }
  }
}
