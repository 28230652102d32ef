#include "engine/model/engine.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/model/chat.h"
#if GARNET_HAVE_VULKAN
#include "engine/model/vulkan_backend.h"
#include "engine/vulkan/device.h"
#include "engine/vulkan/inventory.h"
#endif
#include "engine/tokenizer/tokenizer.h"

namespace garnet::engine {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Sequence::~Sequence() = default;

int32_t Sequence::greedy_pick() const {
  if (has_pick_) return pick_;
  if (has_top_) return top_.empty() ? -1 : top_.front().second;
  return logits_.empty() ? -1 : sampling::GreedyPick(logits());
}

void Sequence::SetTop(const std::pair<float, int32_t>* list, int32_t k) {
  top_.clear();
  for (int32_t i = 0; i < k && list[i].second >= 0; ++i) top_.push_back(list[i]);
  has_top_ = true;
  top_from_k_ = k;
}

std::span<const float> Sequence::logits() const {
  if (logits_.empty()) return {};
  return std::span<const float>(logits_).subspan(logits_.size() - static_cast<size_t>(n_vocab_));
}

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStopToken:
      return "stop";
    case FinishReason::kStopString:
      return "stop_string";
    case FinishReason::kMaxTokens:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kContextFull:
      return "context_full";
  }
  return "unknown";
}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Open(const std::string& path,
                                             const EngineOptions& options) {
  return OpenParts({path}, options);
}

Result<std::unique_ptr<Engine>> Engine::OpenParts(const std::vector<std::string>& paths,
                                                  const EngineOptions& options) {
  if (options.backend != "cpu" && options.backend != "vulkan") {
    return Status::Unimplemented(
        "engine", "backend '" + options.backend + "' is not available (cpu, vulkan)");
  }
  if (options.backend == "vulkan") {
#if GARNET_HAVE_VULKAN
    if (options.kv_type == KvType::kF32) {
      return Status::InvalidArgument(
          "engine", "the Vulkan backend keeps the KV cache in f16 or q8_0, not f32");
    }
    if (options.swa_full_cache) {
      return Status::InvalidArgument("engine", "swa_full_cache is a CPU-backend test option");
    }
    if (options.n_seq <= 0) return Status::InvalidArgument("engine", "n_seq must be positive");
#else
    return Status::Unavailable("engine",
                               "this build has no Vulkan backend (the Vulkan headers or glslc were "
                               "missing when it was built); use backend cpu");
#endif
  }
  if (options.n_ubatch < 0) return Status::InvalidArgument("engine", "ubatch must not be negative");
  if (paths.empty()) return Status::InvalidArgument("engine", "no model file given");
  std::unique_ptr<Engine> e(new Engine());
  const std::string& path = paths.front();
  if (paths.size() == 1) {
    GARNET_ASSIGN_OR_RETURN(e->model_, gguf::Model::Open(path));
  } else {
    GARNET_ASSIGN_OR_RETURN(e->model_, gguf::Model::OpenParts(paths));
  }
  GARNET_ASSIGN_OR_RETURN(e->params_, gguf::ReadGemma4Params(*e->model_));
  auto weights = model::LoadWeights(*e->model_, e->params_);
  if (!weights.ok()) return weights.status().WithContext(path);
  e->weights_ = std::make_unique<model::ModelWeights>(std::move(weights).value());
  e->options_ = options;
  int64_t ctx = options.n_ctx;
  if (ctx <= 0 || ctx > static_cast<int64_t>(e->params_.context_length)) {
    ctx = e->params_.context_length;
  }
  e->options_.n_ctx = ctx;
  [[maybe_unused]] const bool ubatch_auto = options.n_ubatch == 0;
  e->options_.n_ubatch = std::min<int64_t>(ubatch_auto ? 512 : options.n_ubatch, ctx);
#if GARNET_HAVE_VULKAN
  if (options.backend == "vulkan") {
    GARNET_RETURN_IF_ERROR(e->MakeVulkanBackend(ubatch_auto));
  }
#endif
  if (!e->backend_) {
    GARNET_RETURN_IF_ERROR(e->MakeCpuBackend());
  }
  if (e->model_->Find("tokenizer.ggml.model") != nullptr) {
    GARNET_ASSIGN_OR_RETURN(e->tokenizer_, tok::Tokenizer::FromGguf(*e->model_));
  }
  return e;
}

