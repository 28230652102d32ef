// Deterministic random numbers for synthetic models: integer-only generators and a libm-free
// normal deviate, so garnet-mkmodel writes byte-identical files on every machine.
//
// SplitMix64 (Steele, Lea, Flood 2014) mixes seeds; xoshiro256** (Blackman, Vigna 2018) makes the
// stream. Normal deviates are Irwin–Hall: the sum of 12 uniform 16-bit integers minus its mean,
// times 2^-16 — exact integer arithmetic and one exact integer->float conversion (|sum| < 2^24),
// so the value is the same bit pattern everywhere. Mean 0, variance 1 - 2^-32, range about ±6:
// close enough to N(0, 1) for random weights.
//
// Thread-safety: a generator is a value; use one per thread.
#pragma once

#include <cstdint>
#include <string_view>

namespace garnet::mkmodel {

constexpr uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Mixes several 64-bit words into one seed.
constexpr uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0) {
  uint64_t s = a;
  uint64_t h = SplitMix64(s);
  s = h ^ b;
  h = SplitMix64(s);
  s = h ^ c;
  return SplitMix64(s);
}

// FNV-1a of a name: the per-tensor stream id.
constexpr uint64_t HashName(std::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (char c : name) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return h;
}

class Xoshiro256 {
 public:
  explicit constexpr Xoshiro256(uint64_t seed) {
    for (auto& w : s_) w = SplitMix64(seed);
  }

  constexpr uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Approximately N(0, 1): Irwin–Hall sum of 12 uniforms on 16 bits each (three draws).
  constexpr float Normal() {
    int32_t sum = 0;
    for (int k = 0; k < 3; ++k) {
      const uint64_t r = Next();
      sum += static_cast<int32_t>(r & 0xffff) + static_cast<int32_t>((r >> 16) & 0xffff) +
             static_cast<int32_t>((r >> 32) & 0xffff) + static_cast<int32_t>(r >> 48);
    }
    // The mean of the sum is 12 * 32767.5 = 393210; the centred sum lies within ±2^19, so the
    // conversion to float and the scaling by 2^-16 are both exact.
    return static_cast<float>(sum - 393210) * (1.0f / 65536.0f);
  }

 private:
  static constexpr uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4] = {};
};

}  // namespace garnet::mkmodel
