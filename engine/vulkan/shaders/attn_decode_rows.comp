// attn_decode_rows: the same attention as attn_decode.comp (same bindings, push constants, grid,
// split partials and masks; see there for the formulas), for an f16 cache whose rows start at
// 16-byte boundaries, with each key row read by a team of D / 8 invocations, one 16-byte word
// (8 values) each, instead of by one invocation.
//
// Why: in attn_decode.comp one invocation walks a whole key row (D / 8 dependent rounds of loads)
// and then every output dim walks the chunk's keys, so a workgroup's time is dozens of memory
// round trips. Here every invocation issues the K and V words of all its keys at once: a round
// of CH keys costs about one round trip, plus three workgroup reductions.
//
// Round of CH = TEAMS * KT keys starting at c0 (team g takes keys c0 + g + TEAMS i, i < KT):
//   1. each invocation loads its word of those keys' K and V rows and writes the partial dot
//      products with its 8 query values to shared memory;
//   2. invocation j < CH adds key j's D / 8 partials: the score; online softmax over the round;
//   3. each invocation adds prob * V for its 8 dims of its team's keys.
// At the end the teams' accumulators are summed through shared memory.
//
// Spec:      0 WG workgroup size (a multiple of D / 8), 1 D head dim (8 * a power of two,
//            64 <= D <= 8 WG: a round, CH = 8 WG / (D / 8) keys, must not exceed WG, since
//            invocation j scores key j and writes prob[j]; with CH > WG keys past WG would go
//            unscored and read prob[] never written)
// Requires:  K and V bindings, kv_head_stride and slot_stride at multiples of 8 halves (16 bytes).
//
// FUSED_COMBINE (with n_splits > 1): no attn_combine dispatch. Each split workgroup writes its
// partial block, makes it visible and counts itself in counter[t * n_q_heads + h]; the one that
// counts last merges the head's splits (attn_combine.glsl) into o and resets the counter to 0
// (its value between dispatches; the buffer starts zeroed). The merge reads the same floats in
// the same order as attn_combine.comp, so the outputs are the same bits.
//   extra binding 6 counter (read and write, uint[n_tokens * n_q_heads])
#version 450
#include "common.glsl"

layout(constant_id = 1) const uint D = 256;
const uint LPK = D / 8u;      // invocations per key row: one 16-byte word (8 halves) each
const uint TEAMS = WG / LPK;  // keys read side by side
const uint KT = 8u;           // keys per team per round
const uint CH = TEAMS * KT;   // keys per round

layout(binding = 3, std430) readonly buffer PBuf { int pos[]; };
#include "attn_decode_common.glsl"

layout(binding = 0, std430) readonly buffer QBuf { float q[]; };
layout(binding = 1, std430) readonly buffer KBuf { uvec4 k4[]; };
layout(binding = 2, std430) readonly buffer VBuf { uvec4 v4[]; };
layout(binding = 4, std430) writeonly buffer OBuf { float o[]; };
#ifdef FUSED_COMBINE
layout(binding = 5, std430) coherent buffer PartBuf { float part[]; };  // read back by the merge
layout(binding = 6, std430) coherent buffer CountBuf { uint counter[]; };
#include "attn_combine.glsl"
#include "last_group.glsl"
#else
layout(binding = 5, std430) writeonly buffer PartBuf { float part[]; };
#endif

