// gelu_mul: the GeGLU activation, y[i] = gelu_tanh(g[i]) * u[i] for i < n, where
//   gelu_tanh(v) = 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))
// computed as v * sigmoid(2z), z = sqrt(2/pi) (v + 0.044715 v^3), which is the same function
// without the cancellation of 1 + tanh(z) in the negative tail; exp's argument is capped at 80 so
// it stays finite (the result there is ~v * 1e-35, i.e. 0 in practice), never NaN.
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
  const float z = 0.7978845608028654 * (v + 0.044715 * v * v * v);
  y[i] = v / (1.0 + exp(min(-2.0 * z, 80.0))) * u[i];
}
