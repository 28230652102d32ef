// garnet.v1.Inference: fit, model lifecycle and generation. Everything that may wait for a
// model load, a slot or the engine runs on a Jobs thread; Ps answers from the reaction.
#include <algorithm>
#include <cmath>

#include "daemon/config.h"
#include "daemon/convert.h"
#include "daemon/fit.h"
#include "daemon/generation.h"
#include "daemon/metrics.h"
#include "daemon/model_manager.h"
#include "daemon/registry_client.h"
#include "daemon/rpc_util.h"
#include "daemon/services.h"
#include "engine/model/chat.h"
#include "engine/model/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "garnet/v1/garnet.grpc.pb.h"

namespace garnet::daemon {
namespace {

namespace pb = ::garnet::v1;

LoadOptions FromPb(const pb::ModelOptions& o) {
  LoadOptions l;
  l.ctx = o.ctx();
  l.parallel = o.parallel();
  l.kv_type = o.kv_type();
  l.backend = o.backend();
  l.threads = o.threads();
  return l;
}

Status ValidateKeepAlive(int64_t s) {
  if (s > int64_t{365} * 86400) {
    return Status::InvalidArgument("keep_alive_seconds", "exceeds one year");
  }
  return Status::OK();
}

SamplingOptions SamplingFromPb(const pb::Sampling& s) {
  SamplingOptions o;
  if (s.has_temperature()) o.temperature = s.temperature();
  if (s.has_top_k()) o.top_k = s.top_k();
  if (s.has_top_p()) o.top_p = s.top_p();
  if (s.has_min_p()) o.min_p = s.min_p();
  if (s.has_repeat_penalty()) o.repeat_penalty = s.repeat_penalty();
  if (s.has_presence_penalty()) o.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) o.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) o.seed = s.seed();
  return o;
}

