#include "engine/model/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/ops.h"
#include "engine/quant/fp16.h"

namespace garnet::model {
namespace {

class CpuSequence final : public BackendSequence {
 public:
  explicit CpuSequence(KvCache kv) : kv(std::move(kv)) {}
  uint64_t kv_bytes() const override { return kv.bytes(); }
  KvCache kv;
};

using cpu::MatMul;

// Rows of a [T, n] buffer normalised in place (or into out) with weight w (may be null).
void NormRows(cpu::ThreadPool& pool, const float* in, float* out, int64_t T, int64_t n,
              const float* w, float eps) {
  pool.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) cpu::RmsNorm(in + t * n, w, out + t * n, n, eps);
  });
}

}  // namespace

Result<std::unique_ptr<CpuBackend>> CpuBackend::Create(const gguf::Gemma4Params* params,
                                                       const ModelWeights* weights,
                                                       const CpuBackendOptions& options) {
  if (options.n_ctx <= 0 || options.n_ubatch <= 0) {
    return Status::InvalidArgument("cpu backend", "context and ubatch must be positive");
  }
  for (size_t il = 0; il < params->layers.size(); ++il) {
    const auto& ly = params->layers[il];
    if (ly.n_head_kv == 0 || ly.n_head % ly.n_head_kv != 0) {
      return Status::InvalidArgument("layer " + std::to_string(il),
                                     "query heads " + std::to_string(ly.n_head) +
                                         " not a multiple of KV heads " +
                                         std::to_string(ly.n_head_kv));
    }
    if (ly.head_dim % 2 != 0 || ly.head_dim > 1024) {
      return Status::InvalidArgument("layer " + std::to_string(il), "unsupported head_dim");
    }
  }
  if (params->has_ple() && weights->ple_tok.rows == 0) {
    return Status::InvalidArgument("cpu backend", "PLE model without PLE tensors");
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(params, weights, options));
}

uint64_t CpuBackend::KvBytesPerSequence() const {
  return KvCache::Bytes(p_, opt_.n_ctx, opt_.n_ubatch, opt_.kv_type, opt_.swa_full_cache);
}

Result<std::unique_ptr<BackendSequence>> CpuBackend::NewSequence() {
  GARNET_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(p_, opt_.n_ctx, opt_.n_ubatch, opt_.kv_type,
                                                      opt_.swa_full_cache));
  return std::unique_ptr<BackendSequence>(new CpuSequence(std::move(kv)));
}

void CpuBackend::Attention(int il, const Row* rows, const float* q, int64_t T, float* out) {
  const gguf::Gemma4Layer& ly = p_.layers[static_cast<size_t>(il)];
  const int64_t hd = ly.head_dim, nh = ly.n_head, group = ly.n_head / ly.n_head_kv;
  const int64_t nq = nh * hd;
  const bool full = ly.kind == gguf::AttnKind::kFull;
  const int64_t W = p_.sliding_window;
  const bool f16 = opt_.kv_type == KvType::kF16;
  const cpu::Kernels& k = cpu::FastKernels();
  pool_.ParallelFor(T * nh, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> scores;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / nh, n = task % nh, g = n / group;
      KvCache& kv = *rows[t].kv;
      const int64_t pos = rows[t].pos;
      const int64_t lo = full ? 0 : std::max<int64_t>(0, pos - W + 1);
      const int64_t cnt = pos - lo + 1;
      scores.resize(static_cast<size_t>(cnt));
      const float* qv = q + t * nq + n * hd;
      for (int64_t j = 0; j < cnt; ++j) {
        const void* kr = kv.K(il, lo + j, g);
        scores[static_cast<size_t>(j)] = f16 ? k.dot_f16(static_cast<const uint16_t*>(kr), qv, hd)
                                             : k.dot_f32(static_cast<const float*>(kr), qv, hd);
      }
      cpu::Softmax(scores.data(), cnt);  // scale 1.0 (q and k are RMS-normalised)
      float* o = out + t * nq + n * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t j = 0; j < cnt; ++j) {
        const void* vr = kv.V(il, lo + j, g);
        const float pj = scores[static_cast<size_t>(j)];
        if (f16) {
          k.axpy_f16(pj, static_cast<const uint16_t*>(vr), o, hd);
        } else {
          k.axpy_f32(pj, static_cast<const float*>(vr), o, hd);
        }
      }
    }
  });
}

