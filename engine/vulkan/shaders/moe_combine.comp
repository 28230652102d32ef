// moe_combine: the weighted sum of each token's expert outputs. For token t < n_tokens and
// element h < H:
//   y[t * H + h] = sum_{i < K, w[t * K + i] != 0} w[t * K + i] * x[(t * K + i) * H + h]
// (slots in order i = 0..K-1; a slot of weight 0, e.g. moe_route's empty slot, is skipped, so
// whatever its x row holds never reaches y).
//
// Bindings:  0 x (read, float[n_tokens * K][H]), 1 w (read, float[n_tokens][K]),
//            2 y (write, float[n_tokens][H])
// Push:      uint H, K, n_tokens
// Spec:      0 WG workgroup size
// Grid:      (ceil(H / WG), n_tokens, 1)
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) readonly buffer WBuf { float w[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint H;
  uint K;
  uint n_tokens;
} p;

void main() {
  const uint t = gl_WorkGroupID.y;
  const uint h = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  if (t >= p.n_tokens || h >= p.H) return;
  float acc = 0.0;
  for (uint i = 0u; i < p.K; ++i) {
    const float wi = w[t * p.K + i];
    if (wi != 0.0) acc += wi * x[(t * p.K + i) * p.H + h];
  }
  y[t * p.H + h] = acc;
}
