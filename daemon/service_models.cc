// garnet.v1.Models: the registry over gRPC. Quick reads (List, Show, Catalog, Delete) run in the
// reaction; downloads, hashing and imports run on Jobs threads.
#include <map>

#include "daemon/config.h"
#include "daemon/convert.h"
#include "daemon/model_manager.h"
#include "daemon/registry_client.h"
#include "daemon/rpc_util.h"
#include "daemon/services.h"
#include "garnet/v1/garnet.grpc.pb.h"

namespace garnet::daemon {
namespace {

namespace pb = ::garnet::v1;

pb::PullPhase PhaseToPb(PullEvent::Phase p) {
  switch (p) {
    case PullEvent::Phase::kResolving:
      return pb::PULL_PHASE_RESOLVING;
    case PullEvent::Phase::kWaiting:
      return pb::PULL_PHASE_WAITING;
    case PullEvent::Phase::kDownloading:
      return pb::PULL_PHASE_DOWNLOADING;
    case PullEvent::Phase::kVerifying:
      return pb::PULL_PHASE_VERIFYING;
    case PullEvent::Phase::kFileDone:
      return pb::PULL_PHASE_FILE_DONE;
    case PullEvent::Phase::kRegistered:
      return pb::PULL_PHASE_REGISTERED;
  }
  return pb::PULL_PHASE_UNSPECIFIED;
}

class ModelsService final : public pb::Models::CallbackService {
 public:
  explicit ModelsService(const ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerWriteReactor<pb::PullProgress>* Pull(grpc::CallbackServerContext* call,
                                                   const pb::PullRequest* req) override {
    // A copy, not a reference: the job captures it and outlives the request.
    const std::string model = req->model();  // NOLINT(performance-unnecessary-copy-initialization)
    Status auth = CheckAuth(call, ctx_->config->token);
    RegistryClient* reg = ctx_->registry;
    return StreamWriter<pb::PullProgress>::Start(
        ctx_->jobs,
        [auth, model, reg](StreamWriter<pb::PullProgress>* w, const std::atomic<bool>& cancel) {
          const auto t0 = SteadyClock::now();
          Status st = auth;
          uint64_t bytes = 0;
          if (st.ok() && model.empty()) {
            st = Status::InvalidArgument("pull", "no model given (e.g. gemma4:e4b)");
          }
          if (st.ok()) {
            st = reg->Pull(
                model,
                [&](const PullEvent& ev) {
                  pb::PullProgress p;
                  p.set_phase(PhaseToPb(ev.phase));
                  p.set_model(ev.model);
                  p.set_digest(ev.digest);
                  p.set_file(ev.file);
                  p.set_file_index(ev.file_index);
                  p.set_file_count(ev.file_count);
                  p.set_completed(ev.completed);
                  p.set_total(ev.total);
                  p.set_bytes_per_second(ev.bytes_per_second);
                  bytes = ev.completed;
                  w->Write(std::move(p), ev.phase == PullEvent::Phase::kDownloading);
                },
                &cancel);
          }
          LogRequest("Pull", model, st, SecondsSince(t0), std::to_string(bytes) + " bytes");
          w->Finish(st);
        });
  }

  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* call, const pb::ListRequest*,
                                 pb::ListResponse* resp) override {
    auto* r = call->DefaultReactor();
    const auto t0 = SteadyClock::now();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) {
      auto rows = ctx_->registry->List();
      if (rows.ok()) {
        for (const auto& m : *rows) ToPb(m, resp->add_models());
      } else {
        st = rows.status();
      }
    }
    LogRequest("List", "", st, SecondsSince(t0));
    r->Finish(ToGrpc(st));
    return r;
  }

