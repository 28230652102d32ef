// The first Vulkan kernels, one function per op: each checks its shapes and buffer ranges, picks
// the shader variant for this device (subgroup arithmetic or not, 16-bit storage or not), gets
// the pipeline (created once, cached) and records its dispatch(es) into a Recorder. Nothing runs
// until the Recorder is submitted; barriers between these calls are the Recorder's job.
//
// Conventions: activations are float (fp32); weights are GGUF rows (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) with `in` elements per row, rows
// back to back. Strides are in elements; 0 means "packed" (the row length). A range must hold every
// element the shape touches, else InvalidArgument (nothing recorded). The CPU reference for each op
// is the formula in its shader's header comment.
//
// Thread-safety: a Kernels object may be shared by threads recording into different Recorders.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/base/status.h"
#include "engine/quant/types.h"
#include "engine/vulkan/buffer.h"
#include "engine/vulkan/kv_format.h"
#include "engine/vulkan/recorder.h"

namespace garnet::vk {

class Device;

struct RmsNormShape {
  uint32_t n = 0;         // elements per row (hidden size, or head_dim for per-head norms)
  uint32_t rows = 0;      // tokens, or tokens * heads
  uint32_t x_stride = 0;  // elements between rows of x (0: n)
  uint32_t y_stride = 0;  // elements between rows of y (0: n)
  float eps = 1e-6f;
};

struct MatvecShape {
  uint32_t in = 0;        // elements per weight row (multiple of the type's block size)
  uint32_t out = 0;       // weight rows = outputs per vector
  uint32_t n_vecs = 1;    // independent input vectors (decode batch)
  uint32_t x_stride = 0;  // elements between input vectors (0: in)
  uint32_t y_stride = 0;  // elements between output vectors (0: out)
};

struct MatvecIdShape {
  uint32_t in = 0;             // elements per weight row
  uint32_t out = 0;            // rows per expert matrix
  uint32_t n_experts = 0;      // matrices in W, expert_stride apart
  uint32_t n_slots = 0;        // (expert id, vector) pairs, e.g. the top-k of one token
  uint32_t x_stride = 0;       // elements between the slots' vectors; 0: every slot reads one x
  uint32_t y_stride = 0;       // elements between the slots' outputs (0: out)
  uint64_t expert_stride = 0;  // bytes between expert matrices (0: out * row bytes)
};

struct MatmulShape {
  uint32_t m = 0;         // weight rows (outputs per token)
  uint32_t n = 0;         // tokens
  uint32_t k = 0;         // elements per weight row (multiple of the type's block size)
  uint32_t x_stride = 0;  // elements between tokens of X (0: k)
  uint32_t y_stride = 0;  // elements between tokens of Y (0: m)
};

struct MatmulIdShape {
  uint32_t m = 0;          // rows per expert matrix (outputs per slot)
  uint32_t k = 0;          // elements per weight row (multiple of the type's block size)
  uint32_t n_experts = 0;  // matrices in W, expert_stride apart (<= 1024)
  uint32_t n_tokens = 0;
  uint32_t k_slots = 0;        // routed experts per token; slot = token * k_slots + s
  uint32_t x_stride = 0;       // elements between tokens of X (0: k)
  uint32_t x_slot_stride = 0;  // elements between the slots of one token (0: they share X[t])
  uint32_t y_stride = 0;       // elements between slot rows of Y (0: m)
  uint64_t expert_stride = 0;  // bytes between expert matrices (0: m * row bytes)
};
// Scratch bytes MatmulId needs (the slots grouped by expert): plan it as MemoryKind::kScratch.
uint64_t MatmulIdScratchBytes(uint32_t n_experts, uint32_t n_slots);

struct RopeShape {
  uint32_t head_dim = 0;  // even
  uint32_t n_rot = 0;     // rotated dims, even, <= head_dim (0: head_dim)
  uint32_t n_heads = 0;
  uint32_t n_tokens = 0;
  uint32_t x_tok_stride = 0;  // elements between tokens (0: n_heads * head_dim)
  uint32_t y_tok_stride = 0;
};

// The per-pair angle rates RoPE multiplies positions by: theta_i = base^(-2i/n_rot) / ff[i] for
// i < n_rot/2, computed in double and stored as fp32 pairs (hi, lo) with hi + lo = theta_i to
// ~1e-14 relative. `freq_factors` is empty (all 1) or holds n_rot/2 values (GGUF rope_freqs;
// 1e30 switches a pair off). Build one table per (base, n_rot, factors), upload it once.
// InvalidArgument for n_rot odd or 0, base <= 0 or not finite, a factor count other than n_rot/2,
// or a factor that is not finite and > 0.
Result<std::vector<float>> RopeThetaTable(uint32_t n_rot, double base,
                                          std::span<const float> freq_factors);

inline constexpr uint32_t kKvFirstFromPositions = 0xFFFFFFFFu;

struct AttentionShape {
  uint32_t head_dim = 0;  // D: 256 (sliding) or 512 (full) for Gemma 4; any value works
  uint32_t n_q_heads = 0;
  uint32_t n_kv_heads = 0;  // divides n_q_heads
  uint32_t n_tokens = 1;    // query tokens (1 for decode)
  uint32_t ring_size = 0;   // slots in the cache; position j lives in slot j % ring_size
  // Oldest absolute position still in the cache. AttentionDecode also takes kKvFirstFromPositions:
  // max(0, newest position of the run + 1 - ring_size), computed on the device from the positions
  // buffer (for a pass recorded once and replayed; AttentionPrefill/AttentionCoop do not).
  uint32_t kv_first = 0;
  uint32_t window = 0;          // sliding window (keys p-window+1 .. p); 0: none (causal only)
  uint32_t q_tok_stride = 0;    // elements between query tokens (0: n_q_heads * head_dim)
  uint32_t o_tok_stride = 0;    // elements between output tokens (0: n_q_heads * head_dim)
  uint32_t kv_head_stride = 0;  // K/V elements between kv heads (0: ring_size * slot_stride)
  uint32_t slot_stride = 0;     // K/V elements between slots (0: head_dim)
  float scale = 1.0f;           // Gemma 4: 1.0
  // Flash-decoding split: the key range is cut into slices of about this many keys, one
  // workgroup each, merged by a second pass (0: 512). See AttentionSplits.
  uint32_t split_keys = 0;
  // K/V storage (kv_format.h). kQ8_0: head_dim, slot_stride and kv_head_stride multiples of 32;
  // K and V each hold n_kv_heads * kv_head_stride quants, then their scales.
  KvFormat kv = KvFormat::kF16;
};

// AttentionPrefill's work unit: `rows` query rows (token, query head) per workgroup, keys
// streamed through shared memory `keys` at a time.
struct AttentionTile {
  uint32_t rows = 0;
  uint32_t keys = 0;
};

// Workgroups per query head the attention uses along the keys: ceil(max keys / split_keys),
// between 1 and 64, where max keys = min(window, ring_size) (ring_size without a window).
uint32_t AttentionSplits(const AttentionShape& s);
// Scratch bytes AttentionDecode needs for `s`: 0 when it runs in one pass, else
// n_tokens * n_q_heads * splits * (head_dim + 2) floats. Plan it as MemoryKind::kScratch.
uint64_t AttentionScratchBytes(const AttentionShape& s);

class Kernels {
 public:
  // Allocates a 256-byte placeholder buffer (MemoryKind::kOther) bound where an optional input
  // is absent. The Device must outlive this object.
  static Result<std::unique_ptr<Kernels>> Create(Device& device);

