// Kernels the model backend (engine/model/vulkan_backend.cc) needs beyond kernels.h: writing
// K/V into the f16 or q8_0 ring cache (plain, or with the K/V norms and RoPE folded in), a GeGLU
// over strided rows. Same conventions as kernels.h: each call checks its shape and buffer ranges
// (InvalidArgument, nothing recorded), gets its cached pipeline and records one dispatch into the
// Recorder. The exact formula of each op is in its shader's header comment (shaders/kv_store.comp,
// kv_norm_store.comp, glu_strided.comp).
//
// Thread-safety: free functions; the Device's pipeline cache is locked, a Recorder is used by
// one thread.
#pragma once

#include <cstdint>

#include "engine/base/status.h"
#include "engine/vulkan/kv_format.h"
#include "engine/vulkan/recorder.h"

namespace garnet::vk {

class Device;

struct KvStoreShape {
  uint32_t head_dim = 0;  // D, even
  uint32_t n_kv_heads = 0;
  uint32_t n_tokens = 0;
  uint32_t ring_size = 0;            // cache slots per kv head
  uint32_t src_tok_stride = 0;       // elements between tokens of K/V (0: n_kv_heads * head_dim)
  KvFormat format = KvFormat::kF16;  // kQ8_0: head_dim a multiple of 32
};
// Kc/Vc[(g * ring_size + pos[t] % ring_size) * D + d] = f16(K/V[t * stride + g * D + d]), f16
// rounded to nearest even (as engine/quant/fp16.h); for kQ8_0 the same elements quantised into
// the format of kv_format.h. Tokens with a negative position are skipped. The caches hold
// KvCacheBytes(format, n_kv_heads * ring_size * head_dim) bytes at least.
Status KvStore(Device& device, Recorder& rec, const KvStoreShape& s, const BufferRange& k,
               const BufferRange& v, const BufferRange& pos, const BufferRange& k_cache,
               const BufferRange& v_cache);

// KvStore with the per-head norms and RoPE folded in (decode and prefill of one sequence's run):
//   K' = Rope(rmsnorm_head(K) * k_norm_w), V' = rmsnorm_head(V) (no weight), stored as KvStore
// stores K/V (shaders/kv_norm_store.comp). n_rot and theta as Kernels::Rope (RopeThetaTable);
// k and v may be the same range (K = V layers). head_dim <= kKvNormStoreMaxHeadDim, else
// InvalidArgument (use NormRope + RmsNorm + KvStore).
constexpr uint32_t kKvNormStoreMaxHeadDim = 512;
Status KvNormRopeStore(Device& device, Recorder& rec, const KvStoreShape& s, uint32_t n_rot,
                       float eps, const BufferRange& k, const BufferRange& v,
                       const BufferRange& pos, const BufferRange& theta,
                       const BufferRange& k_norm_w, const BufferRange& k_cache,
                       const BufferRange& v_cache);

struct GluShape {
  uint32_t n = 0;     // elements per row
  uint32_t rows = 0;  // <= maxComputeWorkGroupCount[1]
  uint32_t g_stride = 0, g_off = 0;
  uint32_t u_stride = 0, u_off = 0;
  uint32_t y_stride = 0, y_off = 0;
};
// y[r, i] = gelu_tanh(g[r, i]) * u[r, i] with the row strides and element offsets of `s`.
// y may alias g or u.
Status GluStrided(Device& device, Recorder& rec, const GluShape& s, const BufferRange& g,
                  const BufferRange& u, const BufferRange& y);

}  // namespace garnet::vk
