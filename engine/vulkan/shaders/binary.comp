// binary: element-wise y[i] = (a[i] OP b[i % b_len]) * scale for i < n, OP = + (op 0) or * (op 1).
// b repeats with period b_len, so one vector can scale or shift every row. Covers the residual
// add (op 0, scale 1), a layer scalar (op 1 with b_len 1, or scale), add-then-scale.
//
// Bindings:  0 a (read, float), 1 b (read, float[b_len]), 2 y (write, float; may alias a or b)
// Push:      uint n, b_len, op; float scale
// Spec:      0 WG workgroup size
// Grid:      ceil(n / WG) workgroups folded into (x, y) (common.glsl); one element each.
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer ABuf { float a[]; };
layout(binding = 1, std430) readonly buffer BBuf { float b[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  uint b_len;
  uint op;
  float scale;
} p;

void main() {
  const uint i = group_index() * WG + gl_LocalInvocationIndex;
  if (i >= p.n) return;
  const float bv = b[i % p.b_len];
  const float v = p.op == 0u ? a[i] + bv : a[i] * bv;
  y[i] = v * p.scale;
}
