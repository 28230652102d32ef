// matmul_coop: the prefill matmul on tensor cores through VK_NV_cooperative_matrix (and, rewritten
// at build time by garnet-spirv-coop-khr, VK_KHR_cooperative_matrix: this glslc has no
// GL_KHR_cooperative_matrix). Same product and bindings as matmul.comp:
//   Y[t * y_stride + m] = sum_k W[m, k] * X[t * x_stride + k],   t < N, m < M, k < K
// but the inputs are rounded to f16 (W after dequantisation, X as is) and multiplied by 16x16x16
// f16 cooperative matrices with fp32 accumulation. X values beyond the f16 range (65504) become
// infinities: fine for normalised activations, which is what the prefill matmuls take.
//
// Bindings:  0 W (read), 1 X (read, float), 2 Y (write, float)
// Push:      uint M, N, K, x_stride, y_stride
// Spec:      0 WG = 256 (8 subgroups of 32: the device's subgroup size must be 32), 1 XVEC,
//            2 WVEC (16-byte loads where rows are aligned; see below)
// Grid:      (ceil(M / 128), ceil(N / 128), 1). A workgroup computes a 128-row x 128-token tile of
//            Y stepping K by 32: it dequantises W[128][32] and converts X[128][32] into shared
//            memory (f16; the global loads of the next step are issued before this step's
//            multiplies), then each subgroup multiplies 64 rows x 32 tokens (4 x 2 matrices of
//            16x16). Results go through a per-subgroup shared staging tile so that partial edge
//            tiles and any y_stride are written with bounds checks.
// Variants:  WTYPE_<every weights.glsl type>, always with STORAGE16 (the path is only chosen on
//            devices with 16-bit storage, float16 and a cooperative matrix extension), x MUL_ID;
//            each also as _khr (the KHR form). TILE_N64: 128-row x 64-token tiles (grid y =
//            ceil(N / 64)), as MUL_ID's, for matmuls whose 128x128 grid would leave SMs idle. The KHR form gives A and B distinct types, so a
//            value here must flow to one multiply-add operand only (a[] to A, b[] to B).
// MUL_ID (MoE experts, prefill; as matmul.comp's MUL_ID): the N rows are slots grouped by expert
// by moe_group.comp (binding 3); grid y walks its table of 64-slot tiles, each of ONE expert (te,
// matrix at te * expert_stride bytes). Tiles are 128 rows x 64 slots here (each subgroup 32 x 32:
// 2 x 2 matrices), since an expert gets few of a batch's slots. Slots of out-of-range ids get
// zeros.
//   extra binding 3 (read, uint: the grouping); extra push uint expert_stride, n_experts,
//   k_slots, x_slot_stride, max_tiles
#version 450
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#include "common.glsl"
#include "weights.glsl"

layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer XBuf4 { vec4 x4[]; };  // X again (XVEC)
// XVEC: every X row starts 16-byte aligned and K % 16 == 0, so X is loaded as vec4s (the
// mapping is next to load_tile). WVEC (Q4_K only): every weight row (and expert
// matrix) starts 16-byte aligned, so an invocation reads its 16 weights of one row as two 16-byte
// words: the block header (d, dmin, 12 scale bytes) and the 16 quant bytes. 0 is always correct.
layout(constant_id = 1) const uint XVEC = 0;
layout(constant_id = 2) const uint WVEC = 0;
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint M;
  uint N;
  uint K;
  uint x_stride;
  uint y_stride;
#ifdef MUL_ID
  uint expert_stride;
  uint n_experts;
  uint k_slots;
  uint x_slot_stride;
  uint max_tiles;
#endif
} p;
#ifdef MUL_ID
layout(binding = 3, std430) readonly buffer GBuf { uint g[]; };
#endif