Status Engine::MakeVulkanBackend(bool ubatch_auto) {
#if GARNET_HAVE_VULKAN
  GARNET_ASSIGN_OR_RETURN(auto instance, vk::Instance::Create());
  vk::DeviceOptions dopt;
  dopt.selector = options_.device;
  GARNET_ASSIGN_OR_RETURN(std::unique_ptr<vk::Device> owned,
                          vk::Device::Create(std::move(instance), dopt));
  std::shared_ptr<vk::Device> dev(std::move(owned));
  device_ = dev;
  if (options_.plan) {
    plan_ = *options_.plan;
    options_.n_ubatch = plan_->kv.n_ubatch;  // what the plan priced
  } else {
    GARNET_ASSIGN_OR_RETURN(plan::ModelShape shape, plan::ShapeFromModel(*model_));
    plan::KvOptions kv;
    kv.n_ctx = static_cast<uint32_t>(options_.n_ctx);
    kv.n_ubatch = static_cast<uint32_t>(options_.n_ubatch);
    kv.n_seq = static_cast<uint32_t>(options_.n_seq);
    kv.type = model::PlanKvType(options_.kv_type);
    plan::Inventory inv;
    if (options_.inventory) {
      inv = *options_.inventory;
    } else {
      vk::InventoryOptions io;
      io.include_cpu = true;  // the device the user selected, whatever its type
      const vk::DeviceInfo info = dev->info();
      inv.gpus = vk::InventoryFromDevices(std::span<const vk::DeviceInfo>(&info, 1), io);
      GARNET_ASSIGN_OR_RETURN(inv.host, plan::HostInventory());
    }
    if (ubatch_auto) {
      GARNET_ASSIGN_OR_RETURN(kv.n_ubatch, plan::ChooseUbatch(shape, kv, inv, options_.policy));
      options_.n_ubatch = kv.n_ubatch;
    }
    GARNET_ASSIGN_OR_RETURN(plan::Plan pl, plan::MakePlan(shape, kv, inv, options_.policy));
    if (pl.verdict == plan::Verdict::kDoesNotFit) {
      return Status::ResourceExhausted("engine", "no placement fits: " + pl.reason);
    }
    plan_ = std::move(pl);
  }
  model::VulkanBackendOptions vo;
  vo.n_ctx = options_.n_ctx;
  vo.n_ubatch = options_.n_ubatch;
  vo.n_seq = options_.n_seq;
  vo.kv_type = options_.kv_type;
  vo.embed_scale = options_.embed_scale;
  vo.device = options_.device;
  vo.coop_matmul = options_.coop_matmul;
  vo.f16_matmul = options_.f16_matmul;
  vo.attn_prefill_min_tokens = options_.attn_prefill_min_tokens;
  vo.attn_coop_min_tokens = options_.attn_coop_min_tokens;
  vo.decode_graph = options_.decode_graph;
  vo.fused_routing = options_.fused_routing;
  vo.prenorm = options_.prenorm;
  vo.early_routing = options_.early_routing;
  vo.quantized_inputs = options_.quantized_inputs;
  vo.n_threads = options_.n_threads;
  GARNET_RETURN_IF_ERROR(model::PlacementFromPlan(*plan_, params_, &vo));
  if (std::all_of(vo.host_layers.begin(), vo.host_layers.end(), [](bool h) { return h; })) {
    device_.reset();  // nothing on the GPU: the CPU backend, KV as planned
    return MakeCpuBackend();
  }
  GARNET_ASSIGN_OR_RETURN(
      auto backend, model::VulkanBackend::Create(model_.get(), &params_, weights_.get(), vo, dev));
  kv_bytes_ = backend->KvBytesPerSequence();
  backend_ = std::move(backend);
  return Status::OK();
#else
  return Status::Unavailable("engine", "this build has no Vulkan backend");
#endif
}

