// garnet-mirror: serve model files read-only over HTTP in the Hugging Face hub's URL shape
// (registry/mirror.h), so garnetd can pull from it offline (--base-url / GARNET_MIRROR).
//
//   garnet-mirror [--listen 127.0.0.1:0] [--data-dir DIR] [--file URLPATH=FILE]...
//
// --data-dir serves every model registered in that store; --file serves one file under
// URLPATH ("garnet/gemma4-tiny/resolve/main/gemma4-tiny-f32.gguf"). Prints
// "garnet-mirror: serving at http://HOST:PORT" on stdout once listening; stops on SIGTERM/SIGINT.
// Loopback only: this is for air-gapped copies and demos, with no authentication.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config.h"
#include "registry/mirror.h"
#include "registry/registry.h"

int main(int argc, char** argv) {
  using namespace garnet;
  std::string listen = "127.0.0.1:0";
  std::string data_dir;
  std::vector<std::pair<std::string, std::string>> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::puts(
          "usage: garnet-mirror [--listen 127.0.0.1:0] [--data-dir DIR] "
          "[--file URLPATH=FILE]...");
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "garnet-mirror: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--listen") {
      listen = v;
    } else if (a == "--data-dir") {
      data_dir = v;
    } else if (a == "--file") {
      const size_t eq = v.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "garnet-mirror: --file wants URLPATH=FILE\n");
        return 2;
      }
      files.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      std::fprintf(stderr, "garnet-mirror: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (!daemon::IsLoopbackAddress(listen)) {
    std::fprintf(stderr, "garnet-mirror: refusing to listen on non-loopback %s\n", listen.c_str());
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  std::unique_ptr<registry::Registry> reg;
  if (!data_dir.empty()) {
    registry::RegistryOptions ro;
    ro.data_dir = data_dir;
    auto opened = registry::Registry::Open(ro);
    if (!opened.ok()) {
      std::fprintf(stderr, "garnet-mirror: %s\n", opened.status().message().c_str());
      return 1;
    }
    reg = std::move(opened).value();
  }
  registry::MirrorOptions mo;
  const size_t colon = listen.rfind(':');
  mo.host = listen.substr(0, colon);
  mo.port = std::atoi(listen.substr(colon + 1).c_str());
  auto mirror = registry::Mirror::Start(reg.get(), mo);
  if (!mirror.ok()) {
    std::fprintf(stderr, "garnet-mirror: %s\n", mirror.status().message().c_str());
    return 1;
  }
  for (const auto& [url, file] : files) {
    Status st = (*mirror)->ServeFile(url, file);
    if (!st.ok()) {
      std::fprintf(stderr, "garnet-mirror: %s\n", st.message().c_str());
      return 1;
    }
  }
  std::printf("garnet-mirror: serving at %s\n", (*mirror)->base_url().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  (*mirror)->Stop();
  return 0;
}
