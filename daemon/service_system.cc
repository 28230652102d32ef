// garnet.v1.System: version and build facts.
#include "daemon/config.h"
#include "daemon/fit.h"
#include "daemon/rpc_util.h"
#include "daemon/services.h"
#include "garnet/v1/garnet.grpc.pb.h"

#ifndef GARNET_VERSION
#define GARNET_VERSION "0.0.0"
#endif

namespace garnet::daemon {
namespace {

namespace pb = ::garnet::v1;

class SystemService final : public pb::System::CallbackService {
 public:
  explicit SystemService(const ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Version(grpc::CallbackServerContext* call, const pb::VersionRequest*,
                                    pb::VersionResponse* resp) override {
    auto* r = call->DefaultReactor();
    Status st = CheckAuth(call, ctx_->config->token);
    if (st.ok()) {
      resp->set_version(GARNET_VERSION);
      resp->set_api("garnet.v1");
      resp->add_backends("cpu");
#if GARNET_HAVE_VULKAN
      if (!MachineGpus().empty()) resp->add_backends("vulkan");
#endif
#ifdef NDEBUG
      resp->set_build(std::string("release, g++ ") + __VERSION__);
#else
      resp->set_build(std::string("debug, g++ ") + __VERSION__);
#endif
    }
    r->Finish(ToGrpc(st));
    return r;
  }

 private:
  const ServiceContext* ctx_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeSystemService(const ServiceContext* ctx) {
  return std::make_unique<SystemService>(ctx);
}

}  // namespace garnet::daemon
