// attn_combine.glsl: the merge of flash-decoding split partials for one (token, head), shared by
// attn_combine.comp (its own dispatch) and attn_decode_rows.comp FUSED_COMBINE (the last split
// workgroup of a head merges them). Include after common.glsl, with D declared and the includer's
// buffers `part` (readable: [split] blocks of (D + 2) floats m, l, acc[0..D)) and `o` (writable).
// For splits s with l_s > 0 (the others held no key):
//   M = max_s m_s,  L = sum_s l_s exp(m_s - M)
//   O[d] = sum_s exp(m_s - M) acc_s[d] / L        (0 when no split held a key)

shared float coef[64];  // per split: exp(m_s - M) / L, 0 for a split without keys

// Merges the n_splits (<= 64) blocks starting at float `base` of `part` into o[ob .. ob + D).
// Call from every invocation of the workgroup (it has workgroup barriers).
void combine_splits(uint base, uint n_splits, uint ob) {
  const uint tid = gl_LocalInvocationIndex;
  // Every split's (m, l) in one round of loads (invocation s reads split s), then two
  // workgroup reductions; the accumulators are then read without any data-dependent branch, so
  // each invocation has its loads in flight together.
  float ms = -1e30, ls = 0.0;
  if (tid < n_splits) {
    ms = part[base + tid * (D + 2u)];
    ls = part[base + tid * (D + 2u) + 1u];
  }
  const float mx = wg_max(ls > 0.0 ? ms : -1e30);
  const float e = ls > 0.0 ? exp(ms - mx) : 0.0;
  const float total = wg_sum(ls * e);
  if (tid < n_splits) coef[tid] = total > 0.0 ? e / total : 0.0;
  barrier();
  for (uint d = tid; d < D; d += WG) {
    vec4 a = vec4(0.0);
    uint s = 0;
    for (; s + 3u < n_splits; s += 4u) {
      const uint b = base + s * (D + 2u) + 2u + d;
      a += vec4(coef[s], coef[s + 1u], coef[s + 2u], coef[s + 3u]) *
           vec4(part[b], part[b + (D + 2u)], part[b + 2u * (D + 2u)], part[b + 3u * (D + 2u)]);
    }
    for (; s < n_splits; ++s) a.x += coef[s] * part[base + s * (D + 2u) + 2u + d];
    o[ob + d] = (a.x + a.y) + (a.z + a.w);
  }
}
