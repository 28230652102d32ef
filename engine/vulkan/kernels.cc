#include "engine/vulkan/kernels.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>

#include "engine/vulkan/device.h"
#include "engine/vulkan/pipeline.h"
#include "engine/vulkan/shaders.h"

namespace garnet::vk {
namespace {

constexpr uint32_t kElementwiseWg = 256;
constexpr uint32_t kReduceWg = 64;
constexpr uint32_t kMatmulWg = 256;  // fixed by matmul.comp
constexpr uint32_t kMatmulTile = 64;
constexpr uint32_t kCoopTile = 128;  // matmul_coop.comp: 128 rows x 128 tokens

// Bytes a range makes available to a shader.
uint64_t RangeBytes(const BufferRange& r) {
  if (!r.buffer || r.offset > r.buffer->size()) return 0;
  const uint64_t rest = r.buffer->size() - r.offset;
  return r.size == VK_WHOLE_SIZE ? rest : std::min(r.size, rest);
}

Status Need(const BufferRange& r, uint64_t bytes, const std::string& op, const char* name) {
  if (!r.buffer || r.buffer->empty())
    return Status::InvalidArgument(op, std::string(name) + " is empty");
  const uint64_t have = RangeBytes(r);
  if (have < bytes) {
    return Status::InvalidArgument(op, std::string(name) + " holds " + std::to_string(have) +
                                           " bytes, the shape needs " + std::to_string(bytes));
  }
  return Status::OK();
}

// Bytes spanned by `count` items of `item` elements, `stride` elements apart, 4 bytes each.
uint64_t Span4(uint64_t count, uint64_t stride, uint64_t item) {
  return count == 0 ? 0 : ((count - 1) * stride + item) * 4;
}

// A 1-D count of workgroups folded into (x, y) within the device's limits (shaders recover the
// index with group_index() and skip the excess).
Status Fold(const Device& dev, uint64_t groups, uint32_t* gx, uint32_t* gy, const std::string& op) {
  const uint64_t max_x = dev.info().max_workgroup_count[0];
  const uint64_t max_y = dev.info().max_workgroup_count[1];
  const uint64_t x = std::min<uint64_t>(groups, max_x);
  const uint64_t y = x == 0 ? 0 : (groups + x - 1) / x;
  if (y > max_y) return Status::InvalidArgument(op, "too many workgroups for one dispatch");
  *gx = static_cast<uint32_t>(x);
  *gy = static_cast<uint32_t>(y);
  return Status::OK();
}

std::string TypeSuffix(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kBF16:
      return "bf16";
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kQ4_0:
      return "q4_0";
    case GgmlType::kQ4_1:
      return "q4_1";
    case GgmlType::kQ5_0:
      return "q5_0";
    case GgmlType::kQ5_1:
      return "q5_1";
    case GgmlType::kQ2_K:
      return "q2_k";
    case GgmlType::kQ3_K:
      return "q3_k";
    case GgmlType::kQ4_K:
      return "q4_k";
    case GgmlType::kQ5_K:
      return "q5_k";
    case GgmlType::kQ6_K:
      return "q6_k";
    case GgmlType::kIQ4_NL:
      return "iq4_nl";
    case GgmlType::kIQ4_XS:
      return "iq4_xs";
    default:
      return "";
  }
}

Status CheckWeightType(GgmlType type, uint32_t in, const std::string& op) {
  if (!Kernels::SupportsWeightType(type)) {
    return Status::Unimplemented(op,
                                 "no Vulkan kernel for weight type " + std::string(TypeName(type)));
  }
  const TypeTraits& t = Traits(type);
  if (in == 0 || in % t.block_elems != 0) {
    return Status::InvalidArgument(
        op, "row length " + std::to_string(in) + " is not a positive multiple of " +
                std::to_string(t.block_elems) + " for " + std::string(t.name));
  }
  return Status::OK();
}

// matmul_coop.comp's XVEC: X rows (token rows, and expert slots for MatmulId) start at 16-byte
// multiples, and K % 16 == 0 (whole vec4 chunks of each invocation's share of a K step).
uint32_t CoopXVec(const BufferRange& x, uint32_t x_stride, uint32_t x_slot_stride, uint32_t k) {
  return x.offset % 16 == 0 && x_stride % 4 == 0 && x_slot_stride % 4 == 0 && k % 16 == 0 ? 1 : 0;
}

// matmul_coop.comp's WVEC (Q4_K only): every row and expert matrix starts 16-byte aligned.
uint32_t CoopWVec(GgmlType type, const BufferRange& w, uint64_t row_bytes, uint64_t matrix_stride) {
  return type == GgmlType::kQ4_K && w.offset % 16 == 0 && row_bytes % 16 == 0 &&
                 matrix_stride % 16 == 0
             ? 1
             : 0;
}

}  // namespace

Result<std::unique_ptr<Kernels>> Kernels::Create(Device& device) {
  std::unique_ptr<Kernels> k(new Kernels(device));
  GARNET_ASSIGN_OR_RETURN(
      k->placeholder_,
      Buffer::Create(device, 256, MemoryKind::kOther, Residency::kDevice, "kernel placeholder"));
  return k;
}

Status Kernels::SetMatvecLaunch(uint32_t workgroup, uint32_t rows_per_group) {
  const bool pow2 = workgroup != 0 && (workgroup & (workgroup - 1)) == 0;
  // Other multiples of the subgroup size only where the reductions use subgroups (the
  // shared-memory tree halves a power of two).
  const bool sg_multiple = device_.caps().subgroup_arithmetic && device_.info().subgroup_size &&
                           workgroup % device_.info().subgroup_size == 0;
  if (!(pow2 || sg_multiple) || workgroup < 32 || workgroup > 1024 ||
      workgroup > device_.info().max_workgroup_invocations ||
      workgroup < device_.info().subgroup_size || rows_per_group < 1 || rows_per_group > 8) {
    return Status::InvalidArgument("matvec launch", "workgroup " + std::to_string(workgroup) +
                                                        ", rows " + std::to_string(rows_per_group));
  }
  matvec_wg_ = workgroup;
  matvec_rows_ = rows_per_group;
  matvec_rows_auto_ = false;
  return Status::OK();
}

uint32_t Kernels::MatvecWg(uint32_t out, uint32_t n_vecs, bool glu_by_id) const {
  if (!matvec_rows_auto_) return matvec_wg_;
  // Measured per decode shape of one 26b-a4b layer on an H200 (garnet-vkbench --decode --sweep,
  // docs/PERF.md): 128 invocations for 4 rows take a Q4_K row of 2816 in one round of loads and
  // were fastest or within noise for the projections, the dense feed-forward and the experts'
  // gate|up (e.g. 46 -> 35 us, 37 -> 25 us against 64); the experts' GeGLU down projections
  // (88 items per row) and tall matrices (32768+ rows: the head) were fastest with 32.
  const DeviceInfo& info = device_.info();
  uint32_t wg = glu_by_id || uint64_t{out} * n_vecs >= 32768 ? 32 : 128;
  while (wg < info.subgroup_size && wg < 1024) wg *= 2;
  while (wg > 32 && wg > info.max_workgroup_invocations) wg /= 2;
  return wg;
}

uint32_t Kernels::MatvecRows(uint32_t out, uint32_t n_vecs) const {
  uint32_t r = matvec_rows_;
  if (!matvec_rows_auto_) return r;
  constexpr uint64_t kMinGroups = 256;
  while (r > 1 && uint64_t{(out + r - 1) / r} * n_vecs < kMinGroups) r /= 2;
  return r;
}

bool Kernels::OneRoundLaunch(GgmlType type, uint32_t in, uint32_t out, uint32_t n_vecs,
                             uint32_t* wg) const {
  // A plain Q6_K matvec's invocations each take one item (16 weights) of a row per round of
  // loads. A row of 2816 (26b-a4b's v projection) is 176 items, two rounds for the default 128
  // invocations; 192 x 2 rows takes them in one: 11.1 -> 8.2 us in `garnet-vkbench --decode
  // --sweep`, decode +1.8 % on an H200 (docs/PERF.md, round 16). Other sizes than a multiple of
  // the subgroup size need the subgroup reductions, so only where those exist; tall matrices (the
  // head) keep their own launch, and the other types measured no gain (the Q8_0 dense down at 288).
  if (!matvec_rows_auto_ || type != GgmlType::kQ6_K || uint64_t{out} * n_vecs >= 32768)
    return false;
  const DeviceInfo& info = device_.info();
  if (!device_.caps().subgroup_arithmetic || info.subgroup_size == 0 ||
      32 % info.subgroup_size != 0)
    return false;
  const uint32_t items = in / 256 * 16;
  const uint32_t one_round = (items + 31) / 32 * 32;
  if (items <= *wg || one_round > 256 || one_round > info.max_workgroup_invocations) return false;
  *wg = one_round;
  return true;
}

bool Kernels::SupportsWeightType(GgmlType type) {
  return !TypeSuffix(type).empty();
}

namespace {
// `variant` + "_idot" where the device has integer dot products enabled and that twin exists
// (the Q4_K, Q6_K, Q8_0 and Q5_0 decode matvecs and the Q8_0 router: matvec.comp IDOT), else
// `variant`.
std::string WithIdot(const DeviceCaps& caps, std::string variant) {
  if (caps.integer_dot_product && FindShader(variant + "_idot") != nullptr) variant += "_idot";
  return variant;
}
}  // namespace

std::string Kernels::MatvecVariant(GgmlType type, bool by_id) const {
  std::string v = (by_id ? "matvec_id_" : "matvec_") + TypeSuffix(type);
  if (type != GgmlType::kF32 && device_.caps().storage_16bit) v += "_s16";
  if (device_.caps().subgroup_arithmetic) v += "_sg";
  return WithIdot(device_.caps(), v);
}

bool Kernels::MatmulUsesCooperativeMatrix() const {
  return matmul_coop_ && device_.caps().coopmat != CoopmatForm::kNone;
}

std::string Kernels::CoopSuffix() const {
  return device_.caps().coopmat == CoopmatForm::kKhr ? "_khr" : "";
}

bool Kernels::MatmulUsesCooperativeMatrix(GgmlType type) const {
  const bool is_float = type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16;
  return MatmulUsesCooperativeMatrix() && (!is_float || matmul_coop_float_);
}

std::string Kernels::MatmulVariant(GgmlType type) const {
  if (MatmulUsesCooperativeMatrix(type)) return "matmul_coop_" + TypeSuffix(type) + CoopSuffix();
  std::string v = "matmul_" + TypeSuffix(type);
  if (type != GgmlType::kF32 && device_.caps().storage_16bit) v += "_s16";
  return v;
}

std::string Kernels::RmsNormVariant() const {
  return device_.caps().subgroup_arithmetic ? "rmsnorm_sg" : "rmsnorm";
}

