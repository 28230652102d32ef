// garnet-bench-engine: prefill and decode throughput and peak RSS of the engine on a GGUF.
//
//   garnet-bench-engine --model PATH [--prompt-tokens 512] [--gen 64] [--threads N]
//                       [--ctx N] [--ubatch N] [--kv-type f16|q8_0|f32] [--reps 1]
//                       [--backend cpu|vulkan] [--device N|NAME] [--f16-matmul 0|1]
//                       [--gpu-layers N] [--experts-on-host N|all] [--pick device|host]
//                       [--sampler greedy|gemma|penalty]
//
// Placement (vulkan): --gpu-layers N runs the last N layers on the GPU and the rest on the CPU
// (plan::PolicyMode::kGpuLayers); --experts-on-host N keeps the routed experts of the lowest N
// layers (all: every layer) in host memory, computed on the CPU. Without either, the engine's
// auto plan for this machine.
//
// The prompt is deterministic pseudo-random token ids (bos first); decode samples as Generate
// does, greedy (--sampler greedy, the default), with the Gemma defaults (--sampler gemma:
// temperature 1, top-k 64, top-p 0.95, seed 1) or with a repetition penalty (--sampler penalty:
// temperature 0.8, top-k 40, top-p 0.9, repeat penalty 1.1 over 64 tokens). --pick device (the
// default) lets the backend reduce each row (greedy: the pick; top-k: the best top-k (+ 64 with
// the penalty) candidates; on the GPU for vulkan, no logits row read back); --pick host reads
// every logits row and samples from it on the host, checking the row is finite. Prints one line per
// measurement and peak RSS (getrusage) with the file size and KV-cache size for scale.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/model/engine.h"
#include "engine/model/sampler.h"
#include "engine/plan/planner.h"
#include "tools/run/args.h"

