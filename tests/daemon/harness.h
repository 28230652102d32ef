// Test harness for garnetd integration tests: real processes (garnetd, garnet-mirror, garnet,
// garnet-mkmodel) started with fork/exec on a temporary data dir and socket, plus a gRPC channel
// to the daemon. Shared by tests/daemon and tests/cli.
//
// Binary paths come from compile definitions set in tests/daemon/CMakeLists.txt.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/scratch_dir.h"

namespace grpc {
class Channel;
}

namespace garnet::testing {

std::string ReadFile(const std::string& path);
// Polls `pred` every 20 ms until true or `timeout`; returns the last value.
bool WaitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

// A child process with stdout/stderr redirected to files.
class Process {
 public:
  // Starts argv[0] with the given args; `env` entries are added to (or replace in) the
  // environment. Aborts the test binary on fork failure.
  Process(const std::vector<std::string>& argv, const std::string& out_path,
          const std::string& err_path, const std::map<std::string, std::string>& env = {});
  ~Process();  // SIGKILL + reap when still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // Waits for exit up to `timeout`; returns the exit code (128+sig for a signal), or -1 on
  // timeout.
  int Wait(std::chrono::milliseconds timeout);
  bool Running();
  std::string Out() const { return ReadFile(out_); }
  std::string Err() const { return ReadFile(err_); }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
  std::string out_, err_;
};

struct CliResult {
  int rc = -1;
  std::string out;
  std::string err;
};

// A temporary directory removed (recursively) on destruction.
using TempDir = ScratchDir;

// The world one test suite shares: the tiny model file, a mirror serving it under the catalog's
// URL path, and helpers to start daemons and run the CLI against them.
class World {
 public:
  // Writes gemma4:tiny with garnet-mkmodel and starts garnet-mirror. Aborts on failure.
  World();
  ~World();

  const std::string& dir() const { return tmp_.path(); }
  const std::string& tiny_path() const { return tiny_; }
  const std::string& mirror_url() const { return mirror_url_; }

  struct Daemon {
    std::unique_ptr<Process> proc;
    std::string data_dir;
    std::string socket;      // path
    std::string target;      // "unix:<socket>"
    std::string tcp_target;  // "127.0.0.1:<port>" when --listen was given
    std::string http_url;    // "http://127.0.0.1:<port>" when --http-listen was given
    std::shared_ptr<grpc::Channel> channel;  // over the Unix socket
  };
  // Starts garnetd on a fresh data dir and socket with --base-url at the mirror, plus `extra`
  // flags; waits for "listening". On failure `proc` is set and `target` is empty.
  Daemon StartDaemon(const std::vector<std::string>& extra = {});

  // Runs `garnet` with args against `target` (GARNET_HOST), stdin from /dev/null.
  CliResult Cli(const std::string& target, const std::vector<std::string>& args,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(60000));

 private:
  TempDir tmp_;
  std::string tiny_;
  std::unique_ptr<Process> mirror_;
  std::string mirror_url_;
  int next_ = 0;
};

// The URL path the catalog gives gemma4:tiny.
inline constexpr const char* kTinyUrlPath = "garnet/gemma4-tiny/resolve/main/gemma4-tiny-f32.gguf";

}  // namespace garnet::testing
