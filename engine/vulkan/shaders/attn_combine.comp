// attn_combine: merges the partial results of attn_decode.comp's split mode (flash-decoding)
// for query token t and head h (attn_combine.glsl has the formula).
//
// Bindings:  0 part (read, float): [(t * n_q_heads + h) * n_splits + s] blocks of (D + 2) floats:
//              m, l, acc[0..D)
//            1 O (write, float): [n_tokens][o_tok_stride], head h at h * D
// Push:      uint n_q_heads, n_tokens, n_splits, o_tok_stride
// Spec:      0 WG workgroup size, 1 D head dim
// Grid:      (n_q_heads, n_tokens, 1); invocation i writes dims i, i + WG, ...
#version 450
#include "common.glsl"

layout(constant_id = 1) const uint D = 256;

layout(binding = 0, std430) readonly buffer PartBuf { float part[]; };
layout(binding = 1, std430) writeonly buffer OBuf { float o[]; };
layout(push_constant) uniform Push {
  uint n_q_heads;
  uint n_tokens;
  uint n_splits;  // at most 64 (AttentionSplits)
  uint o_tok_stride;
} p;

#include "attn_combine.glsl"

void main() {
  const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
  combine_splits((t * p.n_q_heads + h) * p.n_splits * (D + 2u), p.n_splits,
                 t * p.o_tok_stride + h * D);
}
