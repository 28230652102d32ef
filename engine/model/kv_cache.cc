#include "engine/model/kv_cache.h"

#include <algorithm>

namespace garnet::model {
namespace {

int64_t SlotsFor(const gguf::Gemma4Params& p, const gguf::Gemma4Layer& ly, int64_t n_ctx,
                 int64_t n_ubatch, bool swa_full) {
  if (ly.kind == gguf::AttnKind::kFull || swa_full) return n_ctx;
  return std::min<int64_t>(n_ctx, int64_t{p.sliding_window} + n_ubatch);
}

int64_t ElemBytes(KvType t) {
  return t == KvType::kF32 ? 4 : 2;
}

}  // namespace

uint64_t KvCache::Bytes(const gguf::Gemma4Params& p, int64_t n_ctx, int64_t n_ubatch, KvType type,
                        bool swa_full, const std::vector<bool>& only) {
  uint64_t total = 0;
  for (size_t il = 0; il < p.layers.size(); ++il) {
    const auto& ly = p.layers[il];
    if (!ly.owns_kv() || (!only.empty() && (il >= only.size() || !only[il]))) continue;
    total += 2ull * static_cast<uint64_t>(SlotsFor(p, ly, n_ctx, n_ubatch, swa_full)) *
             ly.n_head_kv * ly.head_dim * static_cast<uint64_t>(ElemBytes(type));
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
    Layer& l = c.layers_[il];
    l.slots = SlotsFor(p, ly, n_ctx, n_ubatch, swa_full);
    l.head_dim = ly.head_dim;
    l.stride = int64_t{ly.n_head_kv} * ly.head_dim;
    const size_t bytes = static_cast<size_t>(l.slots * l.stride * ElemBytes(type));
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
  return buf + static_cast<size_t>((slot * l.stride + g * l.head_dim) * ElemBytes(type_));
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
