// matmul_coop: the prefill matmul on tensor cores through VK_NV_cooperative_matrix. Same product
// and bindings as matmul.comp:
//   Y[t * y_stride + m] = sum_k W[m, k] * X[t * x_stride + k],   t < N, m < M, k < K
// but the inputs are rounded to f16 (W after dequantisation, X as is) and multiplied by 16x16x16
// f16 cooperative matrices with fp32 accumulation. X values beyond the f16 range (65504) become
// infinities: fine for normalised activations, which is what the prefill matmuls take.
//
// Bindings:  0 W (read), 1 X (read, float), 2 Y (write, float)
// Push:      uint M, N, K, x_stride, y_stride
// Spec:      0 WG = 256 (8 subgroups of 32: the device's subgroup size must be 32)
// Grid:      (ceil(M / 128), ceil(N / 128), 1). A workgroup computes a 128-row x 128-token tile of
//            Y stepping K by 32: it dequantises W[128][32] and converts X[128][32] into shared
//            memory (f16; the global loads of the next step are issued before this step's
//            multiplies), then each subgroup multiplies 64 rows x 32 tokens (4 x 2 matrices of
//            16x16). Results go through a per-subgroup shared staging tile so that partial edge
//            tiles and any y_stride are written with bounds checks.
// Variants:  WTYPE_<every weights.glsl type>, always with STORAGE16 (the path is only chosen on
//            devices with 16-bit storage, float16 and the NV cooperative matrix extension).
#version 450
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#include "common.glsl"
#include "weights.glsl"

layout(binding = 1, std430) readonly buffer XBuf { float x[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint M;
  uint N;
  uint K;
  uint x_stride;
  uint y_stride;
} p;

#define BM 128u  // weight rows per workgroup
#define BN 128u  // tokens per workgroup
#define BK 32u
#define LDS 40u  // shared row stride in halves (80 bytes: 16-byte aligned rows, fewer conflicts)
#define SM 64u   // weight rows per subgroup (4 matrices)
#define SN 32u   // tokens per subgroup (2 matrices)

shared float16_t Ws[BM * LDS];  // Ws[m * LDS + k]
shared float16_t Xs[BN * LDS];  // Xs[t * LDS + k]
shared float Cs[8u * 256u];     // per-subgroup 16x16 staging, Cs[sg * 256 + t * 16 + m]

// This invocation's share of step k0: X[128 tokens][32] (16 values: token idx / 32, k idx % 32
// for idx = tid + 256 i) and W[128 rows][32] (per element like X, or two groups of 8).
void load_tile(uint k0, uint m0, uint n0, uint row_bytes, out float xr[16], out float wr[16]) {
  const uint tid = gl_LocalInvocationIndex;
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint idx = tid + 256u * i;
    const uint t = idx / BK, k = idx % BK;
    const uint gn = n0 + t, gk = k0 + k;
    xr[i] = (gn < p.N && gk < p.K) ? x[gn * p.x_stride + gk] : 0.0;
  }
#ifdef W_PER_ELEMENT
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint idx = tid + 256u * i;
    const uint r = idx / BK, k = idx % BK;
    const uint gm = m0 + r, gk = k0 + k;
    wr[i] = (gm < p.M && gk < p.K) ? w_elem(gm * row_bytes, gk) : 0.0;
  }
#else
  // K is a multiple of 32, so a group of 8 is wholly inside or outside K.
  [[unroll]] for (uint i = 0; i < 2u; ++i) {
    const uint g = tid + 256u * i;
    const uint r = g / (BK / 8u), kg = 8u * (g % (BK / 8u));
    const uint gm = m0 + r;
    float wv[8];
    if (gm < p.M && k0 + kg < p.K) {
      w_group8(gm * row_bytes, k0 + kg, wv);
    } else {
      [[unroll]] for (uint j = 0; j < 8u; ++j) wv[j] = 0.0;
    }
    [[unroll]] for (uint j = 0; j < 8u; ++j) wr[8u * i + j] = wv[j];
  }
#endif
}

void store_tile(float xr[16], float wr[16]) {
  const uint tid = gl_LocalInvocationIndex;
  [[unroll]] for (uint i = 0; i < 16u; ++i) {
    const uint idx = tid + 256u * i;
    Xs[(idx / BK) * LDS + idx % BK] = float16_t(xr[i]);
  }
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
  const uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
  const uint sm0 = (sg % 2u) * SM;     // this subgroup's rows within the tile
  const uint sn0 = (sg / 2u) * SN;     // and tokens
  const uint row_bytes = (p.K / W_BLOCK) * W_BLOCK_BYTES;

  fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[2][4];
  [[unroll]] for (uint i = 0; i < 2u; ++i) {
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
    }
  }

  // Global loads for step k0 + BK are issued before the multiplies of step k0 (registers xr, wr),
  // so their latency hides behind the tensor-core work.
  float xr[16], wr[16];
  load_tile(0u, m0, n0, row_bytes, xr, wr);
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    store_tile(xr, wr);
    barrier();
    if (k0 + BK < p.K) load_tile(k0 + BK, m0, n0, row_bytes, xr, wr);
    [[unroll]] for (uint kk = 0; kk < BK; kk += 16u) {
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a[2];
      fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> b[4];
      // A = X (tokens x k, row-major); B = W^T (k x rows), i.e. Ws read column-major.
      [[unroll]] for (uint i = 0; i < 2u; ++i) {
        coopMatLoadNV(a[i], Xs, (sn0 + 16u * i) * LDS + kk, LDS, false);
      }
      [[unroll]] for (uint j = 0; j < 4u; ++j) {
        coopMatLoadNV(b[j], Ws, (sm0 + 16u * j) * LDS + kk, LDS, true);
      }
      [[unroll]] for (uint i = 0; i < 2u; ++i) {
        [[unroll]] for (uint j = 0; j < 4u; ++j) acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
      }
    }
    barrier();
  }

  // acc[i][j] holds tokens n0 + sn0 + 16i + (0..15) x rows m0 + sm0 + 16j + (0..15).
  [[unroll]] for (uint i = 0; i < 2u; ++i) {
    [[unroll]] for (uint j = 0; j < 4u; ++j) {
      coopMatStoreNV(acc[i][j], Cs, sg * 256u, 16u, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      [[unroll]] for (uint e = 0; e < 8u; ++e) {
        const uint idx = lane + 32u * e;
        const uint t = n0 + sn0 + 16u * i + idx / 16u, m = m0 + sm0 + 16u * j + idx % 16u;
        if (t < p.N && m < p.M) y[t * p.y_stride + m] = Cs[sg * 256u + idx];
      }
      subgroupBarrier();
    }
  }
}
