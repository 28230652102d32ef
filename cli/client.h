// How `garnet` reaches garnetd: target resolution (--host, GARNET_HOST, the default socket), the
// channel, the token, and turning a gRPC failure into a message and an exit code.
//
// Internal to cli/. Includes grpcpp (not the generated API headers).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace garnet::cli {

// Exit codes scripts can rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

struct Connection {
  std::string target;  // what gRPC dials: "unix:/run/.../garnetd.sock" or "host:port"
  std::string token;   // GARNET_TOKEN
  std::shared_ptr<grpc::Channel> channel;
};

// --host value (may be empty) -> connection. Accepts "unix:/path", "unix:///path", "/path",
// "host:port". Default: $GARNET_HOST, else the daemon's default socket path.
Connection Connect(const std::string& host_flag);

// A client context with the token attached and an optional deadline (seconds, 0: none).
std::unique_ptr<grpc::ClientContext> NewContext(const Connection& c, double timeout_s = 0);

// Prints the failure to stderr ("error: ..."; a hint to start the daemon when nothing answers)
// and returns kExitError.
int Fail(const grpc::Status& status, const Connection& c);

// True when the failure means nothing is listening at the target: UNAVAILABLE while the
// channel is not connected (an UNAVAILABLE sent by the daemon itself, e.g. an unreachable
// upstream during a pull, arrives over a ready channel).
bool IsNotRunning(const grpc::Status& status, const Connection& c);

}  // namespace garnet::cli
