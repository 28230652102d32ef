// gelu_mul: the GeGLU activation, y[i] = gelu_tanh(g[i]) * u[i] for i < n, where
//   gelu_tanh(v) = 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
// (tanh through precise_tanh, common.glsl: accurate near 0, no NaN for large inputs).
//
// Bindings:  0 g (read, float), 1 u (read, float), 2 y (write, float; may alias g or u)
// Push:      uint n
// Spec:      0 WG workgroup size
// Grid:      ceil(n / WG) workgroups folded into (x, y) (common.glsl); one element each.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer GBuf { float g[]; };
layout(binding = 1, std430) readonly buffer UBuf { float u[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push { uint n; } p;

void main() {
  const uint i = group_index() * WG + gl_LocalInvocationIndex;
  if (i >= p.n) return;
  const float v = g[i];
  const float inner = 0.7978845608028654 * (v + 0.044715 * v * v * v);
  y[i] = 0.5 * v * (1.0 + precise_tanh(inner)) * u[i];
}
