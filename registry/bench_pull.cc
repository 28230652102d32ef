// garnet-bench-pull: pull speed of the registry vs `curl -o /dev/null` over loopback.
//
// Serves a synthetic file (default 100 MB) from a garnet Mirror on 127.0.0.1, then alternately
// (a) runs the curl binary to fetch it to /dev/null and (b) pulls it with a Registry into a
// fresh store (HEAD, parallel ranges, pwrite, sha256 verification, rename, SQLite). Prints the
// best of N runs for each and the ratio garnet/curl (the target is >= 0.8).
//
//   garnet-bench-pull [--size-mb N] [--runs N] [--connections N] [--no-fsync] [--keep DIR]
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "registry/mirror.h"
#include "registry/registry.h"
#include "registry/sha256.h"

extern char** environ;

namespace garnet::registry {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int RunCurl(const std::string& url, const std::string& out) {
  std::vector<std::string> args = {"curl", "-s", "-f", "-o", out, url};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawnp(&pid, "curl", nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int Main(int argc, char** argv) {
  uint64_t size_mb = 100;
  int runs = 3;
  int connections = 4;
  std::string keep;
  bool sync_blobs = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--size-mb") {
      size_mb = std::strtoull(next().c_str(), nullptr, 10);
    } else if (a == "--runs") {
      runs = std::atoi(next().c_str());
    } else if (a == "--connections") {
      connections = std::atoi(next().c_str());
    } else if (a == "--no-fsync") {
      sync_blobs = false;
    } else if (a == "--keep") {
      keep = next();
    } else {
      std::fprintf(stderr,
                   "usage: garnet-bench-pull [--size-mb N] [--runs N] [--connections N] "
                   "[--no-fsync] [--keep DIR]\n");
      return 2;
    }
  }
  if (size_mb == 0 || runs <= 0 || connections <= 0) {
    std::fprintf(stderr, "garnet-bench-pull: sizes and counts must be positive\n");
    return 2;
  }
  for (const char* v :
       {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    unsetenv(v);
  }
  const std::string dir = keep.empty() ? std::filesystem::temp_directory_path().string() +
                                             "/garnet-bench-pull-" + std::to_string(getpid())
                                       : keep;
  std::filesystem::create_directories(dir);
  const std::string file = dir + "/synthetic.bin";
  const uint64_t size = size_mb * 1000 * 1000;
  {
    std::ofstream out(file, std::ios::binary);
    std::mt19937_64 rng(1);
    std::vector<uint64_t> buf(1 << 17);
    for (uint64_t written = 0; written < size;) {
      for (uint64_t& v : buf) v = rng();
      uint64_t n = std::min<uint64_t>(buf.size() * 8, size - written);
      out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
      written += n;
    }
  }
  auto sha = Sha256File(file);
  if (!sha.ok()) {
    std::fprintf(stderr, "%s\n", sha.status().ToString().c_str());
    return 1;
  }
  auto mirror = Mirror::Start(nullptr, MirrorOptions{});
  if (!mirror.ok()) {
    std::fprintf(stderr, "%s\n", mirror.status().ToString().c_str());
    return 1;
  }
  const std::string path = "bench/synthetic/resolve/main/synthetic.gguf";
  if (Status s = (*mirror)->ServeFile(path, file, *sha); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  const std::string url = (*mirror)->base_url() + "/" + path;
  const std::string catalog = dir + "/catalog.json";
  {
    std::ofstream c(catalog);
    c << R"({"version": 1, "models": [{"id": "bench:synthetic", "family": "bench",
        "variant": "synthetic", "total_params": 1, "quant": "F32", "default_context": 1,
        "max_context": 1, "files": [{"repo": "bench/synthetic", "path": "synthetic.gguf", "size": )"
      << size << R"(, "sha256": ")" << *sha << R"("}]}]})";
  }
  RegistryOptions opts;
  opts.data_dir = dir + "/store";
  opts.base_url = (*mirror)->base_url();
  opts.user_catalog = catalog;
  opts.use_environment = false;
  opts.download.connections = connections;
  opts.download.disk_reserve_bytes = 0;
  opts.download.sync_blobs = sync_blobs;
  auto reg = Registry::Open(opts);
  if (!reg.ok()) {
    std::fprintf(stderr, "%s\n", reg.status().ToString().c_str());
    return 1;
  }

  double best_curl = 1e9, best_garnet = 1e9, best_curl_file = 1e9;
  const std::string curl_file = dir + "/curl-output.bin";
  for (int run = 0; run < runs; ++run) {
    auto t0 = Clock::now();
    int rc = RunCurl(url, "/dev/null");
    double tc = Seconds(Clock::now() - t0);
    if (rc != 0) {
      std::fprintf(stderr, "curl failed (exit %d)\n", rc);
      return 1;
    }
    best_curl = std::min(best_curl, tc);
    // Reference only: curl storing the file (no hash, no fsync).
    t0 = Clock::now();
    rc = RunCurl(url, curl_file);
    double tf = Seconds(Clock::now() - t0);
    std::filesystem::remove(curl_file);
    if (rc != 0) {
      std::fprintf(stderr, "curl -o file failed (exit %d)\n", rc);
      return 1;
    }
    best_curl_file = std::min(best_curl_file, tf);

    t0 = Clock::now();
    auto pulled = (*reg)->Pull("bench:synthetic", nullptr, nullptr);
    double tg = Seconds(Clock::now() - t0);
    if (!pulled.ok() || pulled->already_present) {
      std::fprintf(stderr, "pull failed: %s\n", pulled.status().ToString().c_str());
      return 1;
    }
    best_garnet = std::min(best_garnet, tg);
    std::printf(
        "run %d: curl -o /dev/null %.3f s (%.0f MB/s), curl -o file %.3f s, garnet %.3f s "
        "(%.0f MB/s)\n",
        run + 1, tc, size / 1e6 / tc, tf, tg, size / 1e6 / tg);
    if (Status s = (*reg)->Remove("bench:synthetic"); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  const double curl_mbps = size / 1e6 / best_curl, garnet_mbps = size / 1e6 / best_garnet;
  std::printf(
      "file %llu MB over loopback, %d connection(s), sha256 %s, fsync %s\n"
      "best of %d: curl -o /dev/null %.0f MB/s, garnet pull (verified, stored) %.0f MB/s\n"
      "ratio garnet/curl = %.2f (target >= 0.80)\n"
      "reference: curl -o <file> (stored, not hashed, not synced) %.0f MB/s; garnet/that = %.2f\n",
      static_cast<unsigned long long>(size_mb), connections,
      Sha256::Accelerated() ? "SHA-NI" : "portable", sync_blobs ? "on" : "off", runs, curl_mbps,
      garnet_mbps, garnet_mbps / curl_mbps, size / 1e6 / best_curl_file,
      garnet_mbps / (size / 1e6 / best_curl_file));
  reg->reset();
  (*mirror)->Stop();
  if (keep.empty()) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace garnet::registry

int main(int argc, char** argv) {
  return garnet::registry::Main(argc, argv);
}
