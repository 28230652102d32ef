// Fuzz target: parse an arbitrary image with File::FromMemory and, when it parses, walk every
// value, every array element and every tensor, check that everything the reader hands out lies
// inside the image, and run the typed accessors and ReadGemma4Params over it.
// Built as a libFuzzer binary (gguf_fuzz, clang only) and replayed by gguf_fuzz_replay.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"

namespace {

using garnet::gguf::File;
using garnet::gguf::Model;
using garnet::gguf::Value;
using garnet::gguf::ValueType;

// Invariant violations abort so both libFuzzer and the replay test see them as crashes.
void Check(bool ok) {
  if (!ok) std::abort();
}

bool Inside(const uint8_t* base, size_t size, const void* p, uint64_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return b >= base && static_cast<uint64_t>(b - base) <= size &&
         n <= size - static_cast<uint64_t>(b - base);
}

volatile uint64_t g_sink;  // keeps the reads below from being optimised away

void Walk(const uint8_t* data, size_t size, const File& f) {
  uint64_t acc = 0;
  for (const auto& [key, v] : f.metadata()) {
    Check(Inside(data, size, key.data(), key.size()));
    Check(f.Find(key) == &v);
    acc += v.AsInt().value_or(0) + static_cast<uint64_t>(v.AsFloat().value_or(0) != 0);
    if (v.type == ValueType::kString) Check(Inside(data, size, v.str.data(), v.str.size()));
    if (!v.is_array()) continue;
    Check(v.elem_type != ValueType::kArray);
    if (v.elem_type == ValueType::kString) {
      Check(v.strings.size() == v.count);
      for (auto s : v.strings) {
        Check(Inside(data, size, s.data(), s.size()));
        if (!s.empty()) acc += static_cast<uint8_t>(s.back());
      }
    } else {
      for (uint64_t k = 0; k < v.count; ++k) {
        acc += static_cast<uint64_t>(v.IntAt(k).value_or(0));
        acc += static_cast<uint64_t>(v.FloatAt(k).value_or(0) != 0);
      }
      Check(!v.IntAt(v.count).has_value());
    }
  }
  for (const auto& t : f.tensors()) {
    Check(f.FindTensor(t.name) == &t);
    Check(t.n_dims >= 1 && t.n_dims <= 4);
    Check(t.offset % f.alignment() == 0);
    Check(Inside(data, size, t.name.data(), t.name.size()));
    Check(Inside(data, size, t.data, t.bytes));
    if (t.bytes > 0) acc += t.data[0] + t.data[t.bytes - 1];
  }
  g_sink = acc;
}

void Accessors(const Model& m) {
  uint64_t acc = 0;
  for (const auto& [key, v] : m.file(0).metadata()) {
    acc += m.GetU32(key).ok() + m.GetU64(key).ok() + m.GetF32(key).ok() + m.GetBool(key).ok() +
           m.GetString(key).ok() + m.GetBoolArray(key).ok() + m.GetI32Array(key).ok() +
           m.GetF32Array(key).ok() + m.GetStringArray(key).ok() +
           m.GetPerLayerU32(key, static_cast<uint32_t>(v.count % 64)).ok();
  }
  auto g = garnet::gguf::ReadGemma4Params(m);
  if (g.ok()) {
    Check(g->layers.size() == g->n_layer);
    for (const auto& l : g->layers) {
      Check(l.kv_source < static_cast<int32_t>(g->first_shared_layer()));
      acc += l.head_dim;
    }
  }
  g_sink = acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = File::FromMemory(std::span<const uint8_t>(data, size), "fuzz.gguf");
  if (!f.ok()) {
    Check(!f.status().message().empty());
    return 0;
  }
  Walk(data, size, **f);
  std::vector<std::unique_ptr<File>> parts;
  parts.push_back(std::move(f).value());
  auto m = Model::FromFiles(std::move(parts));
  if (m.ok()) Accessors(**m);
  return 0;
}
