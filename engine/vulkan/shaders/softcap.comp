// softcap: y[i] = cap * tanh(x[i] / cap) for i < n (Gemma's final logit soft-capping, cap = 30).
// tanh through precise_tanh (common.glsl): accurate relative error for small x / cap too.
//
// Bindings:  0 x (read, float), 1 y (write, float; may be the same memory as x)
// Push:      uint n; float cap
// Spec:      0 WG workgroup size
// Grid:      ceil(n / WG) workgroups folded into (x, y) (common.glsl); one element each.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(binding = 1, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  float cap;
} p;

void main() {
  const uint i = group_index() * WG + gl_LocalInvocationIndex;
  if (i >= p.n) return;
  y[i] = p.cap * precise_tanh(x[i] / p.cap);
}
