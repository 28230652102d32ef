#include "cli/client.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace garnet::cli {

Connection Connect(const std::string& host_flag) {
  std::string host = host_flag;
  if (host.empty()) {
    if (const char* h = std::getenv("GARNET_HOST"); h != nullptr) host = h;
  }
  if (host.empty()) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    if (xdg != nullptr && xdg[0] == '/') {
      host = std::string(xdg) + "/garnet/garnetd.sock";
    } else {
      host = "/tmp/garnet-" + std::to_string(getuid()) + "/garnetd.sock";
    }
  }
  Connection c;
  if (host.rfind("unix://", 0) == 0) {
    c.target = "unix:" + host.substr(7);
  } else if (host.rfind("unix:", 0) == 0) {
    c.target = host;
  } else if (!host.empty() && host[0] == '/') {
    c.target = "unix:" + host;
  } else {
    c.target = host;
  }
  if (const char* t = std::getenv("GARNET_TOKEN"); t != nullptr) c.token = t;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  c.channel = grpc::CreateCustomChannel(c.target, grpc::InsecureChannelCredentials(), args);
  return c;
}

std::unique_ptr<grpc::ClientContext> NewContext(const Connection& c, double timeout_s) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!c.token.empty()) ctx->AddMetadata("authorization", "Bearer " + c.token);
  if (timeout_s > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
  return ctx;
}

bool IsNotRunning(const grpc::Status& s, const Connection& c) {
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  return c.channel == nullptr || c.channel->GetState(false) != GRPC_CHANNEL_READY;
}

int Fail(const grpc::Status& s, const Connection& c) {
  if (IsNotRunning(s, c)) {
    std::fprintf(stderr,
                 "error: garnetd is not running at %s; start it with `garnet serve` (or set "
                 "--host / GARNET_HOST)\n",
                 c.target.c_str());
  } else {
    std::fprintf(stderr, "error: %s\n", s.error_message().c_str());
  }
  return kExitError;
}

}  // namespace garnet::cli
