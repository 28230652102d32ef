// get_rows: embedding gather. For token t and element k < in:
//   y[t * y_stride + k] = W[ids[t], k] * scale        (W rows in a GGUF weight type, weights.glsl)
// A row id outside [0, n_rows) (ids can come from the GPU, e.g. a sampler) gives a row of zeros
// instead of a read outside the table.
//
// Bindings:  0 W (read), 1 ids (read, int[n_tokens]), 2 y (write, float)
// Push:      uint in, n_rows, n_tokens, y_stride; float scale
// Spec:      0 WG workgroup size
// Grid:      (ceil(in / WG), n_tokens, 1)
// Variants:  WTYPE_<every weights.glsl type> x STORAGE16 (not for F32).
#version 450
#include "common.glsl"
#include "weights.glsl"

layout(binding = 1, std430) readonly buffer IBuf { int ids[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint in_;
  uint n_rows;
  uint n_tokens;
  uint y_stride;
  float scale;
} p;

void main() {
  const uint k = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  const uint t = gl_WorkGroupID.y;
  if (k >= p.in_ || t >= p.n_tokens) return;
  const int id = ids[t];
  float v = 0.0;
  if (id >= 0 && uint(id) < p.n_rows) {
    v = w_elem(uint(id) * ((p.in_ / W_BLOCK) * W_BLOCK_BYTES), k) * p.scale;
  }
  y[t * p.y_stride + k] = v;
}