Status Engine::MakeCpuBackend() {
  model::CpuBackendOptions co;
  co.n_ctx = options_.n_ctx;
  co.n_ubatch = options_.n_ubatch;
  co.n_threads = options_.n_threads;
  co.kv_type = options_.kv_type;
  co.embed_scale = options_.embed_scale;
  co.swa_full_cache = options_.swa_full_cache;
  GARNET_ASSIGN_OR_RETURN(auto backend, model::CpuBackend::Create(&params_, weights_.get(), co));
  kv_bytes_ = backend->KvBytesPerSequence();
  backend_ = std::move(backend);
  return Status::OK();
}

std::string_view Engine::backend_name() const {
  return backend_->name();
}

uint64_t Engine::KvBytesPerSequence() const {
  return kv_bytes_;
}

Result<std::unique_ptr<Sequence>> Engine::NewSequence() {
  std::unique_ptr<Sequence> s(new Sequence());
  GARNET_ASSIGN_OR_RETURN(s->state_, backend_->NewSequence());
  s->n_vocab_ = params_.n_vocab;
  return s;
}

Status Engine::Feed(Sequence& seq, std::span<const int32_t> tokens, bool all_logits) {
  if (tokens.empty()) return Status::OK();
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (seq.n_past() + n > options_.n_ctx) {
    return Status::OutOfRange("feed", std::to_string(seq.n_past()) + " + " + std::to_string(n) +
                                          " tokens exceed the context of " +
                                          std::to_string(options_.n_ctx));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= static_cast<int32_t>(params_.n_vocab)) {
      return Status::InvalidArgument("feed", "token id " + std::to_string(t) +
                                                 " outside the vocabulary of " +
                                                 std::to_string(params_.n_vocab));
    }
  }
  const int64_t V = params_.n_vocab;
  const bool pick = seq.pick_mode_ && !all_logits;
  const int32_t topk = pick || all_logits ? 0 : seq.top_k_;
  const bool reduced = pick || topk > 0;  // the last chunk returns a pick or candidates
  // Every row of `out` is written by the backend below, so the spare buffer's old contents need
  // no clearing; on an error it goes back to being the spare and logits_ stays as it was.
  std::vector<float> out = std::move(seq.spare_);
  out.resize(static_cast<size_t>(reduced ? 0 : (all_logits ? n : 1) * V));
  int32_t picked = -1;
  std::vector<std::pair<float, int32_t>> cand(static_cast<size_t>(topk));
  std::vector<model::BatchItem> items;
  for (int64_t b = 0; b < n; b += options_.n_ubatch) {
    const int64_t T = std::min(options_.n_ubatch, n - b);
    const bool last = b + T == n;
    Status s;
    if (reduced && last) {  // the last chunk as a batch of this sequence's tokens
      items.resize(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        items[static_cast<size_t>(t)] = {seq.state_.get(), tokens[static_cast<size_t>(b + t)],
                                         seq.n_past() + b + t, t + 1 == T};
      }
      std::lock_guard<std::mutex> lock(forward_mu_);
      s = pick ? backend_->ForwardBatchPicks(items, &picked)
               : backend_->ForwardBatchTop(items, static_cast<uint32_t>(topk), cand.data());
    } else {
      float* dst = nullptr;
      if (all_logits) {
        dst = out.data() + b * V;
      } else if (last) {
        dst = out.data();
      }
      std::lock_guard<std::mutex> lock(forward_mu_);
      s = backend_->Forward(seq.state_.get(), tokens.data() + b, T, seq.n_past() + b, all_logits,
                            dst);
    }
    if (!s.ok()) {
      seq.spare_ = std::move(out);
      return s;
    }
  }
  seq.tokens_.insert(seq.tokens_.end(), tokens.begin(), tokens.end());
  seq.has_pick_ = pick;
  seq.pick_ = picked;
  seq.has_top_ = false;
  if (topk > 0) seq.SetTop(cand.data(), topk);
  if (reduced) {
    seq.spare_ = std::move(out);
    seq.logits_.clear();  // keeps its storage for a later feed with logits
  } else {
    std::swap(seq.logits_, out);
    seq.spare_ = std::move(out);
  }
  return Status::OK();
}