#define BM 128u  // weight rows per workgroup
#define BK 32u
#define LDS 40u  // shared row stride in halves (80 bytes: 16-byte aligned rows, fewer conflicts)
#define SN 32u   // tokens per subgroup (2 matrices)
#if defined(MUL_ID) || defined(TILE_N64)
#define BN 64u   // slots (tokens) per workgroup (moe_group's tile)
#define SM 32u   // weight rows per subgroup (2 matrices)
#else
#define BN 128u  // tokens per workgroup
#define SM 64u   // weight rows per subgroup (4 matrices)
#endif
#define SGM (BM / SM)          // subgroups along the rows (8 in all)
#define MI (SN / 16u)          // token matrices per subgroup
#define MJ (SM / 16u)          // row matrices per subgroup
#define XPER (BN * BK / 256u)  // X values each invocation loads per step
shared uint xrow_s[BN];  // where each tile token's X row starts (0xffffffff: none)
shared uint yrow_s[BN];  // and its Y row

shared float16_t Ws[BM * LDS];  // Ws[m * LDS + k]
shared float16_t Xs[BN * LDS];  // Xs[t * LDS + k]
shared float Cs[8u * 256u];     // per-subgroup 16x16 staging, Cs[sg * 256 + t * 16 + m]

// XVEC: load i of invocation tid is the vec4 c = tid + 256 i of the step's X tile: token c / 8,
// k = 4 (c % 8), so a subgroup reads four token rows' 128 contiguous bytes each per load.
#if defined(WTYPE_Q4_K)
// WVEC: invocation tid takes weights 16 (tid % 2) .. +15 of row tid / 2 of the step's 32.
void load_w_q4k(uint k0, uint m0, uint wbase, uint row_bytes, out uvec4 wq[2]) {
  const uint tid = gl_LocalInvocationIndex;
  const uint gm = m0 + tid / 2u;
  if (gm >= p.M || k0 >= p.K) {
    wq[0] = uvec4(0u);
    wq[1] = uvec4(0u);
    return;
  }
  const uint b = wbase + gm * row_bytes + (k0 / 256u) * W_BLOCK_BYTES;
  const uint e = k0 % 256u + 16u * (tid % 2u);
  wq[0] = w_v4[b >> 4];                                   // d, dmin, scales[12]
  wq[1] = w_v4[(b + 16u + 32u * (e / 64u) + e % 32u) >> 4];  // qs: this half of the sub-block
}
// Byte i of the scales (bytes 4..15 of the header word).
uint q4k_sbyte(uvec4 h, uint i) { return byte_of(i < 4u ? h.y : (i < 8u ? h.z : h.w), i % 4u); }
void dequant_w_q4k(uint k0, uvec4 wq[2], out float wr[16]) {
  const uint tid = gl_LocalInvocationIndex;
  const uint e = k0 % 256u + 16u * (tid % 2u);
  const uint j = e / 32u, hi = j & 1u;  // sub-block; high nibbles for odd ones
  uint sc, mn;
  if (j < 4u) {
    sc = q4k_sbyte(wq[0], j) & 63u;
    mn = q4k_sbyte(wq[0], j + 4u) & 63u;
  } else {
    sc = (q4k_sbyte(wq[0], j + 4u) & 0xfu) | ((q4k_sbyte(wq[0], j - 4u) >> 6) << 4);
    mn = (q4k_sbyte(wq[0], j + 4u) >> 4) | ((q4k_sbyte(wq[0], j) >> 6) << 4);
  }
  const vec2 dm = unpackHalf2x16(wq[0].x);
  const float dl = dm.x * float(sc), ml = dm.y * float(mn);
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint q = (byte_of(wq[1][i / 4u], i % 4u) >> (4u * hi)) & 15u;
    wr[i] = dl * float(q) - ml;
  }
}
#endif

