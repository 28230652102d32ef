// garnet-vkbench: first numbers for the Vulkan backend on one device.
//   garnet-vkbench [--device SEL] [--small] [--sweep] [--matmul] [--ffn] [--attn] [--decode]
//                  [--chain] [--case NAME] [--spread MIB]
// Measures, each as wall time around submit+wait of one command buffer holding many commands:
//   - per-dispatch cost of a tiny kernel, with a barrier between every dispatch (a chain) and
//     without (independent ranges), and the CPU cost of recording one dispatch;
//   - device copy bandwidth (vkCmdCopyBuffer), the reference for bandwidth bounds;
//   - matvec bandwidth per weight type (weight bytes read per second);
//   - matmul rate (prefill) per weight type and token count, cooperative-matrix and tiled
//     kernels, and attention decode time.
// --small uses sizes that finish quickly on lavapipe; --sweep tries several matvec launch shapes;
// --matmul runs only the matmul part; --ffn only a decode feed-forward chain (unfused vs the
// fused MatvecGeglu); --attn only prefill attention (per-query kernel vs the tiled prefill
// kernel on Gemma 4 prompt shapes); --decode only the decode matvecs of one 26b-a4b layer, chained
// with barriers as a decode pass runs them (with --sweep: per launch shape); --case runs only the
// --decode shapes whose name contains NAME; --spread spreads their matrix copies over MIB MiB
// (default 128: a decode pass reads ~2.4 GB, so its matrices are farther apart); --chain only
// the cost of a dispatch boundary in a chain of dependent matvecs (also with its weights in L2,
// and with the matvec declaring more shared memory: matvec.comp PAD_PROBE) against one persistent
// dispatch that orders its phases with device counters (RunChain).
// Exit status 1 on any error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/quant/fp16.h"
#include "engine/vulkan/buffer.h"
#include "engine/vulkan/device.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/recorder.h"
#include "engine/vulkan/transfer.h"

