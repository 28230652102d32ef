#include "daemon/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/codegen/service_type.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <vector>

#include "daemon/http_api.h"
#include "daemon/jobs.h"
#include "daemon/model_manager.h"
#include "daemon/registry_client.h"
#include "daemon/rpc_util.h"
#include "daemon/services.h"

namespace garnet::daemon {
namespace {

constexpr uint32_t kMaxJobs = 512;

// Creates the socket's directory (0700 when we create it) and clears a stale socket file.
Status PrepareSocket(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("socket " + path, "path is too long for a Unix socket");
  }
  const std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty()) {
    // Parents as usual, the socket's own directory private.
    for (size_t pos = 1; pos != std::string::npos;) {
      pos = dir.find('/', pos + 1);
      const std::string part = dir.substr(0, pos);
      if (mkdir(part.c_str(), pos == std::string::npos ? 0700 : 0755) != 0 && errno != EEXIST) {
        return PosixError("socket directory " + part, errno);
      }
    }
    struct stat st {};
    if (stat(dir.c_str(), &st) != 0) return PosixError("socket directory " + dir, errno);
    if (!S_ISDIR(st.st_mode))
      return Status::InvalidArgument("socket directory " + dir, "not a directory");
    if (st.st_uid != getuid()) {
      return Status::PermissionDenied("socket directory " + dir, "is owned by another user");
    }
    if ((st.st_mode & 0022) != 0 && !(st.st_mode & S_ISVTX)) {
      return Status::PermissionDenied("socket directory " + dir,
                                      "is writable by other users; use a private directory");
    }
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists("socket " + path, "exists and is not a socket");
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    const bool live = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (fd >= 0) close(fd);
    if (live) {
      return Status::AlreadyExists("socket " + path, "another garnetd is already listening there");
    }
    if (unlink(path.c_str()) != 0) return PosixError("stale socket " + path, errno);
  }
  return Status::OK();
}

}  // namespace

struct Server::Impl {
  Config config;
  std::unique_ptr<RegistryClient> registry;
  std::unique_ptr<ModelManager> models;
  std::unique_ptr<Jobs> jobs;
  ServiceContext ctx;
  std::vector<std::unique_ptr<grpc::Service>> services;
  std::unique_ptr<grpc::Server> grpc_server;
  std::string unix_target;
  std::string tcp_target;
  std::string mirror_url;
  std::unique_ptr<HttpApi> http;

  std::mutex mu;
  std::condition_variable cv;
  bool shutting_down = false;
  bool done = false;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  Shutdown();
}