  // Matvec launch shape: workgroup size (32..1024, at least the subgroup size; a power of two,
  // or with subgroup arithmetic any multiple of the subgroup size) and weight rows per workgroup
  // (1..8). The default is automatic (MatvecWg, MatvecRows): 4 rows
  // (each x chunk is loaded once for 4 rows), 128 invocations, 32 for the experts' GeGLU down
  // projections and matrices of 32768+ rows (garnet-vkbench --decode --sweep on an H200; Q8_0
  // ones take 64 x 8 in Matvec, 9 % faster on e4b's head), and a
  // matrix too small to fill the device at 4 rows per workgroup (fewer than 256 workgroups)
  // takes 2 or 1. A tuning knob for benchmarks and per-device defaults; not to be changed while
  // another thread records with this object. InvalidArgument for values outside those ranges
  // (nothing changes). After SetMatvecLaunch every matvec uses exactly the shape given.
  Status SetMatvecLaunch(uint32_t workgroup, uint32_t rows_per_group);
  // Back to the automatic shape.
  void SetMatvecRowsAuto() { matvec_rows_auto_ = true; }
  // Whether Matmul may use the cooperative-matrix kernel where the device has it (default true).
  // For benchmarks and tests comparing the two paths; same threading caveat as SetMatvecLaunch.
  void SetMatmulCooperative(bool allow) { matmul_coop_ = allow; }
  // Whether that also holds for f32 / f16 / bf16 weights (default true). Their f16 rounding is
  // an extra error the quantised types do not notice (their own rounding is far larger, and the
  // CPU backend multiplies them with 8-bit activations); the model backend turns it off unless
  // asked for tensor cores on float weights too.
  void SetMatmulCooperativeFloat(bool allow) { matmul_coop_float_ = allow; }
  // Whether Matmul on weights of `type` uses the cooperative-matrix kernel now.
  bool MatmulUsesCooperativeMatrix(GgmlType type) const;
  // Whether Matmul uses the cooperative-matrix kernel on this device now.
  bool MatmulUsesCooperativeMatrix() const;