namespace {
// One workgroup per row for the fused residual kernels: 256 invocations when there are many rows
// (prefill), and for a few rows (decode) the largest power of two up to 1024 the device allows,
// since one workgroup then does the whole row's work alone and its latency is the dispatch's.
uint32_t RowWg(const Device& d, uint32_t rows) {
  if (rows > 8) return 256;
  uint32_t w = 1024;
  while (w > 256 && w > d.info().max_workgroup_invocations) w /= 2;
  return w;
}
}  // namespace

Status Kernels::RmsNorm(Recorder& rec, const RmsNormShape& s, const BufferRange& x,
                        const BufferRange* w, const BufferRange& y) {
  const std::string op = "rmsnorm";
  const uint32_t xs = s.x_stride ? s.x_stride : s.n;
  const uint32_t ys = s.y_stride ? s.y_stride : s.n;
  if (s.n == 0 || s.rows == 0) return Status::InvalidArgument(op, "empty shape");
  if (xs < s.n || ys < s.n) return Status::InvalidArgument(op, "stride smaller than the row");
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.rows, xs, s.n), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.rows, ys, s.n), op, "y"));
  if (w) GARNET_RETURN_IF_ERROR(Need(*w, uint64_t{s.n} * 4, op, "w"));
  // A few long rows (decode's first-layer input norm: one row of the hidden size) take a wide
  // workgroup, as norm_add does: 64 invocations walked 2816 elements in ~15 us on an H200.
  const uint32_t wg = s.rows <= 8 && s.n >= 1024 ? RowWg(device_, s.rows) : kReduceWg;
  PipelineDesc desc{RmsNormVariant(), 3, 0b100, 24, {wg}, {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n, rows, x_stride, y_stride;
    float eps;
    uint32_t has_weight;
  } push{s.n, s.rows, xs, ys, s.eps, w ? 1u : 0u};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, s.rows, &gx, &gy, op));
  const BufferRange bindings[] = {x, w ? *w : BufferRange(placeholder_), y};
  return rec.Dispatch(*p, bindings, push, gx, gy);
}

namespace {
// Whether two ranges share bytes of one buffer (a fused kernel's in-place outputs must not).
bool Overlap(const BufferRange& a, const BufferRange& b) {
  if (a.buffer != b.buffer) return false;
  const uint64_t ae = a.offset + RangeBytes(a), be = b.offset + RangeBytes(b);
  return a.offset < be && b.offset < ae;
}

// matvec.comp's VEC specialisation (0 is always correct). Bit 0: Q4_K rows read as 16-byte
// words, when the binding and every row start (row size, expert stride, gate/up offsets) are
// 16-byte aligned. Bit 1: x (and the norm weight) read as vec4 (the Q4_K and Q6_K loops, and the
// RMSNorm prologue of the NORM variants of every type).
uint32_t MatvecVec(GgmlType type, const BufferRange& w, uint64_t row_bytes,
                   std::initializer_list<uint64_t> w_offsets, const BufferRange& x,
                   std::initializer_list<uint64_t> x_floats, const BufferRange* nw) {
  bool wa = type == GgmlType::kQ4_K && w.offset % 16 == 0 && row_bytes % 16 == 0;
  for (uint64_t o : w_offsets) wa = wa && o % 16 == 0;
  bool xa = x.offset % 16 == 0 && (nw == nullptr || nw->offset % 16 == 0);
  for (uint64_t f : x_floats) xa = xa && f % 4 == 0;
  return (wa ? 1u : 0u) | (xa ? 2u : 0u);
}

// NextNorms' checks: count 1 or 2, the weights, and an output that holds them and overlaps none
// of the kernel's other buffers (`others`) or the weights (it is written while they are read).
Status CheckNextNorms(const Kernels::NextNorms& nn, uint32_t n, uint32_t rows,
                      std::initializer_list<const BufferRange*> others, const std::string& op) {
  if (nn.count < 1 || nn.count > 2 || nn.out == nullptr) {
    return Status::InvalidArgument(op, "next norms: count must be 1 or 2, with an output");
  }
  for (uint32_t j = 0; j < nn.count; ++j) {
    if (nn.w[j] == nullptr) return Status::InvalidArgument(op, "next norms: missing weight");
    GARNET_RETURN_IF_ERROR(Need(*nn.w[j], uint64_t{n} * 4, op, "next norm weight"));
  }
  GARNET_RETURN_IF_ERROR(Need(*nn.out, uint64_t{rows} * nn.count * n * 4, op, "next norms out"));
  for (const BufferRange* b : others) {
    if (Overlap(*nn.out, *b)) {
      return Status::InvalidArgument(op, "next norms out overlaps another buffer");
    }
  }
  for (uint32_t j = 0; j < nn.count; ++j) {
    if (Overlap(*nn.out, *nn.w[j])) {
      return Status::InvalidArgument(op, "next norms out overlaps a next norm weight");
    }
  }
  if (nn.q8 != nullptr) {
    GARNET_RETURN_IF_ERROR(
        Need(*nn.q8, uint64_t{rows} * nn.count * Kernels::Q8xBytes(n), op, "next norms q8"));
    for (const BufferRange* b : others) {
      if (Overlap(*nn.q8, *b))
        return Status::InvalidArgument(op, "next norms q8 overlaps a buffer");
    }
    if (Overlap(*nn.q8, *nn.out) || Overlap(*nn.q8, *nn.w[0]) ||
        (nn.count > 1 && Overlap(*nn.q8, *nn.w[1]))) {
      return Status::InvalidArgument(op, "next norms q8 overlaps the copies or their weights");
    }
  }
  return Status::OK();
}
}  // namespace

Status Kernels::RmsNormAdd(Recorder& rec, const NormAddShape& s, const BufferRange& h,
                           const BufferRange& x, const BufferRange& w, const NextNorms* next) {
  const char* op = "norm_add";
  const uint32_t hs = s.h_stride ? s.h_stride : s.n;
  const uint32_t xs = s.x_stride ? s.x_stride : s.n;
  if (s.n == 0 || s.rows == 0) return Status::InvalidArgument(op, "empty shape");
  if (hs < s.n || xs < s.n) return Status::InvalidArgument(op, "stride smaller than the row");
  if (!(s.eps >= 0.0f) || !std::isfinite(s.eps) || !std::isfinite(s.scale)) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0, scale finite");
  }
  GARNET_RETURN_IF_ERROR(Need(h, Span4(s.rows, hs, s.n), op, "h"));
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.rows, xs, s.n), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(w, uint64_t{s.n} * 4, op, "w"));
  if (Overlap(h, x)) return Status::InvalidArgument(op, "x overlaps h");
  if (next) GARNET_RETURN_IF_ERROR(CheckNextNorms(*next, s.n, s.rows, {&h, &x, &w}, op));
  const bool q8 = next && next->q8;
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p,
                          ResidualPipeline("norm_add", s.n, s.rows, next, 3, 0b001, 24, op));
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, s.rows, &gx, &gy, op));
  if (!next) {
    struct {
      uint32_t n, rows, h_stride, x_stride;
      float eps, scale;
    } push{s.n, s.rows, hs, xs, s.eps, s.scale};
    const BufferRange bindings[] = {h, x, w};
    return rec.Dispatch(*p, bindings, push, gx, gy);
  }
  struct {
    uint32_t n, rows, h_stride, x_stride;
    float eps, scale;
    uint32_t nn_count;
  } push{s.n, s.rows, hs, xs, s.eps, s.scale, next->count};
  const BufferRange bindings[] = {h,
                                  x,
                                  w,
                                  *next->out,
                                  *next->w[0],
                                  *next->w[next->count > 1 ? 1 : 0],
                                  q8 ? *next->q8 : BufferRange(placeholder_)};
  return rec.Dispatch(*p, std::span<const BufferRange>(bindings, q8 ? 7 : 6), push, gx, gy);
}

Status Kernels::MoeTail(Recorder& rec, const MoeTailShape& s, const BufferRange& h,
                        const BufferRange& dense, const BufferRange& down, const BufferRange& wt,
                        const BufferRange& mo, const BufferRange& w1, const BufferRange& w2,
                        const BufferRange& w, const NextNorms* next) {
  const char* op = "moe_tail";
  if (s.n == 0 || s.k == 0 || s.n_tokens == 0) return Status::InvalidArgument(op, "empty shape");
  if (!(s.eps >= 0.0f) || !std::isfinite(s.eps) || !std::isfinite(s.scale)) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0, scale finite");
  }
  const uint64_t row = uint64_t{s.n} * 4, rows = uint64_t{s.n_tokens} * row;
  GARNET_RETURN_IF_ERROR(Need(h, rows, op, "h"));
  GARNET_RETURN_IF_ERROR(Need(dense, rows, op, "dense"));
  GARNET_RETURN_IF_ERROR(Need(down, rows * s.k, op, "down"));
  GARNET_RETURN_IF_ERROR(Need(wt, uint64_t{s.n_tokens} * s.k * 4, op, "weights"));
  GARNET_RETURN_IF_ERROR(Need(mo, rows, op, "mo"));
  GARNET_RETURN_IF_ERROR(Need(w1, row, op, "w1"));
  GARNET_RETURN_IF_ERROR(Need(w2, row, op, "w2"));
  GARNET_RETURN_IF_ERROR(Need(w, row, op, "w"));
  const BufferRange* rw[] = {&h, &dense, &down, &mo};
  for (int i = 0; i < 4; ++i) {
    for (int j = i + 1; j < 4; ++j) {
      if (Overlap(*rw[i], *rw[j])) {
        return Status::InvalidArgument(op, "h, dense, down and mo must not overlap");
      }
    }
  }
  if (next) {
    GARNET_RETURN_IF_ERROR(
        CheckNextNorms(*next, s.n, s.n_tokens, {&h, &dense, &down, &wt, &mo, &w1, &w2, &w}, op));
  }
  const bool q8 = next && next->q8;
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p,
                          ResidualPipeline("moe_tail", s.n, s.n_tokens, next, 8, 0b10011, 20, op));
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, s.n_tokens, &gx, &gy, op));
  if (!next) {
    struct {
      uint32_t n, k, n_tokens;
      float eps, scale;
    } push{s.n, s.k, s.n_tokens, s.eps, s.scale};
    const BufferRange bindings[] = {h, dense, down, wt, mo, w1, w2, w};
    return rec.Dispatch(*p, bindings, push, gx, gy);
  }
  struct {
    uint32_t n, k, n_tokens;
    float eps, scale;
    uint32_t nn_count;
  } push{s.n, s.k, s.n_tokens, s.eps, s.scale, next->count};
  const BufferRange bindings[] = {h,
                                  dense,
                                  down,
                                  wt,
                                  mo,
                                  w1,
                                  w2,
                                  w,
                                  *next->out,
                                  *next->w[0],
                                  *next->w[next->count > 1 ? 1 : 0],
                                  q8 ? *next->q8 : BufferRange(placeholder_)};
  return rec.Dispatch(*p, std::span<const BufferRange>(bindings, q8 ? 12 : 11), push, gx, gy);
}

