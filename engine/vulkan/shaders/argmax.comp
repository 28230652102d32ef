// argmax: the greedy pick of each row of floats, the sampler's rule (sampling::GreedyPick): the
// lowest index holding the row's largest value; NaN and -inf never win; 0xffffffff when no value
// qualifies. Two stages, one dispatch each (a barrier between):
//   stage 0: workgroup (g, r) scans elements [g * chunk, (g + 1) * chunk) of row r and writes
//            its best (value bits, index) pair to part[(r * groups + g) * 2 ..];
//   stage 1: workgroup r reduces row r's `groups` pairs and writes out[r].
// Ties resolve by index in both stages, so the result does not depend on which invocation saw a
// value first.
//
// Bindings:  0 x (read, float; stage 0), 1 part (stage 0 writes, stage 1 reads: uint pairs),
//            2 out (write, uint; stage 1)
// Push:      uint n (row length); uint rows; uint groups (per row, <= WG); uint chunk (elements
//            per stage-0 workgroup); uint stage
// Spec:      0 WG workgroup size (power of two)
// Grid:      stage 0: (groups, rows); stage 1: (rows, 1)
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) buffer PartBuf { uint part[]; };
layout(binding = 2, std430) writeonly buffer OutBuf { uint out_ids[]; };
layout(push_constant) uniform Push {
  uint n;
  uint rows;
  uint groups;
  uint chunk;
  uint stage;
} p;

const uint kNone = 0xffffffffu;

shared float red_v[WG];
shared uint red_i[WG];

// (v, i) ranks before (bv, bi). Callers pass only values > -inf (or the empty pair (-inf, kNone)).
bool better(float v, uint i, float bv, uint bi) {
  return v > bv || (v == bv && i < bi);
}

void main() {
  const float kNegInf = uintBitsToFloat(0xff800000u);
  const uint tid = gl_LocalInvocationIndex;
  float bv = kNegInf;
  uint bi = kNone;
  uint row;
  if (p.stage == 0u) {
    row = gl_WorkGroupID.y;
    const uint g = gl_WorkGroupID.x;
    const uint begin = g * p.chunk;
    const uint end = min(begin + p.chunk, p.n);
    const uint base = row * p.n;
    for (uint i = begin + tid; i < end; i += WG) {
      const float v = x[base + i];
      // NaN fails v > -inf: never a candidate.
      if (v > kNegInf && better(v, i, bv, bi)) {
        bv = v;
        bi = i;
      }
    }
  } else {
    row = gl_WorkGroupID.x;
    if (tid < p.groups) {
      const uint o = (row * p.groups + tid) * 2u;
      bv = uintBitsToFloat(part[o]);
      bi = part[o + 1u];
    }
  }
  red_v[tid] = bv;
  red_i[tid] = bi;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) {
      const float ov = red_v[tid + s];
      const uint oi = red_i[tid + s];
      if (oi != kNone && better(ov, oi, red_v[tid], red_i[tid])) {
        red_v[tid] = ov;
        red_i[tid] = oi;
      }
    }
    barrier();
  }
  if (tid != 0u) return;
  if (p.stage == 0u) {
    const uint o = (row * p.groups + gl_WorkGroupID.x) * 2u;
    part[o] = floatBitsToUint(red_v[0]);
    part[o + 1u] = red_i[0];
  } else {
    out_ids[row] = red_i[0];
  }
}