Status Engine::Step(std::span<Sequence* const> seqs, std::span<const int32_t> tokens) {
  if (seqs.size() != tokens.size()) {
    return Status::InvalidArgument("step", "sequences and tokens differ in count");
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i] == nullptr) return Status::InvalidArgument("step", "null sequence");
    for (size_t j = 0; j < i; ++j) {
      if (seqs[j] == seqs[i]) return Status::InvalidArgument("step", "a sequence appears twice");
    }
    if (seqs[i]->n_past() >= options_.n_ctx) {
      return Status::OutOfRange("step", "sequence " + std::to_string(i) + " is full (context " +
                                            std::to_string(options_.n_ctx) + ")");
    }
    if (tokens[i] < 0 || tokens[i] >= static_cast<int32_t>(params_.n_vocab)) {
      return Status::InvalidArgument(
          "step", "token id " + std::to_string(tokens[i]) + " outside the vocabulary");
    }
  }
  const int64_t V = params_.n_vocab;
  const size_t n = seqs.size();
  // Picks when every sequence is in greedy-pick mode; candidates when every sequence is in pick
  // or top-candidates mode (k the largest asked, a picking sequence takes the first); otherwise
  // logits for all (each sequence's pick or candidates then come from its row on the host).
  const bool picks_only =
      std::all_of(seqs.begin(), seqs.end(), [](const Sequence* s) { return s->pick_mode_; });
  uint32_t K = 0;
  bool reduced = true;
  for (const Sequence* s : seqs) {
    if (s->pick_mode_) {
      K = std::max(K, 1u);
    } else if (s->top_k_ > 0) {
      K = std::max(K, static_cast<uint32_t>(s->top_k_));
    } else {
      reduced = false;
    }
  }
  const bool top_only = reduced && !picks_only;
  // Reused across steps on this thread (the daemon's decode batcher steps every token).
  thread_local std::vector<float> out;
  thread_local std::vector<int32_t> picks;
  thread_local std::vector<std::pair<float, int32_t>> cand;
  out.resize(reduced ? 0 : n * static_cast<size_t>(V));
  picks.assign(n, -1);
  cand.resize(top_only ? n * K : 0);
  for (size_t b = 0; b < n; b += static_cast<size_t>(options_.n_ubatch)) {
    const size_t m = std::min(n - b, static_cast<size_t>(options_.n_ubatch));
    std::vector<model::BatchItem> items(m);
    for (size_t i = 0; i < m; ++i) {
      Sequence* s = seqs[b + i];
      items[i] = {s->state_.get(), tokens[b + i], s->n_past(), true};
    }
    std::lock_guard<std::mutex> lock(forward_mu_);
    if (picks_only) {
      GARNET_RETURN_IF_ERROR(backend_->ForwardBatchPicks(items, picks.data() + b));
    } else if (top_only) {
      GARNET_RETURN_IF_ERROR(backend_->ForwardBatchTop(items, K, cand.data() + b * K));
    } else {
      GARNET_RETURN_IF_ERROR(backend_->ForwardBatch(items, out.data() + b * V));
    }
  }
  for (size_t i = 0; i < n; ++i) {
    Sequence& s = *seqs[i];
    s.tokens_.push_back(tokens[i]);
    s.has_pick_ = false;
    s.has_top_ = false;
    if (reduced) {
      s.logits_.clear();
      if (picks_only || s.pick_mode_) {
        s.has_pick_ = true;
        s.pick_ = picks_only ? picks[i] : cand[i * K].second;
      } else {
        s.SetTop(cand.data() + i * K, s.top_k_);
      }
      continue;
    }
    s.logits_.assign(out.begin() + static_cast<std::ptrdiff_t>(i * V),
                     out.begin() + static_cast<std::ptrdiff_t>((i + 1) * V));
    if (s.top_k_ > 0 && !s.pick_mode_) {
      sampling::TopCandidates(s.logits(), static_cast<size_t>(s.top_k_), &s.top_);
      s.has_top_ = true;
      s.top_from_k_ = s.top_k_;
    }
  }
  return Status::OK();
}

Result<GenerateResult> Engine::Generate(Sequence& seq, std::span<const int32_t> prompt,
                                        const GenerateRequest& req, const TokenCallback& on_token) {
  return Generate(seq, prompt, req, on_token, [this](Sequence& s, int32_t tok) {
    return Feed(s, std::span<const int32_t>(&tok, 1));
  });
}

