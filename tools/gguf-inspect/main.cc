// garnet-gguf: prints a GGUF file's (or split set's) header, metadata, tensor table, a per-type
// histogram and, for gemma4 models, the hyper-parameters garnet derives from it.
//
// Usage: garnet-gguf [--json] [--no-tensors] [--full] <model.gguf | part-0000N-of-0000M.gguf>
// Exit codes: 0 ok, 1 the file could not be opened or is malformed, 2 usage error,
// 3 the file is a valid GGUF but its gemma4 hyper-parameters are not.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"

namespace garnet::gguf {
namespace {

struct Options {
  bool json = false;
  bool tensors = true;
  bool full = false;  // do not abbreviate arrays and long strings
  std::string path;
};

constexpr uint64_t kArrayHead = 8;
constexpr size_t kStringMax = 96;

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Quoted form of a string: control characters escaped; bytes >= 0x80 kept when the string is
// valid UTF-8 and escaped otherwise; long strings cut at a character boundary.
std::string Quote(std::string_view s, bool full, bool json) {
  std::string out = "\"";
  size_t n = full ? s.size() : std::min(s.size(), kStringMax);
  while (n < s.size() && n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
  const bool keep_high = ValidUtf8(s);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (!keep_high && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), json ? "\\u%04x" : "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);  // JSON keeps UTF-8 bytes as they are
    }
  }
  out += '"';
  if (n < s.size()) {
    if (json) {
      out.insert(out.size() - 1, "...");
    } else {
      out += "... (" + std::to_string(s.size()) + " bytes)";
    }
  }
  return out;
}

std::string Number(double d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", d);
  return buf;
}

std::string ScalarText(const Value& v, bool full, bool json) {
  switch (v.type) {
    case ValueType::kString:
      return Quote(v.str, full, json);
    case ValueType::kBool:
      return v.b ? "true" : "false";
    case ValueType::kFloat32:
    case ValueType::kFloat64:
      return Number(v.f);
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
    case ValueType::kUint64:
      return std::to_string(v.u);
    default:
      return std::to_string(v.i);
  }
}

std::string ElementText(const Value& v, uint64_t k, bool full, bool json) {
  if (v.elem_type == ValueType::kString) return Quote(v.strings[k], full, json);
  if (v.elem_type == ValueType::kBool) return *v.IntAt(k) ? "true" : "false";
  if (v.elem_type == ValueType::kFloat32 || v.elem_type == ValueType::kFloat64) {
    return Number(*v.FloatAt(k));
  }
  if (v.elem_type == ValueType::kUint64) {
    uint64_t x;
    std::memcpy(&x, v.raw + k * 8, 8);
    return std::to_string(x);
  }
  return std::to_string(*v.IntAt(k));
}

std::string ArrayText(const Value& v, bool full, bool json) {
  const uint64_t n = full ? v.count : std::min(v.count, kArrayHead);
  std::string out = "[";
  for (uint64_t k = 0; k < n; ++k) {
    if (k) out += ", ";
    out += ElementText(v, k, full, json);
  }
  if (n < v.count) out += json ? "" : ", ...";
  out += "]";
  return out;
}

std::string TypeText(const Value& v) {
  if (!v.is_array()) return std::string(ValueTypeName(v.type));
  return "array[" + std::string(ValueTypeName(v.elem_type)) + " x " + std::to_string(v.count) + "]";
}

std::string Shape(const TensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) {
    if (d) s += ", ";
    s += std::to_string(t.ne[d]);
  }
  return s + "]";
}

std::string HumanBytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

struct TypeStat {
  uint64_t count = 0;
  uint64_t bytes = 0;
  uint64_t elements = 0;
};

std::map<std::string_view, TypeStat> Histogram(const Model& m) {
  std::map<std::string_view, TypeStat> h;
  for (const auto& t : m.tensors()) {
    TypeStat& s = h[TypeName(t.type)];
    ++s.count;
    s.bytes += t.bytes;
    s.elements += t.elements();
  }
  return h;
}

uint64_t TensorBytesTotal(const Model& m) {
  uint64_t sum = 0;
  for (const auto& t : m.tensors()) sum += t.bytes;
  return sum;
}

const char* KindName(AttnKind k) {
  return k == AttnKind::kSliding ? "sliding" : "full";
}

