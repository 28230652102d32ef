// kv_q8.glsl: quantising to the q8_0 KV cache format (engine/vulkan/kv_format.h), with the rules
// of model::KvQuantizeQ8_0 so that GPU and CPU caches agree: d = f16(amax / 127) clamped to the
// largest finite half, q = clamp(roundEven(x * (1 / d)), -127, 127), q = 0 when d = 0, and a block
// holding a NaN or infinity gets a NaN scale. (The GPU's division may round differently from the
// CPU's in the last bit; that can move a quant at an exact tie by one step, nothing more.)
// Needs half_bits.glsl.

// Quantises x[0..32): the quants packed four per word (element 4i + j in byte j of w[i]) and the
// scale's binary16 bits as the result.
uint kv_q8_quantize(in float x[32], out uint w[8]) {
  float amax = 0.0;
  bool finite = true;
  [[unroll]] for (uint i = 0u; i < 32u; ++i) {
    finite = finite && !isnan(x[i]) && !isinf(x[i]);
    amax = max(amax, abs(x[i]));
  }
  uint dh = 0x7e00u;
  float id = 0.0;
  if (finite) {
    dh = half_bits(amax / 127.0);
    if ((dh & 0x7fffu) == 0x7c00u) dh = 0x7bffu;
    const float d = unpackHalf2x16(dh).x;
    id = d != 0.0 ? 1.0 / d : 0.0;
  }
  [[unroll]] for (uint i = 0u; i < 8u; ++i) {
    uint word = 0u;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
      const int q = finite ? int(clamp(roundEven(x[4u * i + j] * id), -127.0, 127.0)) : 0;
      word |= (uint(q) & 0xffu) << (8u * j);
    }
    w[i] = word;
  }
  return dh;
}

// Writes one binary16 into half `index` of a uint buffer without touching the other half of its
// word (neighbouring scales may belong to other invocations or workgroups).
#define KV_Q8_STORE_HALF(buf, index, bits)                             \
  {                                                                    \
    const uint kv_q8_w_ = (index) >> 1u, kv_q8_s_ = ((index)&1u) * 16u; \
    atomicAnd(buf[kv_q8_w_], ~(0xffffu << kv_q8_s_));                  \
    atomicOr(buf[kv_q8_w_], ((bits)&0xffffu) << kv_q8_s_);             \
  }