  // y = x / rms(x) (* w when `w` is given), per row. y may be the same range as x.
  Status RmsNorm(Recorder& rec, const RmsNormShape& s, const BufferRange& x, const BufferRange* w,
                 const BufferRange& y);
  // A block's output norm plus the residual update in one dispatch, per row r < rows:
  //   h[r, k] = (h[r, k] + x[r, k] / sqrt(mean_k x[r, k]^2 + eps) * w[k]) * scale
  // (shaders/norm_add.comp). w holds n floats; x must not overlap h (InvalidArgument).
  struct NormAddShape {
    uint32_t n = 0;         // elements per row
    uint32_t rows = 0;      // tokens
    uint32_t h_stride = 0;  // elements between rows of h (0: n)
    uint32_t x_stride = 0;  // elements between rows of x (0: n)
    float eps = 1e-6f;
    float scale = 1.0f;  // applied to the updated h (Gemma 4's per-layer output scale)
  };
  // Normalised copies of the updated residual row for the next matvecs, written by the same
  // dispatch (shaders/next_norms.glsl), so those can be plain matvecs (decode):
  //   out[t * count + j] = h'[t] / sqrt(mean(h'[t]^2) + eps) * w[j],  j < count (1 or 2)
  // with h' the updated row (n floats each, token-major). out must not overlap the kernel's
  // other buffers; each w holds n floats.
  struct NextNorms {
    const BufferRange* w[2] = {nullptr, nullptr};
    uint32_t count = 0;
    const BufferRange* out = nullptr;
    // Also each copy quantised (q8x, Q8xBytes(n) bytes per copy and row, in the order of `out`),
    // the `xq` input of Matvec / MatvecGeglu / MatvecId. Only where NextNormsQ8Available.
    const BufferRange* q8 = nullptr;
  };
  // q8x: a vector of n floats (n a multiple of 32) as int8 in blocks of 32 with a scale each
  // (d = max |x| / 127 over the block, q = round(x / d)): n bytes of q, then per block four
  // floats (d, d * the sum of its first 16 q, d * the sum of its last 16, 0).
  static constexpr uint64_t Q8xBytes(uint32_t n) { return uint64_t{n} + n / 2; }
  // Whether RmsNormAdd / MoeTail can write NextNorms::q8 for `rows` rows of n elements.
  bool NextNormsQ8Available(uint32_t n, uint32_t rows) const;
  // Whether they use clustered subgroup operations (q8x_put.glsl Q8X_CLUSTERED) rather than
  // shared memory.
  bool NextNormsQ8Clustered() const;
  // base + the NN_Q8X residual kernels' variant suffix on this device ("", "_sg" or "_sgc").
  std::string NextNormsQ8Suffix(const std::string& base) const;
  // Whether Matvec / MatvecGeglu / MatvecId of `type` can read their input as q8x (`xq`), the
  // integer-dot Q4_K kernels: one rounding of x per dispatch's producer instead of one per item
  // in every workgroup. Where it is not, or the call's shape does not allow it (several input
  // vectors, a norm folded in, weight rows not on 16-byte words), `xq` is ignored and x read.
  bool MatvecXqAvailable(GgmlType type) const;
  Status RmsNormAdd(Recorder& rec, const NormAddShape& s, const BufferRange& h,
                    const BufferRange& x, const BufferRange& w, const NextNorms* next = nullptr);
  // The end of a Gemma 4 MoE block in one dispatch, per token t (rows of n floats, k slots):
  //   m = sum_i wt[t, i] * down[t * k + i]   (slots of weight 0 skipped), written to mo[t]
  //   y = rmsnorm(dense[t]) * w1 + rmsnorm(m) * w2, written to dense[t]
  //   h[t] = (h[t] + rmsnorm(y) * w) * scale
  // (shaders/moe_tail.comp). h, dense, down and mo must not overlap each other.
  struct MoeTailShape {
    uint32_t n = 0;  // hidden size
    uint32_t k = 0;  // routed slots per token
    uint32_t n_tokens = 0;
    float eps = 1e-6f;
    float scale = 1.0f;
  };
  Status MoeTail(Recorder& rec, const MoeTailShape& s, const BufferRange& h,
                 const BufferRange& dense, const BufferRange& down, const BufferRange& wt,
                 const BufferRange& mo, const BufferRange& w1, const BufferRange& w2,
                 const BufferRange& w, const NextNorms* next = nullptr);
  // y[v, r] = sum_k W[r, k] x[v, k]. Unimplemented for a weight type without a kernel.
  // `xq`: x as q8x as well (see MatvecXqAvailable).
  Status Matvec(Recorder& rec, GgmlType type, const MatvecShape& s, const BufferRange& w,
                const BufferRange& x, const BufferRange& y, const BufferRange* xq = nullptr);
  // RmsNorm folded into Matvec (decode: one dispatch and no barrier instead of two):
  //   y[v, r] = sum_k W[r, k] * x[v, k] / sqrt(mean_k x[v, k]^2 + eps) * (norm_w ? norm_w[k] : 1)
  // x is only read (the residual stream stays as it is); norm_w holds `in` floats. Same shapes,
  // errors and launch shape as Matvec; y must not overlap x.
  Status MatvecNorm(Recorder& rec, GgmlType type, const MatvecShape& s, const BufferRange& w,
                    const BufferRange& x, const BufferRange* norm_w, float eps,
                    const BufferRange& y);
  // The MoE router at decode: MatvecNorm into `logits` (s.out = the expert count, <= 1024), and
  // MoeRoute(s.out, k, s.n_vecs, logits, expert_scale, ids, weights) done inside the same
  // dispatch by the last workgroup to finish each vector (shaders/matvec.comp, ROUTE): no
  // dispatch and no barrier of its own. `counter` holds n_vecs uint32 that are zero before the
  // dispatch and left zero after it (one zero-filled range serves every call; calls sharing it
  // are ordered by the Recorder, since each writes it). Unimplemented where
  // MatvecNormRouteAvailable(type) is false (other weight types, no shader).
  //
  // With `resid` (decode: the router one barrier interval sooner, beside the attention block's
  // residual update instead of after it), x is the residual stream h before that update and the
  // router reads the update's result without it being written:
  //   x'[v] = h[v] + rmsnorm(resid->o[v]) * resid->w     (RmsNormAdd with scale 1, same eps)
  // formed by linearity inside the dispatch (shaders/matvec.comp, RESID). resid->o has the
  // stride of x; resid->w holds `in` floats. Unimplemented where
  // MatvecNormRouteAvailable(type, true) is false (F32, F16 and BF16 routers have the shader).
  struct ResidSpec {
    BufferRange o;  // the attention output projection's rows
    BufferRange w;  // post_attention_norm's weight
  };
  bool MatvecNormRouteAvailable(GgmlType type, bool resid = false) const;
  Status MatvecNormRoute(Recorder& rec, GgmlType type, const MatvecShape& s, uint32_t k,
                         const BufferRange& w, const BufferRange& x, const BufferRange* norm_w,
                         float eps, const BufferRange* expert_scale, const BufferRange& logits,
                         const BufferRange& ids, const BufferRange& weights,
                         const BufferRange& counter, const ResidSpec* resid = nullptr);
  // Gemma's feed-forward first half in one dispatch (decode):
  //   y[v, r] = gelu_tanh(Wg[r] . x'_v) * (Wu[r] . x'_v)
  // with x' = x, or RMS-normalised as in MatvecNorm when `norm` is given (norm->weight may be
  // null: no weight). Wg and Wu are `out` rows of `in` elements of `type` each and must lie in
  // the same Buffer at offsets that differ by a multiple of 4 bytes, within 4 GiB of each other
  // (upload a layer's gate and up matrices into one weights buffer); InvalidArgument otherwise.
  // Replaces Matvec(gate) + Matvec(up) + GeluMul: one dispatch, x read once, no intermediates.
  struct NormSpec {
    const BufferRange* weight = nullptr;
    float eps = 1e-6f;
  };
  Status MatvecGeglu(Recorder& rec, GgmlType type, const MatvecShape& s, const BufferRange& w_gate,
                     const BufferRange& w_up, const BufferRange& x, const NormSpec* norm,
                     const BufferRange& y, const BufferRange* xq = nullptr);
  // MoE decode: for slot s with expert e = ids[s] (int32), y[s, r] = sum_k W_e[r, k] x_s[k]; a
  // slot with an id outside [0, n_experts) gets zeros. Only the routed experts' rows are read.
  // Uses the same launch shape as Matvec.
  Status MatvecId(Recorder& rec, GgmlType type, const MatvecIdShape& s, const BufferRange& w,
                  const BufferRange& x, const BufferRange& ids, const BufferRange& y,
                  const BufferRange* xq = nullptr);
  // MatvecId with its input transformed on load (MoE decode, one dispatch instead of two):
  //   MatvecIdNorm:  x'_s = rmsnorm(x_s) * norm_w (norm_w: `in` floats, or null for none)
  //   MatvecIdGeglu: x'_s[k] = gelu_tanh(x_s[k]) * x_s[k + up_offset] (the [gate | up] row of a
  //                  fused expert gate_up output; x_s must hold up_offset + in floats)
  // Unimplemented where this device has no such variant for `type` (see
  // MatvecIdFusedAvailable): record the unfused ops instead.
  bool MatvecIdFusedAvailable(GgmlType type) const;
  Status MatvecIdNorm(Recorder& rec, GgmlType type, const MatvecIdShape& s, const BufferRange& w,
                      const BufferRange& x, const BufferRange& ids, const BufferRange* norm_w,
                      float eps, const BufferRange& y);
  Status MatvecIdGeglu(Recorder& rec, GgmlType type, const MatvecIdShape& s, const BufferRange& w,
                       const BufferRange& x, const BufferRange& ids, uint32_t up_offset,
                       const BufferRange& y);
  // Y[t, m] = sum_k W[m, k] X[t, k]. Where DeviceCaps::coopmat is not kNone (and not switched off
  // by SetMatmulCooperative(false)) through tensor cores (matmul_coop.comp, NV or KHR form): W
  // (dequantised) and X rounded to f16, fp32 accumulation, ~1e-3 relative error; X beyond the f16
  // range becomes infinite. Otherwise through the tiled shared-memory kernel in fp32.
  // Cooperative Matmul takes 128-row x 64-token tiles when its 128 x 128 grid has fewer than
  // this many workgroups (default 256; 0: never, for tests of the 128 x 128 path).
  void SetMatmulCoopSmallGrid(uint32_t workgroups) { coop_small_grid_ = workgroups; }
  Status Matmul(Recorder& rec, GgmlType type, const MatmulShape& s, const BufferRange& w,
                const BufferRange& x, const BufferRange& y);
  // MoE prefill: for token t and slot s with expert e = ids[t * k_slots + s] (int32),
  //   Y[(t * k_slots + s) * y_stride + r] = sum_i W_e[r, i] * X[t * x_stride + s * x_slot_stride +
  //   i]
  // and zeros for an id outside [0, n_experts). Records two dispatches: moe_group.comp groups
  // the slots by expert into `scratch` (MatmulIdScratchBytes), then the tiled matmul multiplies
  // each expert's matrix with only its own slots (64 per workgroup), so every routed expert's
  // weights are read once per 64 of its tokens. fp32 throughout (no cooperative-matrix variant
  // yet). InvalidArgument for bad shapes or short ranges (nothing recorded).
  Status MatmulId(Recorder& rec, GgmlType type, const MatmulIdShape& s, const BufferRange& w,
                  const BufferRange& x, const BufferRange& ids, const BufferRange& scratch,
                  const BufferRange& y);
  // NeoX RoPE over [n_tokens][n_heads][head_dim]; `pos` holds n_tokens int32 positions;
  // `theta` holds RopeThetaTable(n_rot, ...) (n_rot/2 pairs of floats). y may equal x.
  Status Rope(Recorder& rec, const RopeShape& s, const BufferRange& x, const BufferRange& pos,
              const BufferRange& theta, const BufferRange& y);
  // Per-head RMSNorm and then Rope in one dispatch (q_norm / k_norm + RoPE): every head's
  // head_dim values are normalised as RmsNorm (times norm_w when given: head_dim floats, shared
  // by all heads) and rotated as Rope. Same shapes, errors and aliasing as Rope.
  Status NormRope(Recorder& rec, const RopeShape& s, const BufferRange* norm_w, float eps,
                  const BufferRange& x, const BufferRange& pos, const BufferRange& theta,
                  const BufferRange& y);
  // y = gelu_tanh(g) * u over n elements. y may equal g or u.
  Status GeluMul(Recorder& rec, uint32_t n, const BufferRange& g, const BufferRange& u,
                 const BufferRange& y);
  // y = cap * tanh(x / cap) over n elements. y may equal x.
  Status Softcap(Recorder& rec, uint32_t n, float cap, const BufferRange& x, const BufferRange& y);
  // The greedy pick of each of `rows` rows of n floats (x row-major): the lowest index holding
  // the row's largest value, NaN and -inf never winning, -1 (0xffffffff) when no value
  // qualifies: sampling::GreedyPick's rule, so a pick on the device equals the host's over the
  // same logits. Two dispatches (per-chunk bests, then one workgroup per row) with a barrier
  // between; `partials` holds ArgmaxScratchBytes(rows) bytes; out receives `rows` int32.
  // InvalidArgument for an empty shape, too many rows for one dispatch or short ranges.
  Status ArgmaxRows(Recorder& rec, uint32_t n, uint32_t rows, const BufferRange& x,
                    const BufferRange& partials, const BufferRange& out);
  static uint64_t ArgmaxScratchBytes(uint32_t rows);
  // The best `keep` (1..kTopChunkBest) values of each chunk of kTopChunk floats of each row (x
  // row-major, rows x n), best first in the sampler's order (higher value first, lower index on
  // ties; NaN and -inf never; -0 as +0), as (float bits, index) uint pairs: out holds
  // TopChunksBytes(n, rows) bytes, rows x TopChunkCount(n) lists of kTopChunkBest pairs whose
  // first `keep` are written, padded with (-inf, 0xffffffff). Every row's best `keep` are among
  // its chunks' lists. One dispatch. InvalidArgument for an empty shape, `keep` out of range,
  // too many rows or chunks for one dispatch, short ranges.
  static constexpr uint32_t kTopChunk = 2048;
  static constexpr uint32_t kTopChunkBest = 128;
  static uint32_t TopChunkCount(uint32_t n) { return (n + kTopChunk - 1) / kTopChunk; }
  static uint64_t TopChunksBytes(uint32_t n, uint32_t rows) {
    return uint64_t{rows} * TopChunkCount(n) * kTopChunkBest * 8;
  }
  Status TopChunks(Recorder& rec, uint32_t n, uint32_t rows, uint32_t keep, const BufferRange& x,
                   const BufferRange& out);