Result<GenerateResult> Engine::Generate(Sequence& seq, std::span<const int32_t> prompt,
                                        const GenerateRequest& req, const TokenCallback& on_token,
                                        const FeedOne& feed_one) {
  GenerateResult res;
  sampling::Sampler sampler(req.sampler);
  // A plain greedy sampler needs only each step's pick: the backend makes it (on the device for
  // Vulkan) instead of returning a logits row per token.
  const bool pick = sampler.PlainGreedy();
  // A top-k sampler needs only the row's best k: the backend returns them instead.
  const int32_t topk =
      pick ? 0 : sampler.CandidatesNeeded(static_cast<int32_t>(model::Backend::kMaxTopCandidates));
  seq.set_greedy_pick_mode(pick);
  seq.set_top_candidates(topk);
  const double t0 = Now();
  GARNET_RETURN_IF_ERROR(Feed(seq, prompt));
  const double t1 = Now();
  res.timing.prompt_tokens = static_cast<int64_t>(prompt.size());
  res.timing.prompt_seconds = t1 - t0;
  if (seq.n_past() == 0) {
    return Status::FailedPrecondition("generate", "empty prompt on an empty sequence");
  }
  if (topk > 0 && !(seq.has_top_ && seq.top_from_k_ >= topk) && !seq.logits().empty()) {
    sampling::TopCandidates(seq.logits(), static_cast<size_t>(topk), &seq.top_);  // empty prompt
    seq.has_top_ = true;
    seq.top_from_k_ = topk;
  }
  const bool ready =
      pick || (topk > 0 ? seq.has_top_ && seq.top_from_k_ >= topk : !seq.logits().empty());
  if (!ready) {
    return Status::FailedPrecondition(
        "generate",
        "empty prompt and the sequence holds no logits (its last feed returned only a "
        "greedy pick or fewer candidates); feed at least one token");
  }
  std::vector<int32_t> stops = req.stop_ids;
  if (stops.empty() && tokenizer_) stops = chat::StopTokenIds(*tokenizer_);
  std::unique_ptr<tok::StreamDecoder> decoder;
  if (tokenizer_) decoder = std::make_unique<tok::StreamDecoder>(tokenizer_.get());
  chat::StopMatcher matcher(req.stop_strings);
  double t_first = 0;
  res.finish = FinishReason::kMaxTokens;
  for (int32_t i = 0; i < req.max_tokens; ++i) {
    if (req.cancel != nullptr && req.cancel->load()) {
      res.finish = FinishReason::kCancelled;
      break;
    }
    const int32_t tok = pick       ? seq.greedy_pick()
                        : topk > 0 ? sampler.SampleTop(seq.top_candidates())
                                   : sampler.Sample(seq.logits());
    if (tok < 0) return Status::Internal("generate", "sampler found no token (all banned?)");
    if (i == 0) {
      t_first = Now();
      res.timing.ttft_seconds = t_first - t0;
    }
    if (std::find(stops.begin(), stops.end(), tok) != stops.end()) {
      res.finish = FinishReason::kStopToken;
      break;
    }
    sampler.Accept(tok);
    res.tokens.push_back(tok);
    ++res.timing.generated_tokens;
    std::string piece = decoder ? decoder->Push(tok) : std::string();
    auto m = matcher.Push(piece);
    res.text += m.text;
    bool go_on = on_token ? on_token(tok, m.text) : true;
    if (m.stopped) {
      res.finish = FinishReason::kStopString;
      break;
    }
    if (!go_on) {
      res.finish = FinishReason::kCancelled;
      break;
    }
    if (i + 1 == req.max_tokens) break;
    if (seq.n_past() >= options_.n_ctx) {
      res.finish = FinishReason::kContextFull;
      break;
    }
    GARNET_RETURN_IF_ERROR(feed_one(seq, tok));
  }
  if (res.finish != FinishReason::kStopString) {
    std::string tail = (decoder ? decoder->Flush() : std::string());
    auto m = matcher.Push(tail);
    std::string rest = m.text + (m.stopped ? std::string() : matcher.Flush());
    if (m.stopped) res.finish = FinishReason::kStopString;
    res.text += rest;
    if (!rest.empty() && on_token) on_token(-1, rest);
  }
  if (t_first > 0) res.timing.decode_seconds = Now() - t_first;
  return res;
}

}  // namespace garnet::engine
