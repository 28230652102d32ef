// SHA-256 per FIPS 180-4 §6.2; the accelerated path uses the SHA-NI instructions
// (sha256rnds2 / sha256msg1 / sha256msg2), which compute the same rounds four at a time.
#include "registry/sha256.h"

#include <cpuid.h>
#include <fcntl.h>
#include <immintrin.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace garnet::registry {
namespace {

// FIPS 180-4 §4.2.2: first 32 bits of the fractional parts of the cube roots of the first 64
// primes.
alignas(16) constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t Rotr(uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}
inline uint32_t LoadBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void BlocksPortable(uint32_t* st, const uint8_t* p, size_t nblocks) {
  uint32_t w[64];
  for (; nblocks > 0; --nblocks, p += 64) {
    for (int t = 0; t < 16; ++t) w[t] = LoadBe32(p + 4 * t);
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = Rotr(w[t - 15], 7) ^ Rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = Rotr(w[t - 2], 17) ^ Rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 =
          h + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[t] + w[t];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
    st[5] += f;
    st[6] += g;
    st[7] += h;
  }
}

// The SHA-NI round instruction works on the state split as {A,B,E,F} and {C,D,G,H}; each
// sha256rnds2 does two rounds, consuming the low two 32-bit lanes of the W+K operand.
__attribute__((target("sha,sse4.1,ssse3"))) void BlocksShaNi(uint32_t* st, const uint8_t* p,
                                                             size_t nblocks) {
  const __m128i kShuf = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&st[0]));  // D C B A
  __m128i st1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&st[4]));  // H G F E
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                                       // C D A B
  st1 = _mm_shuffle_epi32(st1, 0x1B);                                       // E F G H
  __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                               // A B E F
  st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                    // C D G H

  for (; nblocks > 0; --nblocks, p += 64) {
    const __m128i save0 = st0, save1 = st1;
    const __m128i* in = reinterpret_cast<const __m128i*>(p);
    const __m128i* k = reinterpret_cast<const __m128i*>(kK);
    __m128i m0 = _mm_shuffle_epi8(_mm_loadu_si128(in + 0), kShuf);
    __m128i m1 = _mm_shuffle_epi8(_mm_loadu_si128(in + 1), kShuf);
    __m128i m2 = _mm_shuffle_epi8(_mm_loadu_si128(in + 2), kShuf);
    __m128i m3 = _mm_shuffle_epi8(_mm_loadu_si128(in + 3), kShuf);
    __m128i wk;
// Four rounds with message group M (W[4g..4g+3]).
#define GARNET_SHA_ROUNDS(g, M)                   \
  wk = _mm_add_epi32(M, _mm_load_si128(k + (g))); \
  st1 = _mm_sha256rnds2_epu32(st1, st0, wk);      \
  wk = _mm_shuffle_epi32(wk, 0x0E);               \
  st0 = _mm_sha256rnds2_epu32(st0, st1, wk)
// W[t..t+3] from the four previous groups (FIPS 180-4 §6.2.2 step 1): A = W[t-16..], B = W[t-12..],
// C = W[t-8..], D = W[t-4..]; the result replaces A.
#define GARNET_SHA_SCHED(A, B, C, D) \
  A = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(A, B), _mm_alignr_epi8(D, C, 4)), D)
    GARNET_SHA_ROUNDS(0, m0);
    GARNET_SHA_ROUNDS(1, m1);
    GARNET_SHA_ROUNDS(2, m2);
    GARNET_SHA_ROUNDS(3, m3);
    for (int g = 4; g < 16; g += 4) {
      GARNET_SHA_SCHED(m0, m1, m2, m3);
      GARNET_SHA_ROUNDS(g, m0);
      GARNET_SHA_SCHED(m1, m2, m3, m0);
      GARNET_SHA_ROUNDS(g + 1, m1);
      GARNET_SHA_SCHED(m2, m3, m0, m1);
      GARNET_SHA_ROUNDS(g + 2, m2);
      GARNET_SHA_SCHED(m3, m0, m1, m2);
      GARNET_SHA_ROUNDS(g + 3, m3);
    }
#undef GARNET_SHA_ROUNDS
#undef GARNET_SHA_SCHED
    st0 = _mm_add_epi32(st0, save0);
    st1 = _mm_add_epi32(st1, save1);
  }

  tmp = _mm_shuffle_epi32(st0, 0x1B);     // F E B A
  st1 = _mm_shuffle_epi32(st1, 0xB1);     // D C H G
  st0 = _mm_blend_epi16(tmp, st1, 0xF0);  // D C B A
  st1 = _mm_alignr_epi8(st1, tmp, 8);     // H G F E
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&st[0]), st0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&st[4]), st1);
}

bool CpuHasShaNi() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool sha = (b >> 29) & 1;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  bool sse41 = (c >> 19) & 1, ssse3 = (c >> 9) & 1;
  return sha && sse41 && ssse3;
}

const bool kCpuShaNi = CpuHasShaNi();
std::atomic<bool> g_allow_accel{true};

}  // namespace

bool Sha256::Accelerated() {
  return kCpuShaNi && g_allow_accel.load(std::memory_order_relaxed);
}
void Sha256::TEST_AllowAcceleration(bool allow) {
  g_allow_accel.store(allow);
}

void Sha256::Reset() {
  // FIPS 180-4 §5.3.3.
  static constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(state_, kInit, sizeof(state_));
  buf_len_ = 0;
  total_ = 0;
}

void Sha256::Blocks(const uint8_t* p, size_t nblocks) {
  if (Accelerated()) {
    BlocksShaNi(state_, p, nblocks);
  } else {
    BlocksPortable(state_, p, nblocks);
  }
}

void Sha256::Update(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_ += n;
  if (buf_len_ > 0) {
    size_t take = std::min(n, sizeof(buf_) - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    n -= take;
    if (buf_len_ < sizeof(buf_)) return;
    Blocks(buf_, 1);
    buf_len_ = 0;
  }
  if (n >= 64) {
    Blocks(p, n / 64);
    p += n / 64 * 64;
    n %= 64;
  }
  if (n > 0) {
    std::memcpy(buf_, p, n);
    buf_len_ = n;
  }
}

Sha256::Digest Sha256::Finish() {
  // Padding: 0x80, zeros, then the message length in bits as a big-endian u64 (§5.1.1).
  const uint64_t bits = total_ * 8;
  uint8_t pad[72] = {0x80};
  size_t pad_len = (buf_len_ < 56) ? (56 - buf_len_) : (120 - buf_len_);
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  Update(pad, pad_len + 8);
  Digest out;
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(state_[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(state_[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(state_[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(state_[i]);
  }
  return out;
}

std::string Sha256::ToHex(const Digest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < d.size(); ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 15];
  }
  return s;
}

std::string Sha256::FinishHex() {
  return ToHex(Finish());
}

std::string Sha256::HexOf(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.FinishHex();
}

Result<std::string> Sha256File(const std::string& path, const std::atomic<bool>* cancel,
                               uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError("hashing " + path, errno);
  std::vector<uint8_t> buf(1 << 20);
  Sha256 h;
  uint64_t total = 0;
  Status status;
  for (;;) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      status = Status::Cancelled("hashing " + path, "cancelled");
      break;
    }
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      status = PosixError("hashing " + path, errno);
      break;
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (!status.ok()) return status;
  if (size != nullptr) *size = total;
  return h.FinishHex();
}

}  // namespace garnet::registry
