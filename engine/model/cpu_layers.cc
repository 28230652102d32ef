#include "engine/model/cpu_layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/ops.h"
#include "engine/plan/memory.h"
#include "engine/quant/fp16.h"

namespace garnet::model {
namespace {

using cpu::MatMul;

// Rows of a [T, n] buffer normalised in place (or into out) with weight w (may be null).
void NormRows(cpu::ThreadPool& pool, const float* in, float* out, int64_t T, int64_t n,
              const float* w, float eps) {
  pool.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) cpu::RmsNorm(in + t * n, w, out + t * n, n, eps);
  });
}

}  // namespace

Result<std::unique_ptr<CpuLayers>> CpuLayers::Create(const gguf::Gemma4Params* params,
                                                     const ModelWeights* weights, int64_t n_ubatch,
                                                     bool layers, KvType kv_type,
                                                     EmbedScale embed_scale,
                                                     cpu::ThreadPool* pool) {
  if (n_ubatch <= 0 || n_ubatch > (1 << 20)) {
    return Status::InvalidArgument("cpu layers", "ubatch must be in 1..2^20");
  }
  std::unique_ptr<CpuLayers> c(new CpuLayers(params, weights, kv_type, embed_scale, pool));
  c->n_ubatch_ = n_ubatch;
  plan::KvOptions o;
  o.n_ubatch = static_cast<uint32_t>(n_ubatch);
  const auto layout = plan::HostScratchLayout(*params, o, layers);
  uint64_t total = 0;
  for (const auto& b : layout) total += b.bytes;
  try {
    c->arena_.assign(total / sizeof(float), 0.0f);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(
        "cpu layers", "cannot allocate " + std::to_string(total) + " bytes of scratch");
  }
  const std::map<std::string, float**> parts = {{"x", &c->x_},
                                                {"a", &c->a_},
                                                {"o", &c->o_},
                                                {"q", &c->q_},
                                                {"att", &c->att_},
                                                {"k", &c->k_},
                                                {"v", &c->v_},
                                                {"rope", &c->rope_},
                                                {"ffn_gate", &c->ffn_gate_},
                                                {"ffn_up", &c->ffn_up_},
                                                {"ple", &c->ple_},
                                                {"ple_gate", &c->ple_gate_},
                                                {"moe_dense", &c->moe_dense_},
                                                {"router", &c->router_},
                                                {"moe_out", &c->moe_out_},
                                                {"moe_x", &c->moe_x_},
                                                {"moe_gate_up", &c->moe_gate_up_},
                                                {"moe_down", &c->moe_down_}};
  uint64_t off = 0;
  for (const auto& b : layout) {
    auto it = parts.find(b.name);
    if (it == parts.end()) return Status::Internal("cpu layers", "unknown scratch part " + b.name);
    *it->second = c->arena_.data() + off / sizeof(float);
    off += b.bytes;
  }
  return c;
}

void CpuLayers::Attention(int il, const Row* rows, const float* q, int64_t T, float* out) {
  const gguf::Gemma4Layer& ly = p_.layers[static_cast<size_t>(il)];
  const int64_t hd = ly.head_dim, nh = ly.n_head, group = ly.n_head / ly.n_head_kv;
  const int64_t nq = nh * hd;
  const bool full = ly.kind == gguf::AttnKind::kFull;
  const int64_t W = p_.sliding_window;
  const KvType kvt = kv_type_;
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
        float dot;
        switch (kvt) {
          case KvType::kF16:
            dot = k.dot_f16(static_cast<const uint16_t*>(kr), qv, hd);
            break;
          case KvType::kQ8_0:
            dot = KvDotQ8_0(static_cast<const uint8_t*>(kr), qv, hd);
            break;
          default:
            dot = k.dot_f32(static_cast<const float*>(kr), qv, hd);
        }
        scores[static_cast<size_t>(j)] = dot;
      }
      cpu::Softmax(scores.data(), cnt);  // scale 1.0 (q and k are RMS-normalised)
      float* o = out + t * nq + n * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t j = 0; j < cnt; ++j) {
        const void* vr = kv.V(il, lo + j, g);
        const float pj = scores[static_cast<size_t>(j)];
        switch (kvt) {
          case KvType::kF16:
            k.axpy_f16(pj, static_cast<const uint16_t*>(vr), o, hd);
            break;
          case KvType::kQ8_0:
            KvAxpyQ8_0(pj, static_cast<const uint8_t*>(vr), o, hd);
            break;
          default:
            k.axpy_f32(pj, static_cast<const float*>(vr), o, hd);
        }
      }
    }
  });
}

