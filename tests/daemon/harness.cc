#include "tests/daemon/harness.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace garnet::testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

Process::Process(const std::vector<std::string>& argv, const std::string& out_path,
                 const std::string& err_path, const std::map<std::string, std::string>& env)
    : out_(out_path), err_(err_path) {
  // Build argv/envp before fork: only async-signal-safe calls in the child.
  std::vector<std::string> env_strings;
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> av;
  for (auto& s : args) av.push_back(s.data());
  av.push_back(nullptr);

  pid_ = fork();
  if (pid_ < 0) std::abort();
  if (pid_ == 0) {
    const int in = open("/dev/null", O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || err < 0) _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    execve(av[0], av.data(), envp.data());
    _exit(127);
  }
}

Process::~Process() {
  if (!reaped_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
}

void Process::Signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

bool Process::Running() {
  if (reaped_) return false;
  const pid_t r = waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) reaped_ = true;
  return !reaped_;
}

int Process::Wait(std::chrono::milliseconds timeout) {
  if (!WaitFor([&] { return !Running(); }, timeout)) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

World::World() {
  tiny_ = dir() + "/gemma4-tiny-f32.gguf";
  Process mk({GARNET_MKMODEL_PATH, "--preset", "tiny", "--out", tiny_}, dir() + "/mk.out",
             dir() + "/mk.err");
  if (mk.Wait(std::chrono::seconds(120)) != 0) {
    std::fprintf(stderr, "garnet-mkmodel failed: %s\n", mk.Err().c_str());
    std::abort();
  }
  mirror_ =
      std::make_unique<Process>(std::vector<std::string>{GARNET_MIRROR_PATH, "--file",
                                                         std::string(kTinyUrlPath) + "=" + tiny_},
                                dir() + "/mirror.out", dir() + "/mirror.err");
  const std::string marker = "serving at ";
  if (!WaitFor([&] { return mirror_->Out().find(marker) != std::string::npos; })) {
    std::fprintf(stderr, "garnet-mirror did not start: %s\n", mirror_->Err().c_str());
    std::abort();
  }
  std::string out = mirror_->Out();
  mirror_url_ = out.substr(out.find(marker) + marker.size());
  while (!mirror_url_.empty() && (mirror_url_.back() == '\n' || mirror_url_.back() == '\r')) {
    mirror_url_.pop_back();
  }
}

World::~World() {
  if (mirror_) {
    mirror_->Signal(SIGTERM);
    mirror_->Wait(std::chrono::seconds(5));
  }
}

World::Daemon World::StartDaemon(const std::vector<std::string>& extra) {
  Daemon d;
  const std::string n = std::to_string(next_++);
  d.data_dir = dir() + "/data" + n;
  d.socket = dir() + "/run" + n + "/garnetd.sock";
  std::vector<std::string> argv = {GARNETD_PATH, "--data-dir", d.data_dir,  "--socket", d.socket,
                                   "--base-url", mirror_url_,  "--threads", "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  d.proc = std::make_unique<Process>(
      argv, dir() + "/garnetd" + n + ".out", dir() + "/garnetd" + n + ".err",
      std::map<std::string, std::string>{{"GARNET_TOKEN", ""}, {"GARNET_CONFIG", ""}});
  if (!WaitFor([&] {
        return d.proc->Err().find("listening on") != std::string::npos || !d.proc->Running();
      }) ||
      d.proc->Err().find("listening on") == std::string::npos) {
    return d;
  }
  d.target = "unix:" + d.socket;
  const std::string err = d.proc->Err();
  if (auto pos = err.find(" and tcp "); pos != std::string::npos) {
    const size_t start = pos + 9;
    d.tcp_target = err.substr(start, err.find(' ', start) - start);
  }
  const std::string http_marker = "OpenAI-compatible HTTP at ";
  if (auto pos = err.find(http_marker); pos != std::string::npos) {
    const size_t start = pos + http_marker.size();
    d.http_url = err.substr(start, err.find('\n', start) - start);
  }
  d.channel = grpc::CreateChannel(d.target, grpc::InsecureChannelCredentials());
  return d;
}

CliResult World::Cli(const std::string& target, const std::vector<std::string>& args,
                     std::chrono::milliseconds timeout) {
  const std::string n = std::to_string(next_++);
  std::vector<std::string> argv = {GARNET_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, dir() + "/cli" + n + ".out", dir() + "/cli" + n + ".err",
            {{"GARNET_HOST", target}, {"GARNET_TOKEN", ""}});
  CliResult r;
  r.rc = p.Wait(timeout);
  r.out = p.Out();
  r.err = p.Err();
  return r;
}

}  // namespace garnet::testing