Result<const Pipeline*> Kernels::ResidualPipeline(const std::string& name, uint32_t n,
                                                  uint32_t rows, const NextNorms* next,
                                                  uint32_t bindings, uint32_t written,
                                                  uint32_t push, const std::string& op) {
  const bool q8 = next && next->q8;
  if (q8 && !NextNormsQ8Available(n, rows)) {
    return Status::InvalidArgument(op, "next norms q8 for this shape");
  }
  const std::string variant =
      q8 ? NextNormsQ8Suffix(name + "_nn_q8")
         : (next ? name + "_nn" : name) + (device_.caps().subgroup_arithmetic ? "_sg" : "");
  if (next) {  // the copies (written), their two weights, and nn_count in the push constants
    written |= 1u << bindings;
    bindings += 3;
    push += 4;
  }
  if (q8) written |= 1u << bindings++;  // the q8x copies
  const uint32_t wg = RowWg(device_, rows);
  return device_.pipelines().Get({variant, bindings, written, push, {wg}, {wg, 1, 1}});
}

bool Kernels::NextNormsQ8Available(uint32_t n, uint32_t rows) const {
  // The kernels' register path (4 elements per invocation) and whole 32-blocks.
  return n > 0 && n % 32 == 0 && n <= 4 * RowWg(device_, rows) &&
         FindShader(NextNormsQ8Suffix("norm_add_nn_q8")) != nullptr;
}

bool Kernels::NextNormsQ8Clustered() const {
  // Clusters of 32 invocations are the 32-blocks (q8x_put.glsl Q8X_CLUSTERED).
  const uint32_t sg = device_.info().subgroup_size;
  return device_.caps().subgroup_clustered && device_.caps().storage_8bit && (sg == 32 || sg == 64);
}

std::string Kernels::NextNormsQ8Suffix(const std::string& base) const {
  if (!device_.caps().subgroup_arithmetic) return base;
  return base + (NextNormsQ8Clustered() ? "_sgc" : "_sg");
}

bool Kernels::MatvecXqAvailable(GgmlType type) const {
  return FindShader(MatvecVariant(type) + "_xq") != nullptr;
}

Result<std::string> Kernels::XqVariant(const std::string& variant, GgmlType type, uint32_t in,
                                       uint32_t vec, bool single, const BufferRange* xq,
                                       const std::string& op) const {
  if (xq == nullptr) return std::string();
  GARNET_RETURN_IF_ERROR(Need(*xq, Q8xBytes(in), op, "xq"));
  if (type != GgmlType::kQ4_K || (vec & 1u) == 0 || !single || in % 32 != 0 ||
      FindShader(variant + "_xq") == nullptr) {
    return std::string();
  }
  return variant + "_xq";
}

Status Kernels::Matvec(Recorder& rec, GgmlType type, const MatvecShape& s, const BufferRange& w,
                       const BufferRange& x, const BufferRange& y, const BufferRange* xq) {
  const std::string op = "matvec " + std::string(TypeName(type));
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.in, op));
  const uint32_t xs = s.x_stride ? s.x_stride : s.in;
  const uint32_t ys = s.y_stride ? s.y_stride : s.out;
  if (s.out == 0 || s.n_vecs == 0) return Status::InvalidArgument(op, "empty shape");
  if (xs < s.in || ys < s.out) return Status::InvalidArgument(op, "stride smaller than the row");
  if (s.n_vecs > device_.info().max_workgroup_count[2]) {
    return Status::InvalidArgument(op, "too many vectors for one dispatch");
  }
  const uint64_t row_bytes = *RowBytes(type, s.in);
  GARNET_RETURN_IF_ERROR(Need(w, row_bytes * s.out, op, "W"));
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.n_vecs, xs, s.in), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n_vecs, ys, s.out), op, "y"));
  if (row_bytes * s.out > 0xffffffffull) {
    return Status::InvalidArgument(op, "weight range over 4 GiB; split it");
  }
  // Tall Q8_0 matrices (e4b's head, 262144 x 2560) ran best at 64 x 8 in `garnet-vkbench --decode
  // --sweep` on an H200: 272 against 299 us at the 32 x 4 of the other tall matrices, where the
  // Q6_K heads stay (they took 405 against 350 us at 64 x 8).
  const bool tall_q8 =
      matvec_rows_auto_ && type == GgmlType::kQ8_0 && uint64_t{s.out} * s.n_vecs >= 32768;
  uint32_t rows = tall_q8 ? 8 : MatvecRows(s.out, s.n_vecs);
  uint32_t wg = MatvecWg(s.out, s.n_vecs, false);
  if (tall_q8) wg = std::max(wg, std::min<uint32_t>(64, device_.info().max_workgroup_invocations));
  if (!tall_q8 && OneRoundLaunch(type, s.in, s.out, s.n_vecs, &wg)) rows = std::min(rows, 2u);
  const uint32_t vec = MatvecVec(type, w, row_bytes, {}, x, {xs}, nullptr);
  GARNET_ASSIGN_OR_RETURN(const std::string xqv,
                          XqVariant(MatvecVariant(type), type, s.in, vec, s.n_vecs == 1, xq, op));
  const bool use_xq = !xqv.empty();
  PipelineDesc desc{
      use_xq ? xqv : MatvecVariant(type), use_xq ? 4u : 3u, 0b100, 16, {wg, rows, vec}, {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, out, x_stride, y_stride;
  } push{s.in, s.out, xs, ys};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (s.out + rows - 1) / rows, &gx, &gy, op));
  const BufferRange bindings[] = {w, x, y, use_xq ? *xq : BufferRange(placeholder_)};
  return rec.Dispatch(*p, std::span<const BufferRange>(bindings, use_xq ? 4 : 3), push, gx, gy,
                      s.n_vecs);
}

namespace {
// The fused matvecs have two variants per type: 16-bit loads + subgroupAdd where the device has
// both, else the portable one (32-bit words + shared-memory tree).
std::string FusedSuffix(const DeviceCaps& caps, GgmlType type) {
  if (!caps.subgroup_arithmetic) return "";
  if (type == GgmlType::kF32) return "_sg";
  return caps.storage_16bit ? "_s16_sg" : "";
}
}  // namespace

std::string Kernels::MatvecNormVariant(GgmlType type) const {
  return WithIdot(device_.caps(),
                  "matvec_norm_" + TypeSuffix(type) + FusedSuffix(device_.caps(), type));
}

std::string Kernels::MatvecGegluVariant(GgmlType type) const {
  return WithIdot(device_.caps(),
                  "matvec_geglu_" + TypeSuffix(type) + FusedSuffix(device_.caps(), type));
}

Status Kernels::MatvecGeglu(Recorder& rec, GgmlType type, const MatvecShape& s,
                            const BufferRange& w_gate, const BufferRange& w_up,
                            const BufferRange& x, const NormSpec* norm, const BufferRange& y,
                            const BufferRange* xq) {
  const std::string op = "matvec_geglu " + std::string(TypeName(type));
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.in, op));
  const uint32_t xs = s.x_stride ? s.x_stride : s.in;
  const uint32_t ys = s.y_stride ? s.y_stride : s.out;
  if (s.out == 0 || s.n_vecs == 0) return Status::InvalidArgument(op, "empty shape");
  if (xs < s.in || ys < s.out) return Status::InvalidArgument(op, "stride smaller than the row");
  if (norm && (!(norm->eps >= 0.0f) || !std::isfinite(norm->eps))) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0");
  }
  if (s.n_vecs > device_.info().max_workgroup_count[2]) {
    return Status::InvalidArgument(op, "too many vectors for one dispatch");
  }
  const uint64_t matrix = *RowBytes(type, s.in) * s.out;
  GARNET_RETURN_IF_ERROR(Need(w_gate, matrix, op, "gate W"));
  GARNET_RETURN_IF_ERROR(Need(w_up, matrix, op, "up W"));
  if (w_gate.buffer != w_up.buffer) {
    return Status::InvalidArgument(op, "gate and up matrices must be in one Buffer");
  }
  const uint64_t lo = std::min(w_gate.offset, w_up.offset);
  const uint64_t hi = std::max(w_gate.offset, w_up.offset) + matrix;
  if ((w_gate.offset - lo) % 4 != 0 || (w_up.offset - lo) % 4 != 0) {
    return Status::InvalidArgument(op, "gate and up offsets differ by a non-multiple of 4");
  }
  if (hi - lo > 0xffffffffull) {
    return Status::InvalidArgument(op, "gate and up matrices span over 4 GiB");
  }
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.n_vecs, xs, s.in), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n_vecs, ys, s.out), op, "y"));
  if (norm && norm->weight) {
    GARNET_RETURN_IF_ERROR(Need(*norm->weight, uint64_t{s.in} * 4, op, "norm weight"));
  }
  const uint32_t rows = MatvecRows(s.out, s.n_vecs);
  const uint32_t wg = MatvecWg(s.out, s.n_vecs, false);
  const uint32_t vec =
      MatvecVec(type, BufferRange(*w_gate.buffer, lo, hi - lo), *RowBytes(type, s.in),
                {w_gate.offset - lo, w_up.offset - lo}, x, {xs}, norm ? norm->weight : nullptr);
  GARNET_ASSIGN_OR_RETURN(const std::string xqv,
                          XqVariant(MatvecGegluVariant(type), type, s.in, vec,
                                    s.n_vecs == 1 && norm == nullptr, xq, op));
  const bool use_xq = !xqv.empty();
  PipelineDesc desc{use_xq ? xqv : MatvecGegluVariant(type),
                    use_xq ? 5u : 4u,
                    0b100,
                    32,
                    {wg, rows, vec},
                    {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, out, x_stride, y_stride;
    float eps;
    uint32_t norm_flags, gate_offset, up_offset;
  } push{s.in,
         s.out,
         xs,
         ys,
         norm ? norm->eps : 0.0f,
         !norm ? 2u : (norm->weight ? 1u : 0u),
         static_cast<uint32_t>(w_gate.offset - lo),
         static_cast<uint32_t>(w_up.offset - lo)};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (s.out + rows - 1) / rows, &gx, &gy, op));
  const BufferRange both(*w_gate.buffer, lo, hi - lo);
  const BufferRange bindings[] = {both, x, y,
                                  norm && norm->weight ? *norm->weight : BufferRange(placeholder_),
                                  use_xq ? *xq : BufferRange(placeholder_)};
  return rec.Dispatch(*p, std::span<const BufferRange>(bindings, use_xq ? 5 : 4), push, gx, gy,
                      s.n_vecs);
}