void CpuLayers::DenseFfn(const LayerWeights& lw, int64_t I, const float* in, int64_t T,
                         float* out) {
  float *g = ffn_gate_, *u = ffn_up_;
  MatMul(lw.ffn_gate, in, p_.n_embd, T, g, I, &pool_);
  MatMul(lw.ffn_up, in, p_.n_embd, T, u, I, &pool_);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) cpu::GeluTanhMul(&g[t * I], &u[t * I], &g[t * I], I);
  });
  MatMul(lw.ffn_down, g, I, T, out, p_.n_embd, &pool_);
}

void CpuLayers::MoeFfn(const LayerWeights& lw, int64_t ffn_dim, const float* h, int64_t T,
                       float* out) {
  const int64_t H = p_.n_embd, E = p_.n_expert, K = p_.n_expert_used;
  const float eps = p_.rms_eps;
  float *a = a_, *d = moe_dense_, *m = moe_out_;
  // Dense branch on ffn_norm(h), post-normed with post_ffw_norm_1.
  NormRows(pool_, h, a, T, H, lw.ffn_norm.data(), eps);
  DenseFfn(lw, ffn_dim, a, T, d);
  NormRows(pool_, d, d, T, H, lw.post_ffw_norm_1.data(), eps);
  // Router on the un-normalised residual: RMSNorm without weight, x scale, x H^-1/2.
  const float root = 1.0f / std::sqrt(static_cast<float>(H));
  for (int64_t t = 0; t < T; ++t) {
    float* r = &a[t * H];
    cpu::RmsNorm(h + t * H, nullptr, r, H, eps);
    for (int64_t i = 0; i < H; ++i) r[i] = r[i] * lw.router_scale[static_cast<size_t>(i)] * root;
  }
  float* logits = router_;
  MatMul(lw.router, a, H, T, logits, E, &pool_);
  // Softmax over all experts, top-k, renormalise, x per-expert scale; group tokens by expert.
  Routes by_expert(static_cast<size_t>(E));
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
  NormRows(pool_, h, a, T, H, lw.pre_ffw_norm_2.data(), eps);
  Experts(lw, a, by_expert, T, m);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      cpu::RmsNorm(&m[t * H], lw.post_ffw_norm_2.data(), &m[t * H], H, eps);
      float* o = out + t * H;
      for (int64_t i = 0; i < H; ++i) o[i] = d[t * H + i] + m[t * H + i];
      cpu::RmsNorm(o, lw.post_ffw_norm.data(), o, H, eps);
    }
  });
}