Result<std::unique_ptr<Server>> Server::Start(const Config& config) {
  GARNET_RETURN_IF_ERROR(ValidateConfig(config));
  auto impl = std::make_unique<Impl>();
  impl->config = config;

  RegistryOptions ro;
  ro.data_dir = config.data_dir;
  ro.catalog = config.catalog;
  ro.base_url = config.base_url;
  ro.hf_token = config.hf_token;
  ro.download_attempts = config.download_attempts;
  GARNET_ASSIGN_OR_RETURN(impl->registry, RegistryClient::Open(ro));
  if (!config.mirror_listen.empty()) {
    GARNET_ASSIGN_OR_RETURN(impl->mirror_url, impl->registry->StartMirror(config.mirror_listen));
    std::fprintf(stderr, "garnetd: mirror serving the store at %s\n", impl->mirror_url.c_str());
  }

  ManagerOptions mo;
  mo.default_ctx = config.default_ctx;
  mo.default_parallel = config.parallel;
  mo.max_queue = config.max_queue;
  mo.max_loaded = config.max_loaded_models;
  mo.default_keep_alive_s = config.keep_alive_seconds;
  mo.memory_limit = config.memory_limit;
  mo.threads = config.threads;
  mo.default_backend = config.backend;
  RegistryClient* reg = impl->registry.get();
  impl->models = std::make_unique<ModelManager>(
      mo, [reg](const std::string& ref) { return reg->Resolve(ref); });
  impl->jobs = std::make_unique<Jobs>(kMaxJobs);

  impl->ctx.config = &impl->config;
  impl->ctx.registry = impl->registry.get();
  impl->ctx.models = impl->models.get();
  impl->ctx.jobs = impl->jobs.get();
  impl->services.push_back(MakeModelsService(&impl->ctx));
  impl->services.push_back(MakeInferenceService(&impl->ctx));
  impl->services.push_back(MakeSystemService(&impl->ctx));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(config.max_prompt_bytes * 2 + (1 << 20), 1u << 30)));
  if (config.socket != "off") {
    GARNET_RETURN_IF_ERROR(PrepareSocket(config.socket));
    impl->unix_target = "unix:" + config.socket;
    builder.AddListeningPort(impl->unix_target, grpc::InsecureServerCredentials());
  }
  int tcp_port = 0;
  if (!config.listen.empty()) {
    builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &tcp_port);
  }
  for (auto& s : impl->services) builder.RegisterService(s.get());

  const mode_t old_umask = umask(0177);  // the socket file is created 0600
  impl->grpc_server = builder.BuildAndStart();
  umask(old_umask);
  if (!impl->grpc_server) {
    return Status::Unavailable(
        "garnetd", "cannot listen on " +
                       (impl->unix_target.empty() ? std::string() : impl->unix_target + " ") +
                       config.listen);
  }
  if (!config.listen.empty()) {
    if (tcp_port == 0) {
      impl->grpc_server->Shutdown();
      return Status::Unavailable("garnetd", "cannot listen on " + config.listen);
    }
    impl->tcp_target =
        config.listen.substr(0, config.listen.rfind(':')) + ":" + std::to_string(tcp_port);
  }
  if (!impl->unix_target.empty()) chmod(config.socket.c_str(), 0600);
  if (!config.http_listen.empty()) {
    HttpOptions ho;
    ho.listen = config.http_listen;
    ho.allowed_hosts = config.http_allowed_hosts;
    ho.cors_origin = config.cors_origin;
    ho.token = config.token;
    ho.max_body_bytes = config.max_prompt_bytes * 2 + (64 << 10);
    auto http = HttpApi::Start(ho, &impl->config, impl->models.get(), impl->registry.get());
    if (!http.ok()) {
      impl->grpc_server->Shutdown();
      return http.status();
    }
    impl->http = std::move(http).value();
    std::fprintf(stderr, "garnetd: OpenAI-compatible HTTP at %s\n", impl->http->base_url().c_str());
  }
  // Pulls the last run left unfinished (stopped or killed mid-pull) continue in the background,
  // from their partials.
  for (const std::string& name : impl->registry->InterruptedPulls()) {
    RegistryClient* reg = impl->registry.get();
    Status st = impl->jobs->Run(
        std::make_shared<std::atomic<bool>>(false), [reg, name](const std::atomic<bool>& cancel) {
          const auto t0 = std::chrono::steady_clock::now();
          Status s = reg->Pull(name, nullptr, &cancel);
          LogRequest("Pull", name, s,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                     "resumed after a restart");
        });
    std::fprintf(stderr, "garnetd: resuming the interrupted pull of %s%s\n", name.c_str(),
                 st.ok() ? "" : (": " + st.message()).c_str());
  }
  std::fprintf(stderr, "garnetd: listening on %s%s%s (data dir %s)\n", impl->unix_target.c_str(),
               impl->tcp_target.empty() ? "" : " and tcp ", impl->tcp_target.c_str(),
               impl->registry->data_dir().c_str());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::Wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->done; });
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  {
    std::unique_lock lock(impl_->mu);
    if (impl_->shutting_down) {
      impl_->cv.wait(lock, [&] { return impl_->done; });
      return;
    }
    impl_->shutting_down = true;
  }
  std::fprintf(stderr, "garnetd: shutting down\n");
  const auto deadline = std::chrono::steady_clock::now() + grace;
  if (auto* health = impl_->grpc_server->GetHealthCheckService()) health->Shutdown();
  impl_->models->Shutdown();         // queued requests fail, new ones are refused
  impl_->registry->BeginShutdown();  // pulls cancelled now resume on the next start
  impl_->jobs->CancelAll();          // running pulls / generations stop at their next check
  if (impl_->http) impl_->http->Stop();
  impl_->jobs->Join();
  // Let the calls the jobs served send their last messages and status (bounded by `grace`),
  // then stop gRPC at once. A deadline-less Shutdown would wait for every client channel to
  // close, even idle ones, until the grace ran out; after this point nothing is left to flush,
  // so the remaining (idle) connections are cut right away.
  if (!impl_->jobs->WaitCallsDone(deadline)) {
    std::fprintf(stderr, "garnetd: calls still open after the grace period; cancelling them\n");
  }
  impl_->grpc_server->Shutdown(std::chrono::system_clock::now());
  impl_->grpc_server->Wait();
  impl_->http.reset();
  impl_->models.reset();    // unloads every engine
  impl_->registry.reset();  // closes the database
  if (!impl_->unix_target.empty()) unlink(impl_->config.socket.c_str());
  std::fprintf(stderr, "garnetd: stopped\n");
  {
    std::lock_guard lock(impl_->mu);
    impl_->done = true;
  }
  impl_->cv.notify_all();
}

std::string Server::unix_target() const {
  return impl_->unix_target;
}
std::string Server::tcp_target() const {
  return impl_->tcp_target;
}
std::string Server::mirror_url() const {
  return impl_->mirror_url;
}

}  // namespace garnet::daemon