Result<Kernels::NormMatvecLaunch> Kernels::CheckNormMatvec(
    const std::string& op, GgmlType type, const MatvecShape& s, const BufferRange& w,
    const BufferRange& x, const BufferRange* norm_w, float eps, const BufferRange& y) const {
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.in, op));
  NormMatvecLaunch l;
  l.xs = s.x_stride ? s.x_stride : s.in;
  l.ys = s.y_stride ? s.y_stride : s.out;
  if (s.out == 0 || s.n_vecs == 0) return Status::InvalidArgument(op, "empty shape");
  if (l.xs < s.in || l.ys < s.out) {
    return Status::InvalidArgument(op, "stride smaller than the row");
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0");
  }
  if (s.n_vecs > device_.info().max_workgroup_count[2]) {
    return Status::InvalidArgument(op, "too many vectors for one dispatch");
  }
  const uint64_t row_bytes = *RowBytes(type, s.in);
  GARNET_RETURN_IF_ERROR(Need(w, row_bytes * s.out, op, "W"));
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.n_vecs, l.xs, s.in), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n_vecs, l.ys, s.out), op, "y"));
  if (norm_w) GARNET_RETURN_IF_ERROR(Need(*norm_w, uint64_t{s.in} * 4, op, "norm weight"));
  if (row_bytes * s.out > 0xffffffffull) {
    return Status::InvalidArgument(op, "weight range over 4 GiB; split it");
  }
  l.rows = MatvecRows(s.out, s.n_vecs);
  l.wg = MatvecWg(s.out, s.n_vecs, false);
  l.vec = MatvecVec(type, w, row_bytes, {}, x, {l.xs}, norm_w);
  return l;
}

Status Kernels::MatvecNorm(Recorder& rec, GgmlType type, const MatvecShape& s, const BufferRange& w,
                           const BufferRange& x, const BufferRange* norm_w, float eps,
                           const BufferRange& y) {
  const std::string op = "matvec_norm " + std::string(TypeName(type));
  GARNET_ASSIGN_OR_RETURN(const NormMatvecLaunch l,
                          CheckNormMatvec(op, type, s, w, x, norm_w, eps, y));
  const uint32_t xs = l.xs, ys = l.ys, rows = l.rows, wg = l.wg, vec = l.vec;
  PipelineDesc desc{MatvecNormVariant(type), 4, 0b100, 24, {wg, rows, vec}, {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, out, x_stride, y_stride;
    float eps;
    uint32_t has_norm_w;
  } push{s.in, s.out, xs, ys, eps, norm_w ? 1u : 0u};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (s.out + rows - 1) / rows, &gx, &gy, op));
  const BufferRange bindings[] = {w, x, y, norm_w ? *norm_w : BufferRange(placeholder_)};
  return rec.Dispatch(*p, bindings, push, gx, gy, s.n_vecs);
}

namespace {
std::string RouteVariant(GgmlType type, bool resid) {
  return (resid ? "matvec_resid_route_" : "matvec_norm_route_") + TypeSuffix(type);
}
}  // namespace

bool Kernels::MatvecNormRouteAvailable(GgmlType type, bool resid) const {
  return FindShader(RouteVariant(type, resid) + FusedSuffix(device_.caps(), type)) != nullptr;
}

Status Kernels::MatvecNormRoute(Recorder& rec, GgmlType type, const MatvecShape& s, uint32_t k,
                                const BufferRange& w, const BufferRange& x,
                                const BufferRange* norm_w, float eps,
                                const BufferRange* expert_scale, const BufferRange& logits,
                                const BufferRange& ids, const BufferRange& weights,
                                const BufferRange& counter, const ResidSpec* resid) {
  const std::string op =
      (resid ? "matvec_resid_route " : "matvec_norm_route ") + std::string(TypeName(type));
  if (!MatvecNormRouteAvailable(type, resid != nullptr)) {
    return Status::Unimplemented(op, "no routing matvec for this weight type");
  }
  if (s.out > 1024 || k == 0 || k > s.out || k > 64) {
    return Status::InvalidArgument(op, std::to_string(s.out) + " experts, top " +
                                           std::to_string(k) +
                                           " (need 1 <= k <= experts <= 1024, k <= 64)");
  }
  GARNET_ASSIGN_OR_RETURN(const NormMatvecLaunch l,
                          CheckNormMatvec(op, type, s, w, x, norm_w, eps, logits));
  const uint32_t xs = l.xs, ys = l.ys, rows = l.rows, vec = l.vec;
  // The residual form beside norm_add: 256 invocations per workgroup instead of 128 took its
  // interval from 15.6 to 13.4 us per 26b-a4b layer on an H200 (docs/PERF.md, round 15).
  uint32_t wg = l.wg;
  while (resid && wg < 256 && wg * 2 <= device_.info().max_workgroup_invocations) wg *= 2;
  if (expert_scale) GARNET_RETURN_IF_ERROR(Need(*expert_scale, uint64_t{s.out} * 4, op, "scale"));
  GARNET_RETURN_IF_ERROR(Need(ids, uint64_t{s.n_vecs} * k * 4, op, "ids"));
  GARNET_RETURN_IF_ERROR(Need(weights, uint64_t{s.n_vecs} * k * 4, op, "weights"));
  GARNET_RETURN_IF_ERROR(Need(counter, uint64_t{s.n_vecs} * 4, op, "counter"));
  uint32_t vec4 = 0;  // matvec.comp RESID's VEC bit 2
  if (resid) {
    GARNET_RETURN_IF_ERROR(Need(resid->o, Span4(s.n_vecs, xs, s.in), op, "o"));
    GARNET_RETURN_IF_ERROR(Need(resid->w, uint64_t{s.in} * 4, op, "post norm weight"));
    const uint64_t elem = *RowBytes(type, 4);  // bytes of four weights
    const bool aligned = s.in % 4 == 0 && xs % 4 == 0 && x.offset % 16 == 0 &&
                         resid->o.offset % 16 == 0 && resid->w.offset % 16 == 0 &&
                         (norm_w == nullptr || norm_w->offset % 16 == 0) && w.offset % elem == 0 &&
                         *RowBytes(type, s.in) % elem == 0;
    vec4 = aligned ? 4u : 0u;
  }
  PipelineDesc desc{WithIdot(device_.caps(), RouteVariant(type, resid != nullptr) +
                                                 FusedSuffix(device_.caps(), type)),
                    resid ? 10u : 8u,
                    0b11100100,
                    32,
                    {wg, rows, vec | vec4},
                    {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, out, x_stride, y_stride;
    float eps;
    uint32_t has_norm_w, k, has_scale;
  } push{s.in, s.out, xs, ys, eps, norm_w ? 1u : 0u, k, expert_scale ? 1u : 0u};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (s.out + rows - 1) / rows, &gx, &gy, op));
  const BufferRange bindings[] = {w,
                                  x,
                                  logits,
                                  norm_w ? *norm_w : BufferRange(placeholder_),
                                  expert_scale ? *expert_scale : BufferRange(placeholder_),
                                  ids,
                                  weights,
                                  counter,
                                  resid ? resid->o : BufferRange(placeholder_),
                                  resid ? resid->w : BufferRange(placeholder_)};
  return rec.Dispatch(*p, std::span<const BufferRange>(bindings, resid ? 10 : 8), push, gx, gy,
                      s.n_vecs);
}

bool Kernels::MatvecIdFusedAvailable(GgmlType type) const {
  const std::string suffix = FusedSuffix(device_.caps(), type);
  return !suffix.empty() && FindShader("matvec_id_norm_" + TypeSuffix(type) + suffix) != nullptr;
}

Status Kernels::MatvecId(Recorder& rec, GgmlType type, const MatvecIdShape& s, const BufferRange& w,
                         const BufferRange& x, const BufferRange& ids, const BufferRange& y,
                         const BufferRange* xq) {
  return MatvecIdImpl(rec, type, s, w, x, ids, 0, nullptr, 0.0f, 0, y, xq);
}

Status Kernels::MatvecIdNorm(Recorder& rec, GgmlType type, const MatvecIdShape& s,
                             const BufferRange& w, const BufferRange& x, const BufferRange& ids,
                             const BufferRange* norm_w, float eps, const BufferRange& y) {
  return MatvecIdImpl(rec, type, s, w, x, ids, 1, norm_w, eps, 0, y);
}

Status Kernels::MatvecIdGeglu(Recorder& rec, GgmlType type, const MatvecIdShape& s,
                              const BufferRange& w, const BufferRange& x, const BufferRange& ids,
                              uint32_t up_offset, const BufferRange& y) {
  return MatvecIdImpl(rec, type, s, w, x, ids, 2, nullptr, 0.0f, up_offset, y);
}

