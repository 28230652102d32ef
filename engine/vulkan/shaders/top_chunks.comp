// top_chunks: the best `keep` (<= TOP) values of each chunk of CHUNK floats of each row, best
// first, in the sampler's order (sampling::TopCandidates): higher value first, lower index on
// ties; NaN and -inf are never candidates (a chunk with fewer than `keep` of them pads with
// (-inf, 0xffffffff)); -0 counts as +0 (equal values). The union of the chunks' lists holds every
// row's best `keep`, so the host merges at most keep * chunks pairs instead of scanning the row.
//
// Each workgroup sorts its chunk in shared memory (bitonic, descending) by a key that orders
// floats as unsigned integers (0 for what is never a candidate), then writes the first TOP.
//
// Bindings:  0 x (read, float, rows x n), 1 out (write, uint pairs (value bits, index):
//            rows x chunks x TOP, the first `keep` of each chunk's TOP written)
// Push:      uint n (row length); uint chunks (ceil(n / CHUNK)); uint keep (1..TOP)
// Spec:      0 WG workgroup size (power of two, CHUNK / WG elements each)
// Grid:      (chunks, rows)
#version 450
#include "common.glsl"

const uint CHUNK = 2048u;
const uint TOP = 128u;

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) writeonly buffer OutBuf { uint out_pairs[]; };
layout(push_constant) uniform Push {
  uint n;
  uint chunks;
  uint keep;
} p;

shared uint s_key[CHUNK];
shared uint s_idx[CHUNK];

// (ka, ia) comes before (kb, ib).
bool before(uint ka, uint ia, uint kb, uint ib) {
  return ka > kb || (ka == kb && ia < ib);
}

void main() {
  const float kNegInf = uintBitsToFloat(0xff800000u);
  const uint tid = gl_LocalInvocationIndex;
  const uint g = gl_WorkGroupID.x;
  const uint row = gl_WorkGroupID.y;
  const uint base = g * CHUNK;
  for (uint e = tid; e < CHUNK; e += WG) {
    const uint i = base + e;
    uint key = 0u;
    uint idx = 0xffffffffu;
    if (i < p.n) {
      const float v = x[row * p.n + i];
      if (v > kNegInf) {  // NaN and -inf fail
        uint u = floatBitsToUint(v);
        if (u == 0x80000000u) u = 0u;  // -0 as +0 (on the bits: a compiler may fold v + 0.0)
        key = (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
        idx = i;
      }
    }
    s_key[e] = key;
    s_idx[e] = idx;
  }
  barrier();
  for (uint k = 2u; k <= CHUNK; k <<= 1u) {
    for (uint j = k >> 1u; j > 0u; j >>= 1u) {
      for (uint t = tid; t < CHUNK / 2u; t += WG) {
        const uint a = ((t & ~(j - 1u)) << 1u) | (t & (j - 1u));
        const uint b = a | j;
        const uint ka = s_key[a], ia = s_idx[a], kb = s_key[b], ib = s_idx[b];
        // Blocks with (a & k) == 0 end best first, the others worst first; the last stage
        // (k == CHUNK) sorts the whole chunk best first.
        const bool swap = (a & k) == 0u ? before(kb, ib, ka, ia) : before(ka, ia, kb, ib);
        if (swap) {
          s_key[a] = kb;
          s_idx[a] = ib;
          s_key[b] = ka;
          s_idx[b] = ia;
        }
      }
      barrier();
    }
  }
  for (uint r = tid; r < min(p.keep, TOP); r += WG) {
    const uint key = s_key[r];
    uint bits = 0xff800000u;  // -inf: padding
    if (key != 0u) bits = (key & 0x80000000u) != 0u ? key & 0x7fffffffu : ~key;
    const uint o = ((row * p.chunks + g) * TOP + r) * 2u;
    out_pairs[o] = bits;
    out_pairs[o + 1u] = key != 0u ? s_idx[r] : 0xffffffffu;
  }
}
