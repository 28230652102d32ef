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
// invocation k % WG): each copy also written as q8x (q8x_put.glsl), the input the matvec XQ
// variants read (matvec.comp): copy j of token t at byte (t * count + j) * 3n / 2 of binding
// NN_BINDING + 3. n must be a multiple of 32 and at most 4 WG; WG a multiple of 32.
#define Q8X_BINDING (NN_BINDING + 3)
#include "q8x_put.glsl"

// The copies' q8x from the values they were written with: v[u] * inv * w_j[u] for element
// tid + u WG. Called by every invocation of the workgroup.
void nnq_write(uint t, uint n, uint count, float v[4], float inv, float w0[4], float w1[4]) {
  const uint tid = gl_LocalInvocationIndex;
  const uint bytes = n + n / 2u;
  [[unroll]] for (uint u = 0; u < 4u; ++u) {
    if (u * WG >= n) break;
    const uint k = tid + u * WG;
    [[unroll]] for (uint j = 0; j < 2u; ++j) {
      if (j >= count) break;
      q8x_put((t * count + j) * bytes, n, k,
              k < n ? v[u] * inv * (j == 0u ? w0[u] : w1[u]) : 0.0);
    }
  }
}
#endif