  // Online-softmax attention of n_tokens queries (positions in `pos`, int32) over an f16 K/V
  // ring cache; see shaders/attn_decode.comp for the exact formula and layouts. When
  // AttentionSplits(s) > 1 it records two dispatches (split pass, combine) and needs `scratch`
  // of AttentionScratchBytes(s) bytes (InvalidArgument when missing or too small). An f16 cache
  // with 16-byte aligned rows and a head dim of 8 x a power of two (64..1024) takes
  // attn_decode_rows.comp (a team of head_dim / 8 invocations per key row) unless
  // SetAttentionDecodeRows(false) (tests of the general kernel, comparisons). With `counter`
  // (n_tokens * n_q_heads uint32 that are zero before the dispatch and are zero again after it)
  // that kernel merges the splits itself, in the last split workgroup of each head: one dispatch
  // instead of two, the same output bits.
  void SetAttentionDecodeRows(bool allow) { decode_rows_ = allow; }
  Status AttentionDecode(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                         const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                         const BufferRange& o, const BufferRange* scratch = nullptr,
                         const BufferRange* counter = nullptr);
  // The same attention for a prefill batch (many query tokens), flash-attention style: one
  // workgroup per tile of query rows (token, query head) of one kv head streams that head's keys
  // through shared memory once per tile instead of once per query (shaders/attn_prefill.comp).
  // One dispatch, no scratch. Same shapes, masks and errors as AttentionDecode (split_keys is
  // ignored), plus InvalidArgument where AttentionPrefillTile(head_dim) has no rows or a K/V
  // stride is odd (it reads f16 pairs as 32-bit words; packed strides are even). It does
  // not split the keys, so for a handful of tokens over a long cache (few workgroups)
  // AttentionDecode is faster: callers pick this one for larger batches.
  Status AttentionPrefill(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                          const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                          const BufferRange& o);
  // The tile AttentionPrefill uses for this head dim on this device: the largest that fits the
  // device's shared memory (at most 48 KiB used), e.g. 16 rows x 32 keys for D = 256 and
  // 16 x 8 for D = 512 on 48 KiB. {0, 0} where it cannot run: D not a multiple of 4 or above 512,
  // or no tile fits.
  AttentionTile AttentionPrefillTile(uint32_t head_dim) const;
  // The same attention on tensor cores (shaders/attn_coop.comp): tiles of 16 query rows of one kv
  // head, keys in chunks of 64, Q and the probabilities rounded to f16 (K/V are f16 already),
  // fp32 scores, sums and outputs (~1e-3 relative error). One dispatch, no scratch. Needs
  // AttentionCoopAvailable(head_dim): a cooperative-matrix form, clustered subgroup ops, 32-wide
  // subgroups and head_dim 64, 128, 256 or 512; and K/V strides and offsets of whole 16-byte
  // words (the cache layout's). InvalidArgument otherwise, nothing recorded.
  bool AttentionCoopAvailable(uint32_t head_dim) const;
  Status AttentionCoop(Recorder& rec, const AttentionShape& s, const BufferRange& q,
                       const BufferRange& k, const BufferRange& v, const BufferRange& pos,
                       const BufferRange& o);

