// garnet-bench-engine: prefill and decode throughput and peak RSS of the engine on a GGUF.
//
//   garnet-bench-engine --model PATH [--prompt-tokens 512] [--gen 64] [--threads N]
//                       [--ctx N] [--ubatch N] [--kv-type f16|f32] [--reps 1]
//                       [--backend cpu|vulkan] [--device N|NAME] [--f16-matmul 0|1]
//
// The prompt is deterministic pseudo-random token ids (bos first); decode is greedy. Prints one
// line per measurement and peak RSS (getrusage) with the file size and KV-cache size for scale.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/model/engine.h"
#include "tools/run/args.h"

int main(int argc, char** argv) {
  using namespace garnet;
  std::string model_path, backend = "cpu", device;
  bool f16_matmul = false;
  int64_t n_prompt = 512, n_gen = 64, threads = 0, ctx = 0, ubatch = 512, reps = 1;
  model::KvType kv_type = model::KvType::kF16;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
      return 2;
    }
    const char* v = argv[++i];
    bool ok = true;
    if (a == "--model") {
      model_path = v;
    } else if (a == "--prompt-tokens") {
      ok = tools::ParseInt(a, v, &n_prompt);
    } else if (a == "--gen") {
      ok = tools::ParseInt(a, v, &n_gen);
    } else if (a == "--threads") {
      ok = tools::ParseInt(a, v, &threads);
    } else if (a == "--ctx") {
      ok = tools::ParseInt(a, v, &ctx);
    } else if (a == "--ubatch") {
      ok = tools::ParseInt(a, v, &ubatch);
    } else if (a == "--reps") {
      ok = tools::ParseInt(a, v, &reps);
    } else if (a == "--kv-type") {
      kv_type = std::string(v) == "f32" ? model::KvType::kF32 : model::KvType::kF16;
    } else if (a == "--backend") {
      backend = v;
    } else if (a == "--device") {
      device = v;
    } else if (a == "--f16-matmul") {
      f16_matmul = std::string(v) == "1";
    } else {
      std::fprintf(stderr, "error: unknown flag %s\n", a.c_str());
      return 2;
    }
    if (!ok) return 2;
  }
  if (model_path.empty() || n_prompt < 1 || n_gen < 0) {
    std::fprintf(stderr,
                 "usage: garnet-bench-engine --model PATH [--prompt-tokens N] [--gen N] "
                 "[--threads N] [--ctx N] [--ubatch N] [--kv-type f16|f32] [--reps N] "
                 "[--backend cpu|vulkan] [--device N|NAME] [--f16-matmul 0|1]\n");
    return 2;
  }
  engine::EngineOptions opt;
  opt.n_ctx = ctx > 0 ? ctx : n_prompt + n_gen + 1;
  opt.n_ubatch = ubatch;
  opt.n_threads = static_cast<int>(threads);
  opt.kv_type = kv_type;
  opt.backend = backend;
  opt.device = device;
  opt.f16_matmul = f16_matmul;
  auto t_load0 = std::chrono::steady_clock::now();
  auto eng = engine::Engine::Open(model_path, opt);
  if (!eng.ok()) {
    std::fprintf(stderr, "error: %s\n", eng.status().ToString().c_str());
    return 1;
  }
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load0).count();
  auto& e = *eng.value();
  const auto& p = e.params();
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  uint64_t x = 12345;
  for (auto& t : prompt) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = static_cast<int32_t>(4 + (x >> 33) % (p.n_vocab - 4));
  }
  prompt[0] = 2;
  struct stat st {};
  stat(model_path.c_str(), &st);
  std::printf("model %s: %u layers, H %u, vocab %u, file %.1f MiB, kv/seq %.1f MiB, ctx %lld\n",
              model_path.c_str(), p.n_layer, p.n_embd, p.n_vocab, st.st_size / 1048576.0,
              e.KvBytesPerSequence() / 1048576.0, static_cast<long long>(e.options().n_ctx));
  std::printf("backend %s, load %.2f s\n", std::string(e.backend_name()).c_str(), load_s);
  for (int64_t rep = 0; rep < reps; ++rep) {
    auto seq = e.NewSequence();
    if (!seq.ok()) {
      std::fprintf(stderr, "error: %s\n", seq.status().ToString().c_str());
      return 1;
    }
    auto t0 = std::chrono::steady_clock::now();
    Status s = e.Feed(**seq, prompt);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
      return 1;
    }
    auto t1 = std::chrono::steady_clock::now();
    double pre = std::chrono::duration<double>(t1 - t0).count();
    for (int64_t g = 0; g < n_gen; ++g) {
      auto l = (*seq)->logits();
      int32_t best = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
      s = e.Feed(**seq, std::vector<int32_t>{best});
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    double dec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::printf("prefill %lld tok: %.2f tok/s (%.3f s) | decode %lld tok: %.2f tok/s (%.3f s)\n",
                static_cast<long long>(n_prompt), n_prompt / pre, pre,
                static_cast<long long>(n_gen), n_gen > 0 ? n_gen / dec : 0.0, dec);
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS %.1f MiB\n", ru.ru_maxrss / 1024.0);
  return 0;
}
