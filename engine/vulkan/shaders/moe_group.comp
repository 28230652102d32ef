// moe_group: groups the (token, slot) pairs of an MoE layer by expert, for the prefill expert
// matmul (matmul.comp with MUL_ID). Slot i (= token * k + s) routed to expert ids[i]; ids outside
// [0, n_experts) go to a pseudo-expert n_experts whose rows the matmul writes as zeros.
//
// Output (binding 1, uint), with E = n_experts, S = n_slots, T = max_tiles:
//   end[E + 1]     end[e] = index in `list` one past expert e's last slot (start: end[e - 1])
//   list[S]        slot indices, grouped by expert (order within an expert unspecified)
//   tile_e[T]      expert of each 64-slot tile of the matmul grid; 0xffffffff: no tile
//   tile_start[T]  index in `list` of the tile's first slot
// T >= ceil(S / 64) + E + 1 always covers every tile.
//
// Bindings:  0 ids (read, int[S]), 1 groups (write, uint)
// Push:      uint n_experts (<= 1024), n_slots, max_tiles
// Spec:      0 WG workgroup size
// Grid:      one workgroup.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer IdBuf { int ids[]; };
layout(binding = 1, std430) buffer GBuf { uint g[]; };
layout(push_constant) uniform Push {
  uint n_experts;
  uint n_slots;
  uint max_tiles;
} p;

#define TILE 64u
shared uint cnt[1025];
shared uint fill[1025];

uint bucket(uint i) {
  const int id = ids[i];
  return (id < 0 || uint(id) >= p.n_experts) ? p.n_experts : uint(id);
}

void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint E1 = p.n_experts + 1u;
  for (uint e = tid; e < E1; e += WG) cnt[e] = 0u;
  barrier();
  for (uint i = tid; i < p.n_slots; i += WG) atomicAdd(cnt[bucket(i)], 1u);
  barrier();
  if (tid == 0u) {
    // Serial prefix over at most 1025 experts and the tile table (a few hundred entries).
    const uint tiles = E1 + p.n_slots;  // offset of tile_e
    uint off = 0u, t = 0u;
    for (uint e = 0; e < E1; ++e) {
      fill[e] = off;
      for (uint s = 0; s < cnt[e]; s += TILE) {
        g[tiles + t] = e;
        g[tiles + p.max_tiles + t] = off + s;
        ++t;
      }
      off += cnt[e];
      g[e] = off;
    }
    for (; t < p.max_tiles; ++t) {
      g[tiles + t] = 0xffffffffu;
      g[tiles + p.max_tiles + t] = 0u;
    }
  }
  barrier();
  for (uint i = tid; i < p.n_slots; i += WG) {
    const uint pos = atomicAdd(fill[bucket(i)], 1u);
    g[E1 + pos] = i;
  }
}