Status Kernels::MatvecIdImpl(Recorder& rec, GgmlType type, const MatvecIdShape& s,
                             const BufferRange& w, const BufferRange& x, const BufferRange& ids,
                             int kind, const BufferRange* norm_w, float eps, uint32_t up_offset,
                             const BufferRange& y, const BufferRange* xq) {
  const std::string op = std::string(kind == 0   ? "matvec_id "
                                     : kind == 1 ? "matvec_id_norm "
                                                 : "matvec_id_glu ") +
                         std::string(TypeName(type));
  if (kind != 0 && !MatvecIdFusedAvailable(type)) {
    return Status::Unimplemented(op, "no fused variant on this device");
  }
  if (kind == 1 && (!(eps >= 0.0f) || !std::isfinite(eps))) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0");
  }
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.in, op));
  const uint32_t ys = s.y_stride ? s.y_stride : s.out;
  if (s.out == 0 || s.n_experts == 0 || s.n_slots == 0) {
    return Status::InvalidArgument(op, "empty shape");
  }
  if ((s.x_stride != 0 && s.x_stride < s.in) || ys < s.out) {
    return Status::InvalidArgument(op, "stride smaller than the row");
  }
  if (s.n_slots > device_.info().max_workgroup_count[2]) {
    return Status::InvalidArgument(op, "too many slots for one dispatch");
  }
  const uint64_t row_bytes = *RowBytes(type, s.in);
  const uint64_t matrix = row_bytes * s.out;
  const uint64_t stride = s.expert_stride ? s.expert_stride : matrix;
  if (stride < matrix || stride % 4 != 0) {
    return Status::InvalidArgument(op, "expert stride " + std::to_string(stride) +
                                           " is below the matrix size or not a multiple of 4");
  }
  const uint64_t w_bytes = (s.n_experts - 1) * stride + matrix;
  if (w_bytes > 0xffffffffull)
    return Status::InvalidArgument(op, "weight range over 4 GiB; split it");
  GARNET_RETURN_IF_ERROR(Need(w, w_bytes, op, "W"));
  const uint64_t x_item = uint64_t{s.in} + (kind == 2 ? up_offset : 0);
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.x_stride ? s.n_slots : 1, s.x_stride, x_item), op, "x"));
  if (kind == 1 && norm_w) {
    GARNET_RETURN_IF_ERROR(Need(*norm_w, uint64_t{s.in} * 4, op, "norm weight"));
  }
  GARNET_RETURN_IF_ERROR(Need(ids, uint64_t{s.n_slots} * 4, op, "ids"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n_slots, ys, s.out), op, "y"));
  const uint32_t rows = MatvecRows(s.out, s.n_slots);
  const uint32_t wg = MatvecWg(s.out, s.n_slots, kind == 2);
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (s.out + rows - 1) / rows, &gx, &gy, op));
  const uint32_t vec =
      MatvecVec(type, w, row_bytes, {stride}, x, {s.x_stride, kind == 2 ? up_offset : 0},
                kind == 1 ? norm_w : nullptr);
  if (kind == 0) {
    GARNET_ASSIGN_OR_RETURN(const std::string xqv, XqVariant(MatvecVariant(type, true), type, s.in,
                                                             vec, s.x_stride == 0, xq, op));
    const bool use_xq = !xqv.empty();
    PipelineDesc desc{use_xq ? xqv : MatvecVariant(type, true),
                      use_xq ? 5u : 4u,
                      0b100,
                      24,
                      {wg, rows, vec},
                      {wg, 1, 1}};
    GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
    struct {
      uint32_t in, out, x_stride, y_stride, expert_stride, n_experts;
    } push{s.in, s.out, s.x_stride, ys, static_cast<uint32_t>(stride), s.n_experts};
    const BufferRange bindings[] = {w, x, y, ids, use_xq ? *xq : BufferRange(placeholder_)};
    return rec.Dispatch(*p, std::span<const BufferRange>(bindings, use_xq ? 5 : 4), push, gx, gy,
                        s.n_slots);
  }
  const std::string suffix = TypeSuffix(type) + FusedSuffix(device_.caps(), type);
  if (kind == 1) {
    PipelineDesc desc{WithIdot(device_.caps(), "matvec_id_norm_" + suffix),
                      5,
                      0b100,
                      32,
                      {wg, rows, vec},
                      {wg, 1, 1}};
    GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
    struct {
      uint32_t in, out, x_stride, y_stride, expert_stride, n_experts;
      float eps;
      uint32_t norm_flags;
    } push{s.in,        s.out, s.x_stride,      ys, static_cast<uint32_t>(stride),
           s.n_experts, eps,   norm_w ? 1u : 0u};
    const BufferRange bindings[] = {w, x, y, ids, norm_w ? *norm_w : BufferRange(placeholder_)};
    return rec.Dispatch(*p, bindings, push, gx, gy, s.n_slots);
  }
  PipelineDesc desc{WithIdot(device_.caps(), "matvec_id_glu_" + suffix),
                    4,
                    0b100,
                    28,
                    {wg, rows, vec},
                    {wg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, out, x_stride, y_stride, expert_stride, n_experts, glu_off;
  } push{s.in, s.out, s.x_stride, ys, static_cast<uint32_t>(stride), s.n_experts, up_offset};
  const BufferRange bindings[] = {w, x, y, ids};
  return rec.Dispatch(*p, bindings, push, gx, gy, s.n_slots);
}

Status Kernels::Matmul(Recorder& rec, GgmlType type, const MatmulShape& s, const BufferRange& w,
                       const BufferRange& x, const BufferRange& y) {
  const std::string op = "matmul " + std::string(TypeName(type));
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.k, op));
  const uint32_t xs = s.x_stride ? s.x_stride : s.k;
  const uint32_t ys = s.y_stride ? s.y_stride : s.m;
  if (s.m == 0 || s.n == 0) return Status::InvalidArgument(op, "empty shape");
  if (xs < s.k || ys < s.m) return Status::InvalidArgument(op, "stride smaller than the row");
  const uint64_t row_bytes = *RowBytes(type, s.k);
  GARNET_RETURN_IF_ERROR(Need(w, row_bytes * s.m, op, "W"));
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.n, xs, s.k), op, "X"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n, ys, s.m), op, "Y"));
  if (row_bytes * s.m > 0xffffffffull) {
    return Status::InvalidArgument(op, "weight range over 4 GiB; split it");
  }
  const bool coop = MatmulUsesCooperativeMatrix(type);
  const uint32_t tile = coop ? kCoopTile : kMatmulTile;
  // Cooperative tiles of 128 x 128 leave SMs idle when the grid is small (e.g. 2816 rows x 512
  // tokens: 88 workgroups on a 132-SM H200): then tiles of 128 rows x 64 tokens.
  const bool n64 =
      coop && uint64_t{(s.m + tile - 1) / tile} * ((s.n + tile - 1) / tile) < coop_small_grid_;
  const uint32_t n_tile = n64 ? 64 : tile;
  if ((s.n + n_tile - 1) / n_tile > device_.info().max_workgroup_count[1] ||
      (s.m + tile - 1) / tile > device_.info().max_workgroup_count[0]) {
    return Status::InvalidArgument(op, "too many tiles for one dispatch");
  }
  PipelineDesc desc{
      n64 ? "matmul_coop_n64_" + TypeSuffix(type) + CoopSuffix() : MatmulVariant(type),
      3,
      0b100,
      20,
      {kMatmulWg},
      {kMatmulWg, 1, 1}};
  if (coop) {
    desc.spec = {kMatmulWg, CoopXVec(x, xs, 0, s.k), CoopWVec(type, w, row_bytes, row_bytes)};
  }
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t m, n, k, x_stride, y_stride;
  } push{s.m, s.n, s.k, xs, ys};
  const BufferRange bindings[] = {w, x, y};
  return rec.Dispatch(*p, bindings, push, (s.m + tile - 1) / tile, (s.n + n_tile - 1) / n_tile);
}

namespace {
constexpr uint32_t kIdTile =
    64;  // slots per matmul_id workgroup (BN of matmul.comp and of matmul_coop.comp -DMUL_ID)
uint64_t MatmulIdTiles(uint32_t n_experts, uint32_t n_slots) {
  return (uint64_t{n_slots} + kIdTile - 1) / kIdTile + n_experts + 1;
}
}  // namespace

uint64_t MatmulIdScratchBytes(uint32_t n_experts, uint32_t n_slots) {
  return (uint64_t{n_experts} + 1 + n_slots + 2 * MatmulIdTiles(n_experts, n_slots)) * 4;
}

Status Kernels::MatmulId(Recorder& rec, GgmlType type, const MatmulIdShape& s, const BufferRange& w,
                         const BufferRange& x, const BufferRange& ids, const BufferRange& scratch,
                         const BufferRange& y) {
  const std::string op = "matmul_id " + std::string(TypeName(type));
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, s.k, op));
  if (s.m == 0 || s.n_experts == 0 || s.n_tokens == 0 || s.k_slots == 0) {
    return Status::InvalidArgument(op, "empty shape");
  }
  if (s.n_experts > 1024) return Status::InvalidArgument(op, "more than 1024 experts");
  const uint64_t n_slots = uint64_t{s.n_tokens} * s.k_slots;
  if (n_slots > 0x7fffffffull) return Status::InvalidArgument(op, "too many slots");
  const uint32_t xs = s.x_stride ? s.x_stride : s.k;
  const uint32_t ys = s.y_stride ? s.y_stride : s.m;
  if (ys < s.m || (s.x_slot_stride == 0 && xs < s.k) ||
      (s.x_slot_stride != 0 && s.x_slot_stride < s.k)) {
    return Status::InvalidArgument(op, "a stride is smaller than what it steps over");
  }
  const uint64_t row_bytes = *RowBytes(type, s.k);
  const uint64_t matrix = row_bytes * s.m;
  const uint64_t stride = s.expert_stride ? s.expert_stride : matrix;
  if (stride < matrix || stride % 4 != 0) {
    return Status::InvalidArgument(op, "expert stride " + std::to_string(stride) +
                                           " is below the matrix size or not a multiple of 4");
  }
  const uint64_t w_bytes = (s.n_experts - 1) * stride + matrix;
  if (w_bytes > 0xffffffffull) {
    return Status::InvalidArgument(op, "weight range over 4 GiB; split it");
  }
  const uint64_t tiles = MatmulIdTiles(s.n_experts, static_cast<uint32_t>(n_slots));
  const bool coop = MatmulUsesCooperativeMatrix(type);
  const uint32_t m_tile = coop ? kCoopTile : kMatmulTile;  // rows per workgroup
  if (tiles > device_.info().max_workgroup_count[1] ||
      (s.m + m_tile - 1) / m_tile > device_.info().max_workgroup_count[0]) {
    return Status::InvalidArgument(op, "too many tiles for one dispatch");
  }
  const uint64_t x_elems =
      uint64_t{s.n_tokens - 1} * xs + uint64_t{s.k_slots - 1} * s.x_slot_stride + s.k;
  if (x_elems > 0xffffffffull || (n_slots - 1) * ys + s.m > 0xffffffffull) {
    return Status::InvalidArgument(op, "X or Y over 2^32 elements");
  }
  GARNET_RETURN_IF_ERROR(Need(w, w_bytes, op, "W"));
  GARNET_RETURN_IF_ERROR(Need(x, x_elems * 4, op, "X"));
  GARNET_RETURN_IF_ERROR(Need(ids, n_slots * 4, op, "ids"));
  GARNET_RETURN_IF_ERROR(Need(
      scratch, MatmulIdScratchBytes(s.n_experts, static_cast<uint32_t>(n_slots)), op, "scratch"));
  GARNET_RETURN_IF_ERROR(Need(y, ((n_slots - 1) * ys + s.m) * 4, op, "Y"));

  constexpr uint32_t kGroupWg = 256;
  PipelineDesc gdesc{"moe_group", 2, 0b10, 12, {kGroupWg}, {kGroupWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* gp, device_.pipelines().Get(gdesc));
  std::string variant = (coop ? "matmul_coop_id_" : "matmul_id_") + TypeSuffix(type);
  if (!coop && type != GgmlType::kF32 && device_.caps().storage_16bit) variant += "_s16";
  if (coop) variant += CoopSuffix();
  PipelineDesc desc{variant, 4, 0b100, 40, {kMatmulWg}, {kMatmulWg, 1, 1}};
  if (coop) {
    desc.spec = {kMatmulWg, CoopXVec(x, xs, s.x_slot_stride, s.k),
                 CoopWVec(type, w, row_bytes, stride)};
  }
  GARNET_ASSIGN_OR_RETURN(const Pipeline* mp, device_.pipelines().Get(desc));
  struct {
    uint32_t n_experts, n_slots, max_tiles;
  } gpush{s.n_experts, static_cast<uint32_t>(n_slots), static_cast<uint32_t>(tiles)};
  const BufferRange gbind[] = {ids, scratch};
  GARNET_RETURN_IF_ERROR(rec.Dispatch(*gp, gbind, gpush, 1));
  struct {
    uint32_t m, n, k, x_stride, y_stride, expert_stride, n_experts, k_slots, x_slot_stride,
        max_tiles;
  } push{s.m,
         static_cast<uint32_t>(n_slots),
         s.k,
         xs,
         ys,
         static_cast<uint32_t>(stride),
         s.n_experts,
         s.k_slots,
         s.x_slot_stride,
         static_cast<uint32_t>(tiles)};
  const BufferRange bindings[] = {w, x, y, scratch};
  return rec.Dispatch(*mp, bindings, push, (s.m + m_tile - 1) / m_tile,
                      static_cast<uint32_t>(tiles));
}