pb::FinishReason FinishToPb(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kStopToken:
      return pb::FINISH_REASON_STOP;
    case engine::FinishReason::kStopString:
      return pb::FINISH_REASON_STOP_STRING;
    case engine::FinishReason::kMaxTokens:
      return pb::FINISH_REASON_LENGTH;
    case engine::FinishReason::kCancelled:
      return pb::FINISH_REASON_CANCELLED;
    case engine::FinishReason::kContextFull:
      return pb::FINISH_REASON_CONTEXT_FULL;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

void RunStream(const ServiceContext* ctx, const GenerationRequest& job, const char* method,
               StreamWriter<pb::GenerateResponse>* w, const std::atomic<bool>& cancel,
               Status auth) {
  const auto t0 = SteadyClock::now();
  Status st = auth;
  GenerationResult g;
  if (st.ok()) {
    auto res = RunGeneration(
        *ctx->models, *ctx->config, job,
        [&](int32_t token, std::string_view text) {
          pb::GenerateResponse msg;
          msg.set_text(std::string(text));
          msg.set_token(token);
          return w->Write(std::move(msg));
        },
        cancel);
    if (res.ok()) {
      g = std::move(res).value();
    } else {
      st = res.status();
    }
  }
  const engine::Timing& tm = g.result.timing;
  if (st.ok()) {
    Metrics::Global().ObserveGeneration(tm.prompt_tokens, tm.generated_tokens, tm.ttft_seconds,
                                        tm.decode_tok_s());
    pb::GenerateResponse last;
    last.set_token(-1);
    pb::Done* done = last.mutable_done();
    done->set_finish_reason(FinishToPb(g.result.finish));
    done->set_model(g.model.name);
    pb::Timing* t = done->mutable_timing();
    t->set_load_seconds(g.load_seconds);
    t->set_queue_seconds(g.queue_seconds);
    t->set_ttft_seconds(tm.ttft_seconds);
    t->set_prompt_tokens(tm.prompt_tokens);
    t->set_prompt_seconds(tm.prompt_seconds);
    t->set_prompt_tokens_per_second(tm.prompt_tok_s());
    t->set_generated_tokens(tm.generated_tokens);
    t->set_decode_seconds(tm.decode_seconds);
    t->set_decode_tokens_per_second(tm.decode_tok_s());
    t->set_total_seconds(g.total_seconds);
    pb::ExecutionPath* p = done->mutable_path();
    p->set_backend(g.backend);
    p->set_batched_prefill(true);  // Engine::Feed runs the prompt in ubatch chunks
    p->set_layers_on_host(g.model.layers_on_host);
    p->set_expert_sets_on_host(g.model.expert_sets_on_host);
    p->set_placement(g.model.placement);
    p->set_max_decode_batch(static_cast<uint32_t>(g.max_decode_batch));
    w->Write(std::move(last));
  }
  char extra[160] = "";
  if (st.ok()) {
    std::snprintf(extra, sizeof extra,
                  "prompt %lld tok %.1f tok/s, ttft %.3fs, %lld tok %.1f tok/s, %s",
                  static_cast<long long>(tm.prompt_tokens), tm.prompt_tok_s(), tm.ttft_seconds,
                  static_cast<long long>(tm.generated_tokens), tm.decode_tok_s(),
                  std::string(engine::FinishReasonName(g.result.finish)).c_str());
  }
  LogRequest(method, job.model, st, SecondsSince(t0), extra);
  w->Finish(st);
}

class InferenceService final : public pb::Inference::CallbackService {
 public:
  explicit InferenceService(const ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Fit(grpc::CallbackServerContext* call, const pb::FitRequest* req,
                                pb::FitResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    const pb::FitRequest r = *req;
    const ServiceContext* ctx = ctx_;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>&) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        FitParams p;
        p.ctx = r.ctx();
        p.parallel = r.parallel();
        p.ubatch = r.ubatch();
        p.kv_type = r.kv_type();
        switch (r.policy()) {
          case pb::PLACEMENT_POLICY_CPU:
            p.policy = plan::PolicyMode::kCpuOnly;
            break;
          case pb::PLACEMENT_POLICY_EXPERTS_CPU:
            p.policy = plan::PolicyMode::kExpertsOnHost;
            break;
          case pb::PLACEMENT_POLICY_GPU_LAYERS:
            p.policy = plan::PolicyMode::kGpuLayers;
            break;
          default:
            p.policy = plan::PolicyMode::kAuto;
        }
        p.gpu_layers = r.gpu_layers();
        p.vram_bytes.assign(r.vram_bytes().begin(), r.vram_bytes().end());
        p.ram_bytes = r.ram_bytes();
        p.cpu_only = r.cpu_only();
        auto model = ctx->registry->Resolve(r.model());
        if (!model.ok()) {
          st = model.status();
        } else {
          auto fit = PlanFit(*model, p, ctx->config->default_ctx);
          if (!fit.ok()) {
            st = fit.status();
          } else {
            resp->set_model(model->name);
            resp->set_verdict(ToPb(fit->plan.verdict));
            resp->set_reason(fit->plan.reason);
            resp->set_ctx(fit->ctx);
            resp->set_max_ctx(fit->plan.max_ctx);
            for (const auto& d : fit->plan.devices) ToPb(d, resp->add_devices());
            resp->set_n_layer(fit->n_layer);
            resp->set_layers_on_host(fit->plan.layers_on_host());
            resp->set_expert_sets_on_host(fit->plan.expert_sets_on_host());
            resp->set_report(fit->report);
          }
        }
      }
      LogRequest("Fit", r.model(), st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Load(grpc::CallbackServerContext* call, const pb::LoadRequest* req,
                                 pb::LoadResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    // A copy, not a reference: the job captures it and outlives the request.
    const std::string model = req->model();  // NOLINT(performance-unnecessary-copy-initialization)
    const LoadOptions opts = FromPb(req->options());
    const int64_t keep = req->keep_alive_seconds();
    ModelManager* mm = ctx_->models;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>& cancel) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok() && model.empty()) st = Status::InvalidArgument("model", "no model given");
      if (st.ok()) st = ValidateKeepAlive(keep);
      if (st.ok()) {
        auto res = mm->Load(model, opts, keep, &cancel);
        if (res.ok()) {
          ToPb(res->info, resp->mutable_model());
          resp->set_load_seconds(res->load_seconds);
          resp->set_already_loaded(res->already_loaded);
        } else {
          st = res.status();
        }
      }
      LogRequest("Load", model, st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Unload(grpc::CallbackServerContext* call, const pb::UnloadRequest* req,
                                   pb::UnloadResponse*) override {
    auto* r = call->DefaultReactor();
    const auto t0 = SteadyClock::now();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) st = ctx_->models->Unload(req->model());
    LogRequest("Unload", req->model(), st, SecondsSince(t0));
    r->Finish(ToGrpc(st));
    return r;
  }

  grpc::ServerUnaryReactor* Ps(grpc::CallbackServerContext* call, const pb::PsRequest*,
                               pb::PsResponse* resp) override {
    auto* r = call->DefaultReactor();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) {
      for (const LoadedInfo& i : ctx_->models->Ps()) ToPb(i, resp->add_models());
    }
    r->Finish(ToGrpc(st));
    return r;
  }

  grpc::ServerWriteReactor<pb::GenerateResponse>* Generate(
      grpc::CallbackServerContext* call, const pb::GenerateRequest* req) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    GenerationRequest job;
    job.model = req->model();
    job.raw = req->raw();
    if (job.raw) {
      job.prompt = req->prompt();
    } else {
      if (!req->system().empty()) job.messages.push_back({chat::Role::kSystem, req->system()});
      job.messages.push_back({chat::Role::kUser, req->prompt()});
    }
    job.think = req->think();
    job.sampling = SamplingFromPb(req->sampling());
    job.max_tokens = req->max_tokens();
    job.stops.assign(req->stop().begin(), req->stop().end());
    job.options = FromPb(req->options());
    job.keep_alive_s = req->keep_alive_seconds();
    const ServiceContext* ctx = ctx_;
    return StreamWriter<pb::GenerateResponse>::Start(
        ctx_->jobs, [ctx, job = std::move(job), auth](StreamWriter<pb::GenerateResponse>* w,
                                                      const std::atomic<bool>& cancel) {
          RunStream(ctx, job, "Generate", w, cancel, auth);
        });
  }

  grpc::ServerWriteReactor<pb::GenerateResponse>* Chat(grpc::CallbackServerContext* call,
                                                       const pb::ChatRequest* req) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    GenerationRequest job;
    job.model = req->model();
    for (const auto& m : req->messages()) {
      chat::Role role = chat::Role::kUser;
      switch (m.role()) {
        case pb::ROLE_SYSTEM:
          role = chat::Role::kSystem;
          break;
        case pb::ROLE_MODEL:
          role = chat::Role::kModel;
          break;
        case pb::ROLE_USER:
          break;
        default:
          if (auth.ok()) auth = Status::InvalidArgument("messages", "a message has no role");
      }
      job.messages.push_back({role, m.content()});
    }
    job.think = req->think();
    job.sampling = SamplingFromPb(req->sampling());
    job.max_tokens = req->max_tokens();
    job.stops.assign(req->stop().begin(), req->stop().end());
    job.options = FromPb(req->options());
    job.keep_alive_s = req->keep_alive_seconds();
    const ServiceContext* ctx = ctx_;
    return StreamWriter<pb::GenerateResponse>::Start(
        ctx_->jobs, [ctx, job = std::move(job), auth](StreamWriter<pb::GenerateResponse>* w,
                                                      const std::atomic<bool>& cancel) {
          RunStream(ctx, job, "Chat", w, cancel, auth);
        });
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* call,
                                     const pb::TokenizeRequest* req,
                                     pb::TokenizeResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    const pb::TokenizeRequest r = *req;
    const ServiceContext* ctx = ctx_;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>& cancel) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok() && r.text().size() > ctx->config->max_prompt_bytes) {
        st = Status::InvalidArgument("text", "exceeds max_prompt_bytes");
      }
      if (st.ok()) {
        auto lease = ctx->models->Acquire(r.model(), {}, 0, &cancel);
        if (lease.ok()) {
          for (int32_t t :
               (*lease)->engine().tokenizer()->Encode(r.text(), r.add_bos(), r.parse_special())) {
            resp->add_tokens(t);
          }
        } else {
          st = lease.status();
        }
      }
      LogRequest("Tokenize", r.model(), st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* call,
                                       const pb::DetokenizeRequest* req,
                                       pb::DetokenizeResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    const pb::DetokenizeRequest r = *req;
    const ServiceContext* ctx = ctx_;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>& cancel) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        auto lease = ctx->models->Acquire(r.model(), {}, 0, &cancel);
        if (lease.ok()) {
          const tok::Tokenizer* tk = (*lease)->engine().tokenizer();
          std::vector<int32_t> ids(r.tokens().begin(), r.tokens().end());
          for (int32_t id : ids) {
            if (id < 0 || id >= tk->n_vocab()) {
              st = Status::InvalidArgument("tokens", "id " + std::to_string(id) +
                                                         " is outside the vocabulary of " +
                                                         std::to_string(tk->n_vocab()));
              break;
            }
          }
          if (st.ok()) resp->set_text(tk->Decode(ids));
        } else {
          st = lease.status();
        }
      }
      LogRequest("Detokenize", r.model(), st, SecondsSince(t0));
      return st;
    });
  }

 private:
  const ServiceContext* ctx_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeInferenceService(const ServiceContext* ctx) {
  return std::make_unique<InferenceService>(ctx);
}

}  // namespace garnet::daemon