  // Embedding gather: y[t, :] = W[ids[t], :] * scale for n_tokens int32 ids; W has n_rows rows
  // of `in` elements of `type`; y rows are y_stride elements apart (0: in). An id outside
  // [0, n_rows) yields zeros (ids may be produced on the GPU).
  Status GetRows(Recorder& rec, GgmlType type, uint32_t in, uint32_t n_rows, uint32_t n_tokens,
                 uint32_t y_stride, float scale, const BufferRange& w, const BufferRange& ids,
                 const BufferRange& y);
  enum class BinaryOp : uint32_t { kAdd = 0, kMul = 1 };
  // y[i] = (a[i] op b[i % b_len]) * scale for i < n. y may alias a or b.
  Status Binary(Recorder& rec, BinaryOp op, uint32_t n, uint32_t b_len, float scale,
                const BufferRange& a, const BufferRange& b, const BufferRange& y);

  // MoE routing per token: softmax over n_experts logits, the top k (largest first, ties to the
  // lower id), renormalised over those k and multiplied by expert_scale[id] when given. Writes k
  // int32 ids and k float weights per token (see shaders/moe_route.comp; NaN logits give id -1,
  // weight 0). n_experts <= 1024, 1 <= k <= min(n_experts, 64).
  Status MoeRoute(Recorder& rec, uint32_t n_experts, uint32_t k, uint32_t n_tokens,
                  const BufferRange& logits, const BufferRange* expert_scale,
                  const BufferRange& ids, const BufferRange& weights);