Result<std::vector<float>> RopeThetaTable(uint32_t n_rot, double base,
                                          std::span<const float> freq_factors) {
  const std::string op = "rope theta table";
  if (n_rot == 0 || n_rot % 2) return Status::InvalidArgument(op, "n_rot must be even and > 0");
  if (!(base > 0.0) || !std::isfinite(base)) {
    return Status::InvalidArgument(op, "base must be finite and > 0");
  }
  if (!freq_factors.empty() && freq_factors.size() != n_rot / 2) {
    return Status::InvalidArgument(op, std::to_string(freq_factors.size()) + " freq factors for " +
                                           std::to_string(n_rot / 2) + " pairs");
  }
  std::vector<float> table(n_rot);
  for (uint32_t i = 0; i < n_rot / 2; ++i) {
    double theta = std::pow(base, -2.0 * i / n_rot);
    if (!freq_factors.empty()) {
      const float f = freq_factors[i];
      if (!(f > 0.0f) || !std::isfinite(f)) {
        return Status::InvalidArgument(op, "freq factor " + std::to_string(i) + " is " +
                                               std::to_string(f) + ", not finite and > 0");
      }
      theta /= f;
    }
    const float hi = static_cast<float>(theta);
    table[2 * i] = hi;
    table[2 * i + 1] = static_cast<float>(theta - hi);
  }
  return table;
}

Result<Kernels::RopeGeometry> Kernels::CheckRope(const char* op, const RopeShape& s,
                                                 const BufferRange& x, const BufferRange& pos,
                                                 const BufferRange& theta,
                                                 const BufferRange& y) const {
  RopeGeometry g;
  g.n_rot = s.n_rot ? s.n_rot : s.head_dim;
  const uint32_t row = s.n_heads * s.head_dim;
  g.xs = s.x_tok_stride ? s.x_tok_stride : row;
  g.ys = s.y_tok_stride ? s.y_tok_stride : row;
  if (s.head_dim == 0 || s.n_heads == 0 || s.n_tokens == 0) {
    return Status::InvalidArgument(op, "empty shape");
  }
  if (s.head_dim % 2 || g.n_rot % 2 || g.n_rot > s.head_dim) {
    return Status::InvalidArgument(op, "head_dim and n_rot must be even, n_rot <= head_dim");
  }
  if (g.xs < row || g.ys < row) return Status::InvalidArgument(op, "stride smaller than a token");
  if (s.n_heads > device_.info().max_workgroup_count[1] ||
      s.n_tokens > device_.info().max_workgroup_count[2]) {
    return Status::InvalidArgument(op, "too many heads or tokens for one dispatch");
  }
  GARNET_RETURN_IF_ERROR(Need(x, Span4(s.n_tokens, g.xs, row), op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(s.n_tokens, g.ys, row), op, "y"));
  GARNET_RETURN_IF_ERROR(Need(pos, uint64_t{s.n_tokens} * 4, op, "pos"));
  GARNET_RETURN_IF_ERROR(Need(theta, uint64_t{g.n_rot} * 4, op, "theta"));
  return g;
}