void CpuBackend::DenseFfn(const LayerWeights& lw, int64_t I, const float* in, int64_t T,
                          float* out) {
  std::vector<float> g(static_cast<size_t>(T * I)), u(static_cast<size_t>(T * I));
  MatMul(lw.ffn_gate, in, p_.n_embd, T, g.data(), I, &pool_);
  MatMul(lw.ffn_up, in, p_.n_embd, T, u.data(), I, &pool_);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) cpu::GeluTanhMul(&g[t * I], &u[t * I], &g[t * I], I);
  });
  MatMul(lw.ffn_down, g.data(), I, T, out, p_.n_embd, &pool_);
}

void CpuBackend::MoeFfn(const LayerWeights& lw, int64_t ffn_dim, const float* h, int64_t T,
                        float* out) {
  const int64_t H = p_.n_embd, E = p_.n_expert, K = p_.n_expert_used, Ie = p_.expert_ffn_dim;
  const float eps = p_.rms_eps;
  // Dense branch on ffn_norm(h), post-normed with post_ffw_norm_1.
  std::vector<float> a(static_cast<size_t>(T * H)), d(static_cast<size_t>(T * H));
  NormRows(pool_, h, a.data(), T, H, lw.ffn_norm.data(), eps);
  DenseFfn(lw, ffn_dim, a.data(), T, d.data());
  NormRows(pool_, d.data(), d.data(), T, H, lw.post_ffw_norm_1.data(), eps);
  // Router on the un-normalised residual: RMSNorm without weight, x scale, x H^-1/2.
  const float root = 1.0f / std::sqrt(static_cast<float>(H));
  for (int64_t t = 0; t < T; ++t) {
    float* r = &a[t * H];
    cpu::RmsNorm(h + t * H, nullptr, r, H, eps);
    for (int64_t i = 0; i < H; ++i) r[i] = r[i] * lw.router_scale[static_cast<size_t>(i)] * root;
  }
  std::vector<float> logits(static_cast<size_t>(T * E));
  MatMul(lw.router, a.data(), H, T, logits.data(), E, &pool_);
  // Softmax over all experts, top-k, renormalise, x per-expert scale; group tokens by expert.
  std::vector<std::vector<std::pair<int64_t, float>>> by_expert(static_cast<size_t>(E));
  std::vector<int32_t> idx(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    float* pr = &logits[t * E];
    cpu::Softmax(pr, E);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [&](int32_t x, int32_t y) { return pr[x] != pr[y] ? pr[x] > pr[y] : x < y; });
    float sum = 0;
    for (int64_t i = 0; i < K; ++i) sum += pr[idx[static_cast<size_t>(i)]];
    for (int64_t i = 0; i < K; ++i) {
      const int32_t ex = idx[static_cast<size_t>(i)];
      const float wgt = pr[ex] / sum * lw.expert_scale[static_cast<size_t>(ex)];
      by_expert[static_cast<size_t>(ex)].push_back({t, wgt});
    }
  }
  // Expert branch on pre_ffw_norm_2(h).
  NormRows(pool_, h, a.data(), T, H, lw.pre_ffw_norm_2.data(), eps);
  std::vector<float> m(static_cast<size_t>(T * H), 0.0f);
  std::vector<float> xe, gu, de;
  for (int64_t ex = 0; ex < E; ++ex) {
    const auto& list = by_expert[static_cast<size_t>(ex)];
    if (list.empty()) continue;
    const int64_t ne = static_cast<int64_t>(list.size());
    xe.resize(static_cast<size_t>(ne * H));
    for (int64_t i = 0; i < ne; ++i) {
      std::memcpy(&xe[i * H], &a[list[static_cast<size_t>(i)].first * H], sizeof(float) * H);
    }
    gu.resize(static_cast<size_t>(ne * 2 * Ie));
    if (lw.fused_gate_up) {
      MatMul(lw.gate_up_exps.Slice(ex, 0, 2 * Ie), xe.data(), H, ne, gu.data(), 2 * Ie, &pool_);
    } else {
      MatMul(lw.gate_up_exps.Slice(ex, 0, Ie), xe.data(), H, ne, gu.data(), 2 * Ie, &pool_);
      MatMul(lw.up_exps.Slice(ex, 0, Ie), xe.data(), H, ne, gu.data() + Ie, 2 * Ie, &pool_);
    }
    for (int64_t i = 0; i < ne; ++i) {
      float* row = &gu[i * 2 * Ie];
      cpu::GeluTanhMul(row, row + Ie, row, Ie);
    }
    de.resize(static_cast<size_t>(ne * H));
    MatMul(lw.down_exps.Slice(ex, 0, H), gu.data(), 2 * Ie, ne, de.data(), H, &pool_);
    for (int64_t i = 0; i < ne; ++i) {
      const auto [t, wgt] = list[static_cast<size_t>(i)];
      cpu::FastKernels().axpy_f32(wgt, &de[i * H], &m[t * H], H);
    }
  }
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      cpu::RmsNorm(&m[t * H], lw.post_ffw_norm_2.data(), &m[t * H], H, eps);
      float* o = out + t * H;
      for (int64_t i = 0; i < H; ++i) o[i] = d[t * H + i] + m[t * H + i];
      cpu::RmsNorm(o, lw.post_ffw_norm.data(), o, H, eps);
    }
  });
}

