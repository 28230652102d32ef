#include "registry/mirror.h"

#include <fcntl.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/reference.h"
#include "registry/registry.h"
#include "registry/sha256.h"

namespace garnet::registry {
namespace {

struct Served {
  std::string file;  // filesystem path
  std::string sha256;
  uint64_t size = 0;
};

// "org/repo/resolve/rev/a/b.gguf": every component valid, at least 5 of them, 3rd "resolve".
bool ValidUrlPath(std::string_view p) {
  if (p.empty() || p.size() > 2048) return false;
  std::vector<std::string_view> comps;
  size_t start = 0;
  for (;;) {
    size_t slash = p.find('/', start);
    std::string_view c = p.substr(start, slash == std::string_view::npos ? p.npos : slash - start);
    if (!ValidateComponent("url path component", c, true).ok()) return false;
    comps.push_back(c);
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return comps.size() >= 5 && comps[2] == "resolve";
}

// A file descriptor shared by a response's content provider calls.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct Mirror::Impl {
  Registry* registry = nullptr;
  MirrorOptions options;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::mutex mu;
  std::map<std::string, Served> explicit_files;  // guarded by mu
  std::map<std::string, Served> registered;      // guarded by mu
  std::atomic<uint64_t> bytes_sent{0};
  bool stopped = false;

  bool Lookup(const std::string& path, Served* out) {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = explicit_files.find(path); it != explicit_files.end()) {
      *out = it->second;
      return true;
    }
    if (auto it = registered.find(path); it != registered.end()) {
      *out = it->second;
      return true;
    }
    return false;
  }

