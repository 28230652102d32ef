// How the Vulkan backend stores K and V in its ring caches (kv_store.comp, kv_norm_store.comp,
// attn_decode.comp). A cache range covers E = n_kv_heads * ring_size * head_dim elements, element
// (g, slot, d) at e = (g * ring_size + slot) * head_dim + d:
//   kF16:  E binary16 values, element e at byte 2e;
//   kQ8_0: E int8 quants (element e at byte e), then E / 32 binary16 scales (element e's at byte
//          E + 2 * (e / 32)): the same 34 bytes per 32 values as ggml's Q8_0, laid out in two
//          planes so that quants stay 16-byte aligned. Values are quantised exactly as
//          model::KvQuantizeQ8_0 (engine/model/kv_cache.h) does on the CPU.
#pragma once

#include <cstdint>

namespace garnet::vk {

enum class KvFormat : uint32_t { kF16 = 0, kQ8_0 = 1 };

// Bytes a cache range of `elems` elements (a multiple of 32 for kQ8_0) must span. The shaders
// read and write the scale plane as 32-bit words, so an odd number of scales rounds up to a
// whole word (2 bytes past the 34 per 32 values).
constexpr uint64_t KvCacheBytes(KvFormat f, uint64_t elems) {
  return f == KvFormat::kQ8_0 ? (elems + elems / 16 + 3) / 4 * 4 : elems * 2;
}

}  // namespace garnet::vk