void CpuLayers::Experts(const LayerWeights& lw, const float* in, const Routes& routes, int64_t T,
                        float* m) {
  const int64_t H = p_.n_embd, Ie = p_.expert_ffn_dim;
  const int64_t cap = std::max<int64_t>(n_ubatch_, p_.n_expert_used);  // slot rows of the arena
  std::fill(m, m + T * H, 0.0f);
  float *xe = moe_x_, *gu = moe_gate_up_, *de = moe_down_;
  // Experts are taken in groups whose slots fit the arena (a token picks an expert at most once,
  // so one expert's ne <= T rows always fit). Each group runs as two parallel steps over
  // (expert, block of output rows) tasks, single-threaded matmuls inside: at decode the k
  // experts of a token share the threads instead of each matmul waking the pool (8 x 3 pool
  // round trips per layer before).
  struct Item {
    int64_t e, base, ne;
  };
  std::vector<Item> group;
  struct Task {
    int64_t item, r0, n;
  };
  std::vector<Task> tasks;
  const int64_t threads = std::max(1, pool_.size());
  auto run = [&](int64_t rows, const auto& fn) {
    // Enough row blocks per expert to give every thread ~2 tasks, at least 32 rows each.
    const int64_t per = std::max<int64_t>(
        1, std::min<int64_t>((2 * threads + static_cast<int64_t>(group.size()) - 1) /
                                 static_cast<int64_t>(group.size()),
                             rows / 32));
    const int64_t block = (rows + per - 1) / per;
    tasks.clear();
    for (int64_t i = 0; i < static_cast<int64_t>(group.size()); ++i) {
      for (int64_t r0 = 0; r0 < rows; r0 += block)
        tasks.push_back({i, r0, std::min(block, rows - r0)});
    }
    pool_.ParallelFor(static_cast<int64_t>(tasks.size()), [&](int64_t b, int64_t e, int) {
      for (int64_t k = b; k < e; ++k)
        fn(group[static_cast<size_t>(tasks[k].item)], tasks[k].r0, tasks[k].n);
    });
  };
  auto flush = [&]() {
    if (group.empty()) return;
    // gate and up: gu[slot] = [gate . x | up . x]
    run(2 * Ie, [&](const Item& it, int64_t r0, int64_t n) {
      const float* x = xe + it.base * H;
      float* y = gu + it.base * 2 * Ie;
      if (lw.fused_gate_up) {
        cpu::MatMul(lw.gate_up_exps.Slice(it.e, r0, n), x, H, it.ne, y + r0, 2 * Ie, nullptr);
        return;
      }
      // Rows [0, Ie) from the gate stack, [Ie, 2 Ie) from the up stack; a block may span both.
      for (int64_t r = r0; r < r0 + n;) {
        const bool gate = r < Ie;
        const int64_t end = gate ? std::min(r0 + n, Ie) : r0 + n;
        const ExpertStack& st = gate ? lw.gate_up_exps : lw.up_exps;
        cpu::MatMul(st.Slice(it.e, gate ? r : r - Ie, end - r), x, H, it.ne, y + r, 2 * Ie,
                    nullptr);
        r = end;
      }
    });
    for (const Item& it : group) {
      for (int64_t i = 0; i < it.ne; ++i) {
        float* row = &gu[(it.base + i) * 2 * Ie];
        cpu::GeluTanhMul(row, row + Ie, row, Ie);
      }
    }
    run(H, [&](const Item& it, int64_t r0, int64_t n) {
      cpu::MatMul(lw.down_exps.Slice(it.e, r0, n), gu + it.base * 2 * Ie, 2 * Ie, it.ne,
                  de + it.base * H + r0, H, nullptr);
    });
    for (const Item& it : group) {
      const auto& list = routes[static_cast<size_t>(it.e)];
      for (int64_t i = 0; i < it.ne; ++i) {
        const auto [t, wgt] = list[static_cast<size_t>(i)];
        cpu::FastKernels().axpy_f32(wgt, &de[(it.base + i) * H], &m[t * H], H);
      }
    }
    group.clear();
  };
  int64_t used = 0;
  for (size_t ex = 0; ex < routes.size(); ++ex) {
    const auto& list = routes[ex];
    if (list.empty()) continue;
    const int64_t ne = static_cast<int64_t>(list.size());
    if (used + ne > cap) {
      flush();
      used = 0;
    }
    for (int64_t i = 0; i < ne; ++i) {
      std::memcpy(&xe[(used + i) * H], &in[list[static_cast<size_t>(i)].first * H],
                  sizeof(float) * H);
    }
    group.push_back({static_cast<int64_t>(ex), used, ne});
    used += ne;
  }
  flush();
}

void CpuLayers::Embed(const int32_t* tokens, int64_t T) {
  const int64_t H = p_.n_embd, L = p_.n_layer, P = p_.n_embd_per_layer;
  const float eps = p_.rms_eps;
  float* x = x_;
  // Input embedding x sqrt(H).
  float emb_scale = std::sqrt(static_cast<float>(H));
  if (embed_scale_ == EmbedScale::kBf16) emb_scale = RoundToBf16(emb_scale);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      float* row = &x[t * H];
      cpu::DecodeRow(w_.tok_embd, tokens[t], row);
      for (int64_t i = 0; i < H; ++i) row[i] *= emb_scale;
    }
  });
  if (!p_.has_ple()) return;
  // Per-layer inputs (§2.0): ple[t, l*P .. (l+1)*P).
  const int64_t LP = L * P;
  float* ple = ple_;
  MatMul(w_.ple_model_proj, x, H, T, ple, LP, &pool_);
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

