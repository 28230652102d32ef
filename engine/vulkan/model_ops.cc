#include "engine/vulkan/model_ops.h"

#include <algorithm>
#include <string>

#include "engine/vulkan/device.h"
#include "engine/vulkan/pipeline.h"

namespace garnet::vk {
namespace {

constexpr uint32_t kWg = 256;

uint64_t RangeBytes(const BufferRange& r) {
  if (!r.buffer || r.offset > r.buffer->size()) return 0;
  const uint64_t rest = r.buffer->size() - r.offset;
  return r.size == VK_WHOLE_SIZE ? rest : std::min(r.size, rest);
}

Status Need(const BufferRange& r, uint64_t bytes, const char* op, const char* name) {
  if (!r.buffer || r.buffer->empty()) {
    return Status::InvalidArgument(op, std::string(name) + " is empty");
  }
  const uint64_t have = RangeBytes(r);
  if (have < bytes) {
    return Status::InvalidArgument(op, std::string(name) + " holds " + std::to_string(have) +
                                           " bytes, the shape needs " + std::to_string(bytes));
  }
  return Status::OK();
}

// Bytes spanned by `count` rows of `item` 4-byte elements, `stride` elements apart, from `off`.
uint64_t Span4(uint64_t count, uint64_t stride, uint64_t off, uint64_t item) {
  return count == 0 ? 0 : ((count - 1) * stride + off + item) * 4;
}

Status CheckGrid(const Device& dev, uint64_t gx, uint64_t gy, const char* op) {
  if (gx > dev.info().max_workgroup_count[0] || gy > dev.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, "too many workgroups for one dispatch");
  }
  return Status::OK();
}

}  // namespace

namespace {

// The checks KvStore and KvNormRopeStore share: shape, 32-bit indexing, buffer ranges. Returns
// the source's token stride (elements).
Result<uint64_t> CheckKvStore(const char* op, const KvStoreShape& s, const BufferRange& k,
                              const BufferRange& v, const BufferRange& pos,
                              const BufferRange& k_cache, const BufferRange& v_cache) {
  if (s.head_dim == 0 || s.n_kv_heads == 0 || s.n_tokens == 0 || s.ring_size == 0) {
    return Status::InvalidArgument(op, "empty shape");
  }
  const uint64_t row = uint64_t{s.n_kv_heads} * s.head_dim;
  const uint64_t stride = s.src_tok_stride ? s.src_tok_stride : row;
  if (stride < row) return Status::InvalidArgument(op, "token stride smaller than a row");
  const uint64_t cache_elems = row * s.ring_size;
  if (cache_elems * 2 > 0xffffffffull || stride * s.n_tokens > 0xffffffffull) {
    return Status::InvalidArgument(op, "cache or source beyond 32-bit indexing");
  }
  if (s.format == KvFormat::kQ8_0 && s.head_dim % 32 != 0) {
    return Status::InvalidArgument(op, "a q8_0 cache needs head_dim a multiple of 32");
  }
  const uint64_t cache_bytes = KvCacheBytes(s.format, cache_elems);
  GARNET_RETURN_IF_ERROR(Need(k, Span4(s.n_tokens, stride, 0, row), op, "k"));
  GARNET_RETURN_IF_ERROR(Need(v, Span4(s.n_tokens, stride, 0, row), op, "v"));
  GARNET_RETURN_IF_ERROR(Need(pos, uint64_t{s.n_tokens} * 4, op, "pos"));
  GARNET_RETURN_IF_ERROR(Need(k_cache, cache_bytes, op, "k cache"));
  GARNET_RETURN_IF_ERROR(Need(v_cache, cache_bytes, op, "v cache"));
  return stride;
}

// The word index of a q8_0 cache's scale plane (kv_format.h); 0 for f16 (unused there).
uint32_t ScaleBase(const KvStoreShape& s) {
  if (s.format != KvFormat::kQ8_0) return 0;
  return static_cast<uint32_t>(uint64_t{s.n_kv_heads} * s.head_dim * s.ring_size / 4);
}

}  // namespace

