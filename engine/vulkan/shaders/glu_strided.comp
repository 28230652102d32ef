// glu_strided: GeGLU over rows whose gate and up halves live at strides and offsets, e.g. the
// fused [gate | up] rows of MoE experts, or a PLE gate against one layer's slice of the per-layer
// inputs. For r < rows, i < n:
//   y[r * y_stride + y_off + i] = gelu_tanh(g[r * g_stride + g_off + i]) * u[r * u_stride + u_off + i]
// with gelu_tanh as gelu_mul.comp computes it (v * sigmoid(2z), z = sqrt(2/pi)(v + 0.044715 v^3)).
// y may alias g or u: every element is read and written by the same invocation.
//
// Bindings:  0 g (read, float), 1 u (read, float), 2 y (write, float)
// Push:      uint n, rows, g_stride, g_off, u_stride, u_off, y_stride, y_off
// Spec:      0 WG workgroup size
// Grid:      (ceil(n / WG), rows, 1)
#version 450
#include "common.glsl"

layout(binding = 0, std430) readonly buffer GBuf { float g[]; };
layout(binding = 1, std430) readonly buffer UBuf { float u[]; };
layout(binding = 2, std430) writeonly buffer YBuf { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  uint rows;
  uint g_stride;
  uint g_off;
  uint u_stride;
  uint u_off;
  uint y_stride;
  uint y_off;
} p;

void main() {
  const uint r = gl_WorkGroupID.y;
  const uint i = gl_WorkGroupID.x * WG + gl_LocalInvocationIndex;
  if (r >= p.rows || i >= p.n) return;
  const float v = g[r * p.g_stride + p.g_off + i];
  const float z = 0.7978845608028654 * (v + 0.044715 * v * v * v);
  y[r * p.y_stride + p.y_off + i] = v / (1.0 + exp(min(-2.0 * z, 80.0))) * u[r * p.u_stride + p.u_off + i];
}
