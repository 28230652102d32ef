// garnet-mkmodel: writes a synthetic (random-weight) Gemma 4 GGUF. See --help and README.md.
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tools/mkmodel/generator.h"
#include "tools/mkmodel/plan.h"
#include "tools/mkmodel/spec.h"

namespace garnet::mkmodel {
namespace {

constexpr const char* kHelp = R"(usage: garnet-mkmodel --preset NAME --out PATH [options]
       garnet-mkmodel --preset NAME --list [options]

Writes a synthetic Gemma 4 GGUF (random weights, real metadata keys, tensor names and shapes,
synthetic BPE tokenizer). Same arguments -> byte-identical file on every machine.

Presets (test models; shapes are stable, see tools/mkmodel/README.md):
  tiny       dense, 6 layers (S S F S S F), H 256, 4 q-heads, head dim 32 sliding / 64 full,
             KV heads 2 sliding / 1 full, K=V on full layers (no attn_v), FFN 512
  tiny-moe   as tiny, plus MoE on every layer: 8 experts, top-2, expert FFN 64, fused
             ffn_gate_up_exps, router + scales, 5 FFN norms; dense FFN 160
  tiny-ple   8 layers (S S S F)x2, KV heads 2/2, attn_v everywhere, per-layer embeddings
             (P 64), last 4 layers KV-shared (donors 2 and 3), FFN 256 / 512 on shared layers
  (all tiny: vocab 1024, context 512, sliding window 16, weight std 0.05, default type f32)
Real shapes (gemma4.md §1.1; vocab 262144, weight std 0.02, default type q4_k_m):
  e2b, e4b, 12b, 26b-a4b, 31b

Options:
  --preset NAME        one of the presets above (required)
  --out PATH           output file (written via PATH.tmp and renamed)
  --list               print the tensor plan (name, type, shape, bytes), totals per type,
                       parameter count and data size, and exit
  --type T             weight type for matrices: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1
                       q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs, or the mix q4_k_m (token_embd Q6_K;
                       attn_v and ffn_down Q6_K on use_more_bits layers; rest Q4_K).
                       1-D tensors are always F32; the router and per_layer_model_proj are
                       never quantised (F32 for tiny presets and --type f32, else BF16).
                       Rows that a block type cannot hold fall back: Q4_K->Q5_0,
                       Q5_K->Q5_1, Q6_K->Q8_0, Q2_K/Q3_K/IQ4_XS->IQ4_NL, then F16.
  --type-embd T        type of token_embd.weight
  --tensor-type S=T    type of every matrix whose name contains S (repeatable, first wins),
                       e.g. --tensor-type per_layer_token_embd=q6_k --tensor-type ffn_down=q8_0
  --seed N             random seed (default 0)
  --layers N           layer count (keeps the pattern; last layer full; KV-shared fraction kept)
  --ctx N              gemma4.context_length
  --std X              std of matrix weights (norms are always 1 + N(0, 0.05))
  --threads N          worker threads (default: all cores; output does not depend on it)
  --split N            write N files in llama.cpp's gguf-split layout instead of one:
                       PATH (minus a .gguf suffix) + "-0000i-of-0000N.gguf"
  --quiet              no progress line on stderr (shown only when stderr is a terminal)
  --help               this text
)";

int Fail(const std::string& msg) {
  std::fprintf(stderr, "garnet-mkmodel: %s\n", msg.c_str());
  return 2;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string Shape(const std::vector<uint64_t>& ne) {
  std::string out = "[";
  for (size_t i = 0; i < ne.size(); ++i) out += (i ? ", " : "") + std::to_string(ne[i]);
  return out + "]";
}

int Run(int argc, char** argv) {
  std::string preset, out, std_arg;
  TypeOptions types;
  GenOptions gen;
  bool list = false, quiet = false;
  uint64_t layers = 0, ctx = 0, threads = 0, split = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string* v) {
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    } else if (a == "--list") {
      list = true;
    } else if (a == "--quiet" || a == "-q") {
      quiet = true;
    } else if (a == "--preset") {
      if (!value(&preset)) return Fail("--preset needs a value");
    } else if (a == "--out" || a == "-o") {
      if (!value(&out)) return Fail("--out needs a value");
    } else if (a == "--type") {
      if (!value(&types.base)) return Fail("--type needs a value");
    } else if (a == "--type-embd") {
      if (!value(&v)) return Fail("--type-embd needs a value");
      auto t = ParseTypeName(v);
      if (!t || !Traits(*t).supported) return Fail("--type-embd: unknown or unsupported type " + v);
      types.embd = *t;
    } else if (a == "--tensor-type") {
      if (!value(&v)) return Fail("--tensor-type needs SUBSTRING=TYPE");
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) return Fail("--tensor-type needs SUBSTRING=TYPE");
      auto t = ParseTypeName(v.substr(eq + 1));
      if (!t || !Traits(*t).supported)
        return Fail("--tensor-type: unknown or unsupported type " + v.substr(eq + 1));
      types.overrides.emplace_back(v.substr(0, eq), *t);
    } else if (a == "--seed") {
      if (!value(&v) || !ParseU64(v, &gen.seed)) return Fail("--seed needs an unsigned integer");
    } else if (a == "--layers") {
      if (!value(&v) || !ParseU64(v, &layers) || layers == 0) return Fail("--layers needs N >= 1");
    } else if (a == "--ctx") {
      if (!value(&v) || !ParseU64(v, &ctx) || ctx == 0 || ctx > UINT32_MAX) {
        return Fail("--ctx needs 1 <= N < 2^32");
      }
    } else if (a == "--std") {
      if (!value(&std_arg)) return Fail("--std needs a value");
    } else if (a == "--split") {
      if (!value(&v) || !ParseU64(v, &split) || split < 2 || split > 9999) {
        return Fail("--split needs 2 <= N <= 9999");
      }
    } else if (a == "--threads") {
      if (!value(&v) || !ParseU64(v, &threads) || threads > 1024)
        return Fail("--threads needs 0..1024");
    } else {
      return Fail("unknown argument \"" + std::string(a) + "\" (see --help)");
    }
  }
  if (preset.empty()) return Fail("--preset is required (see --help)");
  if (out.empty() && !list) return Fail("--out is required (or --list)");
  auto spec = PresetSpec(preset);
  if (!spec.ok()) return Fail(spec.status().message());
  if (layers > 0) {
    if (layers > 1024) return Fail("--layers must be <= 1024");
    Status s = SetLayerCount(*spec, static_cast<uint32_t>(layers));
    if (!s.ok()) return Fail(s.message());
  }
  if (ctx > 0) spec->context_length = static_cast<uint32_t>(ctx);
  if (!std_arg.empty()) {
    char* end = nullptr;
    errno = 0;
    const float x = std::strtof(std_arg.c_str(), &end);
    if (errno != 0 || end == std_arg.c_str() || *end != '\0') return Fail("--std needs a number");
    spec->weight_std = x;
  }
  gen.threads = static_cast<uint32_t>(threads);
  auto plan = MakePlan(*spec, types);
  if (!plan.ok()) return Fail(plan.status().message());
  if (list) {
    for (const auto& t : plan->tensors) {
      auto bytes = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
      std::printf("%-36s %-5s %-22s %llu\n", t.name.c_str(), std::string(TypeName(t.type)).c_str(),
                  Shape(t.ne).c_str(), static_cast<unsigned long long>(bytes.ok() ? *bytes : 0));
    }
    std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // name -> (tensors, bytes)
    uint64_t params = 0;
    for (const auto& t : plan->tensors) {
      auto bytes = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
      auto& e = by_type[std::string(TypeName(t.type))];
      ++e.first;
      e.second += bytes.ok() ? *bytes : 0;
      params += t.elements();
    }
    for (const auto& [name, e] : by_type) {
      std::printf("  %-7s %5llu tensors %10.3f GB\n", name.c_str(),
                  static_cast<unsigned long long>(e.first), static_cast<double>(e.second) / 1e9);
    }
    std::printf("%zu tensors, %.3f B parameters, %.3f GB of tensor data (type %s)\n",
                plan->tensors.size(), static_cast<double>(params) / 1e9,
                static_cast<double>(plan->data_bytes()) / 1e9, plan->type_name.c_str());
    return 0;
  }
  if (!quiet && ::isatty(STDERR_FILENO)) {
    auto last = std::chrono::steady_clock::now();
    gen.progress = [last](uint64_t done, uint64_t total) mutable {
      const auto now = std::chrono::steady_clock::now();
      if (done < total && now - last < std::chrono::milliseconds(500)) return;
      last = now;
      std::fprintf(stderr, "\r%5.1f%%  %.2f / %.2f GB", total ? 100.0 * done / total : 100.0,
                   done / 1e9, total / 1e9);
      if (done >= total) std::fputc('\n', stderr);
    };
  }
  if (split > 0) {
    std::string prefix = out;
    if (prefix.size() > 5 && prefix.compare(prefix.size() - 5, 5, ".gguf") == 0) {
      prefix.resize(prefix.size() - 5);
    }
    auto parts = WriteModelSplit(*plan, gen, prefix, static_cast<uint32_t>(split));
    if (!parts.ok()) return Fail(parts.status().ToString());
    for (const auto& p : *parts) std::printf("wrote %s\n", p.c_str());
    return 0;
  }
  auto written = WriteModel(*plan, gen, out);
  if (!written.ok()) return Fail(written.status().ToString());
  std::printf("wrote %s: %llu bytes, %zu tensors, preset %s, type %s, seed %llu\n", out.c_str(),
              static_cast<unsigned long long>(*written), plan->tensors.size(), preset.c_str(),
              plan->type_name.c_str(), static_cast<unsigned long long>(gen.seed));
  return 0;
}

}  // namespace
}  // namespace garnet::mkmodel

int main(int argc, char** argv) {
  return garnet::mkmodel::Run(argc, argv);
}