void CpuLayers::RunLayer(int il, const Row* rows, int64_t T) {
  const int64_t H = p_.n_embd, L = p_.n_layer, P = p_.n_embd_per_layer;
  const float eps = p_.rms_eps;
  const cpu::Kernels& kern = cpu::FastKernels();
  float *x = x_, *a = a_, *o = o_, *q = q_, *att = att_, *kbuf = k_, *vbuf = v_, *cs = rope_;
  const gguf::Gemma4Layer& ly = p_.layers[static_cast<size_t>(il)];
  const LayerWeights& lw = w_.layers[static_cast<size_t>(il)];
  const bool full = ly.kind == gguf::AttnKind::kFull;
  const int64_t hd = ly.head_dim, nh = ly.n_head, nkvh = ly.n_head_kv;
  const int64_t nq = nh * hd, nkv = nkvh * hd;
  int64_t rd = full ? p_.rope_dims_full : p_.rope_dims_swa;
  if (rd <= 0 || rd > ly.head_dim) rd = ly.head_dim;
  const float* ff = full && !w_.rope_freqs.empty() ? w_.rope_freqs.data() : nullptr;
  for (int64_t t = 0; t < T; ++t) {
    cpu::RopeAngles(rd, rows[t].pos, ly.rope_base, ff, &cs[t * 1024]);
  }

  // --- attention ---
  NormRows(pool_, x, a, T, H, lw.attn_norm.data(), eps);
  MatMul(lw.wq, a, H, T, q, nq, &pool_);
  pool_.ParallelFor(T * nh, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      float* qh = &q[(i / nh) * nq + (i % nh) * hd];
      cpu::RmsNorm(qh, lw.q_norm.data(), qh, hd, eps);
      cpu::RopeApply(qh, rd, &cs[(i / nh) * 1024]);
    }
  });
  if (ly.owns_kv()) {
    MatMul(lw.wk, a, H, T, kbuf, nkv, &pool_);
    if (ly.has_v) {
      MatMul(lw.wv, a, H, T, vbuf, nkv, &pool_);
    } else {  // K = V: V is the raw K projection
      std::memcpy(vbuf, kbuf, sizeof(float) * static_cast<size_t>(T * nkv));
    }
    const KvType kvt = kv_type_;
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
        switch (kvt) {
          case KvType::kF16:
            kern.f32_to_f16(kh, static_cast<uint16_t*>(kd), hd);
            kern.f32_to_f16(vh, static_cast<uint16_t*>(vd), hd);
            break;
          case KvType::kQ8_0:
            KvQuantizeQ8_0(kh, static_cast<uint8_t*>(kd), hd);
            KvQuantizeQ8_0(vh, static_cast<uint8_t*>(vd), hd);
            break;
          default:
            std::memcpy(kd, kh, sizeof(float) * static_cast<size_t>(hd));
            std::memcpy(vd, vh, sizeof(float) * static_cast<size_t>(hd));
        }
      }
    });
  }
  Attention(il, rows, q, T, att);
  MatMul(lw.wo, att, nq, T, o, H, &pool_);
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) {
      cpu::RmsNorm(&o[t * H], lw.post_attention_norm.data(), &o[t * H], H, eps);
      for (int64_t i = 0; i < H; ++i) x[t * H + i] += o[t * H + i];
    }
  });

  // --- feed-forward ---
  if (p_.is_moe()) {
    MoeFfn(lw, ly.ffn_dim, x, T, o);
  } else {
    NormRows(pool_, x, a, T, H, lw.ffn_norm.data(), eps);
    DenseFfn(lw, ly.ffn_dim, a, T, o);
    NormRows(pool_, o, o, T, H, lw.post_ffw_norm.data(), eps);
  }
  for (int64_t i = 0; i < T * H; ++i) x[i] += o[i];

  // --- per-layer embedding injection ---
  if (p_.has_ple()) {
    float* gbuf = ple_gate_;
    MatMul(lw.ple_gate, x, H, T, gbuf, P, &pool_);
    for (int64_t t = 0; t < T; ++t) {
      const float* pl = &ple_[t * L * P + il * P];
      for (int64_t i = 0; i < P; ++i) gbuf[t * P + i] = cpu::GeluTanh(gbuf[t * P + i]) * pl[i];
    }
    MatMul(lw.ple_proj, gbuf, P, T, o, H, &pool_);
    NormRows(pool_, o, o, T, H, lw.ple_post_norm.data(), eps);
    for (int64_t i = 0; i < T * H; ++i) x[i] += o[i];
  }
  if (lw.output_scale != 1.0f) {
    for (int64_t i = 0; i < T * H; ++i) x[i] *= lw.output_scale;
  }
}

void CpuLayers::Head(const int64_t* logit_rows, int64_t R, float* logits) {
  const int64_t H = p_.n_embd, V = p_.n_vocab;
  for (int64_t r = 0; r < R; ++r) {
    cpu::RmsNorm(&x_[logit_rows[r] * H], w_.output_norm.data(), &a_[r * H], H, p_.rms_eps);
  }
  MatMul(w_.tok_embd, a_, H, R, logits, V, &pool_);
  // Softcap over R x V values, split across threads (V is 262144 on real models).
  pool_.ParallelFor(
      R * V,
      [&](int64_t b, int64_t e, int) { cpu::Softcap(logits + b, e - b, p_.final_logit_softcap); },
      4096);
}

}  // namespace garnet::model
