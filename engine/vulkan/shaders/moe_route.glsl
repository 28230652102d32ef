// moe_route.glsl: the routing of one token by one workgroup (moe_route.comp's formula):
// softmax over E logits, the K most probable experts (ties: lower id first), their renormalised
// probabilities times the per-expert scale. Include after common.glsl, with
//   ROUTE_LOGIT(i)  an expression reading logit i (of the whole buffer),
//   route_scale[]   float per expert (read only when has_scale),
//   route_ids[], route_weights[]   int / float outputs, K per token.
// Method: softmax with wg_max / wg_sum (each logit loaded once); then every expert's rank in that
// order (how many experts come before it: one pass over shared p, eight comparisons per step, no
// early exit); ranks < K are the chosen slots; slot i's weight is then written by invocation i
// (its scale load in parallel with the others). E <= 1024, K <= 64. Call in uniform control flow.

shared float route_prob[1024];
shared float route_chosen_p[64];
shared uint route_chosen_i[64];

// True when (va, ia) ranks before (vb, ib).
bool route_before(float va, uint ia, float vb, uint ib) {
  return va > vb || (va == vb && ia < ib);
}

// Token t, whose E logits start at ROUTE_LOGIT(lb); writes route_ids / route_weights [t * K ..).
void moe_route_token(uint t, uint lb, uint E, uint K, bool has_scale) {
  const uint tid = gl_LocalInvocationIndex;
  // Each invocation's logits in registers (E <= 1024 logits over the workgroup).
  const uint PER = (1024u + WG - 1u) / WG;
  float lv[PER];
  float mx = -1e30;
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    lv[u] = e < E ? ROUTE_LOGIT(lb + e) : -1e30;
    mx = max(mx, lv[u]);
  }
  mx = wg_max(mx);
  float s = 0.0;
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    if (e < E) {
      lv[u] = exp(lv[u] - mx);
      s += lv[u];
    }
  }
  const float inv = 1.0 / wg_sum(s);
  [[unroll]] for (uint u = 0; u < PER; ++u) {
    const uint e = tid + u * WG;
    if (e < E) route_prob[e] = lv[u] * inv;
  }
  for (uint k = tid; k < K; k += WG) {
    route_chosen_p[k] = 0.0;
    route_chosen_i[k] = 0xffffffffu;
  }
  barrier();
  // NaN probabilities (from NaN logits) fail p >= 0 and are never chosen.
  for (uint e = tid; e < E; e += WG) {
    const float pe = route_prob[e];
    if (!(pe >= 0.0)) continue;
    uint rank = 0;
    uint f = 0;
    for (; f + 7u < E; f += 8u) {
      [[unroll]] for (uint u = 0; u < 8u; ++u) {
        const float pf = route_prob[f + u];
        rank += pf >= 0.0 && route_before(pf, f + u, pe, e) ? 1u : 0u;
      }
    }
    for (; f < E; ++f) {
      const float pf = route_prob[f];
      rank += pf >= 0.0 && route_before(pf, f, pe, e) ? 1u : 0u;
    }
    if (rank < K) {
      route_chosen_p[rank] = pe;
      route_chosen_i[rank] = e;
    }
  }
  barrier();
  float sum = 0.0;
  for (uint k = 0; k < K; ++k) sum += route_chosen_p[k];
  for (uint k = tid; k < K; k += WG) {
    const uint e = route_chosen_i[k];
    if (e >= E || !(sum > 0.0)) {
      route_ids[t * K + k] = -1;
      route_weights[t * K + k] = 0.0;
      continue;
    }
    float w = route_chosen_p[k] / sum;
    if (has_scale) w *= route_scale[e];
    route_ids[t * K + k] = int(e);
    route_weights[t * K + k] = w;
  }
}