// This invocation's share of step k0: X[128 tokens][32] (16 values: token idx / 32, k idx % 32
// for idx = tid + 256 i; with XVEC as above) and W[128 rows][32] (per element like X, or two
// groups of 8; with WVEC raw words in wq, decoded by store_tile).
void load_tile(uint k0, uint m0, uint wbase, uint row_bytes, out float xr[XPER],
               out float wr[16], out uvec4 wq[2]) {
  const uint tid = gl_LocalInvocationIndex;
  if (XVEC != 0u) {
    [[unroll]] for (uint i = 0; i < XPER / 4u; ++i) {
      const uint c = tid + 256u * i;
      const uint xb = xrow_s[c / 8u], gk = k0 + 4u * (c % 8u);
      const vec4 v = (xb != 0xffffffffu && gk < p.K) ? x4[(xb + gk) / 4u] : vec4(0.0);
      xr[4u * i] = v.x;
      xr[4u * i + 1u] = v.y;
      xr[4u * i + 2u] = v.z;
      xr[4u * i + 3u] = v.w;
    }
  } else {
  [[unroll]] for (uint i = 0; i < XPER; ++i) {
    const uint idx = tid + 256u * i;
    const uint t = idx / BK, k = idx % BK;
    const uint gk = k0 + k, xb = xrow_s[t];
    xr[i] = (xb != 0xffffffffu && gk < p.K) ? x[xb + gk] : 0.0;
  }
  }
#if defined(WTYPE_Q4_K)
  if (WVEC != 0u) {
    load_w_q4k(k0, m0, wbase, row_bytes, wq);
    return;
  }
#endif
  wq[0] = uvec4(0u);
  wq[1] = uvec4(0u);
#ifdef W_PER_ELEMENT
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint idx = tid + 256u * i;
    const uint r = idx / BK, k = idx % BK;
    const uint gm = m0 + r, gk = k0 + k;
    wr[i] = (gm < p.M && gk < p.K) ? w_elem(wbase + gm * row_bytes, gk) : 0.0;
  }
#else
  // K is a multiple of 32, so a group of 8 is wholly inside or outside K.
  [[unroll]] for (uint i = 0; i < 2u; ++i) {
    const uint g = tid + 256u * i;
    const uint r = g / (BK / 8u), kg = 8u * (g % (BK / 8u));
    const uint gm = m0 + r;
    float wv[8];
    if (gm < p.M && k0 + kg < p.K) {
      w_group8(wbase + gm * row_bytes, k0 + kg, wv);
    } else {
      [[unroll]] for (uint j = 0; j < 8u; ++j) wv[j] = 0.0;
    }
    [[unroll]] for (uint j = 0; j < 8u; ++j) wr[8u * i + j] = wv[j];
  }
#endif
}

void store_tile(uint k0, float xr[XPER], float wr[16], uvec4 wq[2]) {
  const uint tid = gl_LocalInvocationIndex;
  if (XVEC != 0u) {
    [[unroll]] for (uint i = 0; i < XPER / 4u; ++i) {
      const uint c = tid + 256u * i;
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        Xs[(c / 8u) * LDS + 4u * (c % 8u) + j] = float16_t(xr[4u * i + j]);
      }
    }
  } else {
    [[unroll]] for (uint i = 0; i < XPER; ++i) {
      const uint idx = tid + 256u * i;
      Xs[(idx / BK) * LDS + idx % BK] = float16_t(xr[i]);
    }
  }
#if defined(WTYPE_Q4_K)
  if (WVEC != 0u) {
    float wd[16];
    dequant_w_q4k(k0, wq, wd);
    const uint r = tid / 2u, kk = 16u * (tid % 2u);
    [[unroll]] for (uint i = 0; i < 16u; ++i) Ws[r * LDS + kk + i] = float16_t(wd[i]);
    return;
  }
#endif
#ifdef W_PER_ELEMENT
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint idx = tid + 256u * i;
    Ws[(idx / BK) * LDS + idx % BK] = float16_t(wr[i]);
  }
#else
  [[unroll]] for (uint i = 0; i < 2u; ++i) {
    const uint g = tid + 256u * i;
    const uint r = g / (BK / 8u), kg = 8u * (g % (BK / 8u));
    [[unroll]] for (uint j = 0; j < 8u; ++j) Ws[r * LDS + kg + j] = float16_t(wr[8u * i + j]);
  }
#endif
}