namespace garnet::vk {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

#define CHECK_OK(expr)                                                                \
  do {                                                                                \
    const ::garnet::Status s_ = (expr);                                               \
    if (!s_.ok()) {                                                                   \
      std::fprintf(stderr, "garnet-vkbench: %s: %s\n", #expr, s_.ToString().c_str()); \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

#define ASSIGN_OR_FAIL(lhs, expr)                                           \
  auto GARNET_CONCAT_(r_, __LINE__) = (expr);                               \
  if (!GARNET_CONCAT_(r_, __LINE__).ok()) {                                 \
    std::fprintf(stderr, "garnet-vkbench: %s: %s\n", #expr,                 \
                 GARNET_CONCAT_(r_, __LINE__).status().ToString().c_str()); \
    return 1;                                                               \
  }                                                                         \
  lhs = std::move(GARNET_CONCAT_(r_, __LINE__)).value()

// One valid row of `type` (scales ~0.01, quants from a simple pattern), repeated `rows` times.
std::vector<uint8_t> WeightRows(GgmlType type, uint32_t in, uint32_t rows) {
  const uint64_t rb = *RowBytes(type, in);
  std::vector<uint8_t> row(rb);
  for (size_t i = 0; i < rb; ++i) row[i] = static_cast<uint8_t>((i * 37 + 11) & 0x77);
  const TypeTraits& t = Traits(type);
  const uint16_t d = F32ToF16(0.01f);
  if (type == GgmlType::kF16) {
    for (size_t i = 0; i < rb; i += 2) std::memcpy(&row[i], &d, 2);
  } else if (type == GgmlType::kF32) {
    const float f = 0.01f;
    for (size_t i = 0; i < rb; i += 4) std::memcpy(&row[i], &f, 4);
  } else {
    for (size_t b = 0; b < rb; b += t.block_bytes) {
      std::memcpy(&row[b], &d, 2);
      if (type == GgmlType::kQ4_K) std::memcpy(&row[b + 2], &d, 2);
    }
  }
  std::vector<uint8_t> all(rb * rows);
  for (uint32_t r = 0; r < rows; ++r) std::memcpy(&all[r * rb], row.data(), rb);
  return all;
}

// Matmul rate per weight type, token count and path (cooperative matrix where available, tiled).
int RunMatmuls(Device& dev, Kernels& kernels, Recorder& rec, Transfer& transfer, bool small) {
  const uint32_t m = small ? 256 : 4096, k = small ? 256 : 4096;
  const std::vector<uint32_t> ns =
      small ? std::vector<uint32_t>{64} : std::vector<uint32_t>{512, 2048};
  const uint32_t n_max = ns.back();
  ASSIGN_OR_FAIL(Buffer xb, Buffer::Create(dev, uint64_t{n_max} * k * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer yb, Buffer::Create(dev, uint64_t{n_max} * m * 4, MemoryKind::kScratch));
  CHECK_OK(rec.Fill(xb, 0, xb.size(), 0x3c000000u));
  for (GgmlType type : {GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    const std::vector<uint8_t> w = WeightRows(type, k, m);
    ASSIGN_OR_FAIL(Buffer wb, Buffer::Create(dev, w.size(), MemoryKind::kWeights));
    CHECK_OK(transfer.Upload(wb, 0, w.data(), w.size()));
    for (bool coop : {true, false}) {
      kernels.SetMatmulCooperative(coop);
      if (coop && !kernels.MatmulUsesCooperativeMatrix()) continue;
      for (uint32_t n : ns) {
        CHECK_OK(kernels.Matmul(rec, type, {m, n, k}, wb, xb, yb));  // warm-up
        CHECK_OK(rec.SubmitAndWait());
        const int mreps = small ? 1 : 10;
        const auto t0 = Clock::now();
        for (int i = 0; i < mreps; ++i) CHECK_OK(kernels.Matmul(rec, type, {m, n, k}, wb, xb, yb));
        CHECK_OK(rec.SubmitAndWait());
        const double s = Seconds(t0, Clock::now()) / mreps;
        std::printf("matmul %-5s M=%u N=%-4u K=%u: %8.1f us, %7.2f TFLOP/s (%s)\n",
                    std::string(TypeName(type)).c_str(), m, n, k, s * 1e6,
                    2.0 * m * n * k / s / 1e12, kernels.MatmulVariant(type).c_str());
      }
    }
    kernels.SetMatmulCooperative(true);
  }
  // MoE prefill expert matmul (26B-A4B's fused gate_up experts: 128 experts, top 8, 1408 x 2816),
  // routing pseudo-random and uniform; TFLOP/s counts the useful products only.
  {
    const uint32_t e = small ? 8 : 128, top = small ? 2 : 8, em = small ? 64 : 1408,
                   ek = small ? 256 : 2816;
    const GgmlType type = GgmlType::kQ4_K;
    const std::vector<uint8_t> w = WeightRows(type, ek, em * e);
    ASSIGN_OR_FAIL(Buffer wb, Buffer::Create(dev, w.size(), MemoryKind::kWeights));
    CHECK_OK(transfer.Upload(wb, 0, w.data(), w.size()));
    for (uint32_t n : ns) {
      const uint32_t slots = n * top;
      std::vector<int32_t> ids(slots);
      uint32_t state = 12345;
      for (uint32_t t = 0; t < n; ++t) {
        for (uint32_t s = 0; s < top; ++s) {  // distinct experts per token
          state = state * 1664525u + 1013904223u;
          ids[t * top + s] = static_cast<int32_t>((state >> 8) % (e / top) * top + s);
        }
      }
      ASSIGN_OR_FAIL(Buffer ib, Buffer::Create(dev, uint64_t{slots} * 4, MemoryKind::kScratch));
      CHECK_OK(transfer.Upload(ib, 0, ids.data(), ids.size() * 4));
      ASSIGN_OR_FAIL(Buffer sb,
                     Buffer::Create(dev, MatmulIdScratchBytes(e, slots), MemoryKind::kScratch));
      ASSIGN_OR_FAIL(Buffer xe, Buffer::Create(dev, uint64_t{n} * ek * 4, MemoryKind::kScratch));
      ASSIGN_OR_FAIL(Buffer ye,
                     Buffer::Create(dev, uint64_t{slots} * em * 4, MemoryKind::kScratch));
      CHECK_OK(rec.Fill(xe, 0, xe.size(), 0x3c000000u));
      const MatmulIdShape shape{em, ek, e, n, top};
      CHECK_OK(kernels.MatmulId(rec, type, shape, wb, xe, ib, sb, ye));  // warm-up
      CHECK_OK(rec.SubmitAndWait());
      const int mreps = small ? 1 : 10;
      const auto t0 = Clock::now();
      for (int i = 0; i < mreps; ++i)
        CHECK_OK(kernels.MatmulId(rec, type, shape, wb, xe, ib, sb, ye));
      CHECK_OK(rec.SubmitAndWait());
      const double sec = Seconds(t0, Clock::now()) / mreps;
      std::printf(
          "matmul_id q4_k %u experts top %u M=%u K=%u tokens %-4u: %8.1f us, %6.2f TFLOP/s\n", e,
          top, em, ek, n, sec * 1e6, 2.0 * slots * em * ek / sec / 1e12);
    }
  }
  return 0;
}

// Decode feed-forward chain, `layers` times: unfused (rmsnorm, gate, up, gelu_mul, down, add: 6
// dispatches) against fused (matvec_geglu with the norm folded in, down, add: 3 dispatches).
int RunFfnChain(Device& dev, Kernels& kernels, Recorder& rec, Transfer& transfer, bool small) {
  const uint32_t h = small ? 256 : 2560, ffn = small ? 1024 : 10240, layers = small ? 2 : 30;
  ASSIGN_OR_FAIL(Buffer x, Buffer::Create(dev, uint64_t{h} * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer t, Buffer::Create(dev, uint64_t{h} * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer hb, Buffer::Create(dev, uint64_t{h} * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer nw, Buffer::Create(dev, uint64_t{h} * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer g, Buffer::Create(dev, uint64_t{ffn} * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer u, Buffer::Create(dev, uint64_t{ffn} * 4, MemoryKind::kScratch));
  CHECK_OK(rec.Fill(nw, 0, nw.size(), 0x3f800000u));
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_K}) {
    const std::vector<uint8_t> gu = WeightRows(type, h, 2 * ffn);  // gate rows, then up rows
    const std::vector<uint8_t> down = WeightRows(type, ffn, h);
    ASSIGN_OR_FAIL(Buffer wgu, Buffer::Create(dev, gu.size(), MemoryKind::kWeights));
    ASSIGN_OR_FAIL(Buffer wd, Buffer::Create(dev, down.size(), MemoryKind::kWeights));
    CHECK_OK(transfer.Upload(wgu, 0, gu.data(), gu.size()));
    CHECK_OK(transfer.Upload(wd, 0, down.data(), down.size()));
    const uint64_t half = gu.size() / 2;
    const BufferRange gate(wgu, 0, half), up(wgu, half, half);
    const BufferRange nwr(nw);
    for (bool fused : {false, true}) {
      for (int rep = 0; rep < 2; ++rep) {  // the first repetition warms up the pipelines
        CHECK_OK(rec.Fill(x, 0, x.size(), 0x3c23d70au));  // 0.01
        CHECK_OK(rec.SubmitAndWait());
        const auto t0 = Clock::now();
        for (uint32_t l = 0; l < layers; ++l) {
          if (fused) {
            Kernels::NormSpec ns;
            ns.weight = &nwr;
            CHECK_OK(kernels.MatvecGeglu(rec, type, {h, ffn}, gate, up, x, &ns, g));
          } else {
            CHECK_OK(kernels.RmsNorm(rec, {h, 1}, x, &nwr, t));
            CHECK_OK(kernels.Matvec(rec, type, {h, ffn}, gate, t, g));
            CHECK_OK(kernels.Matvec(rec, type, {h, ffn}, up, t, u));
            CHECK_OK(kernels.GeluMul(rec, ffn, g, u, g));
          }
          CHECK_OK(kernels.Matvec(rec, type, {ffn, h}, wd, g, hb));
          CHECK_OK(kernels.Binary(rec, Kernels::BinaryOp::kAdd, h, h, 1.0f, x, hb, x));
        }
        const uint32_t dispatches = rec.stats().dispatches, barriers = rec.stats().barriers;
        CHECK_OK(rec.SubmitAndWait());
        const double s = Seconds(t0, Clock::now()) / layers;
        if (rep == 1) {
          std::printf(
              "ffn decode %-5s H=%u I=%u %-7s: %7.1f us/layer (%u dispatches, %u barriers per "
              "submit), %6.1f GB/s of weights\n",
              std::string(TypeName(type)).c_str(), h, ffn, fused ? "fused" : "unfused", s * 1e6,
              dispatches, barriers, (gu.size() + down.size()) / s / 1e9);
        }
      }
    }
  }
  return 0;
}

// Decode matvecs at the shapes of one 26b-a4b layer (hidden 2816; experts 8 of 128), each as a
// chain of dispatches with a barrier between them, as a decode pass runs them. Every dispatch
// reads another copy of the matrix (or another set of experts), so the weights come from device
// memory, not from the last-level cache. Prints the device time per dispatch (submit to fence
// over the chain's length; recording is timed apart) and the weight bandwidth, per launch shape
// (--sweep: several; else the default).
int RunDecodeShapes(Device& dev, Kernels& kernels, Recorder& rec, Transfer& transfer, bool small,
                    bool sweep, const std::string& only, uint64_t spread_mib) {
  enum class Kind {
    kPlain,
    kNorm,
    kNormNoW,
    kGeglu,
    kIdNorm,
    kIdGlu,
    kId,
    kIdDown,
    kQkv,
    kQkvNorm,
    kRoute
  };
  struct Case {
    const char* name;
    Kind kind;
    GgmlType type;
    uint32_t in, out;
  };
  const uint32_t H = small ? 256 : 2816;
  const std::vector<Case> cases = {
      {"q proj (norm)", Kind::kNorm, GgmlType::kQ4_K, H, small ? 512u : 4096u},
      {"k proj (norm)", Kind::kNorm, GgmlType::kQ4_K, H, small ? 256u : 2048u},
      {"v proj (norm)", Kind::kNorm, GgmlType::kQ6_K, H, small ? 256u : 2048u},
      {"o proj", Kind::kPlain, GgmlType::kQ4_K, small ? 512u : 4096u, H},
      {"dense gate.up (norm)", Kind::kGeglu, GgmlType::kQ4_K, H, small ? 256u : 2112u},
      {"dense down", Kind::kPlain, GgmlType::kQ8_0, small ? 256u : 2112u, H},
      {"router (norm)", Kind::kNorm, GgmlType::kBF16, H, small ? 16u : 128u},
      // The decode router as the backend runs it: the top-8 routing in its last workgroup.
      {"router, routing", Kind::kRoute, GgmlType::kBF16, H, small ? 16u : 128u},
      {"experts gate|up (norm)", Kind::kIdNorm, GgmlType::kQ4_K, H, small ? 64u : 704u},
      {"experts down (geglu)", Kind::kIdGlu, GgmlType::kQ8_0, small ? 64u : 704u, H},
      {"experts down (geglu)", Kind::kIdGlu, GgmlType::kQ5_0, small ? 64u : 704u, H},
      // The same down projections on an input whose GeGLU was done before (plain MUL_ID).
      {"experts down, plain x", Kind::kIdDown, GgmlType::kQ8_0, small ? 64u : 704u, H},
      {"experts down, plain x", Kind::kIdDown, GgmlType::kQ5_0, small ? 64u : 704u, H},
      // For comparison: the q shape without the norm, and taller / longer matrices.
      {"q shape, no norm", Kind::kPlain, GgmlType::kQ4_K, H, small ? 512u : 4096u},
      {"q shape, norm w/o weight", Kind::kNormNoW, GgmlType::kQ4_K, H, small ? 512u : 4096u},
      // The experts' gate|up on an input normalised before (no norm folded in), and the q, k
      // and v projections (Q4_K, 4096 + 2048 + 2048 rows) in one barrier interval, with and
      // without the norm folded in, as a decode layer records them.
      {"experts gate|up, no norm", Kind::kId, GgmlType::kQ4_K, H, small ? 64u : 704u},
      {"q+k+v, no norm", Kind::kQkv, GgmlType::kQ4_K, H, small ? 1024u : 8192u},
      {"q+k+v (norm)", Kind::kQkvNorm, GgmlType::kQ4_K, H, small ? 1024u : 8192u},
      {"8x taller", Kind::kPlain, GgmlType::kQ4_K, H, small ? 4096u : 32768u},
      {"4x longer rows", Kind::kPlain, GgmlType::kQ4_K, 4 * H, small ? 512u : 4096u},
      // The output head (tied token table, Q6_K in the Q4_K_M mix): 262144 rows.
      {"head", Kind::kPlain, GgmlType::kQ6_K, H, small ? 2048u : 262144u},
      // e4b's head (Q8_0, hidden 2560) and the 31b's (Q6_K, hidden 5376).
      {"head e4b", Kind::kPlain, GgmlType::kQ8_0, small ? 256u : 2560u, small ? 2048u : 262144u},
      {"head 31b", Kind::kPlain, GgmlType::kQ6_K, small ? 512u : 5376u, small ? 2048u : 262144u},
  };
  const uint32_t n_experts = small ? 8 : 128, top = small ? 2 : 8, id_sets = 16;
  const int reps = small ? 4 : 256;
  struct Launch {
    uint32_t wg, rows;  // wg 0: the default (Kernels picks the rows)
  };
  std::vector<Launch> launches = {{0, 0}};
  if (sweep) {
    launches = {{0, 0},   {32, 2},  {32, 4},  {64, 2},  {64, 4},  {64, 8},  {96, 2},
                {96, 4},  {96, 8},  {128, 1}, {128, 2}, {128, 4}, {128, 8}, {192, 1},
                {192, 2}, {192, 4}, {256, 1}, {256, 2}, {256, 4}, {288, 1}, {288, 2}};
  }
  const uint64_t align = std::max<uint64_t>(dev.info().min_storage_buffer_offset_alignment, 256);
  const uint64_t max_x = uint64_t{top} * 2 * 4096;
  ASSIGN_OR_FAIL(Buffer x, Buffer::Create(dev, max_x * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer nw, Buffer::Create(dev, 4096 * 4, MemoryKind::kScratch));
  const uint64_t max_y = std::max<uint64_t>(uint64_t{top} * 4096 * 2, small ? 2048 : 262144);
  ASSIGN_OR_FAIL(Buffer y, Buffer::Create(dev, max_y * 4, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer ids, Buffer::Create(dev, id_sets * align, MemoryKind::kScratch));
  // The router's counter (zero between dispatches), ids and weights.
  ASSIGN_OR_FAIL(Buffer route, Buffer::Create(dev, 3 * align, MemoryKind::kScratch));
  const BufferRange r_counter(route, 0, 4), r_ids(route, align, 64 * 4),
      r_wts(route, 2 * align, 64 * 4);
  CHECK_OK(rec.Fill(route, 0, route.size(), 0));
  CHECK_OK(rec.Fill(x, 0, x.size(), 0x3c23d70au));  // 0.01
  CHECK_OK(rec.Fill(nw, 0, nw.size(), 0x3f800000u));
  {
    std::vector<uint8_t> idv(id_sets * align, 0);
    for (uint32_t s = 0; s < id_sets; ++s) {
      for (uint32_t i = 0; i < top; ++i) {
        const int32_t e = static_cast<int32_t>((s * top + i * 7) % n_experts);
        std::memcpy(&idv[s * align + i * 4], &e, 4);
      }
    }
    CHECK_OK(transfer.Upload(ids, 0, idv.data(), idv.size()));
  }
  CHECK_OK(rec.SubmitAndWait());
  const BufferRange nwr(nw);
  for (const Case& c : cases) {
    if (!Kernels::SupportsWeightType(c.type)) continue;
    if (!only.empty() && std::string(c.name).find(only) == std::string::npos) continue;
    const bool by_id = c.kind == Kind::kIdNorm || c.kind == Kind::kIdGlu || c.kind == Kind::kId ||
                       c.kind == Kind::kIdDown;
    const uint32_t out = c.kind == Kind::kIdNorm || c.kind == Kind::kId ? 2 * c.out : c.out;
    const uint64_t matrix = *RowBytes(c.type, c.in) * out;
    // Dense: copies of the matrix (two for gate and up) to fill >= 128 MiB (--spread: that many
    // MiB, up to 1024 copies); experts: one stack.
    const uint64_t per = (c.kind == Kind::kGeglu ? 2 : 1) * matrix;
    const uint64_t slot = (per + align - 1) / align * align;
    const uint64_t copies =
        by_id        ? 1
        : spread_mib ? std::clamp<uint64_t>((spread_mib << 20) / slot, 2, 1024)
                     : std::clamp<uint64_t>((small ? (4ull << 20) : (128ull << 20)) / slot, 2, 64);
    const uint64_t total = by_id ? matrix * n_experts : slot * copies;
    const std::vector<uint8_t> one = WeightRows(c.type, c.in, out);
    ASSIGN_OR_FAIL(Buffer w, Buffer::Create(dev, total, MemoryKind::kWeights));
    if (by_id) {
      for (uint64_t e = 0; e < n_experts; ++e) {
        CHECK_OK(transfer.Upload(w, e * matrix, one.data(), one.size()));
      }
    } else {
      for (uint64_t copy = 0; copy < copies; ++copy) {
        for (uint64_t at = 0; at < per; at += matrix) {  // the matrix, or gate then up
          CHECK_OK(transfer.Upload(w, copy * slot + at, one.data(), one.size()));
        }
      }
    }
    const uint64_t bytes_per = by_id ? matrix * top : per;
    for (const Launch& l : launches) {
      CHECK_OK(kernels.SetMatvecLaunch(64, 4));
      kernels.SetMatvecRowsAuto();
      if (l.wg != 0 && !kernels.SetMatvecLaunch(l.wg, l.rows).ok()) continue;
      double best = 1e30, best_rec = 0;
      for (int rep = 0; rep < 3; ++rep) {  // the first warms up the pipelines and the clocks
        const auto t0 = Clock::now();
        for (int i = 0; i < reps; ++i) {
          const uint64_t off = (static_cast<uint64_t>(i) % copies) * slot;
          const BufferRange idr(ids, (static_cast<uint64_t>(i) % id_sets) * align, top * 4);
          Kernels::NormSpec ns;
          ns.weight = &nwr;
          MatvecIdShape ids_shape;  // the experts' gate|up (kIdNorm, kId)
          ids_shape.in = c.in;
          ids_shape.out = out;
          ids_shape.n_experts = n_experts;
          ids_shape.n_slots = top;
          switch (c.kind) {
            case Kind::kPlain:
              CHECK_OK(
                  kernels.Matvec(rec, c.type, {c.in, c.out}, BufferRange(w, off, matrix), x, y));
              break;
            case Kind::kNorm:
              CHECK_OK(kernels.MatvecNorm(rec, c.type, {c.in, c.out}, BufferRange(w, off, matrix),
                                          x, &nwr, 1e-6f, y));
              break;
            case Kind::kRoute:
              CHECK_OK(kernels.MatvecNormRoute(rec, c.type, {c.in, c.out}, top,
                                               BufferRange(w, off, matrix), x, &nwr, 1e-6f, nullptr,
                                               y, r_ids, r_wts, r_counter));
              break;
            case Kind::kNormNoW:
              CHECK_OK(kernels.MatvecNorm(rec, c.type, {c.in, c.out}, BufferRange(w, off, matrix),
                                          x, nullptr, 1e-6f, y));
              break;
            case Kind::kGeglu:
              CHECK_OK(kernels.MatvecGeglu(rec, c.type, {c.in, c.out}, BufferRange(w, off, matrix),
                                           BufferRange(w, off + matrix, matrix), x, &ns, y));
              break;
            case Kind::kIdNorm:
              CHECK_OK(kernels.MatvecIdNorm(rec, c.type, ids_shape, w, x, idr, &nwr, 1e-6f, y));
              break;
            case Kind::kId:
              CHECK_OK(kernels.MatvecId(rec, c.type, ids_shape, w, x, idr, y));
              break;
            case Kind::kQkv:
            case Kind::kQkvNorm: {
              // Rows [0, out/2) as q, then two quarters as k and v, into disjoint parts of y.
              const uint64_t rb = matrix / out;
              const uint32_t parts[3][2] = {
                  {0, c.out / 2}, {c.out / 2, c.out / 4}, {3 * c.out / 4, c.out / 4}};
              for (const auto& pr : parts) {
                const BufferRange wr(w, off + pr[0] * rb, uint64_t{pr[1]} * rb);
                const BufferRange yr(y, uint64_t{pr[0]} * 4, uint64_t{pr[1]} * 4);
                if (c.kind == Kind::kQkv) {
                  CHECK_OK(kernels.Matvec(rec, c.type, {c.in, pr[1]}, wr, x, yr));
                } else {
                  CHECK_OK(kernels.MatvecNorm(rec, c.type, {c.in, pr[1]}, wr, x, &nwr, 1e-6f, yr));
                }
              }
              break;
            }
            case Kind::kIdDown:
            case Kind::kIdGlu: {  // the down projection; kIdGlu: x is [gate | up], GeGLU on load
              MatvecIdShape s;
              s.in = c.in;
              s.out = c.out;
              s.n_experts = n_experts;
              s.n_slots = top;
              s.x_stride = c.kind == Kind::kIdGlu ? 2 * c.in : c.in;
              if (c.kind == Kind::kIdGlu) {
                CHECK_OK(kernels.MatvecIdGeglu(rec, c.type, s, w, x, idr, c.in, y));
              } else {
                CHECK_OK(kernels.MatvecId(rec, c.type, s, w, x, idr, y));
              }
              break;
            }
          }
        }
        const auto t1 = Clock::now();
        CHECK_OK(rec.SubmitAndWait());
        const double gpu = Seconds(t1, Clock::now()) / reps;
        if (rep > 0 && gpu < best) {
          best = gpu;
          best_rec = Seconds(t0, t1) / reps;
        }
      }
      const std::string shape =
          l.wg ? "wg " + std::to_string(l.wg) + " rows " + std::to_string(l.rows) : "default";
      std::printf("decode %-24s %-5s %5ux%-5u%s %-16s: %7.2f us, %7.1f GB/s (record %.2f us)\n",
                  c.name, std::string(TypeName(c.type)).c_str(), out, c.in, by_id ? " x8" : "   ",
                  shape.c_str(), best * 1e6, bytes_per / best / 1e9, best_rec * 1e6);
    }
  }
  CHECK_OK(kernels.SetMatvecLaunch(64, 4));
  kernels.SetMatvecRowsAuto();
  return 0;
}

// Prefill attention, old (AttentionDecode: one workgroup per query token and head, one split as
// the backend runs it for a long prompt) vs new (AttentionPrefill: tiles of query rows), on the
// Gemma 4 shapes of a 512- or 2048-token prompt at positions 0..T-1; random Q, K and V. Prints
// both times, the attention FLOP rate (4 * D per (query, key) pair in range) and the largest
// difference between the two outputs.
int RunPrefillAttention(Device& dev, Kernels& kernels, Recorder& rec, Transfer& transfer,
                        bool small) {
  struct Case {
    const char* what;
    uint32_t heads, kv_heads, d, tokens, window;
    uint32_t pos0 = 0;  // position of the first token (keys 0 .. pos0 + tokens - 1 are cached)
  };
  // The last two: a 64-token run late in an 8k context (few tiles over many keys: where the
  // per-query kernel's extra workgroups could win; it informs attn_prefill_min_tokens).
  std::vector<Case> cases = {{"26b-a4b sliding", 16, 8, 256, 512, 1024},
                             {"26b-a4b full", 16, 2, 512, 512, 0},
                             {"31b sliding", 32, 16, 256, 2048, 1024},
                             {"26b sliding @8k", 16, 8, 256, 64, 1024, 8128},
                             {"26b full @8k", 16, 2, 512, 64, 0, 8128}};
  if (small) {
    cases = {{"small sliding", 4, 2, 256, 40, 16},
             {"small full", 4, 1, 512, 24, 0},
             {"small full @100", 4, 1, 512, 8, 0, 100}};
  }
  uint64_t seed = 12345;
  auto next = [&seed]() {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>((seed >> 40) & 0xffff) / 65536.0f * 2.0f - 1.0f;
  };
  for (const Case& c : cases) {
    // Every position up to the batch's last plus a window's worth of room: no slot wraps.
    const uint32_t ring = c.pos0 + c.tokens + c.window;
    const uint64_t q_n = uint64_t{c.tokens} * c.heads * c.d;
    const uint64_t kv_n = uint64_t{c.kv_heads} * ring * c.d;
    std::vector<float> qh(q_n);
    for (float& v : qh) v = next();
    std::vector<uint16_t> kh(kv_n), vh(kv_n);
    for (uint64_t i = 0; i < kv_n; ++i) {
      kh[i] = F32ToF16(next() * 0.25f);
      vh[i] = F32ToF16(next());
    }
    std::vector<int32_t> ph(c.tokens);
    for (uint32_t t = 0; t < c.tokens; ++t) ph[t] = static_cast<int32_t>(c.pos0 + t);
    ASSIGN_OR_FAIL(Buffer q, Buffer::Create(dev, q_n * 4, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer o_old, Buffer::Create(dev, q_n * 4, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer o_new, Buffer::Create(dev, q_n * 4, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer kc, Buffer::Create(dev, kv_n * 2, MemoryKind::kKv));
    ASSIGN_OR_FAIL(Buffer vc, Buffer::Create(dev, kv_n * 2, MemoryKind::kKv));
    ASSIGN_OR_FAIL(Buffer pos, Buffer::Create(dev, uint64_t{c.tokens} * 4, MemoryKind::kScratch));
    CHECK_OK(transfer.Upload(q, 0, qh.data(), q_n * 4));
    CHECK_OK(transfer.Upload(kc, 0, kh.data(), kv_n * 2));
    CHECK_OK(transfer.Upload(vc, 0, vh.data(), kv_n * 2));
    CHECK_OK(transfer.Upload(pos, 0, ph.data(), uint64_t{c.tokens} * 4));
    AttentionShape s;
    s.head_dim = c.d;
    s.n_q_heads = c.heads;
    s.n_kv_heads = c.kv_heads;
    s.n_tokens = c.tokens;
    s.ring_size = ring;
    s.window = c.window;
    s.split_keys = ring;  // one pass, as the backend runs a long prompt
    if (AttentionScratchBytes(s) != 0) {
      std::fprintf(stderr, "garnet-vkbench: prefill attention case needs splits\n");
      return 1;
    }
    const AttentionTile tile = kernels.AttentionPrefillTile(c.d);
    if (tile.rows == 0) {
      std::printf("attention prefill %s: no prefill tile for D=%u on this device\n", c.what, c.d);
      continue;
    }
    double pairs = 0;  // (query, key) pairs in range, per query head
    for (uint32_t t = 0; t < c.tokens; ++t) {
      const uint32_t keys = c.pos0 + t + 1;
      pairs += c.window ? std::min(keys, c.window) : keys;
    }
    const double flop = 4.0 * c.d * pairs * c.heads;
    const int reps = small ? 1 : 10;
    double sec[2] = {0, 0};
    for (int path = 0; path < 2; ++path) {
      const Buffer& o = path == 0 ? o_old : o_new;
      auto record = [&]() {
        return path == 0 ? kernels.AttentionDecode(rec, s, q, kc, vc, pos, o)
                         : kernels.AttentionPrefill(rec, s, q, kc, vc, pos, o);
      };
      CHECK_OK(record());  // warm-up (pipeline creation)
      CHECK_OK(rec.SubmitAndWait());
      const auto t0 = Clock::now();
      for (int i = 0; i < reps; ++i) CHECK_OK(record());
      CHECK_OK(rec.SubmitAndWait());
      sec[path] = Seconds(t0, Clock::now()) / reps;
    }
    std::vector<float> a(q_n), b(q_n);
    CHECK_OK(transfer.Download(o_old, 0, a.data(), q_n * 4));
    CHECK_OK(transfer.Download(o_new, 0, b.data(), q_n * 4));
    double diff = 0, mag = 0;
    for (uint64_t i = 0; i < q_n; ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
      mag = std::max(mag, static_cast<double>(std::fabs(a[i])));
    }
    std::printf(
        "attention prefill %-16s heads %u/%u D=%u T=%u from %u window %u: per-query %8.1f us "
        "(%5.2f TFLOP/s), tiled %8.1f us (%5.2f TFLOP/s, tile %ux%u), %.2fx; max |diff| "
        "%.2e of max |o| %.2e\n",
        c.what, c.heads, c.kv_heads, c.d, c.tokens, c.pos0, c.window, sec[0] * 1e6,
        flop / sec[0] / 1e12, sec[1] * 1e6, flop / sec[1] / 1e12, tile.rows, tile.keys,
        sec[0] / sec[1], diff, mag);
  }
  return 0;
}

// --chain: what a dispatch boundary costs in a chain of dependent matvecs. `phases` Q4_K
// matvecs of n x n (one matrix each, so the weights come from device memory), each reading the
// previous one's output: (a) as a decode pass runs them, one dispatch each with a barrier
// between; (b) in ONE dispatch of shaders/chain_probe.comp, workgroups taking (phase, rows)
// tasks in ticket order and a task waiting on a device counter for the previous phase, with and
// without its weights loaded before that wait, for several workgroup counts. Prints us per phase
// and the largest difference of the last output against (a) (a wrong wait would read stale
// inputs and show up there).
int RunChain(Device& dev, Kernels& kernels, Recorder& rec, Transfer& transfer, bool small) {
  const uint32_t n = small ? 256 : 2816, phases = small ? 4 : 128, nb = n / 256;
  const uint64_t mat_bytes = uint64_t{n} * nb * 144;
  // Random nibbles, scale 2 and min 15 in every sub-block (w = d (2q - 15): mean 0, std 9.2 d),
  // d = dmin chosen so a row's sum has about the input's magnitude.
  std::vector<uint8_t> w(mat_bytes);
  const uint16_t d = F32ToF16(1.0f / (9.2f * std::sqrt(static_cast<float>(n))));
  uint32_t state = 987654321u;
  const uint8_t scales[12] = {2, 2, 2, 2, 15, 15, 15, 15, 0xf2, 0xf2, 0xf2, 0xf2};
  for (uint64_t b = 0; b < mat_bytes; b += 144) {
    std::memcpy(&w[b], &d, 2);
    std::memcpy(&w[b + 2], &d, 2);
    std::memcpy(&w[b + 4], scales, 12);
    for (int i = 16; i < 144; ++i) {
      state = state * 1664525u + 1013904223u;
      w[b + i] = static_cast<uint8_t>(state >> 24);
    }
  }
  ASSIGN_OR_FAIL(Buffer wb, Buffer::Create(dev, mat_bytes * phases, MemoryKind::kWeights));
  for (uint32_t p = 0; p < phases; ++p)
    CHECK_OK(transfer.Upload(wb, p * mat_bytes, w.data(), mat_bytes));
  const uint64_t act_bytes = uint64_t{phases + 1} * n * 4;
  ASSIGN_OR_FAIL(Buffer act, Buffer::Create(dev, act_bytes, MemoryKind::kScratch));
  ASSIGN_OR_FAIL(Buffer ctr, Buffer::Create(dev, uint64_t{phases + 1} * 256, MemoryKind::kScratch));
  std::vector<float> x0(n);
  for (uint32_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    x0[i] = static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
  }
  std::vector<float> ref(n), got(n);
  const int reps = small ? 1 : 5;
  auto reset = [&]() -> Status {
    GARNET_RETURN_IF_ERROR(rec.Fill(act, 0, act_bytes, 0));
    GARNET_RETURN_IF_ERROR(rec.Fill(ctr, 0, ctr.size(), 0));
    GARNET_RETURN_IF_ERROR(rec.SubmitAndWait());
    return transfer.Upload(act, 0, x0.data(), n * 4);
  };
  // The matvec of every phase, one dispatch each; phase p reads act[p] (dependent: each the
  // previous output, so the Recorder puts a barrier between) or act[0] (independent: none).
  // `hot`: every phase reads the first matrix (after the first phase, from L2).
  auto record_phases = [&](bool dependent, bool hot = false) -> Status {
    for (uint32_t p = 0; p < phases; ++p) {
      GARNET_RETURN_IF_ERROR(kernels.Matvec(
          rec, GgmlType::kQ4_K, {n, n}, BufferRange(wb, hot ? 0 : p * mat_bytes, mat_bytes),
          BufferRange(act, dependent ? uint64_t{p} * n * 4 : 0, n * 4),
          BufferRange(act, uint64_t{p + 1} * n * 4, n * 4)));
    }
    return rec.SubmitAndWait();
  };
  // Best of `reps` timed runs (after one untimed) of run(), which records and submits the
  // phases, in seconds.
  auto best_of = [&](const std::function<Status()>& run) -> Result<double> {
    double best = 1e30;
    for (int rep = 0; rep <= reps; ++rep) {
      GARNET_RETURN_IF_ERROR(reset());
      const auto t0 = Clock::now();
      GARNET_RETURN_IF_ERROR(run());
      if (rep > 0) best = std::min(best, Seconds(t0, Clock::now()));
    }
    return best;
  };
  auto time_phases = [&](bool dependent, bool hot = false) -> Result<double> {
    return best_of([&] { return record_phases(dependent, hot); });
  };
  // The GPU idles at a low clock and ramps up over ~0.2 s of work (round 10 of docs/PERF.md):
  // keep it busy for a second before measuring.
  const auto warm_end = Clock::now() + std::chrono::milliseconds(small ? 0 : 1000);
  while (Clock::now() < warm_end) CHECK_OK(record_phases(true));
  // (a) One dispatch per phase.
  ASSIGN_OR_FAIL(const double best, time_phases(true));
  CHECK_OK(transfer.Download(act, uint64_t{phases} * n * 4, ref.data(), n * 4));
  float ref_max = 0;
  for (float v : ref) ref_max = std::isfinite(v) ? std::max(ref_max, std::fabs(v)) : INFINITY;
  std::printf("chain %u x Q4_K %ux%u, dispatch per phase       : %7.2f us/phase (|y| max %.3g)\n",
              phases, n, n, best * 1e6 / phases, ref_max);
  // (a') The same dispatches without the dependency (each reads the first input): no barriers.
  ASSIGN_OR_FAIL(const double independent, time_phases(false));
  std::printf(
      "chain %u x Q4_K %ux%u, dispatch per phase, independent (no barriers): %7.2f "
      "us/phase\n",
      phases, n, n, independent * 1e6 / phases);
  // (a'') The dependent chain with its weights in L2: every phase the same matrix (docs/PERF.md
  // round 12: no faster, so the weights' memory latency is not what a phase waits on).
  ASSIGN_OR_FAIL(const double hot, time_phases(true, true));
  std::printf("chain %u x Q4_K %ux%u, dispatch per phase, one matrix (L2): %7.2f us/phase\n",
              phases, n, n, hot * 1e6 / phases);
  // (a''') The dependent chain through a copy of the matvec that declares PAD floats of shared
  // memory (matvec.comp PAD_PROBE; the same code otherwise): every phase the same pipeline, or
  // phases alternating between two. Whether a change of shared-memory size (an SM's L1 / shared
  // split) or of pipeline between dependent dispatches costs more than the dispatches alone.
  if (dev.caps().subgroup_arithmetic && dev.caps().storage_16bit) {
    const char* pad_variant =
        dev.caps().integer_dot_product ? "matvec_q4_k_s16_sg_idot_pad" : "matvec_q4_k_s16_sg_pad";
    const uint32_t big = small ? 2048 : 6144;  // floats (24 KB on the GPU)
    auto pad_pipe = [&](uint32_t pad) -> Result<const Pipeline*> {
      // 128 x 4 rows, VEC 3: the rows (144-byte blocks), the matrices and the activations all
      // start at multiples of 16 bytes.
      PipelineDesc desc{pad_variant, 3, 0b100, 16, {128, 4, 3, pad}, {128, 1, 1}};
      return dev.pipelines().Get(desc);
    };
    struct Mode {
      std::string name;
      uint32_t pad_even, pad_odd;
    };
    auto kb = [](uint32_t floats) { return std::to_string(floats / 256) + " KB"; };
    std::vector<Mode> modes = {{"pad 1 every phase", 1, 1},
                               {"pad 2 every phase", 2, 2},
                               {"pad 1 / pad 2 alternating", 1, 2},
                               {"pad 1 / " + kb(big) + " alternating", 1, big}};
    for (uint32_t pad : {256u, 512u, 1024u, 2048u, 3072u, 4096u, 6144u}) {
      if (pad <= big) modes.push_back({kb(pad) + " every phase", pad, pad});
    }
    for (const Mode& m : modes) {
      ASSIGN_OR_FAIL(const Pipeline* even, pad_pipe(m.pad_even));
      ASSIGN_OR_FAIL(const Pipeline* odd, pad_pipe(m.pad_odd));
      ASSIGN_OR_FAIL(
          const double tb, best_of([&]() -> Status {
            for (uint32_t p = 0; p < phases; ++p) {
              struct {
                uint32_t in, out, x_stride, y_stride;
              } push{n, n, n, n};
              const BufferRange bindings[] = {BufferRange(wb, p * mat_bytes, mat_bytes),
                                              BufferRange(act, uint64_t{p} * n * 4, n * 4),
                                              BufferRange(act, uint64_t{p + 1} * n * 4, n * 4)};
              GARNET_RETURN_IF_ERROR(rec.Dispatch(p % 2 ? *odd : *even, bindings, push, n / 4));
            }
            return rec.SubmitAndWait();
          }));
      std::printf("chain %u x Q4_K %ux%u, dispatch per phase, %-28s: %7.2f us/phase\n", phases, n,
                  n, m.name.c_str(), tb * 1e6 / phases);
    }
  }
  // (b) One dispatch.
  const uint32_t sms = small ? 4 : 132;
  struct Variant {
    uint32_t sync, prefetch, rows, stride, ticket, part;
  };
  const Variant variants[] = {{0, 1, 4, 64, 0, 0}, {0, 1, 4, 64, 0, 1}, {0, 1, 4, 64, 0, 2},
                              {0, 1, 4, 64, 0, 3}, {0, 1, 8, 64, 0, 0}, {0, 1, 8, 64, 0, 2},
                              {0, 1, 4, 64, 1, 0}, {1, 1, 4, 64, 1, 0}};
  for (const Variant& v : variants) {
    {
      const uint32_t prefetch = v.prefetch, rows = v.rows;
      const uint32_t tasks = n / rows * phases;
      for (uint32_t groups : {4 * sms, 8 * sms, tasks}) {
        PipelineDesc desc{// the items Kernels::Matvec uses on this device (so the outputs agree)
                          dev.caps().integer_dot_product ? "chain_probe_idot" : "chain_probe",
                          3,
                          0b110,
                          12,
                          {128, rows, prefetch, v.sync, v.ticket, v.part},
                          {128, 1, 1}};
        ASSIGN_OR_FAIL(const Pipeline* pipe, dev.pipelines().Get(desc));
        struct {
          uint32_t n, phases, stride;
        } push{n, phases, v.stride};
        const BufferRange bindings[] = {BufferRange(wb, 0, wb.size()),
                                        BufferRange(act, 0, act_bytes),
                                        BufferRange(ctr, 0, ctr.size())};
        double tb = 1e30;
        for (int rep = 0; rep <= reps; ++rep) {
          CHECK_OK(reset());
          const auto t0 = Clock::now();
          CHECK_OK(rec.Dispatch(*pipe, bindings, push, groups));
          CHECK_OK(rec.SubmitAndWait());
          if (rep > 0) tb = std::min(tb, Seconds(t0, Clock::now()));
        }
        CHECK_OK(transfer.Download(act, uint64_t{phases} * n * 4, got.data(), n * 4));
        float diff = 0;
        for (uint32_t i = 0; i < n; ++i) {
          const float e = std::fabs(got[i] - ref[i]);
          diff = std::isfinite(e) ? std::max(diff, e) : INFINITY;
        }
        std::printf(
            "chain %u x Q4_K %ux%u, one dispatch, %u rows, %5u groups, prefetch %u, "
            "counters %3u B apart%s%s%s: %7.2f us/phase (max diff %.3g)\n",
            phases, n, n, rows, groups, prefetch, v.stride * 4, v.sync ? "" : ", NO WAITS",
            v.ticket ? "" : ", static tasks",
            v.part == 0   ? ""
            : v.part == 1 ? ", no dequant"
            : v.part == 2 ? ", no reduction"
                          : ", no weight loads",
            tb * 1e6 / phases, diff);
        if (v.sync && !(diff <= 1e-3f * std::max(1.0f, ref_max))) {
          std::fprintf(stderr,
                       "garnet-vkbench: chain_probe output differs from the dispatch chain\n");
          return 1;
        }
      }
    }
  }
  return 0;
}

int Run(const std::string& selector, bool small, bool sweep, const std::string& only,
        uint64_t spread_mib, bool matmul_only, bool ffn_only, bool attn_only, bool decode_only,
        bool chain_only) {
  ASSIGN_OR_FAIL(auto instance, Instance::Create());
  DeviceOptions opts;
  opts.selector = selector;
  ASSIGN_OR_FAIL(auto device, Device::Create(instance, opts));
  Device& dev = *device;
  ASSIGN_OR_FAIL(auto kernels, Kernels::Create(dev));
  ASSIGN_OR_FAIL(auto rec, Recorder::Create(dev));
  ASSIGN_OR_FAIL(auto transfer, Transfer::Create(dev));
  std::printf(
      "device: %s (%s), subgroup %u, push descriptors %s, cooperative matrix %s, integer dot "
      "product %s\n",
      dev.info().name.c_str(), dev.info().driver_info.c_str(), dev.info().subgroup_size,
      dev.caps().push_descriptors ? "yes" : "no",
      std::string(CoopmatFormName(dev.caps().coopmat)).c_str(),
      dev.caps().integer_dot_product ? "yes" : "no");
  if (matmul_only) return RunMatmuls(dev, *kernels, *rec, *transfer, small);
  if (ffn_only) return RunFfnChain(dev, *kernels, *rec, *transfer, small);
  if (attn_only) return RunPrefillAttention(dev, *kernels, *rec, *transfer, small);
  if (chain_only) return RunChain(dev, *kernels, *rec, *transfer, small);
  if (decode_only)
    return RunDecodeShapes(dev, *kernels, *rec, *transfer, small, sweep, only, spread_mib);

  // 1. Per-dispatch cost.
  {
    const uint32_t n = 256, dispatches = small ? 200 : 2000;
    ASSIGN_OR_FAIL(Buffer buf,
                   Buffer::Create(dev, uint64_t{n} * 4 * dispatches, MemoryKind::kScratch));
    CHECK_OK(rec->Fill(buf, 0, buf.size(), 0));
    CHECK_OK(rec->SubmitAndWait());
    for (int chained = 1; chained >= 0; --chained) {
      for (int rep = 0; rep < 2; ++rep) {  // first repetition warms up the pipeline
        const auto t0 = Clock::now();
        for (uint32_t i = 0; i < dispatches; ++i) {
          const BufferRange r =
              chained ? BufferRange(buf, 0, n * 4) : BufferRange(buf, i * n * 4, n * 4);
          CHECK_OK(kernels->Softcap(*rec, n, 30.0f, r, r));
        }
        const uint32_t barriers = rec->stats().barriers;
        const auto t1 = Clock::now();
        CHECK_OK(rec->SubmitAndWait());
        const auto t2 = Clock::now();
        if (rep == 1) {
          std::printf(
              "dispatch %-11s: %7.2f us/dispatch on the device, %5.2f us to record (%u "
              "dispatches, %u barriers)\n",
              chained ? "chained" : "independent", Seconds(t1, t2) * 1e6 / dispatches,
              Seconds(t0, t1) * 1e6 / dispatches, dispatches, barriers);
        }
      }
    }
  }

  // 2. Copy bandwidth.
  {
    const uint64_t bytes = small ? (16ull << 20) : (1ull << 30);
    const int reps = small ? 2 : 10;
    ASSIGN_OR_FAIL(Buffer a, Buffer::Create(dev, bytes, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer b, Buffer::Create(dev, bytes, MemoryKind::kScratch));
    CHECK_OK(rec->Fill(a, 0, bytes, 1));
    CHECK_OK(rec->SubmitAndWait());
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) CHECK_OK(rec->Copy(i % 2 ? b : a, 0, i % 2 ? a : b, 0, bytes));
    CHECK_OK(rec->SubmitAndWait());
    const double s = Seconds(t0, Clock::now());
    std::printf("copy               : %7.1f GB/s (read+write %.0f MiB x %d)\n",
                2.0 * bytes * reps / s / 1e9, bytes / 1048576.0, reps);
    // The same through a compute shader (y = a * 1, the binary kernel with a 1-element b): the
    // figure decode bandwidth bounds use, since vkCmdCopyBuffer may run on a DMA engine slower
    // than the shader cores' path to memory.
    const uint32_t n = static_cast<uint32_t>(bytes / 4);
    ASSIGN_OR_FAIL(Buffer one, Buffer::Create(dev, 4, MemoryKind::kScratch));
    const float f1 = 1.0f;
    CHECK_OK(transfer->Upload(one, 0, &f1, 4));
    CHECK_OK(kernels->Binary(*rec, Kernels::BinaryOp::kMul, n, 1, 1.0f, a, one, b));  // warm-up
    CHECK_OK(rec->SubmitAndWait());
    const auto t1 = Clock::now();
    for (int i = 0; i < reps; ++i) {
      CHECK_OK(kernels->Binary(*rec, Kernels::BinaryOp::kMul, n, 1, 1.0f, i % 2 ? b : a, one,
                               i % 2 ? a : b));
    }
    CHECK_OK(rec->SubmitAndWait());
    const double s1 = Seconds(t1, Clock::now());
    std::printf("copy (shader)      : %7.1f GB/s (read+write %.0f MiB x %d)\n",
                2.0 * bytes * reps / s1 / 1e9, bytes / 1048576.0, reps);
  }

  // 3. Matvec bandwidth per weight type.
  // Large enough that the matrix does not stay in the last-level cache (H200: 50 MiB).
  const uint32_t in = small ? 1024 : 8192, out = small ? 1024 : 32768;
  const int reps = small ? 3 : 50;
  std::vector<float> xv(in, 0.5f);
  ASSIGN_OR_FAIL(Buffer x, Buffer::Create(dev, uint64_t{in} * 4 * 64, MemoryKind::kScratch));
  CHECK_OK(transfer->Upload(x, 0, xv.data(), xv.size() * 4));
  ASSIGN_OR_FAIL(Buffer y, Buffer::Create(dev, uint64_t{out} * 4 * 512, MemoryKind::kScratch));
  struct Launch {
    uint32_t wg, rows;
  };
  std::vector<Launch> launches = {{64, 4}};
  if (sweep)
    launches = {{32, 1}, {32, 2}, {32, 4}, {64, 1}, {64, 2}, {64, 4}, {128, 1}, {128, 2}, {256, 1}};
  for (GgmlType type : {GgmlType::kF16, GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_K,
                        GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const std::vector<uint8_t> w = WeightRows(type, in, out);
    ASSIGN_OR_FAIL(Buffer wb, Buffer::Create(dev, w.size(), MemoryKind::kWeights));
    CHECK_OK(transfer->Upload(wb, 0, w.data(), w.size()));
    for (const Launch& l : launches) {
      if (!kernels->SetMatvecLaunch(l.wg, l.rows).ok()) continue;  // not for this device
      CHECK_OK(kernels->Matvec(*rec, type, {in, out}, wb, x, y));  // warm-up
      CHECK_OK(rec->SubmitAndWait());
      const auto t0 = Clock::now();
      for (int i = 0; i < reps; ++i) {
        // Independent outputs so the dispatches need no barrier between them.
        CHECK_OK(kernels->Matvec(*rec, type, {in, out}, wb, x,
                                 BufferRange(y, uint64_t{out} * 4 * (i % 512), uint64_t{out} * 4)));
      }
      CHECK_OK(rec->SubmitAndWait());
      const double s = Seconds(t0, Clock::now()) / reps;
      std::printf("matvec %-5s %5ux%-5u wg %4u rows %u: %7.1f us, %7.1f GB/s of weights (%s)\n",
                  std::string(TypeName(type)).c_str(), out, in, l.wg, l.rows, s * 1e6,
                  w.size() / s / 1e9, kernels->MatvecVariant(type).c_str());
    }
  }
  CHECK_OK(kernels->SetMatvecLaunch(64, 4));

  // 4. Matmul (prefill): the cooperative-matrix kernel where the device has it, and the tiled
  // shared-memory kernel, per weight type and token count.
  if (RunMatmuls(dev, *kernels, *rec, *transfer, small) != 0) return 1;

  // 5. A decode feed-forward chain, unfused and fused.
  if (RunFfnChain(dev, *kernels, *rec, *transfer, small) != 0) return 1;

  // 6. Prefill attention, per-query vs tiled kernel.
  if (RunPrefillAttention(dev, *kernels, *rec, *transfer, small) != 0) return 1;

  // 7. Attention decode over an f16 cache.
  for (uint32_t d : {256u, 512u}) {
    const uint32_t heads = 16, kv_heads = d == 512 ? 2 : 8, ctx = small ? 512 : 8192;
    ASSIGN_OR_FAIL(Buffer q, Buffer::Create(dev, uint64_t{heads} * d * 4, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer o, Buffer::Create(dev, uint64_t{heads} * d * 4, MemoryKind::kScratch));
    ASSIGN_OR_FAIL(Buffer kc,
                   Buffer::Create(dev, uint64_t{kv_heads} * ctx * d * 2, MemoryKind::kKv));
    ASSIGN_OR_FAIL(Buffer vc,
                   Buffer::Create(dev, uint64_t{kv_heads} * ctx * d * 2, MemoryKind::kKv));
    ASSIGN_OR_FAIL(Buffer pos, Buffer::Create(dev, 4, MemoryKind::kScratch));
    CHECK_OK(rec->Fill(q, 0, q.size(), 0x3c000000u));
    CHECK_OK(rec->Fill(kc, 0, kc.size(), 0x2c002c00u));
    CHECK_OK(rec->Fill(vc, 0, vc.size(), 0x3c003c00u));
    CHECK_OK(rec->Fill(pos, 0, 4, ctx - 1));
    AttentionShape s;
    s.head_dim = d;
    s.n_q_heads = heads;
    s.n_kv_heads = kv_heads;
    s.ring_size = ctx;
    ASSIGN_OR_FAIL(
        Buffer scratch,
        Buffer::Create(dev, std::max<uint64_t>(AttentionScratchBytes(s), 4), MemoryKind::kScratch));
    const BufferRange sr(scratch);
    CHECK_OK(kernels->AttentionDecode(*rec, s, q, kc, vc, pos, o, &sr));
    CHECK_OK(rec->SubmitAndWait());
    const int areps = small ? 2 : 20;
    const auto t0 = Clock::now();
    for (int i = 0; i < areps; ++i) {
      CHECK_OK(kernels->AttentionDecode(*rec, s, q, kc, vc, pos, o, &sr));
    }
    CHECK_OK(rec->SubmitAndWait());
    const double sec = Seconds(t0, Clock::now()) / areps;
    std::printf("attention D=%u heads %u/%u ctx %u (%u splits): %8.1f us, %6.1f GB/s of KV\n", d,
                heads, kv_heads, ctx, AttentionSplits(s), sec * 1e6, 2.0 * kc.size() / sec / 1e9);
  }
  const MemoryAccounting acc = dev.accounting();
  std::printf("peak device memory held by garnet: %.1f MiB\n", acc.peak_total / 1048576.0);
  return 0;
}

}  // namespace
}  // namespace garnet::vk

int main(int argc, char** argv) {
  std::string selector;
  bool small = false;
  bool sweep = false;
  bool matmul_only = false;
  bool ffn_only = false;
  bool attn_only = false;
  bool decode_only = false;
  bool chain_only = false;
  std::string only;
  uint64_t spread_mib = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") {
      small = true;
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "--matmul") {
      matmul_only = true;
    } else if (a == "--ffn") {
      ffn_only = true;
    } else if (a == "--attn") {
      attn_only = true;
    } else if (a == "--decode") {
      decode_only = true;
    } else if (a == "--chain") {
      chain_only = true;
    } else if (a == "--device" && i + 1 < argc) {
      selector = argv[++i];
    } else if (a == "--case" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--spread" && i + 1 < argc) {
      spread_mib = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: garnet-vkbench [--device SEL] [--small] [--sweep] [--matmul] [--ffn]"
                   " [--attn] [--decode] [--chain] [--case NAME] [--spread MIB]\n");
      return 2;
    }
  }
  return garnet::vk::Run(selector, small, sweep, only, spread_mib, matmul_only, ffn_only, attn_only,
                         decode_only, chain_only);
}
