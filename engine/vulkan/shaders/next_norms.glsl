// NEXT_NORMS: the kernels that end a residual update (norm_add.comp, moe_tail.comp) also write
// the normalised copies of the updated row that the next matvecs read, so those need no norm of
// their own (decode: the plain matvec variants, fewer registers and loads than the NORM ones):
//   nn_out[(t * nn_count + j) * n + k] = h'[t, k] / sqrt(mean_k(h'[t, k]^2) + eps) * w_j[k]
// for j < nn_count <= 2, h' the updated row. Include after common.glsl with NN_BINDING set to
// the first of three bindings: the output (written), then w_0 and w_1 (read; w_1 unused when
// nn_count is 1, bind w_0 there).
#ifdef NEXT_NORMS
layout(binding = NN_BINDING, std430) writeonly buffer NnOutBuf { float nn_out[]; };
layout(binding = NN_BINDING + 1, std430) readonly buffer NnW0Buf { float nn_w0[]; };
layout(binding = NN_BINDING + 2, std430) readonly buffer NnW1Buf { float nn_w1[]; };

// Writes element k of token t's copies, given the row's 1 / rms.
void nn_write(uint t, uint k, uint n, uint count, float v, float inv) {
  const uint o = t * count * n + k;
  nn_out[o] = v * inv * nn_w0[k];
  if (count > 1u) nn_out[o + n] = v * inv * nn_w1[k];
}
// The same with the weights w_0[k], w_1[k] loaded before (the kernels' register paths load them
// with their other inputs, so the copies cost no memory round trip after the last reduction).
void nn_load(uint k, uint count, out float w0, out float w1) {
  w0 = nn_w0[k];
  w1 = count > 1u ? nn_w1[k] : 0.0;
}
void nn_write_w(uint t, uint k, uint n, uint count, float v, float inv, float w0, float w1) {
  const uint o = t * count * n + k;
  nn_out[o] = v * inv * w0;
  if (count > 1u) nn_out[o + n] = v * inv * w1;
}
#endif

#if defined(NEXT_NORMS) && defined(NN_Q8X)
// NN_Q8X (decode; the kernels' register path of 4 elements per invocation, element k held by
// invocation k % WG): each copy also written as q8x, the input the matvec XQ variants read
// (matvec.comp): for copy j of token t at byte (t * count + j) * 3n / 2 of binding
// NN_BINDING + 3, n bytes of int8 values q, then per block of 32 elements a vec4 (d, d * the
// sum of its first 16 q, d * the sum of its last 16 q, 0), where d = max |v| / 127 over the
// block and q = round(v / d) (0 for a block of zeros). n must be a multiple of 32 and at most
// 4 WG.
layout(binding = NN_BINDING + 3, std430) writeonly buffer NnQWords { uint nnq_words_out[]; };
layout(binding = NN_BINDING + 3, std430) writeonly buffer NnQMeta { vec4 nnq_meta_out[]; };
#ifdef NNQ_CLUSTERED
#extension GL_KHR_shader_subgroup_clustered : require
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
layout(binding = NN_BINDING + 3, std430) writeonly buffer NnQBytes { int8_t nnq_bytes_out[]; };
// NNQ_CLUSTERED (subgroups of 32 or 64 invocations with clustered operations, 8-bit storage;
// WG a multiple of 32): element k sits in invocation k % WG, so a 32-block is one aligned
// cluster of 32 invocations. Its maximum and its half sums are clustered reductions and each
// invocation stores its own byte: no shared memory, atomics or barriers. Same bytes as the
// shared-memory form below.
void nnq_write(uint t, uint n, uint count, float v[4], float inv, float w0[4], float w1[4]) {
  const uint tid = gl_LocalInvocationIndex;
  const uint bytes = n + n / 2u;
  [[unroll]] for (uint u = 0; u < 4u; ++u) {
    if (u * WG >= n) break;
    const uint k = tid + u * WG;
    [[unroll]] for (uint j = 0; j < 2u; ++j) {
      if (j >= count) break;
      const float x = k < n ? v[u] * inv * (j == 0u ? w0[u] : w1[u]) : 0.0;
      const float amax = subgroupClusteredMax(abs(x), 32u);
      const int q = amax > 0.0 ? clamp(int(roundEven(x * (127.0 / amax))), -127, 127) : 0;
      // Both half sums (each within +-2032) in one reduction: the first 16 values' in the low
      // bits, the last 16's times 65536.
      const int both = subgroupClusteredAdd((k & 16u) == 0u ? q : q * 65536, 32u);
      const int lo = (both << 16) >> 16, hi = (both - lo) >> 16;
      const uint base = (t * count + j) * bytes;
      if (k < n) nnq_bytes_out[base + k] = int8_t(q);
      if (k < n && (k & 31u) == 0u) {
        const float d = amax / 127.0;
        nnq_meta_out[(base + n) / 16u + (k >> 5)] = vec4(d, d * float(lo), d * float(hi), 0.0);
      }
    }
  }
}
#else
const uint NNQ_MAX = 4u * WG;
shared uint nnq_amax[2u * NNQ_MAX / 32u];
shared uint nnq_word[2u * NNQ_MAX / 4u];
shared int nnq_sum[2u * NNQ_MAX / 16u];

