// garnetd: the garnet model daemon. See daemon/README.md and `garnetd --help`.
//
// Exit codes: 0 after a clean shutdown (SIGTERM / SIGINT), 1 when it cannot start, 2 for usage
// errors (unknown flag, bad value).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "daemon/server.h"

int main(int argc, char** argv) {
  using namespace garnet::daemon;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(ConfigUsage().c_str(), stdout);
      return 0;
    }
  }
  // Signals are taken by a dedicated thread (sigwait), never by async handlers.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto config = LoadConfig(args, [](const char* name) { return std::getenv(name); });
  if (!config.ok()) {
    std::fprintf(stderr, "garnetd: %s\n", config.status().message().c_str());
    return config.status().IsNotFound() ? 1 : 2;
  }
  auto server = Server::Start(*config);
  if (!server.ok()) {
    std::fprintf(stderr, "garnetd: cannot start: %s\n", server.status().message().c_str());
    return 1;
  }
  Server* s = server->get();
  std::thread signals([s, set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "garnetd: received signal %d\n", sig);
    s->Shutdown();
  });
  s->Wait();
  signals.join();  // only the signal thread shuts the server down
  // Shutdown() released everything that matters (jobs joined, engines unloaded, database closed,
  // socket removed). Destroying the gRPC server object and the library's teardown at exit can
  // take over a second, so the process ends here instead.
  (void)server->release();
  std::fflush(nullptr);
  std::_Exit(0);
}
