// attn_decode_common.glsl: what attn_decode.comp and attn_decode_rows.comp share: the push
// block, and the key range of one workgroup (query token t, split of grid z). Include after
// the PBuf binding (pos[]) is declared.

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
  uint n_splits;
  uint scale_base;  // KVQ8: word index of the scale plane in K and in V
} p;

// Key range [lo, hi] in absolute positions of query token t for split `split`; empty when
// hi < lo. kv_first == 0xFFFFFFFF: derived from the run's newest position (a pass recorded once
// and replayed for every decoded token, whose positions live only in the pos buffer).
void decode_key_range(uint t, uint split, out int lo, out int hi) {
  const int pq = pos[t];
  lo = p.kv_first == 0xFFFFFFFFu ? max(0, pos[p.n_tokens - 1u] + 1 - int(p.ring_size))
                                 : int(p.kv_first);
  if (p.window > 0u) lo = max(lo, pq - int(p.window) + 1);
  hi = pq;
  if (p.n_splits > 1u && hi >= lo) {  // this workgroup's slice of [lo, hi]
    const int per = (hi - lo + int(p.n_splits)) / int(p.n_splits);
    lo += int(split) * per;
    hi = min(hi, lo + per - 1);
  }
}