// The copies' q8x from the values they were written with: v[u] * inv * w_j[u] for element
// tid + u WG. Called by every invocation of the workgroup (it has barriers).
void nnq_write(uint t, uint n, uint count, float v[4], float inv, float w0[4], float w1[4]) {
  const uint tid = gl_LocalInvocationIndex;
  for (uint i = tid; i < 2u * NNQ_MAX / 4u; i += WG) nnq_word[i] = 0u;
  for (uint i = tid; i < 2u * NNQ_MAX / 16u; i += WG) nnq_sum[i] = 0;
  for (uint i = tid; i < 2u * NNQ_MAX / 32u; i += WG) nnq_amax[i] = 0u;
  barrier();
  // |v| as bits: for finite non-negative floats the integer order is the float order.
  // With USE_SUBGROUP the subgroup reduces first and one invocation of it updates shared memory
  // (fewer atomics on one address; the kernels check the subgroups tile the 32-blocks: a size
  // dividing 32, consecutive invocations).
  [[unroll]] for (uint u = 0; u < 4u; ++u) {
    const uint k = tid + u * WG;
    for (uint j = 0; j < min(count, 2u); ++j) {
      const float a = k < n ? abs(v[u] * inv * (j == 0u ? w0[u] : w1[u])) : 0.0;
#ifdef USE_SUBGROUP
      const float m = subgroupMax(a);
      if (subgroupElect() && k < n) atomicMax(nnq_amax[j * (NNQ_MAX / 32u) + (k >> 5)], floatBitsToUint(m));
#else
      if (k < n) atomicMax(nnq_amax[j * (NNQ_MAX / 32u) + (k >> 5)], floatBitsToUint(a));
#endif
    }
  }
  barrier();
  [[unroll]] for (uint u = 0; u < 4u; ++u) {
    const uint k = tid + u * WG;
    for (uint j = 0; j < min(count, 2u); ++j) {
      const float x = k < n ? v[u] * inv * (j == 0u ? w0[u] : w1[u]) : 0.0;
      const float amax = k < n ? uintBitsToFloat(nnq_amax[j * (NNQ_MAX / 32u) + (k >> 5)]) : 0.0;
      const int q = amax > 0.0 ? clamp(int(roundEven(x * (127.0 / amax))), -127, 127) : 0;
      if (k < n) atomicOr(nnq_word[j * (NNQ_MAX / 4u) + (k >> 2)], uint(q & 0xff) << (8u * (k & 3u)));
#ifdef USE_SUBGROUP
      const uint half_hi = (k >> 4) & 1u;
      const int lo = subgroupAdd(half_hi == 0u ? q : 0), hi = subgroupAdd(half_hi == 1u ? q : 0);
      if (subgroupElect() && k < n) {
        const uint sb = j * (NNQ_MAX / 16u) + ((k >> 5) << 1);
        if (lo != 0) atomicAdd(nnq_sum[sb], lo);
        if (hi != 0) atomicAdd(nnq_sum[sb + 1u], hi);
      }
#else
      if (k < n) atomicAdd(nnq_sum[j * (NNQ_MAX / 16u) + (k >> 4)], q);
#endif
    }
  }
  barrier();
  const uint bytes = n + n / 2u;
  for (uint j = 0; j < min(count, 2u); ++j) {
    const uint base = (t * count + j) * bytes;
    for (uint i = tid; i < n / 4u; i += WG) {
      nnq_words_out[base / 4u + i] = nnq_word[j * (NNQ_MAX / 4u) + i];
    }
    for (uint b = tid; b < n / 32u; b += WG) {
      const float d = uintBitsToFloat(nnq_amax[j * (NNQ_MAX / 32u) + b]) / 127.0;
      const uint sb = j * (NNQ_MAX / 16u) + 2u * b;
      nnq_meta_out[(base + n) / 16u + b] =
          vec4(d, d * float(nnq_sum[sb]), d * float(nnq_sum[sb + 1u]), 0.0);
    }
  }
}
#endif  // NNQ_CLUSTERED
#endif
