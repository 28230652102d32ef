// Per-sequence KV cache of the CPU backend.
//
// Only layers that own their KV (gguf::Gemma4Layer::owns_kv) get storage; KV-shared layers read
// their donor's (../shared/docs/gemma4.md §1.2). Each owning layer keeps K and V as
// [slots][n_head_kv][head_dim] in fp32 or fp16:
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
#include <vector>

#include "engine/base/status.h"
#include "engine/gguf/gemma4.h"

namespace garnet::model {

enum class KvType { kF32, kF16 };

class KvCache {
 public:
  // swa_full: sliding layers keep every position like full layers (a test oracle for the ring).
  // only: when non-empty (n_layer entries), storage only for the owning layers marked true (the
  // host layers of a mixed GPU/CPU placement); the others must not be accessed.
  // ResourceExhausted when the allocation fails.
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

  // Row of (layer, position) for KV head g: pointer to head_dim values (float or uint16_t).
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
    uint64_t bytes = 0;  // of each of k and v
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
