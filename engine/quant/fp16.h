// Exact conversions between IEEE binary32 and the two 16-bit float formats GGUF files use.
//
//   F16  (IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits) — block scales of every quant
//        format and whole F16 tensors.
//   BF16 (bfloat16: the upper 16 bits of a binary32) — BF16 tensors.
//
// Everything here is integer bit manipulation: no libm, no FPU rounding-mode dependence, so the
// results are identical on every machine and compiler. Narrowing conversions round to nearest,
// ties to even; they keep subnormals (F16), map overflow to infinity, and keep NaN a NaN (quiet,
// sign preserved). Widening conversions are exact.
//
// Thread-safety: pure functions.
#pragma once

#include <bit>
#include <cstdint>

namespace garnet {

// binary16 bits -> float, exact (subnormals, infinities and NaN payloads included).
constexpr float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {  // infinity or NaN: keep the payload
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {             // subnormal: value = mant * 2^-24; normalise into a binary32 normal
    uint32_t e = 113;  // exponent field of 2^-14, the weight of mantissa bit 10
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// float -> binary16 bits, round to nearest even. |f| >= 65520 becomes infinity; results below
// the smallest subnormal (2^-24) round to signed zero or to the subnormal, ties to even.
constexpr uint16_t F32ToF16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t exp = (x >> 23) & 0xffu;
  const uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) {
    if (mant == 0) return sign | 0x7c00u;  // infinity
    // NaN: keep the top payload bits and force the quiet bit so it stays a NaN.
    return static_cast<uint16_t>(sign | 0x7e00u | (mant >> 13));
  }
  const int e = static_cast<int>(exp) - 127 + 15;  // rebiased exponent
  if (e >= 31) return sign | 0x7c00u;              // overflow even before rounding
  if (e >= 1) {                                    // normal range
    uint32_t r = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;                      // the 13 dropped bits
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;  // may carry into exp / infinity
    return static_cast<uint16_t>(sign | r);
  }
  // Subnormal (or zero) result: value = m * 2^(exp-150) with the implicit bit, and a binary16
  // subnormal unit is 2^-24, so the result mantissa is m >> (14 - e).
  if (exp == 0) return sign;    // binary32 zero/subnormal: far below 2^-25
  const int shift = 14 - e;     // >= 14
  if (shift > 24) return sign;  // below half the smallest subnormal
  const uint32_t m = mant | 0x800000u;
  uint32_t r = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (r & 1u))) ++r;  // may round up to the smallest normal
  return static_cast<uint16_t>(sign | r);
}

// bfloat16 bits -> float, exact.
constexpr float Bf16ToF32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// float -> bfloat16 bits, round to nearest even; NaN stays NaN (quiet, sign kept), overflow
// rounds to infinity.
constexpr uint16_t F32ToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// Round-trips a float through the 16-bit format (the value a reader will see).
constexpr float RoundToF16(float f) {
  return F16ToF32(F32ToF16(f));
}
constexpr float RoundToBf16(float f) {
  return Bf16ToF32(F32ToBf16(f));
}

}  // namespace garnet
