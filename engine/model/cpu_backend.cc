#include "engine/model/cpu_backend.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "engine/model/sampler.h"

namespace garnet::model {
namespace {

class CpuSequence final : public BackendSequence {
 public:
  explicit CpuSequence(KvCache kv) : kv(std::move(kv)) {}
  uint64_t kv_bytes() const override { return kv.bytes(); }
  KvCache kv;
};

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
  std::unique_ptr<CpuBackend> b(new CpuBackend(params, weights, options));
  GARNET_ASSIGN_OR_RETURN(
      b->layers_, CpuLayers::Create(params, weights, options.n_ubatch, true, options.kv_type,
                                    options.embed_scale, &b->pool_));
  return b;
}

uint64_t CpuBackend::KvBytesPerSequence() const {
  return KvCache::Bytes(p_, opt_.n_ctx, opt_.n_ubatch, opt_.kv_type, opt_.swa_full_cache);
}

Result<std::unique_ptr<BackendSequence>> CpuBackend::NewSequence() {
  GARNET_ASSIGN_OR_RETURN(KvCache kv, KvCache::Create(p_, opt_.n_ctx, opt_.n_ubatch, opt_.kv_type,
                                                      opt_.swa_full_cache));
  return std::unique_ptr<BackendSequence>(new CpuSequence(std::move(kv)));
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

Status CpuBackend::ForwardBatchPicks(std::span<const BatchItem> items, int32_t* picks) {
  size_t n = 0;
  for (const BatchItem& it : items) n += it.logits ? 1 : 0;
  pick_rows_.resize(n * p_.n_vocab);
  GARNET_RETURN_IF_ERROR(ForwardBatch(items, pick_rows_.data()));
  for (size_t i = 0; i < n; ++i) {
    picks[i] = sampling::GreedyPick(
        std::span<const float>(pick_rows_).subspan(i * p_.n_vocab, p_.n_vocab));
  }
  return Status::OK();
}

Status CpuBackend::ForwardBatchTop(std::span<const BatchItem> items, uint32_t k,
                                   std::pair<float, int32_t>* top) {
  if (k == 0 || k > kMaxTopCandidates) {
    return Status::InvalidArgument("forward batch", "top " + std::to_string(k) + " candidates");
  }
  size_t n = 0;
  for (const BatchItem& it : items) n += it.logits ? 1 : 0;
  pick_rows_.resize(n * p_.n_vocab);
  GARNET_RETURN_IF_ERROR(ForwardBatch(items, pick_rows_.data()));
  std::vector<std::pair<float, int32_t>> best;
  for (size_t i = 0; i < n; ++i) {
    sampling::TopCandidates(std::span<const float>(pick_rows_).subspan(i * p_.n_vocab, p_.n_vocab),
                            k, &best);
    best.resize(k, {-std::numeric_limits<float>::infinity(), -1});
    std::copy(best.begin(), best.end(), top + i * k);
  }
  return Status::OK();
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
  layers_->Embed(tokens, T);
  for (int il = 0; il < static_cast<int>(p_.n_layer); ++il) layers_->RunLayer(il, rows, T);
  if (logits != nullptr && n_logits > 0) layers_->Head(logit_rows, n_logits, logits);
  return Status::OK();
}

}  // namespace garnet::model