  // Whether Matvec / MatvecId / Matmul / GetRows have a kernel for `type`: every type listed at
  // the top of this file (the ones garnet_quant can dequantise), nothing else.
  static bool SupportsWeightType(GgmlType type);
  // The shader variant a call would use on this device, e.g. "matvec_q8_0_s16_sg".
  std::string MatvecVariant(GgmlType type, bool by_id = false) const;
  std::string MatmulVariant(GgmlType type) const;
  std::string MatvecNormVariant(GgmlType type) const;
  std::string MatvecGegluVariant(GgmlType type) const;
  std::string RmsNormVariant() const;

 private:
  // "_khr" where the cooperative-matrix kernels are the KHR form (rewritten at build time from the
  // NV form; spirv_coop_khr.h), "" otherwise.
  std::string CoopSuffix() const;
  // MatvecNorm and MatvecNormRoute's shape and range checks (y: the output rows); the launch
  // (rows, workgroup size, VEC specialisation) and strides they imply.
  struct NormMatvecLaunch {
    uint32_t xs = 0, ys = 0, rows = 0, wg = 0, vec = 0;
  };
  Result<NormMatvecLaunch> CheckNormMatvec(const std::string& op, GgmlType type,
                                           const MatvecShape& s, const BufferRange& w,
                                           const BufferRange& x, const BufferRange* norm_w,
                                           float eps, const BufferRange& y) const;
  // Rope and NormRope's shape and range checks; the rotated dims and token strides they imply.
  struct RopeGeometry {
    uint32_t n_rot = 0, xs = 0, ys = 0;
  };
  Result<RopeGeometry> CheckRope(const char* op, const RopeShape& s, const BufferRange& x,
                                 const BufferRange& pos, const BufferRange& theta,
                                 const BufferRange& y) const;
  // AttentionDecode and AttentionPrefill's shape and range checks; the strides they imply.
  struct AttentionGeometry {
    uint32_t qs = 0, os = 0, slot = 0, head = 0;
  };
  Result<AttentionGeometry> CheckAttention(const std::string& op, const AttentionShape& s,
                                           const BufferRange& q, const BufferRange& k,
                                           const BufferRange& v, const BufferRange& pos,
                                           const BufferRange& o) const;
  // AttentionPrefill and AttentionCoop's dispatch: one workgroup per tile of tile_rows query rows
  // of a kv head (grid x) and per kv head (grid y), with their common push constants.
  Status DispatchAttentionTiles(Recorder& rec, const std::string& op, const PipelineDesc& desc,
                                uint32_t tile_rows, const AttentionShape& s,
                                const AttentionGeometry& geo,
                                std::span<const BufferRange> bindings);
  Kernels(Device& device) : device_(device) {}
  // MatvecId, MatvecIdNorm and MatvecIdGeglu: kind 0, 1, 2.
  Status MatvecIdImpl(Recorder& rec, GgmlType type, const MatvecIdShape& s, const BufferRange& w,
                      const BufferRange& x, const BufferRange& ids, int kind,
                      const BufferRange* norm_w, float eps, uint32_t up_offset,
                      const BufferRange& y, const BufferRange* xq = nullptr);
  // The "_xq" twin of `variant` where `xq` is given and usable for this call (vec: the launch's
  // VEC bits; single: one input vector), else "". Checks xq's size for `in` elements.
  // The pipeline of a residual kernel (`name`: norm_add, moe_tail) whose plain form has
  // `bindings` bindings (`written` mask) and `push` bytes: with `next` its _nn form (three
  // bindings more, the first written, and a push word), with next->q8 its _nn_q8 form (one more
  // written binding). InvalidArgument where the q8x copies are unavailable for n x rows.
  Result<const Pipeline*> ResidualPipeline(const std::string& name, uint32_t n, uint32_t rows,
                                           const NextNorms* next, uint32_t bindings,
                                           uint32_t written, uint32_t push, const std::string& op);
  Result<std::string> XqVariant(const std::string& variant, GgmlType type, uint32_t in,
                                uint32_t vec, bool single, const BufferRange* xq,
                                const std::string& op) const;
  Device& device_;
  Buffer placeholder_;
  uint32_t matvec_wg_ = 64;
  uint32_t matvec_rows_ = 4;
  bool matvec_rows_auto_ = true;  // fewer rows per workgroup for small matrices
  bool matmul_coop_ = true;
  bool decode_rows_ = true;
  bool matmul_coop_float_ = true;
  uint32_t coop_small_grid_ = 256;
  // Rows per workgroup for a matvec of `out` rows times `n_vecs` vectors (or slots).
  uint32_t MatvecRows(uint32_t out, uint32_t n_vecs) const;
  // Workgroup size of a matvec launch: SetMatvecLaunch's, or per shape in the automatic mode.
  uint32_t MatvecWg(uint32_t out, uint32_t n_vecs, bool glu_by_id) const;
  // In the automatic mode, a plain matvec whose rows take the default workgroup more than one
  // round of items (Q6_K rows of 2049-4096 weights) gets a workgroup of one round (*wg, a multiple
  // of 32) and at most 2 rows; false (wg unchanged) elsewhere.
  bool OneRoundLaunch(GgmlType type, uint32_t in, uint32_t out, uint32_t n_vecs,
                      uint32_t* wg) const;
};

}  // namespace garnet::vk