void PrintText(const Model& m, const Options& o, const Result<Gemma4Params>* g) {
  std::printf("model: %s (%zu part%s, %s)\n", m.file(0).path().c_str(), m.file_count(),
              m.file_count() == 1 ? "" : "s", HumanBytes(m.total_bytes()).c_str());
  for (size_t i = 0; i < m.file_count(); ++i) {
    const File& f = m.file(i);
    std::printf("  part %zu: %s  version %u  %" PRIu64 " bytes  alignment %u  data at %" PRIu64
                "  %zu keys  %zu tensors\n",
                i + 1, f.path().c_str(), f.version(), f.size(), f.alignment(), f.data_offset(),
                f.metadata().size(), f.tensors().size());
  }
  std::printf("\nmetadata (%zu keys):\n", m.file(0).metadata().size());
  for (const auto& [key, v] : m.file(0).metadata()) {
    std::printf(
        "  %-48s %-22s = %s\n", std::string(key).c_str(), TypeText(v).c_str(),
        (v.is_array() ? ArrayText(v, o.full, false) : ScalarText(v, o.full, false)).c_str());
  }
  if (o.tensors) {
    std::printf("\ntensors (%zu, %s of data):\n", m.tensors().size(),
                HumanBytes(TensorBytesTotal(m)).c_str());
    std::printf("  %-40s %-8s %-26s %14s %6s %14s\n", "name", "type", "shape", "bytes", "part",
                "offset");
    for (const auto& t : m.tensors()) {
      const uint64_t abs = m.file(t.file_index).data_offset() + t.offset;
      std::printf("  %-40s %-8s %-26s %14" PRIu64 " %6u %14" PRIu64 "\n",
                  std::string(t.name).c_str(), std::string(TypeName(t.type)).c_str(),
                  Shape(t).c_str(), t.bytes, t.file_index + 1, abs);
    }
  }
  std::printf("\ntypes:\n");
  const uint64_t total = TensorBytesTotal(m);
  for (const auto& [name, s] : Histogram(m)) {
    std::printf("  %-8s %6" PRIu64 " tensors %14" PRIu64 " bytes (%5.1f%%) %16" PRIu64
                " elements\n",
                std::string(name).c_str(), s.count, s.bytes,
                total ? 100.0 * static_cast<double>(s.bytes) / static_cast<double>(total) : 0.0,
                s.elements);
  }
  if (g == nullptr) return;
  if (!g->ok()) {
    std::printf("\ngemma4: INVALID: %s\n", g->status().ToString().c_str());
    return;
  }
  const Gemma4Params& p = **g;
  std::printf("\ngemma4:\n");
  std::printf("  n_embd %u  n_layer %u  n_vocab %u  context %u  sliding_window %u\n", p.n_embd,
              p.n_layer, p.n_vocab, p.context_length, p.sliding_window);
  std::printf(
      "  kv_shared_layers %u (first shared %u)  per_layer_embd %u  rms_eps %g  "
      "logit_softcap %g\n",
      p.n_kv_shared, p.first_shared_layer(), p.n_embd_per_layer, p.rms_eps, p.final_logit_softcap);
  std::printf("  rope dims full %u / swa %u\n", p.rope_dims_full, p.rope_dims_swa);
  if (p.is_moe()) {
    std::printf("  experts %u (top %u), expert ffn %u\n", p.n_expert, p.n_expert_used,
                p.expert_ffn_dim);
  }
  std::printf("  %-5s %-8s %8s %6s %9s %8s %10s %5s %s\n", "layer", "kind", "head_dim", "heads",
              "kv_heads", "ffn", "rope_base", "has_v", "kv");
  for (size_t il = 0; il < p.layers.size(); ++il) {
    const Gemma4Layer& l = p.layers[il];
    std::string kv = l.owns_kv() ? "own" : "from " + std::to_string(l.kv_source);
    std::printf("  %-5zu %-8s %8u %6u %9u %8u %10g %5s %s\n", il, KindName(l.kind), l.head_dim,
                l.n_head, l.n_head_kv, l.ffn_dim, l.rope_base, l.has_v ? "yes" : "no", kv.c_str());
  }
}

