// SHA-256 (FIPS 180-4): an incremental hasher, hex helpers, and a whole-file hash.
//
// Uses the x86 SHA extensions when the CPU has them (checked once at run time), otherwise a
// portable implementation; both give identical results (tested against each other and against
// the FIPS 180 example vectors).
//
// Thread-safety: a Sha256 object is a value with no shared state; use one per thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/base/status.h"

namespace garnet::registry {

class Sha256 {
 public:
  static constexpr size_t kDigestSize = 32;
  using Digest = std::array<uint8_t, kDigestSize>;

  Sha256() { Reset(); }
  void Reset();
  // Adds `n` bytes. Any split of the input into Update calls gives the same digest.
  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Finishes and returns the digest; the object must be Reset() before reuse.
  Digest Finish();
  // Finish() as 64 lower-case hex characters.
  std::string FinishHex();

  // One-shot helpers.
  static std::string HexOf(std::string_view data);
  static std::string ToHex(const Digest& d);

  // True when the accelerated (SHA-NI) path is in use on this CPU.
  static bool Accelerated();
  // Test hook: force the portable path (false) or restore auto-detection (true).
  static void TEST_AllowAcceleration(bool allow);

 private:
  void Blocks(const uint8_t* p, size_t nblocks);
  uint32_t state_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Hashes a whole file (reads it in 1 MiB pieces). `cancel` (may be null) is polled between
// pieces; a set flag returns Cancelled. On success returns 64 lower-case hex characters and, if
// `size` is non-null, stores the number of bytes hashed.
Result<std::string> Sha256File(const std::string& path, const std::atomic<bool>* cancel = nullptr,
                               uint64_t* size = nullptr);

}  // namespace garnet::registry
