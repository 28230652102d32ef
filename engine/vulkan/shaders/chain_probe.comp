// chain_probe: a measurement kernel for garnet-vkbench --chain, not used by the engine. It runs
// `phases` dependent Q4_K matvecs (n x n, one matrix per phase) in ONE dispatch:
//   act[(p + 1) * n + r] = sum_k W_p[r, k] * act[p * n + k]
// Work is split into tasks of NROWS rows of one phase. A workgroup takes tasks in ticket order
// (an atomic counter), so every task of phase p - 1 is held by a workgroup that started before
// any workgroup waits on it: waiting only on smaller tickets cannot deadlock, however many
// workgroups are resident. A task of phase p waits until phase p - 1 has counted all its tasks
// done. With PREFETCH the task's weight words are loaded before that wait (they do not depend on
// the previous phase), so their memory latency overlaps the previous phase's tail.
//
// Bindings: 0 W (read, Q4_K rows, 16-byte aligned, phases matrices back to back)
//           1 act (read/write, float[(phases + 1) * n])
//           2 ctr (read/write, uint[(1 + phases) * stride], zero before the dispatch: [0] the
//             ticket, [(1 + p) * stride] tasks of phase p done)
// Push:     uint n (multiple of 256, n / 32 <= WG), phases, stride (uints between counters)
// IDOT: the items as matvec.comp's IDOT variants compute them (integer dot products), so the
// output matches a dispatch chain of Kernels::Matvec on devices that use those.
// Spec:     0 WG, 1 NROWS (<= 8), 2 PREFETCH (0 or 1), 3 SYNC (0: no waits at all, a reference
//           for the work without the dependency; its output is wrong), 4 TICKET (0, only with
//           SYNC 0: workgroup g takes tasks g, g + groups, ... without the counter)
#version 450
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint NROWS = 4;
layout(constant_id = 2) const uint PREFETCH = 1;
layout(constant_id = 3) const uint SYNC = 1;  // 0: no waits (a throughput reference; wrong output)
layout(constant_id = 4) const uint TICKET = 1;  // 0 (only with SYNC 0): task g + i * groups
// 5 PART (with SYNC 0, a breakdown of the work; wrong output): 0 everything; 1 no dequantising
// (one operation per row on the loaded words); 2 no reduction (the row sums are kept only in a
// never-taken store); 3 no weight loads (words made from the indices)
layout(constant_id = 5) const uint PART = 0;

#define WTYPE_Q4_K
#include "weights.glsl"  // binding 0: the rows as 16-byte words, w_v4
#include "matvec_items.glsl"
layout(binding = 1, std430) coherent buffer ABuf { float act[]; };
layout(binding = 1, std430) coherent buffer ABuf4 { vec4 act4[]; };
layout(binding = 2, std430) coherent buffer CBuf { uint ctr[]; };
layout(binding = 2, std430) coherent volatile buffer CBufV { uint ctr_v[]; };
layout(push_constant) uniform Push {
  uint n;
  uint phases;
  uint stride;  // uints between counters (64: one per 256 bytes)
} p;

shared uint s_ticket;
shared float s_red[NROWS * (WG / 4u)];


void main() {
  const uint tid = gl_LocalInvocationIndex;
  const uint n = p.n;
  const uint tasks = n / NROWS;  // per phase
  const uint items = n / 32u;    // 16-byte words of qs per row (8 per 256-block)
  const uint row16 = n / 256u * 9u;
  const bool live = tid < items;
  const uint blk = tid >> 3, u = tid & 7u, c = u >> 1;
  for (uint iter = 0;; ++iter) {
    uint t;
    if (TICKET != 0u) {
      if (tid == 0u) s_ticket = atomicAdd(ctr[0], 1u);
      barrier();
      t = s_ticket;
      barrier();
    } else {
      t = gl_WorkGroupID.x + iter * gl_NumWorkGroups.x;
    }
    if (t >= tasks * p.phases) return;
    const uint ph = t / tasks, row0 = (t % tasks) * NROWS;
    const uint mat16 = ph * n * row16;
    uvec4 hd[NROWS], q[NROWS];
    if (PART == 3u) {
      for (uint r = 0; r < NROWS; ++r) {
        hd[r] = uvec4(0x1c001c00u ^ (t & 1u), row0 * 0x01010101u + r, tid * 0x01010101u, t);
        q[r] = uvec4(t + r, tid, row0, r * 0x01010101u);
      }
    } else if (PREFETCH != 0u && live) {
      for (uint r = 0; r < NROWS; ++r) {
        const uint b4 = mat16 + (row0 + r) * row16 + blk * 9u;
        hd[r] = w_v4[b4];
        q[r] = w_v4[b4 + 1u + u];
      }
    }
    if (SYNC != 0u && ph > 0u) {
      if (tid == 0u) {
        while (atomicLoad(ctr[ph * p.stride], gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsAcquire) <
               tasks) {
        }
      }
      controlBarrier(gl_ScopeWorkgroup, gl_ScopeDevice, gl_StorageSemanticsBuffer,
                     gl_SemanticsAcquireRelease);
    }
    float acc[NROWS];
    for (uint r = 0; r < NROWS; ++r) acc[r] = 0.0;
    if (live) {
      if (PREFETCH == 0u && PART != 3u) {
        for (uint r = 0; r < NROWS; ++r) {
          const uint b4 = mat16 + (row0 + r) * row16 + blk * 9u;
          hd[r] = w_v4[b4];
          q[r] = w_v4[b4 + 1u + u];
        }
      }
      const uint xo = ph * n + blk * 256u + 64u * c + 16u * (u & 1u);
      vec4 xl[4], xh[4];
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        xl[j] = act4[(xo >> 2) + j];
        xh[j] = act4[((xo + 32u) >> 2) + j];
      }
      if (PART == 1u) {
        for (uint r = 0; r < NROWS; ++r) {
          acc[r] = uintBitsToFloat((q[r].x ^ q[r].y ^ q[r].z ^ q[r].w ^ hd[r].x ^ hd[r].y) & 0x3fffffffu) * xl[0].x + xh[3].w;
        }
      } else {
        const float sum_l = dot(xl[0] + xl[1] + xl[2] + xl[3], vec4(1.0));
        const float sum_h = dot(xh[0] + xh[1] + xh[2] + xh[3], vec4(1.0));
#ifdef IDOT
        uvec4 xlq, xhq;
        const float xs = q4k_quantize_x(xl, xh, xlq, xhq);
        for (uint r = 0; r < NROWS; ++r) {
          acc[r] = q4k_item16_idot_words(hd[r], q[r], u, xlq, xhq, xs, sum_l, sum_h);
        }
#else
        for (uint r = 0; r < NROWS; ++r) {
          acc[r] = q4k_item16_words(hd[r], q[r], u, xl, xh, sum_l, sum_h);
        }
#endif
      }
    }
    if (PART == 2u) {
      float s = 0.0;
      for (uint r = 0; r < NROWS; ++r) s += acc[r];
      if (s == 1234.5678) act[0] = s;
      continue;
    }
    const uint per = WG / 4u;
    for (uint r = 0; r < NROWS; ++r) {
      const float v = subgroupAdd(acc[r]);
      if (subgroupElect()) s_red[r * per + gl_SubgroupID] = v;
    }
    barrier();
    if (tid == 0u) {
      for (uint r = 0; r < NROWS; ++r) {
        float s = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; ++i) s += s_red[r * per + i];
        act[(ph + 1u) * n + row0 + r] = s;
      }
      atomicAdd(ctr[(1u + ph) * p.stride], 1u, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsRelease);
    }
  }
}
