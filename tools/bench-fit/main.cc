// garnet-bench-fit: how long a fit takes for every catalog-sized model, from the header alone.
//
// For each preset and type it writes a sparse model file (real header, data left as a hole, see
// sparse_model.h) into a temporary folder, then times, per iteration: opening and parsing the GGUF
// header (gguf::Model::Open), ShapeFromModel (hyper-parameters + tensor classes), MakePlan
// (placement, the largest context by binary search) and FormatPlan. No tensor data is read.
// Inventory: one GPU and host RAM as given by --vram / --ram (default 24GiB / 64GiB), so the
// numbers do not depend on this machine's devices.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/plan/planner.h"
#include "tools/bench-fit/sparse_model.h"
#include "tools/mkmodel/plan.h"
#include "tools/mkmodel/spec.h"

namespace garnet::benchfit {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<std::string> presets = {"e2b", "e4b", "31b", "26b-a4b"};
  std::vector<std::string> types = {"q4_k_m", "q8_0", "bf16", "q4_0"};
  int iters = 20;
  uint32_t ctx = 8192;
  std::string vram = "24GiB";
  std::string ram = "64GiB";
  double check_ms = 0;  // > 0: exit 1 when a model's median exceeds it
  bool report = false;
  std::string dir;  // empty: a fresh temporary folder, removed at the end
};

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) out.push_back(s.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void Usage() {
  std::fprintf(stderr,
               "usage: garnet-bench-fit [--presets e2b,e4b,31b,26b-a4b] "
               "[--types q4_k_m,q8_0,bf16,q4_0]\n"
               "                        [--iters 20] [--ctx 8192] [--vram 24GiB] [--ram 64GiB]\n"
               "                        [--check-ms 50] [--report] [--dir DIR]\n");
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (k == "--report") {
      a->report = true;
    } else if (k == "--presets" && value(&v)) {
      a->presets = SplitList(v);
    } else if (k == "--types" && value(&v)) {
      a->types = SplitList(v);
    } else if (k == "--iters" && value(&v)) {
      a->iters = std::atoi(v.c_str());
    } else if (k == "--ctx" && value(&v)) {
      a->ctx = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    } else if (k == "--vram" && value(&v)) {
      a->vram = v;
    } else if (k == "--ram" && value(&v)) {
      a->ram = v;
    } else if (k == "--check-ms" && value(&v)) {
      a->check_ms = std::atof(v.c_str());
    } else if (k == "--dir" && value(&v)) {
      a->dir = v;
    } else {
      return false;
    }
  }
  return a->iters > 0 && a->ctx > 0;
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Timing {
  std::vector<double> open, shape, plan, format, total;
};

// One fit, timed by phase. The plan is returned for --report.
Status FitOnce(const std::string& path, const Args& a, const plan::Inventory& inv, Timing* t,
               std::string* report) {
  const auto t0 = Clock::now();
  GARNET_ASSIGN_OR_RETURN(auto model, gguf::Model::Open(path));
  const auto t1 = Clock::now();
  GARNET_ASSIGN_OR_RETURN(plan::ModelShape shape, plan::ShapeFromModel(*model));
  const auto t2 = Clock::now();
  plan::KvOptions kv;
  kv.n_ctx = std::min(a.ctx, shape.params.context_length);
  GARNET_ASSIGN_OR_RETURN(plan::Plan p, plan::MakePlan(shape, kv, inv, plan::Policy{}));
  const auto t3 = Clock::now();
  *report = plan::FormatPlan(p);
  const auto t4 = Clock::now();
  t->open.push_back(Ms(t1 - t0));
  t->shape.push_back(Ms(t2 - t1));
  t->plan.push_back(Ms(t3 - t2));
  t->format.push_back(Ms(t4 - t3));
  t->total.push_back(Ms(t4 - t0));
  return Status::OK();
}

int Run(const Args& a) {
  plan::Inventory empty;
  empty.host.name = "host";
  auto inv = plan::ApplyOverrides(empty, a.vram, a.ram);
  if (!inv.ok()) {
    std::fprintf(stderr, "garnet-bench-fit: %s\n", inv.status().ToString().c_str());
    return 2;
  }
  std::string dir = a.dir;
  const bool temp_dir = dir.empty();
  if (temp_dir) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/garnet-bench-fit-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("garnet-bench-fit: mkdtemp");
      return 1;
    }
    dir = tmpl;
  } else {
    ::mkdir(dir.c_str(), 0755);
  }
  std::printf(
      "fit of the header only: open+parse GGUF, ShapeFromModel, MakePlan (auto policy, "
      "%s GPU, %s host, ctx %u), FormatPlan; %d iterations, ms\n",
      a.vram.c_str(), a.ram.c_str(), a.ctx, a.iters);
  std::printf("%-18s %9s %8s %7s | %7s %7s %7s %7s | %7s %7s\n", "model", "file", "header",
              "tensors", "open", "shape", "plan", "format", "min", "median");
  double worst = 0;
  std::string worst_name;
  std::vector<std::string> written;
  int rc = 0;
  for (const std::string& preset : a.presets) {
    for (const std::string& type : a.types) {
      const std::string name = preset + "-" + type;
      auto spec = mkmodel::PresetSpec(preset);
      if (!spec.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), spec.status().ToString().c_str());
        return 2;
      }
      mkmodel::TypeOptions types;
      types.base = type;
      auto mplan = mkmodel::MakePlan(*spec, types);
      if (!mplan.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), mplan.status().ToString().c_str());
        return 2;
      }
      const std::string path = dir + "/" + name + ".gguf";
      auto size = WriteSparseModel(*mplan, path);
      if (!size.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), size.status().ToString().c_str());
        rc = 1;
        break;
      }
      written.push_back(path);
      Timing t;
      std::string report;
      uint64_t header = 0;
      size_t n_tensors = 0;
      {
        auto m = gguf::Model::Open(path);
        if (m.ok()) {
          header = (*m)->file().data_offset();
          n_tensors = (*m)->tensors().size();
        }
      }
      Status s;
      for (int i = 0; i < a.iters && s.ok(); ++i) s = FitOnce(path, a, *inv, &t, &report);
      if (!s.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), s.ToString().c_str());
        rc = 1;
        break;
      }
      const double med = Median(t.total);
      std::printf("%-18s %9s %8s %7zu | %7.2f %7.2f %7.2f %7.2f | %7.2f %7.2f\n", name.c_str(),
                  plan::FormatBytes(*size).c_str(), plan::FormatBytes(header).c_str(), n_tensors,
                  Median(t.open), Median(t.shape), Median(t.plan), Median(t.format),
                  *std::min_element(t.total.begin(), t.total.end()), med);
      if (a.report) std::printf("%s\n", report.c_str());
      if (med > worst) {
        worst = med;
        worst_name = name;
      }
    }
    if (rc != 0) break;
  }
  std::printf("max median: %.2f ms (%s)\n", worst, worst_name.c_str());
  if (temp_dir) {
    for (const auto& p : written) ::unlink(p.c_str());
    ::rmdir(dir.c_str());
  }
  if (rc == 0 && a.check_ms > 0 && worst > a.check_ms) {
    std::printf("FAIL: above the %.0f ms limit\n", a.check_ms);
    return 1;
  }
  return rc;
}

}  // namespace
}  // namespace garnet::benchfit

int main(int argc, char** argv) {
  garnet::benchfit::Args args;
  if (!garnet::benchfit::ParseArgs(argc, argv, &args)) {
    garnet::benchfit::Usage();
    return 2;
  }
  return garnet::benchfit::Run(args);
}