  Status Refresh() {
    if (registry == nullptr) return Status::OK();
    GARNET_ASSIGN_OR_RETURN(std::vector<ManifestRow> rows, registry->db().ListManifests());
    std::map<std::string, Served> m;
    for (const ManifestRow& r : rows) {
      for (const ManifestFile& f : r.files) {
        if (!ValidUrlPath(f.source)) continue;  // URLs and imports are not hub-shaped
        GARNET_ASSIGN_OR_RETURN(std::string p, registry->store().BlobPath(f.digest));
        m[f.source] = Served{p, f.digest.substr(7), f.size};
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    registered = std::move(m);
    return Status::OK();
  }

  void HandleFile(const httplib::Request& req, httplib::Response& res, const std::string& path) {
    Served s;
    if (!ValidUrlPath(path)) {
      res.status = 404;
      res.set_content("not found\n", "text/plain");
      return;
    }
    if (!Lookup(path, &s)) {
      Status r = Refresh();
      if (!r.ok() || !Lookup(path, &s)) {
        res.status = 404;
        res.set_content("not found\n", "text/plain");
        return;
      }
    }
    auto fd = std::make_shared<Fd>();
    fd->fd = ::open(s.file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd->fd < 0) {
      res.status = errno == ENOENT ? 404 : 500;
      res.set_content("unavailable\n", "text/plain");
      return;
    }
    res.set_header("X-Linked-Size", std::to_string(s.size));
    res.set_header("X-Linked-Etag", "\"" + s.sha256 + "\"");
    res.set_header("ETag", "\"" + s.sha256 + "\"");
    res.set_header("Accept-Ranges", "bytes");
    (void)req;
    res.set_content_provider(static_cast<size_t>(s.size), "application/octet-stream",
                             [this, fd](size_t offset, size_t length, httplib::DataSink& sink) {
                               thread_local std::vector<char> buf(1 << 20);
                               size_t want = std::min(length, buf.size());
                               ssize_t n =
                                   ::pread(fd->fd, buf.data(), want, static_cast<off_t>(offset));
                               if (n <= 0) return false;  // file shrank: close the connection
                               if (!sink.write(buf.data(), static_cast<size_t>(n))) return false;
                               bytes_sent += static_cast<uint64_t>(n);
                               return true;
                             });
  }

  void HandleTree(httplib::Response& res, const std::string& org, const std::string& repo,
                  const std::string& rev) {
    if (!ValidateComponent("org", org, true).ok() || !ValidateComponent("repo", repo, true).ok() ||
        !ValidateComponent("rev", rev, true).ok()) {
      res.status = 404;
      return;
    }
    Status r = Refresh();
    (void)r;
    const std::string prefix = org + "/" + repo + "/resolve/" + rev + "/";
    nlohmann::json list = nlohmann::json::array();
    std::lock_guard<std::mutex> lock(mu);
    for (const auto* m : {&explicit_files, &registered}) {
      for (const auto& [path, s] : *m) {
        if (!path.starts_with(prefix)) continue;
        list.push_back({{"type", "file"},
                        {"path", path.substr(prefix.size())},
                        {"size", s.size},
                        {"lfs", {{"oid", s.sha256}, {"size", s.size}}}});
      }
    }
    if (list.empty()) {
      res.status = 404;
      res.set_content("{\"error\":\"repository not found\"}", "application/json");
      return;
    }
    res.set_content(list.dump(), "application/json");
  }
};

Mirror::Mirror(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Mirror::~Mirror() {
  Stop();
}

void Mirror::Stop() {
  if (impl_ == nullptr || impl_->stopped) return;
  impl_->stopped = true;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Result<std::unique_ptr<Mirror>> Mirror::Start(Registry* registry, MirrorOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->registry = registry;
  impl->options = options;
  Impl* p = impl.get();
  p->server.Get(R"(/api/models/([^/]+)/([^/]+)/tree/([^/?]+))",
                [p](const httplib::Request& req, httplib::Response& res) {
                  p->HandleTree(res, req.matches[1], req.matches[2], req.matches[3]);
                });
  p->server.Get(R"(/(.+))", [p](const httplib::Request& req, httplib::Response& res) {
    p->HandleFile(req, res, req.matches[1]);
  });
  GARNET_RETURN_IF_ERROR(p->Refresh());
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second
  // process bind the same port and take part of our traffic.
  p->server.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (options.port == 0) {
    p->port = p->server.bind_to_any_port(options.host);
  } else {
    p->port = p->server.bind_to_port(options.host, options.port) ? options.port : -1;
  }
  if (p->port <= 0) {
    return Status::Unavailable(
        "mirror", "cannot listen on " + options.host + ":" + std::to_string(options.port));
  }
  auto returned = std::make_shared<std::atomic<bool>>(false);
  p->thread = std::thread([p, returned] {
    p->server.listen_after_bind();
    *returned = true;
  });
  // httplib's stop() is a no-op until the accept loop runs: wait for it so Stop() cannot hang.
  while (!p->server.is_running() && !*returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (*returned) {
    p->thread.join();
    return Status::Unavailable("mirror", "the HTTP server stopped right after starting");
  }
  return std::unique_ptr<Mirror>(new Mirror(std::move(impl)));
}

Status Mirror::ServeFile(const std::string& url_path, const std::string& file_path,
                         const std::string& sha256_hex) {
  std::string path = url_path;
  if (!path.empty() && path.front() == '/') path.erase(0, 1);
  if (!ValidUrlPath(path)) {
    return Status::InvalidArgument("mirror path \"" + url_path + "\"",
                                   "expected <org>/<repo>/resolve/<rev>/<file>");
  }
  Served s;
  s.file = file_path;
  GARNET_ASSIGN_OR_RETURN(s.size, FileSize(file_path));
  if (sha256_hex.empty()) {
    GARNET_ASSIGN_OR_RETURN(s.sha256, Sha256File(file_path));
  } else {
    if (!IsLowerHex64(sha256_hex)) {
      return Status::InvalidArgument("mirror sha256", "expected 64 lower-case hex characters");
    }
    s.sha256 = sha256_hex;
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->explicit_files[path] = std::move(s);
  return Status::OK();
}

Status Mirror::Refresh() {
  return impl_->Refresh();
}
int Mirror::port() const {
  return impl_->port;
}
std::string Mirror::base_url() const {
  return "http://" + impl_->options.host + ":" + std::to_string(impl_->port);
}
uint64_t Mirror::body_bytes_sent() const {
  return impl_->bytes_sent.load();
}

}  // namespace garnet::registry