int main(int argc, char** argv) {
  using namespace garnet;
  std::string model_path, backend = "cpu", device;
  bool f16_matmul = false;
  bool coop_matmul = true;
  int64_t n_prompt = 512, n_gen = 64, threads = 0, ctx = 0, ubatch = 0, reps = 1;
  int64_t attn_prefill_min = 0;
  int64_t attn_coop_min = 32;
  bool decode_graph = true;
  bool fused_routing = true;
  bool prenorm = true;
  bool early_routing = true;
  bool quantized_inputs = true;
  bool host_pick = false;
  std::string sampler_name = "greedy";
  int64_t gpu_layers = -1, experts_on_host = -1;  // -1: not given
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
      const std::optional<model::KvType> t = model::KvTypeFromName(v);
      if (t) {
        kv_type = *t;
      } else {
        std::fprintf(stderr, "error: --kv-type wants f16, q8_0 or f32\n");
        ok = false;
      }
    } else if (a == "--backend") {
      backend = v;
    } else if (a == "--device") {
      device = v;
    } else if (a == "--gpu-layers") {
      ok = tools::ParseInt(a, v, &gpu_layers);
    } else if (a == "--experts-on-host") {
      if (std::string(v) == "all") {
        experts_on_host = 1 << 30;
      } else {
        ok = tools::ParseInt(a, v, &experts_on_host);
      }
    } else if (a == "--attn-coop-min-tokens") {
      ok = tools::ParseInt(a, v, &attn_coop_min);
    } else if (a == "--attn-prefill-min-tokens") {
      ok = tools::ParseInt(a, v, &attn_prefill_min);
    } else if (a == "--f16-matmul") {
      f16_matmul = std::string(v) == "1";
    } else if (a == "--coop-matmul") {
      coop_matmul = std::string(v) == "1";
    } else if (a == "--decode-graph") {
      decode_graph = std::string(v) == "1";
    } else if (a == "--fused-routing") {
      fused_routing = std::string(v) == "1";
    } else if (a == "--prenorm") {
      prenorm = std::string(v) == "1";
    } else if (a == "--early-routing") {
      early_routing = std::string(v) == "1";
    } else if (a == "--quantized-inputs") {
      quantized_inputs = std::string(v) == "1";
    } else if (a == "--sampler") {
      sampler_name = v;
      ok = sampler_name == "greedy" || sampler_name == "gemma" || sampler_name == "penalty";
      if (!ok) std::fprintf(stderr, "error: --sampler takes greedy, gemma or penalty\n");
    } else if (a == "--pick") {
      ok = std::string(v) == "device" || std::string(v) == "host";
      if (!ok) std::fprintf(stderr, "error: --pick takes device or host\n");
      host_pick = std::string(v) == "host";
    } else {
      std::fprintf(stderr, "error: unknown flag %s\n", a.c_str());
      return 2;
    }
    if (!ok) return 2;
  }
  if (model_path.empty() || n_prompt < 1 || n_gen < 0) {
    std::fprintf(stderr,
                 "usage: garnet-bench-engine --model PATH [--prompt-tokens N] [--gen N] "
                 "[--threads N] [--ctx N] [--ubatch N] [--kv-type f16|q8_0|f32] [--reps N] "
                 "[--backend cpu|vulkan] [--device N|NAME] [--f16-matmul 0|1] [--coop-matmul 0|1] "
                 "[--gpu-layers N] [--experts-on-host N|all] [--attn-prefill-min-tokens N] "
                 "[--attn-coop-min-tokens N] [--decode-graph 0|1] [--fused-routing 0|1]\n"
                 "       [--prenorm 0|1] [--early-routing 0|1] [--quantized-inputs 0|1] [--pick "
                 "device|host]\n"
                 "       [--sampler greedy|gemma|penalty]\n");
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
  opt.coop_matmul = coop_matmul;
  opt.attn_prefill_min_tokens = attn_prefill_min;
  opt.attn_coop_min_tokens = attn_coop_min;
  opt.decode_graph = decode_graph;
  opt.fused_routing = fused_routing;
  opt.prenorm = prenorm;
  opt.early_routing = early_routing;
  opt.quantized_inputs = quantized_inputs;
  if (gpu_layers >= 0) {
    opt.policy.mode = plan::PolicyMode::kGpuLayers;
    opt.policy.gpu_layers = static_cast<uint32_t>(gpu_layers);
  }
  if (experts_on_host >= 0) {
    // A plan of its own: the policy's (or all layers on the GPU), then the lowest N expert sets
    // to the host. Planned against a machine large enough for any placement; the engine runs it
    // as given.
    auto model = gguf::Model::Open(model_path);
    if (!model.ok()) {
      std::fprintf(stderr, "error: %s\n", model.status().ToString().c_str());
      return 1;
    }
    auto shape = plan::ShapeFromModel(**model);
    if (!shape.ok()) {
      std::fprintf(stderr, "error: %s\n", shape.status().ToString().c_str());
      return 1;
    }
    plan::KvOptions kv;
    kv.n_ctx = static_cast<uint32_t>(opt.n_ctx);
    kv.n_ubatch = static_cast<uint32_t>(std::min(ubatch ? ubatch : 512, opt.n_ctx));
    plan::Inventory inv;
    inv.gpus.push_back({"any", 1ull << 50, 1ull << 50});
    inv.host = {"host", 1ull << 50, 1ull << 50};
    auto pl = plan::MakePlan(*shape, kv, inv, opt.policy);
    if (!pl.ok()) {
      std::fprintf(stderr, "error: %s\n", pl.status().ToString().c_str());
      return 1;
    }
    for (size_t il = 0; il < pl->experts_on_host.size(); ++il) {
      if (static_cast<int64_t>(il) < experts_on_host) pl->experts_on_host[il] = true;
    }
    opt.plan = *pl;
  }
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
  std::printf(
      "model %s: %u layers, H %u, vocab %u, file %.1f MiB, kv/seq %.1f MiB, ctx %lld, ubatch "
      "%lld\n",
      model_path.c_str(), p.n_layer, p.n_embd, p.n_vocab, st.st_size / 1048576.0,
      e.KvBytesPerSequence() / 1048576.0, static_cast<long long>(e.options().n_ctx),
      static_cast<long long>(e.options().n_ubatch));
  std::printf("backend %s, load %.2f s\n", std::string(e.backend_name()).c_str(), load_s);
  if (const plan::Plan* pl = e.plan()) {
    std::printf("placement: %u of %u layers on the host, %u expert sets on the host\n",
                pl->layers_on_host(), p.n_layer, pl->expert_sets_on_host());
  }
  // Weight bytes one decoded token reads: every tensor once, except the routed experts (k of E
  // matrices per layer), the PLE table and token rows (gathers of one row; the tied token table
  // is read whole as the output head) and tensors no op reads. The bandwidth bound of decode is
  // this over the device's read bandwidth.
  double read_per_token = 0;
  if (auto m = gguf::Model::Open(model_path); m.ok()) {
    if (auto shape = plan::ShapeFromModel(**m); shape.ok()) {
      for (const plan::WeightTensor& wt : shape->tensors) {
        if (wt.cls == plan::TensorClass::kExperts) {
          read_per_token +=
              static_cast<double>(wt.bytes) * p.n_expert_used / std::max<uint32_t>(p.n_expert, 1);
        } else if (wt.cls != plan::TensorClass::kPleTable && wt.cls != plan::TensorClass::kUnused) {
          read_per_token += static_cast<double>(wt.bytes);
        }
      }
      std::printf("weights read per decoded token: %.1f MiB\n", read_per_token / 1048576.0);
    }
  }
  for (int64_t rep = 0; rep < reps; ++rep) {
    auto seq = e.NewSequence();
    if (!seq.ok()) {
      std::fprintf(stderr, "error: %s\n", seq.status().ToString().c_str());
      return 1;
    }
    // The daemon's sampler: greedy, the Gemma defaults, or top-k with a repetition penalty
    // (seeded: the same draws every run).
    sampling::SamplerParams sp;
    if (sampler_name != "greedy") sp = sampling::SamplerParams::GemmaDefaults(1);
    if (sampler_name == "penalty") {
      sp.temperature = 0.8f;
      sp.top_k = 40;
      sp.top_p = 0.9f;
      sp.repeat_penalty = 1.1f;
      sp.penalty_last_n = 64;
    }
    sampling::Sampler sampler(sp);
    const bool pick = !host_pick && sampler.PlainGreedy();
    const int32_t topk =
        host_pick || pick
            ? 0
            : sampler.CandidatesNeeded(static_cast<int32_t>(model::Backend::kMaxTopCandidates));
    (*seq)->set_greedy_pick_mode(pick);
    (*seq)->set_top_candidates(topk);
    auto t0 = std::chrono::steady_clock::now();
    Status s = e.Feed(**seq, prompt);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
      return 1;
    }
    auto t1 = std::chrono::steady_clock::now();
    double pre = std::chrono::duration<double>(t1 - t0).count();
    uint64_t hash = 1469598103934665603ull;  // FNV-1a over the ids, to compare runs
    std::string first_ids;                   // the first ids, to see a degenerate run
    int64_t bad_rows = 0;  // logit rows with a NaN or an infinity; no token from the backend
    for (int64_t g = 0; g < n_gen; ++g) {
      int32_t id = -1;
      if (pick) {
        id = (*seq)->greedy_pick();
      } else if (topk > 0) {
        id = sampler.SampleTop((*seq)->top_candidates());
      } else {
        // The pick through the real sampler; the finiteness check as eight independent sums of
        // x * 0 (NaN once any logit is NaN or infinite), cheap next to a 262144-logit row.
        auto l = (*seq)->logits();
        id = sampler.Sample(l);
        float z[8] = {};
        for (size_t i = 0; i + 8 <= l.size(); i += 8) {
          for (size_t j = 0; j < 8; ++j) z[j] += l[i + j] * 0.0f;
        }
        float zs = 0.0f;
        for (float v : z) zs += v;
        for (size_t i = l.size() / 8 * 8; i < l.size(); ++i) zs += l[i] * 0.0f;
        if (!std::isfinite(zs)) ++bad_rows;
      }
      if ((pick || topk > 0) && id < 0) ++bad_rows;
      const int32_t best = std::max(id, 0);
      sampler.Accept(best);
      hash = (hash ^ static_cast<uint32_t>(best)) * 1099511628211ull;
      if (g < 8) first_ids += (g ? " " : "") + std::to_string(best);
      s = e.Feed(**seq, std::vector<int32_t>{best});
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    double dec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::printf(
        "prefill %lld tok: %.2f tok/s (%.3f s) | decode %lld tok: %.2f tok/s (%.3f s, weights "
        "at %.0f GB/s)\n",
        static_cast<long long>(n_prompt), n_prompt / pre, pre, static_cast<long long>(n_gen),
        n_gen > 0 ? n_gen / dec : 0.0, dec, n_gen > 0 ? read_per_token * n_gen / dec / 1e9 : 0.0);
    std::printf("%s ids hash %016llx (first ids %s; %lld of %lld %s)\n",
                sampler_name == "greedy" ? "greedy" : "sampled",
                static_cast<unsigned long long>(hash), first_ids.c_str(),
                static_cast<long long>(bad_rows), static_cast<long long>(n_gen),
                pick   ? "picks on the backend found no finite logit"
                : topk ? "steps with no candidate from the backend"
                       : "logit rows not finite");
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS %.1f MiB\n", ru.ru_maxrss / 1024.0);
  return 0;
}
