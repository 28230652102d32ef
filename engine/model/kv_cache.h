// Per-sequence KV cache of the CPU backend.
//
// Only layers that own their KV (gguf::Gemma4Layer::owns_kv) get storage; KV-shared layers read
// their donor's (../shared/docs/gemma4.md §1.2). Each owning layer keeps K and V as
// [slots][n_head_kv][head row] in fp32, fp16 or q8_0 (a head row of q8_0 is head_dim / 32 ggml
// Q8_0 blocks: an f16 scale and 32 int8 quants, 34 bytes; see KvQuantizeQ8_0):
//   full-attention layers: slots = n_ctx (position p lives in slot p);
//   sliding layers:        slots = min(n_ctx, W + n_ubatch), a ring (position p in slot
//                          p % slots). A ubatch of T <= n_ubatch tokens writes its K/V before
//                          attending, and its first query still needs the W - 1 positions
//                          before it, so W + n_ubatch slots never overwrite a needed key.
// Memory is therefore bounded by the window on sliding layers, whatever the context.
//
// Thread-safety: owned by one sequence; distinct layers/slots may be written concurrently.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gemma4.h"
#include "engine/plan/memory.h"

namespace garnet::model {

enum class KvType { kF32, kF16, kQ8_0 };

// The planner's name for the same type.
constexpr plan::KvType PlanKvType(KvType t) {
  return t == KvType::kF32    ? plan::KvType::kF32
         : t == KvType::kQ8_0 ? plan::KvType::kQ8_0
                              : plan::KvType::kF16;
}

// "f32", "f16" or "q8_0" (plan::ParseKvType's names); nullopt for anything else.
inline std::optional<KvType> KvTypeFromName(std::string_view name) {
  const std::optional<plan::KvType> t = plan::ParseKvType(name);
  if (!t) return std::nullopt;
  return *t == plan::KvType::kF32    ? KvType::kF32
         : *t == plan::KvType::kQ8_0 ? KvType::kQ8_0
                                     : KvType::kF16;
}

// Bytes of n elements (a multiple of 32 for q8_0) stored as `type`.
uint64_t KvBytes(KvType type, int64_t n);

// The q8_0 cache format, shared with the Vulkan backend's kv_store shaders: per block of 32
// values, amax = max |x|; the scale is d = f16(amax / 127) (round to nearest even, clamped to
// 65504); q = clamp(round_to_nearest_even(x / d), -127, 127) computed as x * (1 / d) (q = 0 when
// d = 0). A block holding a NaN or infinity gets a NaN scale, so it reads back as NaN (as an f16
// cache would keep it non-finite) instead of as made-up finite values. n: multiple of 32.
void KvQuantizeQ8_0(const float* x, uint8_t* dst, int64_t n);
// dot(dequant(k), q) over n elements of a q8_0 row.
float KvDotQ8_0(const uint8_t* k, const float* q, int64_t n);
// y += a * dequant(v) over n elements of a q8_0 row.
void KvAxpyQ8_0(float a, const uint8_t* v, float* y, int64_t n);

class KvCache {
 public:
  // swa_full: sliding layers keep every position like full layers (a test oracle for the ring).
  // only: when non-empty (n_layer entries), storage only for the owning layers marked true (the
  // host layers of a mixed GPU/CPU placement); the others must not be accessed.
  // ResourceExhausted when the allocation fails; InvalidArgument for q8_0 when an owning layer's
  // head_dim is not a multiple of 32.
  static Result<KvCache> Create(const gguf::Gemma4Params& params, int64_t n_ctx, int64_t n_ubatch,
                                KvType type, bool swa_full = false,
                                const std::vector<bool>& only = {});
  // Bytes the cache of these parameters takes (what Create allocates).
  static uint64_t Bytes(const gguf::Gemma4Params& params, int64_t n_ctx, int64_t n_ubatch,
                        KvType type, bool swa_full = false, const std::vector<bool>& only = {});

  KvType type() const { return type_; }
  int64_t n_ctx() const { return n_ctx_; }
  // Slots of the layer that stores layer il's KV (its donor's for shared layers).
  int64_t slots(int il) const { return layers_[static_cast<size_t>(Owner(il))].slots; }
  int64_t stride(int il) const { return layers_[static_cast<size_t>(Owner(il))].stride; }

  // Row of (layer, position) for KV head g: pointer to head_dim values (float, uint16_t f16 bits
  // or q8_0 blocks).
  void* K(int il, int64_t pos, int64_t g);
  void* V(int il, int64_t pos, int64_t g);
  uint64_t bytes() const;

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  // Uninitialised storage: pages are committed only when a position is written (attention
  // reads only written positions), so a long context costs memory as it fills.
  using Buffer = std::unique_ptr<uint8_t, Free>;
  struct Layer {
    int64_t slots = 0;
    int64_t stride = 0;  // elements per slot (n_head_kv * head_dim)
    int64_t head_dim = 0;
    uint64_t row_bytes = 0;  // of one head's head_dim values
    uint64_t bytes = 0;      // of each of k and v
    Buffer k, v;
  };
  int Owner(int il) const { return owner_[static_cast<size_t>(il)]; }
  void* At(uint8_t* buf, const Layer& l, int64_t pos, int64_t g);

  KvType type_ = KvType::kF32;
  int64_t n_ctx_ = 0;
  std::vector<int> owner_;  // layer -> layer whose storage it uses
  std::vector<Layer> layers_;
};

}  // namespace garnet::model