void main() {
  const uint sg = gl_SubgroupID;       // 0..7
  const uint lane = gl_SubgroupInvocationID;
  const uint tid = gl_LocalInvocationIndex;
  const uint m0 = gl_WorkGroupID.x * BM;
  const uint sm0 = (sg % SGM) * SM;    // this subgroup's rows within the tile
  const uint sn0 = (sg / SGM) * SN;    // and tokens
  const uint row_bytes = (p.K / W_BLOCK) * W_BLOCK_BYTES;

  // The tile's token rows: where their X rows start and their Y rows go.
  uint wbase = 0u;
#ifdef MUL_ID
  const uint E1 = p.n_experts + 1u;
  const uint te = g[E1 + p.N + gl_WorkGroupID.y];
  if (te == 0xffffffffu) return;  // uniform: a tile the grid has beyond the table
  const uint j0 = g[E1 + p.N + p.max_tiles + gl_WorkGroupID.y];
  const uint jend = g[te];
  for (uint t = tid; t < BN; t += 256u) {
    const uint j = j0 + t;
    const uint slot = j < jend ? g[E1 + j] : 0xffffffffu;
    xrow_s[t] = slot == 0xffffffffu
                    ? 0xffffffffu
                    : (slot / p.k_slots) * p.x_stride + (slot % p.k_slots) * p.x_slot_stride;
    yrow_s[t] = slot == 0xffffffffu ? 0xffffffffu : slot * p.y_stride;
  }
  barrier();
  if (te == p.n_experts) {  // the slots whose id was out of range: zeros
    for (uint e = tid; e < BM * BN; e += 256u) {
      const uint t = e / BM, m = m0 + e % BM;
      if (m < p.M && yrow_s[t] != 0xffffffffu) y[yrow_s[t] + m] = 0.0;
    }
    return;
  }
  wbase = te * p.expert_stride;
#else
  const uint n0 = gl_WorkGroupID.y * BN;
  for (uint t = tid; t < BN; t += 256u) {
    xrow_s[t] = n0 + t < p.N ? (n0 + t) * p.x_stride : 0xffffffffu;
    yrow_s[t] = n0 + t < p.N ? (n0 + t) * p.y_stride : 0xffffffffu;
  }
  barrier();
#endif

  fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[MI][MJ];
  [[unroll]] for (uint i = 0; i < MI; ++i) {
    [[unroll]] for (uint j = 0; j < MJ; ++j) {
      acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
    }
  }

  // Global loads for step k0 + BK are issued before the multiplies of step k0 (registers xr, wr),
  // so their latency hides behind the tensor-core work.
  float xr[XPER], wr[16];
  uvec4 wq[2];
  load_tile(0u, m0, wbase, row_bytes, xr, wr, wq);
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    store_tile(k0, xr, wr, wq);
    barrier();
    if (k0 + BK < p.K) load_tile(k0 + BK, m0, wbase, row_bytes, xr, wr, wq);
    [[unroll]] for (uint kk = 0; kk < BK; kk += 16u) {
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a[MI];
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> b[MJ];
      // A = X (tokens x k, row-major); B = W^T (k x rows), i.e. Ws read column-major.
      [[unroll]] for (uint i = 0; i < MI; ++i) {
        coopMatLoadNV(a[i], Xs, (sn0 + 16u * i) * LDS + kk, LDS, false);
      }
      [[unroll]] for (uint j = 0; j < MJ; ++j) {
        coopMatLoadNV(b[j], Ws, (sm0 + 16u * j) * LDS + kk, LDS, true);
      }
      [[unroll]] for (uint i = 0; i < MI; ++i) {
        [[unroll]] for (uint j = 0; j < MJ; ++j) {
          acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
        }
      }
    }
    barrier();
  }

  // acc[i][j] holds tile tokens sn0 + 16i + (0..15) x rows m0 + sm0 + 16j + (0..15).
  [[unroll]] for (uint i = 0; i < MI; ++i) {
    [[unroll]] for (uint j = 0; j < MJ; ++j) {
      coopMatStoreNV(acc[i][j], Cs, sg * 256u, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      [[unroll]] for (uint e = 0; e < 8u; ++e) {
        const uint idx = lane + 32u * e;
        const uint yb = yrow_s[sn0 + 16u * i + idx / 16u];
        const uint m = m0 + sm0 + 16u * j + idx % 16u;
        if (yb != 0xffffffffu && m < p.M) y[yb + m] = Cs[sg * 256u + idx];
      }
      subgroupBarrier();
    }
  }
}