void PrintJson(const Model& m, const Options& o, const Result<Gemma4Params>* g) {
  std::string out = "{\"parts\":[";
  for (size_t i = 0; i < m.file_count(); ++i) {
    const File& f = m.file(i);
    if (i) out += ",";
    out += "{\"path\":" + Quote(f.path(), true, true) +
           ",\"version\":" + std::to_string(f.version()) + ",\"size\":" + std::to_string(f.size()) +
           ",\"alignment\":" + std::to_string(f.alignment()) +
           ",\"data_offset\":" + std::to_string(f.data_offset()) +
           ",\"tensor_count\":" + std::to_string(f.tensors().size()) +
           ",\"kv_count\":" + std::to_string(f.metadata().size()) + "}";
  }
  out += "],\"metadata\":[";
  bool first = true;
  for (const auto& [key, v] : m.file(0).metadata()) {
    if (!first) out += ",";
    first = false;
    out += "{\"key\":" + Quote(key, true, true) + ",\"type\":\"" +
           std::string(ValueTypeName(v.type)) + "\"";
    if (v.is_array()) {
      out += ",\"elem_type\":\"" + std::string(ValueTypeName(v.elem_type)) +
             "\",\"count\":" + std::to_string(v.count) + ",\"value\":" + ArrayText(v, o.full, true);
    } else {
      out += ",\"value\":" + ScalarText(v, o.full, true);
    }
    out += "}";
  }
  out += "]";
  if (o.tensors) {
    out += ",\"tensors\":[";
    for (size_t k = 0; k < m.tensors().size(); ++k) {
      const TensorInfo& t = m.tensors()[k];
      if (k) out += ",";
      out += "{\"name\":" + Quote(t.name, true, true) + ",\"type\":\"" +
             std::string(TypeName(t.type)) + "\",\"shape\":" + Shape(t) +
             ",\"bytes\":" + std::to_string(t.bytes) + ",\"part\":" + std::to_string(t.file_index) +
             ",\"offset\":" + std::to_string(m.file(t.file_index).data_offset() + t.offset) + "}";
    }
    out += "]";
  }
  out += ",\"types\":{";
  first = true;
  for (const auto& [name, s] : Histogram(m)) {
    if (!first) out += ",";
    first = false;
    out += '"';
    out += name;
    out += "\":{\"count\":" + std::to_string(s.count) + ",\"bytes\":" + std::to_string(s.bytes) +
           ",\"elements\":" + std::to_string(s.elements) + "}";
  }
  out += "}";
  if (g != nullptr) {
    if (!g->ok()) {
      out += ",\"gemma4_error\":" + Quote(g->status().ToString(), true, true);
    } else {
      const Gemma4Params& p = **g;
      out += ",\"gemma4\":{\"n_embd\":" + std::to_string(p.n_embd) +
             ",\"n_layer\":" + std::to_string(p.n_layer) +
             ",\"n_vocab\":" + std::to_string(p.n_vocab) +
             ",\"context_length\":" + std::to_string(p.context_length) +
             ",\"sliding_window\":" + std::to_string(p.sliding_window) +
             ",\"n_kv_shared\":" + std::to_string(p.n_kv_shared) +
             ",\"n_embd_per_layer\":" + std::to_string(p.n_embd_per_layer) +
             ",\"n_expert\":" + std::to_string(p.n_expert) +
             ",\"n_expert_used\":" + std::to_string(p.n_expert_used) +
             ",\"expert_ffn_dim\":" + std::to_string(p.expert_ffn_dim) +
             ",\"rope_dims_full\":" + std::to_string(p.rope_dims_full) +
             ",\"rope_dims_swa\":" + std::to_string(p.rope_dims_swa) +
             ",\"rms_eps\":" + Number(p.rms_eps) +
             ",\"final_logit_softcap\":" + Number(p.final_logit_softcap) + ",\"layers\":[";
      for (size_t il = 0; il < p.layers.size(); ++il) {
        const Gemma4Layer& l = p.layers[il];
        if (il) out += ",";
        out += std::string("{\"kind\":\"") + KindName(l.kind) +
               "\",\"head_dim\":" + std::to_string(l.head_dim) +
               ",\"n_head\":" + std::to_string(l.n_head) +
               ",\"n_head_kv\":" + std::to_string(l.n_head_kv) +
               ",\"ffn_dim\":" + std::to_string(l.ffn_dim) +
               ",\"rope_base\":" + Number(l.rope_base) +
               ",\"has_v\":" + (l.has_v ? "true" : "false") +
               ",\"kv_source\":" + std::to_string(l.kv_source) + "}";
      }
      out += "]}";
    }
  }
  out += "}\n";
  std::fputs(out.c_str(), stdout);
}

int Usage() {
  std::fprintf(stderr,
               "usage: garnet-gguf [--json] [--no-tensors] [--full] <model.gguf>\n"
               "  Prints the header, metadata, tensor table and type histogram of a GGUF file\n"
               "  or split set (any part opens the whole set), plus a Gemma 4 summary.\n"
               "  --json        machine-readable output\n"
               "  --no-tensors  omit the tensor table\n"
               "  --full        do not abbreviate long arrays and strings\n");
  return 2;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--json") {
      o.json = true;
    } else if (a == "--no-tensors") {
      o.tensors = false;
    } else if (a == "--full") {
      o.full = true;
    } else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "garnet-gguf: unknown flag %s\n", argv[i]);
      return Usage();
    } else if (o.path.empty()) {
      o.path = a;
    } else {
      return Usage();
    }
  }
  if (o.path.empty()) return Usage();
  auto model = Model::Open(o.path);
  if (!model.ok()) {
    std::fprintf(stderr, "garnet-gguf: %s\n", model.status().ToString().c_str());
    return 1;
  }
  std::optional<Result<Gemma4Params>> g;
  auto arch = (*model)->GetString("general.architecture");
  if (arch.ok() && *arch == "gemma4") g.emplace(ReadGemma4Params(**model));
  const Result<Gemma4Params>* gp = g ? &*g : nullptr;
  if (o.json) {
    PrintJson(**model, o, gp);
  } else {
    PrintText(**model, o, gp);
  }
  if (gp != nullptr && !gp->ok()) {
    std::fprintf(stderr, "garnet-gguf: %s\n", gp->status().ToString().c_str());
    return 3;
  }
  return 0;
}

}  // namespace
}  // namespace garnet::gguf

int main(int argc, char** argv) {
  return garnet::gguf::Main(argc, argv);
}