Status CpuBackend::Forward(BackendSequence* bseq, const int32_t* tokens, int64_t T, int64_t pos0,
                           bool all_logits, float* logits) {
  if (bseq == nullptr) return Status::InvalidArgument("forward", "no sequence");
  KvCache& kv = static_cast<CpuSequence*>(bseq)->kv;
  if (T <= 0 || T > opt_.n_ubatch) {
    return Status::InvalidArgument("forward", "batch of " + std::to_string(T) + " tokens (ubatch " +
                                                  std::to_string(opt_.n_ubatch) + ")");
  }
  if (pos0 < 0 || pos0 + T > kv.n_ctx()) {
    return Status::OutOfRange(
        "forward", "positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                       " exceed the context of " + std::to_string(kv.n_ctx()));
  }
  std::vector<Row> rows(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) rows[static_cast<size_t>(t)] = {&kv, pos0 + t};
  std::vector<int64_t> out_rows;
  if (logits != nullptr) {
    for (int64_t t = all_logits ? 0 : T - 1; t < T; ++t) out_rows.push_back(t);
  }
  return Run(tokens, rows.data(), T, out_rows.data(), static_cast<int64_t>(out_rows.size()),
             logits);
}

Status CpuBackend::ForwardBatch(std::span<const BatchItem> items, float* logits) {
  const int64_t T = static_cast<int64_t>(items.size());
  if (T <= 0 || T > opt_.n_ubatch) {
    return Status::InvalidArgument(
        "forward batch",
        "batch of " + std::to_string(T) + " tokens (ubatch " + std::to_string(opt_.n_ubatch) + ")");
  }
  std::vector<Row> rows(static_cast<size_t>(T));
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  std::vector<int64_t> out_rows;
  for (int64_t t = 0; t < T; ++t) {
    const BatchItem& it = items[static_cast<size_t>(t)];
    if (it.seq == nullptr) return Status::InvalidArgument("forward batch", "item without sequence");
    KvCache* kv = &static_cast<CpuSequence*>(it.seq)->kv;
    if (it.pos < 0 || it.pos >= kv->n_ctx()) {
      return Status::OutOfRange("forward batch", "position " + std::to_string(it.pos) +
                                                     " outside the context of " +
                                                     std::to_string(kv->n_ctx()));
    }
    // Earlier items of the same sequence must be exactly the preceding positions.
    for (int64_t u = t - 1; u >= 0; --u) {
      if (rows[static_cast<size_t>(u)].kv == kv) {
        if (rows[static_cast<size_t>(u)].pos != it.pos - 1) {
          return Status::InvalidArgument("forward batch",
                                         "a sequence's items must have consecutive positions");
        }
        break;
      }
    }
    rows[static_cast<size_t>(t)] = {kv, it.pos};
    tokens[static_cast<size_t>(t)] = it.token;
    if (it.logits) out_rows.push_back(t);
  }
  if (logits == nullptr) out_rows.clear();
  return Run(tokens.data(), rows.data(), T, out_rows.data(), static_cast<int64_t>(out_rows.size()),
             logits);
}

Status CpuBackend::Run(const int32_t* tokens, const Row* rows, int64_t T, const int64_t* logit_rows,
                       int64_t n_logits, float* logits) {
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= static_cast<int32_t>(p_.n_vocab)) {
      return Status::InvalidArgument("forward", "token id " + std::to_string(tokens[t]) +
                                                    " outside the vocabulary of " +
                                                    std::to_string(p_.n_vocab));
    }
  }
  const int64_t H = p_.n_embd, L = p_.n_layer, P = p_.n_embd_per_layer;
  const float eps = p_.rms_eps;
  const cpu::Kernels& kern = cpu::FastKernels();

  // Input embedding x sqrt(H).
  std::vector<float> x(static_cast<size_t>(T * H));
  float emb_scale = std::sqrt(static_cast<float>(H));
  if (opt_.embed_scale == EmbedScale::kBf16) emb_scale = RoundToBf16(emb_scale);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      float* row = &x[t * H];
      cpu::DecodeRow(w_.tok_embd, tokens[t], row);
      for (int64_t i = 0; i < H; ++i) row[i] *= emb_scale;
    }
  });

  // Per-layer inputs (§2.0): ple[t, l*P .. (l+1)*P).
  std::vector<float> ple;
  if (p_.has_ple()) {
    const int64_t LP = L * P;
    ple.resize(static_cast<size_t>(T * LP));
    MatMul(w_.ple_model_proj, x.data(), H, T, ple.data(), LP, &pool_);
    const float proj_scale = 1.0f / std::sqrt(static_cast<float>(H));
    const float tok_scale = std::sqrt(static_cast<float>(P));
    const float mix = 1.0f / std::sqrt(2.0f);
    pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
      std::vector<float> tokrow(static_cast<size_t>(LP));
      for (int64_t t = b; t < e; ++t) {
        cpu::DecodeRow(w_.ple_tok, tokens[t], tokrow.data());
        for (int64_t l = 0; l < L; ++l) {
          float* c = &ple[t * LP + l * P];
          for (int64_t i = 0; i < P; ++i) c[i] *= proj_scale;
          cpu::RmsNorm(c, w_.ple_proj_norm.data(), c, P, eps);
          for (int64_t i = 0; i < P; ++i) c[i] = (c[i] + tokrow[l * P + i] * tok_scale) * mix;
        }
      }
    });
  }

  // RoPE tables per position for each layer kind.
  auto rope_dims = [&](const gguf::Gemma4Layer& ly) {
    int64_t d = ly.kind == gguf::AttnKind::kFull ? p_.rope_dims_full : p_.rope_dims_swa;
    if (d <= 0 || d > ly.head_dim) d = ly.head_dim;
    return d;
  };

  int64_t max_q = 0, max_kv = 0, max_i = 0;
  for (const auto& ly : p_.layers) {
    max_q = std::max<int64_t>(max_q, int64_t{ly.n_head} * ly.head_dim);
    max_kv = std::max<int64_t>(max_kv, int64_t{ly.n_head_kv} * ly.head_dim);
    max_i = std::max<int64_t>(max_i, ly.ffn_dim);
  }
  std::vector<float> a(static_cast<size_t>(T * H)), o(static_cast<size_t>(T * H));
  std::vector<float> q(static_cast<size_t>(T * max_q)), att(static_cast<size_t>(T * max_q));
  std::vector<float> kbuf(static_cast<size_t>(T * max_kv)), vbuf(static_cast<size_t>(T * max_kv));
  std::vector<float> cs(static_cast<size_t>(T * 1024));

  for (int il = 0; il < static_cast<int>(L); ++il) {
    const gguf::Gemma4Layer& ly = p_.layers[static_cast<size_t>(il)];
    const LayerWeights& lw = w_.layers[static_cast<size_t>(il)];
    const bool full = ly.kind == gguf::AttnKind::kFull;
    const int64_t hd = ly.head_dim, nh = ly.n_head, nkvh = ly.n_head_kv;
    const int64_t nq = nh * hd, nkv = nkvh * hd;
    const int64_t rd = rope_dims(ly);
    const float* ff = full && !w_.rope_freqs.empty() ? w_.rope_freqs.data() : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      cpu::RopeAngles(rd, rows[t].pos, ly.rope_base, ff, &cs[t * 1024]);
    }

    // --- attention ---
    NormRows(pool_, x.data(), a.data(), T, H, lw.attn_norm.data(), eps);
    MatMul(lw.wq, a.data(), H, T, q.data(), nq, &pool_);
    pool_.ParallelFor(T * nh, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        float* qh = &q[(i / nh) * nq + (i % nh) * hd];
        cpu::RmsNorm(qh, lw.q_norm.data(), qh, hd, eps);
        cpu::RopeApply(qh, rd, &cs[(i / nh) * 1024]);
      }
    });
    if (ly.owns_kv()) {
      MatMul(lw.wk, a.data(), H, T, kbuf.data(), nkv, &pool_);
      if (ly.has_v) {
        MatMul(lw.wv, a.data(), H, T, vbuf.data(), nkv, &pool_);
      } else {  // K = V: V is the raw K projection
        std::memcpy(vbuf.data(), kbuf.data(), sizeof(float) * static_cast<size_t>(T * nkv));
      }
      const bool f16 = opt_.kv_type == KvType::kF16;
      pool_.ParallelFor(T * nkvh, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) {
          const int64_t t = i / nkvh, g = i % nkvh;
          float* kh = &kbuf[t * nkv + g * hd];
          float* vh = &vbuf[t * nkv + g * hd];
          cpu::RmsNorm(kh, lw.k_norm.data(), kh, hd, eps);
          cpu::RopeApply(kh, rd, &cs[t * 1024]);
          cpu::RmsNorm(vh, nullptr, vh, hd, eps);
          void* kd = rows[t].kv->K(il, rows[t].pos, g);
          void* vd = rows[t].kv->V(il, rows[t].pos, g);
          if (f16) {
            kern.f32_to_f16(kh, static_cast<uint16_t*>(kd), hd);
            kern.f32_to_f16(vh, static_cast<uint16_t*>(vd), hd);
          } else {
            std::memcpy(kd, kh, sizeof(float) * static_cast<size_t>(hd));
            std::memcpy(vd, vh, sizeof(float) * static_cast<size_t>(hd));
          }
        }
      });
    }
    Attention(il, rows, q.data(), T, att.data());
    MatMul(lw.wo, att.data(), nq, T, o.data(), H, &pool_);
    pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        cpu::RmsNorm(&o[t * H], lw.post_attention_norm.data(), &o[t * H], H, eps);
        for (int64_t i = 0; i < H; ++i) x[t * H + i] += o[t * H + i];
      }
    });

    // --- feed-forward ---
    if (p_.is_moe()) {
      MoeFfn(lw, ly.ffn_dim, x.data(), T, o.data());
    } else {
      NormRows(pool_, x.data(), a.data(), T, H, lw.ffn_norm.data(), eps);
      DenseFfn(lw, ly.ffn_dim, a.data(), T, o.data());
      NormRows(pool_, o.data(), o.data(), T, H, lw.post_ffw_norm.data(), eps);
    }
    for (int64_t i = 0; i < T * H; ++i) x[i] += o[i];

    // --- per-layer embedding injection ---
    if (p_.has_ple()) {
      std::vector<float> gbuf(static_cast<size_t>(T * P));
      MatMul(lw.ple_gate, x.data(), H, T, gbuf.data(), P, &pool_);
      for (int64_t t = 0; t < T; ++t) {
        const float* pl = &ple[t * L * P + il * P];
        for (int64_t i = 0; i < P; ++i) gbuf[t * P + i] = cpu::GeluTanh(gbuf[t * P + i]) * pl[i];
      }
      MatMul(lw.ple_proj, gbuf.data(), P, T, o.data(), H, &pool_);
      NormRows(pool_, o.data(), o.data(), T, H, lw.ple_post_norm.data(), eps);
      for (int64_t i = 0; i < T * H; ++i) x[i] += o[i];
    }
    if (lw.output_scale != 1.0f) {
      for (int64_t i = 0; i < T * H; ++i) x[i] *= lw.output_scale;
    }
  }

  if (logits == nullptr || n_logits == 0) return Status::OK();
  const int64_t R = n_logits;
  for (int64_t r = 0; r < R; ++r) {
    cpu::RmsNorm(&x[logit_rows[r] * H], w_.output_norm.data(), &a[r * H], H, eps);
  }
  const int64_t V = p_.n_vocab;
  MatMul(w_.tok_embd, a.data(), H, R, logits, V, &pool_);
  // Softcap over R x V values, split across threads (V is 262144 on real models).
  pool_.ParallelFor(
      R * V,
      [&](int64_t b, int64_t e, int) { cpu::Softcap(logits + b, e - b, p_.final_logit_softcap); },
      4096);
  return Status::OK();
}

}  // namespace garnet::model
