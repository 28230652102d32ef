// q8x_put.glsl: writing a vector as q8x (vk::Kernels::Q8xBytes: n int8 values, then per block
// of 32 a vec4 (d, d * the sum of its first 16 values, d * the sum of its last 16, 0), where
// d = max |x| / 127 over the block and q = round(x / d), 0 for a block of zeros) from values
// held in registers. The writer holds element k in invocation tid with k = tid modulo 32 and
// each aligned run of 32 invocations holding one 32-block (e.g. k = tid + i * WG, WG a multiple
// of 32). Include after common.glsl with Q8X_BINDING set.
//
// Q8X_CLUSTERED (subgroups of 32 or 64 with clustered operations, and 8-bit storage): a block is
// one cluster of 32 invocations; its maximum and both half sums are two clustered reductions and
// each invocation stores its own byte: no shared memory, atomics or barriers. Otherwise the
// block goes through shared memory (three workgroup barriers per call): the same bytes.
layout(binding = Q8X_BINDING, std430) writeonly buffer Q8xMetaBuf { vec4 q8x_meta[]; };
#ifdef Q8X_CLUSTERED
#extension GL_KHR_shader_subgroup_clustered : require
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
layout(binding = Q8X_BINDING, std430) writeonly buffer Q8xBytesBuf { int8_t q8x_bytes[]; };
#else
layout(binding = Q8X_BINDING, std430) writeonly buffer Q8xWordsBuf { uint q8x_words[]; };
shared uint q8x_s[WG];
#endif

// Element k of the n-element q8x vector at byte `base` (a multiple of 16) has value x. Call
// from every invocation of the workgroup (uniform control flow), each with its own k; where
// k >= n (padding past the vector's end) pass x = 0: nothing is written.
void q8x_put(uint base, uint n, uint k, float x) {
#ifdef Q8X_CLUSTERED
  const float amax = subgroupClusteredMax(abs(x), 32u);
  const int q = amax > 0.0 ? clamp(int(roundEven(x * (127.0 / amax))), -127, 127) : 0;
  // Both half sums (each within +-2032) in one reduction: the first 16 values' in the low bits,
  // the last 16's times 65536.
  const int both = subgroupClusteredAdd((k & 16u) == 0u ? q : q * 65536, 32u);
  const int lo = (both << 16) >> 16, hi = (both - lo) >> 16;
  if (k < n) q8x_bytes[base + k] = int8_t(q);
#else
  const uint tid = gl_LocalInvocationIndex, b0 = tid & ~31u;
  // |x| as bits: for finite non-negative floats the integer order is the float order.
  q8x_s[tid] = floatBitsToUint(abs(x));
  barrier();
  uint mbits = 0u;
  for (uint i = 0; i < 32u; ++i) mbits = max(mbits, q8x_s[b0 + i]);
  const float amax = uintBitsToFloat(mbits);
  const int q = amax > 0.0 ? clamp(int(roundEven(x * (127.0 / amax))), -127, 127) : 0;
  barrier();
  q8x_s[tid] = uint(q);
  barrier();
  int lo = 0, hi = 0;
  if ((k & 3u) == 0u) {
    uint w = 0u;
    for (uint i = 0; i < 4u; ++i) w |= (q8x_s[tid + i] & 0xffu) << (8u * i);
    if (k < n) q8x_words[(base + k) / 4u] = w;
  }
  if ((k & 31u) == 0u) {
    for (uint i = 0; i < 16u; ++i) {
      lo += int(q8x_s[tid + i]);
      hi += int(q8x_s[tid + 16u + i]);
    }
  }
  barrier();  // q8x_s is rewritten by the next call
#endif
  if (k < n && (k & 31u) == 0u) {
    const float d = amax / 127.0;
    q8x_meta[(base + n) / 16u + (k >> 5)] = vec4(d, d * float(lo), d * float(hi), 0.0);
  }
}
