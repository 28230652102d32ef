// Internal to daemon/: factories for the three garnet.v1 services. The gRPC service types stay
// out of this header; the Server registers the returned objects with its builder.
#pragma once

#include <memory>

namespace grpc {
class Service;
}

namespace garnet::daemon {

struct ServiceContext;

std::unique_ptr<grpc::Service> MakeModelsService(const ServiceContext* ctx);
std::unique_ptr<grpc::Service> MakeInferenceService(const ServiceContext* ctx);
std::unique_ptr<grpc::Service> MakeSystemService(const ServiceContext* ctx);

}  // namespace garnet::daemon
