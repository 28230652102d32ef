// garnet-bench-pull: pull speed of the registry vs `curl -o <file>` over loopback.
//
// Serves a synthetic file (default 100 MB) from a garnet Mirror on 127.0.0.1; each run times the
// curl binary fetching it to a file and to /dev/null, then a Registry pull into a fresh store
// (HEAD, parallel ranges, pwrite, sha256 verification, fsync, rename, SQLite). Prints every run
// (with the pull's phases and CPU seconds), medians, and the ratio garnet / curl -o <file>
// (the issue's target is >= 0.8).
//
//   garnet-bench-pull [--size-mb N] [--runs N] [--connections N] [--buffer-kb N] [--part-mb N]
//                     [--hash-lag-mb N] [--lag-rate-factor F] [--portable-sha] [--no-fsync]
//                     [--keep DIR]
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

// CPU seconds (user + system) used so far by this process (`who` = RUSAGE_SELF) or by its
// waited-for children (RUSAGE_CHILDREN).
double CpuSeconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
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
  uint64_t buffer_kb = 0, part_mb = 0;  // 0: the DownloadOptions defaults
  uint64_t hash_lag_mb = 0;
  bool hash_lag_set = false;
  double lag_rate_factor = -1;  // < 0: the default
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--size-mb") {
      size_mb = std::strtoull(next().c_str(), nullptr, 10);
    } else if (a == "--runs") {
      runs = std::atoi(next().c_str());
    } else if (a == "--connections") {
      connections = std::atoi(next().c_str());
    } else if (a == "--buffer-kb") {
      buffer_kb = std::strtoull(next().c_str(), nullptr, 10);
    } else if (a == "--part-mb") {
      part_mb = std::strtoull(next().c_str(), nullptr, 10);
    } else if (a == "--hash-lag-mb") {
      hash_lag_mb = std::strtoull(next().c_str(), nullptr, 10);
      hash_lag_set = true;
    } else if (a == "--lag-rate-factor") {
      lag_rate_factor = std::strtod(next().c_str(), nullptr);
    } else if (a == "--portable-sha") {
      Sha256::TEST_AllowAcceleration(false);  // a CPU without SHA-NI: hashing ~8x slower
    } else if (a == "--no-fsync") {
      sync_blobs = false;
    } else if (a == "--keep") {
      keep = next();
    } else {
      std::fprintf(stderr,
                   "usage: garnet-bench-pull [--size-mb N] [--runs N] [--connections N] "
                   "[--buffer-kb N] [--part-mb N] [--hash-lag-mb N] [--lag-rate-factor F] "
                   "[--portable-sha] [--no-fsync] [--keep DIR]\n");
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
  {
    // SHA-256 alone, over the file in memory: the floor of a verified pull is size / this.
    std::vector<char> bytes(size);
    std::ifstream in(file, std::ios::binary);
    in.read(bytes.data(), static_cast<std::streamsize>(size));
    double best_s = 1e9;
    for (int i = 0; i < 3; ++i) {
      auto h0 = Clock::now();
      Sha256 h;
      h.Update(bytes.data(), bytes.size());
      (void)h.Finish();
      best_s = std::min(best_s, Seconds(Clock::now() - h0));
    }
    std::printf("sha256 over %llu MB in memory: %.1f ms (%.0f MB/s), best of 3\n",
                static_cast<unsigned long long>(size_mb), 1e3 * best_s, size / 1e6 / best_s);
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
  if (buffer_kb > 0) opts.download.curl_buffer_bytes = buffer_kb * 1024;
  if (part_mb > 0) opts.download.min_part_bytes = opts.download.max_part_bytes = part_mb << 20;
  if (hash_lag_set) opts.download.max_hash_lag_bytes = hash_lag_mb << 20;
  if (lag_rate_factor >= 0) opts.download.hash_lag_rate_factor = lag_rate_factor;
  auto reg = Registry::Open(opts);
  if (!reg.ok()) {
    std::fprintf(stderr, "%s\n", reg.status().ToString().c_str());
    return 1;
  }

  // Per run: wall seconds of curl -o file, curl -o /dev/null and the pull, and the CPU seconds
  // each used (curl's process plus this process, which hosts the server, and for the pull, the
  // client too).
  std::vector<double> t_file, t_null, t_pull, cpu_file, cpu_pull;
  std::vector<FetchTimings> timings;
  const std::string curl_file = dir + "/curl-output.bin";
  for (int run = 0; run < runs; ++run) {
    auto timed_curl = [&](const std::string& out, std::vector<double>* wall,
                          std::vector<double>* cpu) {
      double c0 = CpuSeconds(RUSAGE_SELF) + CpuSeconds(RUSAGE_CHILDREN);
      auto t0 = Clock::now();
      int rc = RunCurl(url, out);
      wall->push_back(Seconds(Clock::now() - t0));
      if (cpu != nullptr) {
        cpu->push_back(CpuSeconds(RUSAGE_SELF) + CpuSeconds(RUSAGE_CHILDREN) - c0);
      }
      return rc;
    };
    if (int rc = timed_curl(curl_file, &t_file, &cpu_file); rc != 0) {
      std::fprintf(stderr, "curl -o file failed (exit %d)\n", rc);
      return 1;
    }
    std::filesystem::remove(curl_file);
    if (int rc = timed_curl("/dev/null", &t_null, nullptr); rc != 0) {
      std::fprintf(stderr, "curl -o /dev/null failed (exit %d)\n", rc);
      return 1;
    }

    // Phase timestamps from the progress stream: transfer start, verification (only when the
    // hasher had not caught up), done (hashed, synced, renamed, blob row written).
    Clock::time_point t_dl{}, t_verify{}, t_done{};
    ProgressFn on_progress = [&](const Progress& p) {
      auto now = Clock::now();
      if (p.phase == Phase::kDownloading && t_dl == Clock::time_point{}) t_dl = now;
      if (p.phase == Phase::kVerifying && t_verify == Clock::time_point{}) t_verify = now;
      if (p.phase == Phase::kDone) t_done = now;
    };
    double c0 = CpuSeconds(RUSAGE_SELF);
    auto t0 = Clock::now();
    auto pulled = (*reg)->Pull("bench:synthetic", on_progress, nullptr);
    auto t_end = Clock::now();
    cpu_pull.push_back(CpuSeconds(RUSAGE_SELF) - c0);
    t_pull.push_back(Seconds(t_end - t0));
    if (!pulled.ok() || pulled->already_present) {
      std::fprintf(stderr, "pull failed: %s\n", pulled.status().ToString().c_str());
      return 1;
    }
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return a == Clock::time_point{} || b == Clock::time_point{} ? 0.0 : 1e3 * Seconds(b - a);
    };
    std::printf(
        "run %d: curl -o file %.3f s (%.0f MB/s, cpu %.3f s), curl -o /dev/null %.3f s, "
        "garnet %.3f s (%.0f MB/s, cpu %.3f s; start %.0f ms, transfer+hash %.0f ms, "
        "verify tail %.0f ms, register %.0f ms)\n",
        run + 1, t_file.back(), size / 1e6 / t_file.back(), cpu_file.back(), t_null.back(),
        t_pull.back(), size / 1e6 / t_pull.back(), cpu_pull.back(), ms(t0, t_dl),
        ms(t_dl, t_verify == Clock::time_point{} ? t_done : t_verify), ms(t_verify, t_done),
        ms(t_done, t_end));
    // The download's own clock (FetchTimings, from the start of Fetch), in ms.
    if (pulled->timings.size() == 1) {
      const FetchTimings& f = pulled->timings[0];
      std::printf(
          "       fetch ms: HEAD %.1f, file ready %.1f, first byte %.1f, last byte %.1f, "
          "ranges closed %.1f, hashed %.1f, stored %.1f; pull returned %.1f; hasher starved "
          "%.1f ms; connections paused for it %.1f ms\n",
          1e3 * f.resolved, 1e3 * f.transfer_start, 1e3 * f.first_byte, 1e3 * f.last_byte,
          1e3 * f.ranges_done, 1e3 * f.hashed, 1e3 * f.stored, 1e3 * t_pull.back(),
          1e3 * f.hash_starved, 1e3 * f.lag_paused);
      timings.push_back(f);
    }
    if (Status s = (*reg)->Remove("bench:synthetic"); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  auto best = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  auto rate = [&](double seconds) { return size / 1e6 / seconds; };
  // Ratios per run (each pull against the curl runs right before it) are less exposed to load
  // swings than ratios of medians.
  std::vector<double> ratio;
  for (size_t i = 0; i < t_pull.size(); ++i) ratio.push_back(t_file[i] / t_pull[i]);
  std::printf(
      "file %llu MB over loopback, %d connection(s), sha256 %s, fsync %s, %d runs\n"
      "curl -o <file>:    median %.0f MB/s, best %.0f MB/s\n"
      "curl -o /dev/null: median %.0f MB/s, best %.0f MB/s\n"
      "garnet pull:       median %.0f MB/s, best %.0f MB/s (verified, stored, registered)\n"
      "cpu seconds (client + server), median: curl -o <file> %.3f, garnet pull %.3f\n"
      "ratio garnet/curl -o <file>: median of runs %.2f, best/best %.2f (target >= 0.80)\n"
      "ratio garnet/curl -o /dev/null: median %.2f\n",
      static_cast<unsigned long long>(size_mb), connections,
      Sha256::Accelerated() ? "SHA-NI" : "portable", sync_blobs ? "on" : "off", runs,
      rate(median(t_file)), rate(best(t_file)), rate(median(t_null)), rate(best(t_null)),
      rate(median(t_pull)), rate(best(t_pull)), median(cpu_file), median(cpu_pull), median(ratio),
      best(t_file) / best(t_pull), median(t_null) / median(t_pull));
  if (!timings.empty()) {
    auto med = [&](double FetchTimings::*field) {
      std::vector<double> v;
      for (const FetchTimings& f : timings) v.push_back(1e3 * (f.*field));
      return median(v);
    };
    std::printf(
        "fetch ms, median: HEAD %.1f, file ready %.1f, first byte %.1f, last byte %.1f, ranges "
        "closed %.1f, hashed %.1f, stored %.1f; pull %.1f; hasher starved %.1f; connections "
        "paused %.1f; hashing first byte->hashed %.1f ms = %.0f MB/s\n",
        med(&FetchTimings::resolved), med(&FetchTimings::transfer_start),
        med(&FetchTimings::first_byte), med(&FetchTimings::last_byte),
        med(&FetchTimings::ranges_done), med(&FetchTimings::hashed), med(&FetchTimings::stored),
        1e3 * median(t_pull), med(&FetchTimings::hash_starved), med(&FetchTimings::lag_paused),
        med(&FetchTimings::hashed) - med(&FetchTimings::first_byte),
        size / 1e3 / (med(&FetchTimings::hashed) - med(&FetchTimings::first_byte)));
  }
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