shared float partial[CH * LPK];  // [key of the round][word]: partial dot products
shared float prob[CH];
shared float team_acc[TEAMS * D];

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  const uint tid = gl_LocalInvocationIndex;
  const uint lane = tid % LPK, team = tid / LPK;
  const uint g = h / (p.n_q_heads / p.n_kv_heads);
  const uint qb = t * p.q_tok_stride + h * D + 8u * lane;
  const uint ob = t * p.o_tok_stride + h * D;
  const uint kvw = (g * p.kv_head_stride) / 8u + lane;  // this invocation's word of slot 0
  const uint slot_w = p.slot_stride / 8u;
  const vec4 qa = vec4(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]);
  const vec4 qc = vec4(q[qb + 4u], q[qb + 5u], q[qb + 6u], q[qb + 7u]);

  const uint split = gl_WorkGroupID.z;
  int lo, hi;
  decode_key_range(t, split, lo, hi);

  float m = -1e30;  // running max (finite: no inf arithmetic on any driver)
  float l = 0.0;    // running sum of exp(s - m)
  vec4 acc_a = vec4(0.0), acc_c = vec4(0.0);  // dims 8 lane .. 8 lane + 7
  for (int c0 = lo; c0 <= hi; c0 += int(CH)) {
    uvec4 kw[KT], vw[KT];
    [[unroll]] for (uint i = 0; i < KT; ++i) {
      const int j = c0 + int(team + TEAMS * i);
      if (j <= hi) {
        const uint at = kvw + (uint(j) % p.ring_size) * slot_w;
        kw[i] = k4[at];
        vw[i] = v4[at];
      } else {
        kw[i] = uvec4(0u);
        vw[i] = uvec4(0u);
      }
    }
    [[unroll]] for (uint i = 0; i < KT; ++i) {
      const vec4 a = vec4(unpackHalf2x16(kw[i].x), unpackHalf2x16(kw[i].y)) * qa;
      const vec4 c = vec4(unpackHalf2x16(kw[i].z), unpackHalf2x16(kw[i].w)) * qc;
      const vec4 s = a + c;
      partial[(team + TEAMS * i) * LPK + lane] = (s.x + s.y) + (s.z + s.w);
    }
    barrier();
    const bool mine = tid < CH && c0 + int(tid) <= hi;  // invocation tid scores key c0 + tid
    float s = -1e30;
    if (mine) {
      float a = 0.0, b = 0.0;
      for (uint u = 0; u < LPK; u += 2u) {
        a += partial[tid * LPK + u];
        b += partial[tid * LPK + u + 1u];
      }
      s = (a + b) * p.scale;
    }
    const float m_new = max(m, wg_max(s));
    const float e = mine ? exp(s - m_new) : 0.0;
    if (tid < CH) prob[tid] = e;
    const float alpha = exp(m - m_new);  // 0 on the first round
    l = l * alpha + wg_sum(e);           // ends with a barrier: prob[] is complete
    m = m_new;
    acc_a *= alpha;
    acc_c *= alpha;
    [[unroll]] for (uint i = 0; i < KT; ++i) {
      const float pk = prob[team + TEAMS * i];  // 0 for keys past hi (their words are 0)
      acc_a += pk * vec4(unpackHalf2x16(vw[i].x), unpackHalf2x16(vw[i].y));
      acc_c += pk * vec4(unpackHalf2x16(vw[i].z), unpackHalf2x16(vw[i].w));
    }
    barrier();  // partial[] and prob[] are rewritten by the next round
  }
  // The teams' sums: team g's 8 dims of lane at team_acc[g * D + 8 lane ..].
  [[unroll]] for (uint d = 0; d < 4u; ++d) {
    team_acc[team * D + 8u * lane + d] = acc_a[d];
    team_acc[team * D + 8u * lane + 4u + d] = acc_c[d];
  }
  barrier();
  const uint pb = ((t * p.n_q_heads + h) * p.n_splits + split) * (D + 2u);
  const float inv = p.n_splits > 1u ? 1.0 : (l > 0.0 ? 1.0 / l : 0.0);
  for (uint d = tid; d < D; d += WG) {
    float a = 0.0;
    for (uint g2 = 0; g2 < TEAMS; ++g2) a += team_acc[g2 * D + d];
    if (p.n_splits > 1u) {
      part[pb + 2u + d] = a;
    } else {
      o[ob + d] = a * inv;
    }
  }
  if (p.n_splits > 1u && tid == 0u) {
    part[pb] = m;
    part[pb + 1u] = l;
  }
#ifdef FUSED_COMBINE
  if (p.n_splits <= 1u) return;  // uniform
  // The block visible before the count (last_group.glsl); every split workgroup gets here (none
  // returns early).
  last_group_release();
  const uint ci = t * p.n_q_heads + h;
  uint before = 0u;
  if (tid == 0u) before = LAST_GROUP_COUNT(counter[ci]);
  if (!last_group_acquire(before, p.n_splits)) return;  // uniform across the workgroup
  combine_splits((t * p.n_q_heads + h) * p.n_splits * (D + 2u), p.n_splits, ob);
  if (tid == 0u) atomicExchange(counter[ci], 0u);  // an atomic, as for matvec.comp's ROUTE
#endif
}
