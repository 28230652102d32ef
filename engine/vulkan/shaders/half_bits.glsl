// half_bits(f): the IEEE binary16 bits of f, rounded to nearest even with integer operations
// (engine/quant/fp16.h's rules: |x| >= 65520 to infinity, NaN stays NaN), so every device rounds
// exactly as the CPU backend does, whatever its own float-to-half conversion would do.
uint half_bits(float f) {
  const uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  const uint e32 = (x >> 23) & 0xffu;
  const uint mant = x & 0x7fffffu;
  if (e32 == 0xffu) return mant == 0u ? (sign | 0x7c00u) : (sign | 0x7e00u | (mant >> 13));
  const int e = int(e32) - 127 + 15;
  if (e >= 31) return sign | 0x7c00u;
  if (e >= 1) {
    uint r = (uint(e) << 10) | (mant >> 13);
    const uint rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u) != 0u)) ++r;  // may carry to infinity
    return sign | r;
  }
  if (e32 == 0u) return sign;
  const int shift = 14 - e;
  if (shift > 24) return sign;
  const uint m = mant | 0x800000u;
  uint r = m >> uint(shift);
  const uint rest = m & ((1u << uint(shift)) - 1u);
  const uint half_point = 1u << uint(shift - 1);
  if (rest > half_point || (rest == half_point && (r & 1u) != 0u)) ++r;
  return sign | r;
}