  grpc::ServerUnaryReactor* Show(grpc::CallbackServerContext* call, const pb::ShowRequest* req,
                                 pb::ShowResponse* resp) override {
    auto* r = call->DefaultReactor();
    const auto t0 = SteadyClock::now();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) {
      auto shown = ctx_->registry->Show(req->model());
      if (shown.ok()) {
        ToPb(shown->manifest, resp->mutable_model());
        for (const TypeCount& t : shown->tensor_types) {
          auto* c = resp->add_tensor_types();
          c->set_type(t.type);
          c->set_count(t.count);
          c->set_bytes(t.bytes);
        }
        if (shown->catalog.has_value()) ToPb(*shown->catalog, resp->mutable_catalog());
      } else {
        st = shown.status();
      }
    }
    LogRequest("Show", req->model(), st, SecondsSince(t0));
    r->Finish(ToGrpc(st));
    return r;
  }

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* call, const pb::DeleteRequest* req,
                                   pb::DeleteResponse* resp) override {
    auto* r = call->DefaultReactor();
    const auto t0 = SteadyClock::now();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) {
      // A loaded model is unloaded first (its file would stay mapped otherwise).
      if (auto name = ctx_->registry->CanonicalName(req->model()); name.ok()) {
        (void)ctx_->models->Unload(*name);
      }
      auto res = ctx_->registry->Delete(req->model());
      if (res.ok()) {
        resp->set_freed_bytes(res->freed_bytes);
        for (const auto& d : res->removed_blobs) resp->add_removed_blobs(d);
      } else {
        st = res.status();
      }
    }
    LogRequest("Delete", req->model(), st, SecondsSince(t0));
    r->Finish(ToGrpc(st));
    return r;
  }

  grpc::ServerUnaryReactor* Verify(grpc::CallbackServerContext* call, const pb::VerifyRequest* req,
                                   pb::VerifyResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    // A copy, not a reference: the job captures it and outlives the request.
    const std::string model = req->model();  // NOLINT(performance-unnecessary-copy-initialization)
    RegistryClient* reg = ctx_->registry;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>& cancel) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        auto checks = reg->Verify(model, &cancel);
        if (checks.ok()) {
          bool all_ok = true;
          for (const BlobCheck& c : *checks) {
            auto* b = resp->add_blobs();
            b->set_digest(c.digest);
            b->set_ok(c.status.ok());
            b->set_error(c.status.message());
            all_ok = all_ok && c.status.ok();
          }
          resp->set_ok(all_ok);
        } else {
          st = checks.status();
        }
      }
      LogRequest("Verify", model, st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Import(grpc::CallbackServerContext* call, const pb::ImportRequest* req,
                                   pb::ImportResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    // A copy, not a reference: the job captures it and outlives the request.
    const std::string path = req->path();  // NOLINT(performance-unnecessary-copy-initialization)
    // A copy, not a reference: the job captures it and outlives the request.
    const std::string name = req->name();  // NOLINT(performance-unnecessary-copy-initialization)
    RegistryClient* reg = ctx_->registry;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>&) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        auto row = reg->Import(path, name);
        if (row.ok()) {
          ToPb(*row, resp->mutable_model());
        } else {
          st = row.status();
        }
      }
      LogRequest("Import", name, st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Prune(grpc::CallbackServerContext* call, const pb::PruneRequest*,
                                  pb::PruneResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    RegistryClient* reg = ctx_->registry;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>&) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        auto res = reg->Prune();
        if (res.ok()) {
          resp->set_freed_bytes(res->freed_bytes);
          resp->set_blobs_removed(res->blobs_removed);
          resp->set_partials_removed(res->partials_removed);
        } else {
          st = res.status();
        }
      }
      LogRequest("Prune", "", st, SecondsSince(t0));
      return st;
    });
  }

  grpc::ServerUnaryReactor* Catalog(grpc::CallbackServerContext* call, const pb::CatalogRequest*,
                                    pb::CatalogResponse* resp) override {
    Status auth = CheckAuth(call, ctx_->config->token);
    const ServiceContext* ctx = ctx_;
    return JobUnaryReactor::Start(ctx_->jobs, [=](const std::atomic<bool>&) {
      const auto t0 = SteadyClock::now();
      Status st = auth;
      if (st.ok()) {
        for (const registry::CatalogEntry& e : ctx->registry->catalog().entries()) {
          pb::CatalogModel* m = resp->add_models();
          ToPb(e, m);
          auto resolved = ctx->registry->Resolve(e.id);
          m->set_pulled(resolved.ok());
          if (resolved.ok()) {
            auto fit = PlanFit(*resolved, FitParams{}, ctx->config->default_ctx);
            if (fit.ok()) m->set_fit(ToPb(fit->plan.verdict));
          }
        }
      }
      LogRequest("Catalog", "", st, SecondsSince(t0));
      return st;
    });
  }

 private:
  const ServiceContext* ctx_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeModelsService(const ServiceContext* ctx) {
  return std::make_unique<ModelsService>(ctx);
}

}  // namespace garnet::daemon