Status Kernels::Rope(Recorder& rec, const RopeShape& s, const BufferRange& x,
                     const BufferRange& pos, const BufferRange& theta, const BufferRange& y) {
  const char* op = "rope";
  GARNET_ASSIGN_OR_RETURN(const RopeGeometry g, CheckRope(op, s, x, pos, theta, y));
  const uint32_t n_rot = g.n_rot, xs = g.xs, ys = g.ys;
  constexpr uint32_t kWg = 64;
  PipelineDesc desc{"rope", 4, 0b1000, 24, {kWg}, {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t head_dim, n_rot, n_heads, n_tokens, x_tok_stride, y_tok_stride;
  } push{s.head_dim, n_rot, s.n_heads, s.n_tokens, xs, ys};
  const BufferRange bindings[] = {x, pos, theta, y};
  return rec.Dispatch(*p, bindings, push, (s.head_dim / 2 + kWg - 1) / kWg, s.n_heads, s.n_tokens);
}

Status Kernels::NormRope(Recorder& rec, const RopeShape& s, const BufferRange* norm_w, float eps,
                         const BufferRange& x, const BufferRange& pos, const BufferRange& theta,
                         const BufferRange& y) {
  const char* op = "norm_rope";
  GARNET_ASSIGN_OR_RETURN(const RopeGeometry g, CheckRope(op, s, x, pos, theta, y));
  const uint32_t n_rot = g.n_rot, xs = g.xs, ys = g.ys;
  if (!(eps >= 0.0f) || !std::isfinite(eps)) {
    return Status::InvalidArgument(op, "eps must be finite and >= 0");
  }
  if (norm_w) GARNET_RETURN_IF_ERROR(Need(*norm_w, uint64_t{s.head_dim} * 4, op, "norm weight"));
  constexpr uint32_t kWg = 128;
  PipelineDesc desc{device_.caps().subgroup_arithmetic ? "rope_norm_sg" : "rope_norm",
                    5,
                    0b1000,
                    32,
                    {kWg},
                    {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t head_dim, n_rot, n_heads, n_tokens, x_tok_stride, y_tok_stride;
    float eps;
    uint32_t has_weight;
  } push{s.head_dim, n_rot, s.n_heads, s.n_tokens, xs, ys, eps, norm_w ? 1u : 0u};
  const BufferRange bindings[] = {x, pos, theta, y, norm_w ? *norm_w : BufferRange(placeholder_)};
  return rec.Dispatch(*p, bindings, push, 1, s.n_heads, s.n_tokens);
}

Status Kernels::GeluMul(Recorder& rec, uint32_t n, const BufferRange& g, const BufferRange& u,
                        const BufferRange& y) {
  const std::string op = "gelu_mul";
  if (n == 0) return Status::InvalidArgument(op, "empty shape");
  GARNET_RETURN_IF_ERROR(Need(g, uint64_t{n} * 4, op, "g"));
  GARNET_RETURN_IF_ERROR(Need(u, uint64_t{n} * 4, op, "u"));
  GARNET_RETURN_IF_ERROR(Need(y, uint64_t{n} * 4, op, "y"));
  PipelineDesc desc{"gelu_mul", 3, 0b100, 4, {kElementwiseWg}, {kElementwiseWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (n + kElementwiseWg - 1) / kElementwiseWg, &gx, &gy, op));
  const BufferRange bindings[] = {g, u, y};
  return rec.Dispatch(*p, bindings, n, gx, gy);
}

Status Kernels::Softcap(Recorder& rec, uint32_t n, float cap, const BufferRange& x,
                        const BufferRange& y) {
  const std::string op = "softcap";
  if (n == 0) return Status::InvalidArgument(op, "empty shape");
  if (!(cap > 0.0f)) return Status::InvalidArgument(op, "cap must be > 0");
  GARNET_RETURN_IF_ERROR(Need(x, uint64_t{n} * 4, op, "x"));
  GARNET_RETURN_IF_ERROR(Need(y, uint64_t{n} * 4, op, "y"));
  PipelineDesc desc{"softcap", 2, 0b10, 8, {kElementwiseWg}, {kElementwiseWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n;
    float cap;
  } push{n, cap};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (n + kElementwiseWg - 1) / kElementwiseWg, &gx, &gy, op));
  const BufferRange bindings[] = {x, y};
  return rec.Dispatch(*p, bindings, push, gx, gy);
}

namespace {
// ArgmaxRows: stage-0 workgroups per row (at most the workgroup size: stage 1 reduces them in
// one workgroup) and their size. 128 chunks of 2048 cover a 262144-logit row.
constexpr uint32_t kArgmaxWg = 256;
constexpr uint32_t kArgmaxGroups = 128;
}  // namespace

uint64_t Kernels::ArgmaxScratchBytes(uint32_t rows) {
  return uint64_t{rows} * kArgmaxGroups * 8;
}

Status Kernels::ArgmaxRows(Recorder& rec, uint32_t n, uint32_t rows, const BufferRange& x,
                           const BufferRange& partials, const BufferRange& out) {
  const std::string op = "argmax";
  if (n == 0 || rows == 0) return Status::InvalidArgument(op, "empty shape");
  if (rows > device_.info().max_workgroup_count[0] ||
      rows > device_.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, std::to_string(rows) + " rows for one dispatch");
  }
  GARNET_RETURN_IF_ERROR(Need(x, uint64_t{n} * rows * 4, op, "x"));
  GARNET_RETURN_IF_ERROR(Need(partials, ArgmaxScratchBytes(rows), op, "partials"));
  GARNET_RETURN_IF_ERROR(Need(out, uint64_t{rows} * 4, op, "out"));
  // Chunks of whole workgroup rounds; fewer groups when the row is short.
  const uint32_t per = (n + kArgmaxGroups - 1) / kArgmaxGroups;
  const uint32_t chunk = (per + kArgmaxWg - 1) / kArgmaxWg * kArgmaxWg;
  const uint32_t groups = (n + chunk - 1) / chunk;
  struct {
    uint32_t n, rows, groups, chunk, stage;
  } push{n, rows, groups, chunk, 0};
  PipelineDesc first{"argmax", 3, 0b010, 20, {kArgmaxWg}, {kArgmaxWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p0, device_.pipelines().Get(first));
  const BufferRange part(*partials.buffer, partials.offset, ArgmaxScratchBytes(rows));
  const BufferRange bindings[] = {x, part, out};
  GARNET_RETURN_IF_ERROR(rec.Dispatch(*p0, bindings, push, groups, rows));
  push.stage = 1;
  PipelineDesc second{"argmax", 3, 0b100, 20, {kArgmaxWg}, {kArgmaxWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p1, device_.pipelines().Get(second));
  return rec.Dispatch(*p1, bindings, push, rows, 1);
}

Status Kernels::TopChunks(Recorder& rec, uint32_t n, uint32_t rows, uint32_t keep,
                          const BufferRange& x, const BufferRange& out) {
  const std::string op = "top_chunks";
  if (n == 0 || rows == 0) return Status::InvalidArgument(op, "empty shape");
  if (keep == 0 || keep > kTopChunkBest) {
    return Status::InvalidArgument(op, "keep " + std::to_string(keep) + " of a chunk");
  }
  const uint32_t chunks = TopChunkCount(n);
  if (rows > device_.info().max_workgroup_count[1] ||
      chunks > device_.info().max_workgroup_count[0]) {
    return Status::InvalidArgument(
        op, std::to_string(rows) + " rows of " + std::to_string(n) + " for one dispatch");
  }
  GARNET_RETURN_IF_ERROR(Need(x, uint64_t{n} * rows * 4, op, "x"));
  GARNET_RETURN_IF_ERROR(Need(out, TopChunksBytes(n, rows), op, "out"));
  // 256 invocations (8 elements each); 16 KiB of shared memory for the chunk's keys and indices.
  constexpr uint32_t kWg = 256;
  PipelineDesc desc{"top_chunks", 2, 0b10, 12, {kWg}, {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n, chunks, keep;
  } push{n, chunks, keep};
  const BufferRange bindings[] = {x, out};
  return rec.Dispatch(*p, bindings, push, chunks, rows);
}

Status Kernels::GetRows(Recorder& rec, GgmlType type, uint32_t in, uint32_t n_rows,
                        uint32_t n_tokens, uint32_t y_stride, float scale, const BufferRange& w,
                        const BufferRange& ids, const BufferRange& y) {
  const std::string op = "get_rows " + std::string(TypeName(type));
  GARNET_RETURN_IF_ERROR(CheckWeightType(type, in, op));
  const uint32_t ys = y_stride ? y_stride : in;
  if (n_rows == 0 || n_tokens == 0) return Status::InvalidArgument(op, "empty shape");
  if (ys < in) return Status::InvalidArgument(op, "stride smaller than the row");
  if (n_tokens > device_.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, "too many tokens for one dispatch");
  }
  const uint64_t table = *RowBytes(type, in) * n_rows;
  if (table > 0xffffffffull) return Status::InvalidArgument(op, "table range over 4 GiB; split it");
  GARNET_RETURN_IF_ERROR(Need(w, table, op, "W"));
  GARNET_RETURN_IF_ERROR(Need(ids, uint64_t{n_tokens} * 4, op, "ids"));
  GARNET_RETURN_IF_ERROR(Need(y, Span4(n_tokens, ys, in), op, "y"));
  std::string variant = "get_rows_" + TypeSuffix(type);
  if (type != GgmlType::kF32 && device_.caps().storage_16bit) variant += "_s16";
  PipelineDesc desc{variant, 3, 0b100, 20, {kElementwiseWg}, {kElementwiseWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t in, n_rows, n_tokens, y_stride;
    float scale;
  } push{in, n_rows, n_tokens, ys, scale};
  const BufferRange bindings[] = {w, ids, y};
  return rec.Dispatch(*p, bindings, push, (in + kElementwiseWg - 1) / kElementwiseWg, n_tokens);
}

Status Kernels::Binary(Recorder& rec, BinaryOp bop, uint32_t n, uint32_t b_len, float scale,
                       const BufferRange& a, const BufferRange& b, const BufferRange& y) {
  const std::string op = bop == BinaryOp::kAdd ? "add" : "mul";
  if (n == 0 || b_len == 0) return Status::InvalidArgument(op, "empty shape");
  GARNET_RETURN_IF_ERROR(Need(a, uint64_t{n} * 4, op, "a"));
  GARNET_RETURN_IF_ERROR(Need(b, uint64_t{b_len} * 4, op, "b"));
  GARNET_RETURN_IF_ERROR(Need(y, uint64_t{n} * 4, op, "y"));
  PipelineDesc desc{"binary", 3, 0b100, 16, {kElementwiseWg}, {kElementwiseWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n, b_len, op;
    float scale;
  } push{n, b_len, static_cast<uint32_t>(bop), scale};
  uint32_t gx = 0, gy = 0;
  GARNET_RETURN_IF_ERROR(Fold(device_, (n + kElementwiseWg - 1) / kElementwiseWg, &gx, &gy, op));
  const BufferRange bindings[] = {a, b, y};
  return rec.Dispatch(*p, bindings, push, gx, gy);
}

Status Kernels::MoeRoute(Recorder& rec, uint32_t n_experts, uint32_t k, uint32_t n_tokens,
                         const BufferRange& logits, const BufferRange* expert_scale,
                         const BufferRange& ids, const BufferRange& weights) {
  const std::string op = "moe_route";
  if (n_experts == 0 || n_experts > 1024 || k == 0 || k > n_experts || k > 64 || n_tokens == 0) {
    return Status::InvalidArgument(op, std::to_string(n_experts) + " experts, top " +
                                           std::to_string(k) +
                                           " (need 1 <= k <= experts <= "
                                           "1024, k <= 64), " +
                                           std::to_string(n_tokens) + " tokens");
  }
  if (n_tokens > device_.info().max_workgroup_count[0]) {
    return Status::InvalidArgument(op, "too many tokens for one dispatch");
  }
  GARNET_RETURN_IF_ERROR(Need(logits, uint64_t{n_tokens} * n_experts * 4, op, "logits"));
  if (expert_scale)
    GARNET_RETURN_IF_ERROR(Need(*expert_scale, uint64_t{n_experts} * 4, op, "scale"));
  GARNET_RETURN_IF_ERROR(Need(ids, uint64_t{n_tokens} * k * 4, op, "ids"));
  GARNET_RETURN_IF_ERROR(Need(weights, uint64_t{n_tokens} * k * 4, op, "weights"));
  constexpr uint32_t kWg = 128;
  PipelineDesc desc{device_.caps().subgroup_arithmetic ? "moe_route_sg" : "moe_route",
                    4,
                    0b1100,
                    16,
                    {kWg},
                    {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t e, k, n_tokens, has_scale;
  } push{n_experts, k, n_tokens, expert_scale ? 1u : 0u};
  const BufferRange bindings[] = {logits, expert_scale ? *expert_scale : BufferRange(placeholder_),
                                  ids, weights};
  return rec.Dispatch(*p, bindings, push, n_tokens);
}

uint32_t AttentionSplits(const AttentionShape& s) {
  const uint64_t keys = s.window ? std::min(s.window, s.ring_size) : s.ring_size;
  const uint64_t per = s.split_keys ? s.split_keys : 512;
  return static_cast<uint32_t>(std::clamp<uint64_t>((keys + per - 1) / per, 1, 64));
}

uint64_t AttentionScratchBytes(const AttentionShape& s) {
  const uint32_t splits = AttentionSplits(s);
  if (splits <= 1) return 0;
  return uint64_t{s.n_tokens} * s.n_q_heads * splits * (uint64_t{s.head_dim} + 2) * 4;
}

Result<Kernels::AttentionGeometry> Kernels::CheckAttention(
    const std::string& op, const AttentionShape& s, const BufferRange& q, const BufferRange& k,
    const BufferRange& v, const BufferRange& pos, const BufferRange& o) const {
  if (s.head_dim == 0 || s.n_q_heads == 0 || s.n_kv_heads == 0 || s.n_tokens == 0 ||
      s.ring_size == 0) {
    return Status::InvalidArgument(op, "empty shape");
  }
  if (s.n_q_heads % s.n_kv_heads != 0) {
    return Status::InvalidArgument(op, std::to_string(s.n_q_heads) +
                                           " query heads are not a "
                                           "multiple of " +
                                           std::to_string(s.n_kv_heads) + " kv heads");
  }
  if (s.head_dim > 1024) return Status::InvalidArgument(op, "head_dim above 1024");
  if (s.n_q_heads > device_.info().max_workgroup_count[0] ||
      s.n_tokens > device_.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, "too many heads or tokens for one dispatch");
  }
  const uint32_t row = s.n_q_heads * s.head_dim;
  AttentionGeometry geo;
  geo.qs = s.q_tok_stride ? s.q_tok_stride : row;
  geo.os = s.o_tok_stride ? s.o_tok_stride : row;
  geo.slot = s.slot_stride ? s.slot_stride : s.head_dim;
  const uint64_t head = s.kv_head_stride ? s.kv_head_stride : uint64_t{s.ring_size} * geo.slot;
  if (geo.qs < row || geo.os < row || geo.slot < s.head_dim ||
      head < uint64_t{s.ring_size - 1} * geo.slot + s.head_dim) {
    return Status::InvalidArgument(op, "a stride is smaller than what it steps over");
  }
  if (head > 0xffffffffull) return Status::InvalidArgument(op, "kv head stride over 2^32");
  geo.head = static_cast<uint32_t>(head);
  // K/V: every (head, slot) the kernel can reach: f16, or q8_0 quants of n_kv_heads whole head
  // strides and then their scales.
  uint64_t kv_bytes =
      ((s.n_kv_heads - 1) * head + uint64_t{s.ring_size - 1} * geo.slot + s.head_dim) * 2;
  if (s.kv == KvFormat::kQ8_0) {
    if (s.head_dim % 32 != 0 || geo.slot % 32 != 0 || head % 32 != 0) {
      return Status::InvalidArgument(op,
                                     "a q8_0 cache needs head_dim and strides that are "
                                     "multiples of 32");
    }
    kv_bytes = KvCacheBytes(KvFormat::kQ8_0, uint64_t{s.n_kv_heads} * head);
  }
  if (kv_bytes > 0xffffffffull) return Status::InvalidArgument(op, "kv cache range over 4 GiB");
  GARNET_RETURN_IF_ERROR(Need(q, Span4(s.n_tokens, geo.qs, row), op, "q"));
  GARNET_RETURN_IF_ERROR(Need(o, Span4(s.n_tokens, geo.os, row), op, "o"));
  GARNET_RETURN_IF_ERROR(Need(k, kv_bytes, op, "k"));
  GARNET_RETURN_IF_ERROR(Need(v, kv_bytes, op, "v"));
  GARNET_RETURN_IF_ERROR(Need(pos, uint64_t{s.n_tokens} * 4, op, "pos"));
  return geo;
}

Status Kernels::AttentionDecode(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                                const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                                const BufferRange& o, const BufferRange* scratch,
                                const BufferRange* counter) {
  const std::string op = "attention";
  GARNET_ASSIGN_OR_RETURN(const AttentionGeometry geo, CheckAttention(op, s, q, k, v, pos, o));
  const uint32_t qs = geo.qs, os = geo.os, slot = geo.slot, head = geo.head;
  const uint32_t splits = AttentionSplits(s);
  if (splits > 1) {
    if (!scratch) {
      return Status::InvalidArgument(op, "needs " + std::to_string(AttentionScratchBytes(s)) +
                                             " bytes of scratch for " + std::to_string(splits) +
                                             " splits");
    }
    GARNET_RETURN_IF_ERROR(Need(*scratch, AttentionScratchBytes(s), op, "scratch"));
  }
  constexpr uint32_t kWg = 128;
  const bool q8 = s.kv == KvFormat::kQ8_0;
  std::string variant = q8 ? "attn_decode_q8" : "attn_decode_f16";
  if (!q8 && device_.caps().storage_16bit) variant += "_s16";  // needs only 16-bit storage
  if (device_.caps().subgroup_arithmetic) variant += "_sg";
  // 16-byte key loads: 8 f16 or 16 int8 (32 per q8_0 block) per load, rows at such multiples.
  const uint32_t kvec =
      q8 ? (k.offset % 16 == 0 ? 1 : 0)
         : (k.offset % 16 == 0 && slot % 8 == 0 && head % 8 == 0 && s.head_dim % 8 == 0 ? 1 : 0);
  PipelineDesc desc{variant, 6, 0b110000, 52, {kWg, s.head_dim, kvec}, {kWg, 1, 1}};
  // f16 rows at 16-byte boundaries and a head dim of 8 x a power of two (64..1024): the kernel
  // that reads each key row with a team of head_dim / 8 invocations (attn_decode_rows.comp). It
  // scores a round of 8 keys per team with one invocation per key, so it needs at least 8
  // invocations per team (a round no larger than the workgroup): head_dim >= 64.
  // With a counter the last split workgroup of each head merges the splits (FUSED_COMBINE):
  // no attn_combine dispatch, no barrier interval of its own.
  const uint32_t lpk = s.head_dim / 8;
  bool fused = false;
  if (!q8 && kvec == 1 && v.offset % 16 == 0 && s.head_dim % 8 == 0 && lpk >= 8 && lpk <= kWg &&
      (lpk & (lpk - 1)) == 0 && decode_rows_) {
    fused = splits > 1 && counter != nullptr;
    std::string name = fused ? "attn_decode_rows_fc" : "attn_decode_rows";
    if (device_.caps().subgroup_arithmetic) name += "_sg";
    desc = {name, fused ? 7u : 6u,   fused ? 0b1110000u : 0b110000u,
            52,   {kWg, s.head_dim}, {kWg, 1, 1}};
  }
  if (fused) {
    GARNET_RETURN_IF_ERROR(
        Need(*counter, uint64_t{s.n_tokens} * s.n_q_heads * 4, op, "split counter"));
  }
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n_q_heads, n_kv_heads, n_tokens, ring_size, kv_first, window, q_tok_stride,
        o_tok_stride, kv_head_stride, slot_stride;
    float scale;
    uint32_t n_splits, scale_base;
  } push{s.n_q_heads,
         s.n_kv_heads,
         s.n_tokens,
         s.ring_size,
         s.kv_first,
         s.window,
         qs,
         os,
         head,
         slot,
         s.scale,
         splits,
         q8 ? s.n_kv_heads * head / 4 : 0};
  const BufferRange part = splits > 1 ? *scratch : BufferRange(placeholder_);
  if (fused) {
    const BufferRange bindings[] = {q, k, v, pos, o, part, *counter};
    return rec.Dispatch(*p, bindings, push, s.n_q_heads, s.n_tokens, splits);
  }
  const BufferRange bindings[] = {q, k, v, pos, o, part};
  GARNET_RETURN_IF_ERROR(rec.Dispatch(*p, bindings, push, s.n_q_heads, s.n_tokens, splits));
  if (splits == 1) return Status::OK();
  PipelineDesc combine{device_.caps().subgroup_arithmetic ? "attn_combine_sg" : "attn_combine",
                       2,
                       0b10,
                       16,
                       {kWg, s.head_dim},
                       {kWg, 1, 1}};
  GARNET_ASSIGN_OR_RETURN(const Pipeline* pc, device_.pipelines().Get(combine));
  struct {
    uint32_t n_q_heads, n_tokens, n_splits, o_tok_stride;
  } cpush{s.n_q_heads, s.n_tokens, splits, os};
  const BufferRange cbind[] = {part, o};
  return rec.Dispatch(*pc, cbind, cpush, s.n_q_heads, s.n_tokens);
}

namespace {
// attn_prefill.comp's launch: 128 invocations; tiles of 16 query rows (8 where 16 do not fit)
// and chunks of 32, 16 or 8 keys, the first pair in that order whose shared memory fits.
constexpr uint32_t kPrefillWg = 128;
constexpr uint32_t kPrefillMaxHeadDim = 512;
// At most this much shared memory, even on devices that allow more: 48 KiB is what the Vulkan
// compute devices of interest offer (NVIDIA 48 KiB, AMD 64 KiB, lavapipe 32 KiB).
constexpr uint64_t kPrefillSharedBudget = 48 * 1024;

// Shared bytes of attn_prefill.comp for head dim d, bq rows per tile and bk keys per chunk (its
// declarations plus common.glsl's reduction array).
uint64_t PrefillSharedBytes(uint32_t d, uint32_t bq, uint32_t bk) {
  const uint64_t q = uint64_t{bq} * d * 4;
  const uint64_t kv = uint64_t{bk} * (d / 2 + 1) * 4;
  const uint64_t p = uint64_t{bq} * bk * 4;
  const uint64_t rows = uint64_t{bq} * 4 * 4 + bk * 4;
  return q + kv + p + rows + kPrefillWg * 4;
}
}  // namespace

AttentionTile Kernels::AttentionPrefillTile(uint32_t head_dim) const {
  if (head_dim == 0 || head_dim % 4 != 0 || head_dim > kPrefillMaxHeadDim) return {};
  if (device_.info().max_workgroup_invocations < kPrefillWg) return {};
  const uint64_t budget =
      std::min<uint64_t>(kPrefillSharedBudget, device_.info().max_shared_memory);
  for (uint32_t bq : {16u, 8u}) {
    for (uint32_t bk : {32u, 16u, 8u}) {
      if (PrefillSharedBytes(head_dim, bq, bk) <= budget) return {bq, bk};
    }
  }
  return {};
}

Status Kernels::AttentionPrefill(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                                 const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                                 const BufferRange& o) {
  const std::string op = "attention prefill";
  if (s.kv != KvFormat::kF16) {
    return Status::InvalidArgument(op, "reads an f16 cache only (AttentionDecode reads q8_0)");
  }
  GARNET_ASSIGN_OR_RETURN(const AttentionGeometry geo, CheckAttention(op, s, q, k, v, pos, o));
  const AttentionTile tile = AttentionPrefillTile(s.head_dim);
  if (tile.rows == 0) {
    return Status::InvalidArgument(
        op, "head_dim " + std::to_string(s.head_dim) + " is not a multiple of 4, above " +
                std::to_string(kPrefillMaxHeadDim) + " or its tile does not fit this device");
  }
  if (geo.slot % 2 != 0 || geo.head % 2 != 0) {
    return Status::InvalidArgument(op, "needs even K/V slot and head strides (32-bit loads)");
  }
  const PipelineDesc desc{
      "attn_prefill_f16", 5, 0b10000, 44, {kPrefillWg, s.head_dim, tile.rows, tile.keys},
      {kPrefillWg, 1, 1}};
  const BufferRange bindings[] = {q, k, v, pos, o};
  return DispatchAttentionTiles(rec, op, desc, tile.rows, s, geo, bindings);
}

Status Kernels::DispatchAttentionTiles(Recorder& rec, const std::string& op,
                                       const PipelineDesc& desc, uint32_t tile_rows,
                                       const AttentionShape& s, const AttentionGeometry& geo,
                                       std::span<const BufferRange> bindings) {
  if (s.kv_first == kKvFirstFromPositions) {
    return Status::InvalidArgument(op, "kv_first must be given (only AttentionDecode derives it)");
  }
  const uint64_t rows = uint64_t{s.n_tokens} * (s.n_q_heads / s.n_kv_heads);
  const uint64_t tiles = (rows + tile_rows - 1) / tile_rows;
  if (tiles > device_.info().max_workgroup_count[0] ||
      s.n_kv_heads > device_.info().max_workgroup_count[1]) {
    return Status::InvalidArgument(op, "too many query rows or kv heads for one dispatch");
  }
  GARNET_ASSIGN_OR_RETURN(const Pipeline* p, device_.pipelines().Get(desc));
  struct {
    uint32_t n_q_heads, n_kv_heads, n_tokens, ring_size, kv_first, window, q_tok_stride,
        o_tok_stride, kv_head_stride, slot_stride;
    float scale;
  } push{s.n_q_heads, s.n_kv_heads, s.n_tokens, s.ring_size, s.kv_first, s.window,
         geo.qs,      geo.os,       geo.head,   geo.slot,    s.scale};
  return rec.Dispatch(*p, bindings, push, static_cast<uint32_t>(tiles), s.n_kv_heads, 1);
}

bool Kernels::AttentionCoopAvailable(uint32_t head_dim) const {
  const DeviceCaps& caps = device_.caps();
  return caps.coopmat != CoopmatForm::kNone && caps.subgroup_clustered &&
         caps.subgroup_size == 32 && device_.info().max_workgroup_invocations >= 128 &&
         (head_dim == 64 || head_dim == 128 || head_dim == 256 || head_dim == 512);
}

Status Kernels::AttentionCoop(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                              const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                              const BufferRange& o) {
  const std::string op = "attention (cooperative matrix)";
  if (s.kv != KvFormat::kF16) {
    return Status::InvalidArgument(op, "reads an f16 cache only (AttentionDecode reads q8_0)");
  }
  if (!AttentionCoopAvailable(s.head_dim)) {
    return Status::InvalidArgument(op, "no kernel for head_dim " + std::to_string(s.head_dim) +
                                           " on this device (AttentionCoopAvailable)");
  }
  GARNET_ASSIGN_OR_RETURN(const AttentionGeometry geo, CheckAttention(op, s, q, k, v, pos, o));
  if (geo.slot % 8 != 0 || geo.head % 8 != 0 || k.offset % 16 != 0 || v.offset % 16 != 0) {
    return Status::InvalidArgument(
        op, "needs K/V slot and head strides of whole 16-byte words and 16-byte aligned K/V");
  }
  const PipelineDesc desc{"attn_coop_d" + std::to_string(s.head_dim) + CoopSuffix(),
                          5,
                          0b10000,
                          44,
                          {128},
                          {128, 1, 1}};
  const BufferRange bindings[] = {q, k, v, pos, o};
  return DispatchAttentionTiles(rec, op, desc, 16, s, geo, bindings);
}

}  // namespace garnet::vk
