#include "daemon/rpc_util.h"

#include <ctime>

#include "daemon/metrics.h"

namespace garnet::daemon {

Status CheckAuth(const grpc::CallbackServerContext* ctx, const std::string& token) {
  if (token.empty()) return Status::OK();
  if (ctx->peer().rfind("unix:", 0) == 0) return Status::OK();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return Status::Unauthenticated("garnetd",
                                   "missing token: send `authorization: Bearer <token>` "
                                   "(garnet: set GARNET_TOKEN)");
  }
  const std::string got(it->second.data(), it->second.size());
  const std::string want = "Bearer " + token;
  // Constant-time comparison: the token's length is not secret, its bytes are.
  bool same = got.size() == want.size();
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff |= static_cast<unsigned char>(want[i] ^ (i < got.size() ? got[i] : 0));
  }
  if (!same || diff != 0) return Status::Unauthenticated("garnetd", "wrong token");
  return Status::OK();
}

void LogRequest(const char* method, const std::string& model, const Status& status, double seconds,
                const std::string& extra) {
  Metrics::Global().CountRequest("grpc", method, std::string(CodeName(status.code())));
  // Model names are validated references or user text; keep the line single and printable.
  std::string m = model.substr(0, 128);
  for (char& ch : m) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  }
  std::fprintf(stderr, "garnetd: %s%s%s %s %.3fs%s%s\n", method, m.empty() ? "" : " ", m.c_str(),
               status.ok() ? "ok" : std::string(CodeName(status.code())).c_str(), seconds,
               extra.empty() ? "" : " ", extra.c_str());
}

}  // namespace garnet::daemon