Status KvStore(Device& device, Recorder& rec, const KvStoreShape& s, const BufferRange& k,
               const BufferRange& v, const BufferRange& pos, const BufferRange& k_cache,
               const BufferRange& v_cache) {
  const char* op = "kv_store";
  if (s.head_dim % 2 != 0) return Status::InvalidArgument(op, "head_dim must be even");
  GARNET_ASSIGN_OR_RETURN(const uint64_t stride, CheckKvStore(op, s, k, v, pos, k_cache, v_cache));
  const uint64_t row = uint64_t{s.n_kv_heads} * s.head_dim;
  const bool q8 = s.format == KvFormat::kQ8_0;
  const uint64_t items = q8 ? row / 32 : row / 2;  // blocks of 32, or pairs of halves
  const uint64_t gx = (items + kWg - 1) / kWg;
  GARNET_RETURN_IF_ERROR(CheckGrid(device, gx, s.n_tokens, op));
  PipelineDesc desc{q8 ? "kv_store_q8" : "kv_store", 5, 0b11000, 24, {kWg}, {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device.pipelines().Get(desc));
  struct {
    uint32_t d, n_kv_heads, n_tokens, ring_size, src_tok_stride, scale_base;
  } push{s.head_dim,  s.n_kv_heads, s.n_tokens, s.ring_size, static_cast<uint32_t>(stride),
         ScaleBase(s)};
  const BufferRange bindings[] = {k, v, pos, k_cache, v_cache};
  return rec.Dispatch(*p, bindings, push, static_cast<uint32_t>(gx), s.n_tokens);
}

Status KvNormRopeStore(Device& device, Recorder& rec, const KvStoreShape& s, uint32_t n_rot,
                       float eps, const BufferRange& k, const BufferRange& v,
                       const BufferRange& pos, const BufferRange& theta,
                       const BufferRange& k_norm_w, const BufferRange& k_cache,
                       const BufferRange& v_cache) {
  const char* op = "kv_norm_store";
  if (s.head_dim % 2 != 0 || n_rot % 2 != 0 || n_rot == 0 || n_rot > s.head_dim) {
    return Status::InvalidArgument(op, "head_dim and n_rot must be even, 0 < n_rot <= head_dim");
  }
  if (s.head_dim > kKvNormStoreMaxHeadDim) {
    return Status::InvalidArgument(op, "head_dim above " + std::to_string(kKvNormStoreMaxHeadDim));
  }
  if (!(eps >= 0.0f) || !(eps < 1e30f)) return Status::InvalidArgument(op, "bad eps");
  GARNET_ASSIGN_OR_RETURN(const uint64_t stride, CheckKvStore(op, s, k, v, pos, k_cache, v_cache));
  GARNET_RETURN_IF_ERROR(Need(theta, uint64_t{n_rot} * 4, op, "theta"));
  GARNET_RETURN_IF_ERROR(Need(k_norm_w, uint64_t{s.head_dim} * 4, op, "k norm weight"));
  if (s.n_kv_heads > device.info().max_workgroup_count[0] ||
      s.n_tokens > device.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, "too many workgroups for one dispatch");
  }
  constexpr uint32_t kNormWg = 128;
  std::string name = s.format == KvFormat::kQ8_0 ? "kv_norm_store_q8" : "kv_norm_store";
  if (device.caps().subgroup_arithmetic) name += "_sg";
  PipelineDesc desc{name, 7, 0b1100000, 32, {kNormWg, kKvNormStoreMaxHeadDim}, {kNormWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device.pipelines().Get(desc));
  struct {
    uint32_t d, n_rot, n_kv_heads, n_tokens, ring_size, src_tok_stride;
    float eps;
    uint32_t scale_base;
  } push{s.head_dim, n_rot,       s.n_kv_heads,
         s.n_tokens, s.ring_size, static_cast<uint32_t>(stride),
         eps,        ScaleBase(s)};
  const BufferRange bindings[] = {k, v, pos, theta, k_norm_w, k_cache, v_cache};
  return rec.Dispatch(*p, bindings, push, s.n_kv_heads, s.n_tokens, 2);
}

Status GluStrided(Device& device, Recorder& rec, const GluShape& s, const BufferRange& g,
                  const BufferRange& u, const BufferRange& y) {
  const char* op = "glu_strided";
  if (s.n == 0 || s.rows == 0) return Status::InvalidArgument(op, "empty shape");
  GARNET_RETURN_IF_ERROR(Need(g, Span4(s.rows, s.g_stride, s.g_off, s.n), op, "g"));
  GARNET_RETURN_IF_ERROR(Need(u, Span4(s.rows, s.u_stride, s.u_off, s.n), op, "u"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.rows, s.y_stride, s.y_off, s.n), op, "y"));
  const uint64_t gx = (s.n + kWg - 1) / kWg;
  GARNET_RETURN_IF_ERROR(CheckGrid(device, gx, s.rows, op));
  PipelineDesc desc{"glu_strided", 3, 0b100, 32, {kWg}, {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device.pipelines().Get(desc));
  const uint32_t push[8] = {s.n,        s.rows,  s.g_stride, s.g_off,
                            s.u_stride, s.u_off, s.y_stride, s.y_off};
  const BufferRange bindings[] = {g, u, y};
  return rec.Dispatch(*p, bindings, push, static_cast<uint32_t>(gx), s.rows);
}

}  // namespace garnet::vk
