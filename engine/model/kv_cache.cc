#include "engine/model/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/quant/fp16.h"

namespace garnet::model {
namespace {

int64_t SlotsFor(const gguf::Gemma4Params& p, const gguf::Gemma4Layer& ly, int64_t n_ctx,
                 int64_t n_ubatch, bool swa_full) {
  if (ly.kind == gguf::AttnKind::kFull || swa_full) return n_ctx;
  return std::min<int64_t>(n_ctx, int64_t{p.sliding_window} + n_ubatch);
}

constexpr int64_t kQ8Block = 32;
constexpr int64_t kQ8BlockBytes = 34;

}  // namespace

uint64_t KvBytes(KvType type, int64_t n) {
  switch (type) {
    case KvType::kF32:
      return static_cast<uint64_t>(n) * 4;
    case KvType::kF16:
      return static_cast<uint64_t>(n) * 2;
    case KvType::kQ8_0:
      return static_cast<uint64_t>(n / kQ8Block * kQ8BlockBytes);
  }
  return static_cast<uint64_t>(n) * 4;
}

void KvQuantizeQ8_0(const float* x, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n; b += kQ8Block, x += kQ8Block, dst += kQ8BlockBytes) {
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < kQ8Block; ++i) {
      finite = finite && std::isfinite(x[i]);
      amax = std::max(amax, std::fabs(x[i]));
    }
    uint16_t dh = 0x7e00u;  // NaN
    int8_t q[kQ8Block] = {};
    if (finite) {
      dh = F32ToF16(amax / 127.0f);
      if ((dh & 0x7fffu) == 0x7c00u) dh = 0x7bffu;  // overflowed: the largest finite half
      const float d = F16ToF32(dh);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      for (int64_t i = 0; i < kQ8Block; ++i) {
        // Clamped, then rounded to nearest even by the 1.5 * 2^23 trick (exact below 2^22).
        const float v = std::clamp(x[i] * id, -127.0f, 127.0f);
        q[i] = static_cast<int8_t>((v + 12582912.0f) - 12582912.0f);
      }
    }
    std::memcpy(dst, &dh, 2);
    std::memcpy(dst + 2, q, kQ8Block);
  }
}

float KvDotQ8_0(const uint8_t* k, const float* q, int64_t n) {
  float sum = 0.0f;
  for (int64_t b = 0; b < n; b += kQ8Block, k += kQ8BlockBytes, q += kQ8Block) {
    uint16_t dh;
    std::memcpy(&dh, k, 2);
    const auto* qs = reinterpret_cast<const int8_t*>(k + 2);
    float s = 0.0f;
    for (int64_t i = 0; i < kQ8Block; ++i) s += static_cast<float>(qs[i]) * q[i];
    sum += F16ToF32(dh) * s;
  }
  return sum;
}

void KvAxpyQ8_0(float a, const uint8_t* v, float* y, int64_t n) {
  for (int64_t b = 0; b < n; b += kQ8Block, v += kQ8BlockBytes, y += kQ8Block) {
    uint16_t dh;
    std::memcpy(&dh, v, 2);
    const auto* qs = reinterpret_cast<const int8_t*>(v + 2);
    const float ad = a * F16ToF32(dh);
    for (int64_t i = 0; i < kQ8Block; ++i) y[i] += ad * static_cast<float>(qs[i]);
  }
}

uint64_t KvCache::Bytes(const gguf::Gemma4Params& p, int64_t n_ctx, int64_t n_ubatch, KvType type,
                        bool swa_full, const std::vector<bool>& only) {
  uint64_t total = 0;
  for (size_t il = 0; il < p.layers.size(); ++il) {
    const auto& ly = p.layers[il];
    if (!ly.owns_kv() || (!only.empty() && (il >= only.size() || !only[il]))) continue;
    total += 2ull * static_cast<uint64_t>(SlotsFor(p, ly, n_ctx, n_ubatch, swa_full)) *
             ly.n_head_kv * KvBytes(type, ly.head_dim);
  }
  return total;
}

Result<KvCache> KvCache::Create(const gguf::Gemma4Params& p, int64_t n_ctx, int64_t n_ubatch,
                                KvType type, bool swa_full, const std::vector<bool>& only) {
  if (n_ctx <= 0 || n_ubatch <= 0) {
    return Status::InvalidArgument("kv cache", "context and ubatch must be positive");
  }
  KvCache c;
  c.type_ = type;
  c.n_ctx_ = n_ctx;
  c.owner_.resize(p.layers.size());
  c.layers_.resize(p.layers.size());
  for (size_t il = 0; il < p.layers.size(); ++il) {
    const auto& ly = p.layers[il];
    c.owner_[il] = ly.owns_kv() ? static_cast<int>(il) : ly.kv_source;
    if (!ly.owns_kv() || (!only.empty() && (il >= only.size() || !only[il]))) continue;
    if (type == KvType::kQ8_0 && ly.head_dim % kQ8Block != 0) {
      return Status::InvalidArgument("kv cache",
                                     "q8_0 needs head dims that are multiples of 32 "
                                     "(layer " +
                                         std::to_string(il) + ": " + std::to_string(ly.head_dim) +
                                         ")");
    }
    Layer& l = c.layers_[il];
    l.slots = SlotsFor(p, ly, n_ctx, n_ubatch, swa_full);
    l.head_dim = ly.head_dim;
    l.stride = int64_t{ly.n_head_kv} * ly.head_dim;
    l.row_bytes = KvBytes(type, ly.head_dim);
    const size_t bytes = static_cast<size_t>(l.slots) * ly.n_head_kv * l.row_bytes;
    l.bytes = bytes;
    l.k.reset(static_cast<uint8_t*>(std::malloc(bytes)));
    l.v.reset(static_cast<uint8_t*>(std::malloc(bytes)));
    if (!l.k || !l.v) {
      return Status::ResourceExhausted("kv cache", "cannot allocate " + std::to_string(2 * bytes) +
                                                       " bytes for layer " + std::to_string(il));
    }
  }
  return c;
}

void* KvCache::At(uint8_t* buf, const Layer& l, int64_t pos, int64_t g) {
  const int64_t slot = pos % l.slots;
  const int64_t n_heads = l.stride / l.head_dim;
  return buf + static_cast<size_t>(slot * n_heads + g) * l.row_bytes;
}

void* KvCache::K(int il, int64_t pos, int64_t g) {
  Layer& l = layers_[static_cast<size_t>(Owner(il))];
  return At(l.k.get(), l, pos, g);
}

void* KvCache::V(int il, int64_t pos, int64_t g) {
  Layer& l = layers_[static_cast<size_t>(Owner(il))];
  return At(l.v.get(), l, pos, g);
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (const auto& l : layers_) total += 2 * l.bytes;
  return total;
}

}  // namespace garnet::model
