#include "registry/summary.h"

#include <map>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"
#include "engine/quant/types.h"

namespace garnet::registry {

GgufSummary SummarizeGguf(const std::vector<std::string>& paths) {
  GgufSummary s;
  auto model = gguf::Model::OpenParts(paths);
  if (!model.ok()) {
    s.error = model.status().ToString();
    return s;
  }
  const gguf::Model& m = **model;
  if (auto a = m.GetString("general.architecture"); a.ok()) s.architecture = std::string(*a);
  if (auto n = m.GetString("general.name"); n.ok()) s.name = std::string(*n);
  s.tensor_count = m.tensors().size();
  // Quantisation label: the type holding the most bytes among matrices.
  std::map<GgmlType, uint64_t> bytes_by_type;
  for (const gguf::TensorInfo& t : m.tensors()) {
    s.parameters += t.elements();
    if (t.n_dims >= 2) bytes_by_type[t.type] += t.bytes;
  }
  uint64_t best = 0;
  for (const auto& [type, bytes] : bytes_by_type) {
    if (bytes > best) {
      best = bytes;
      s.file_type = std::string(TypeName(type));
    }
  }
  if (!s.architecture.empty()) {
    const std::string a = s.architecture;
    if (auto v = m.GetU32(a + ".context_length"); v.ok()) s.context_length = *v;
    if (auto v = m.GetU32(a + ".block_count"); v.ok()) s.n_layer = *v;
    if (auto v = m.GetU32(a + ".embedding_length"); v.ok()) s.n_embd = *v;
    if (auto v = m.GetU32(a + ".expert_count"); v.ok()) s.n_expert = *v;
    if (auto v = m.GetU32(a + ".expert_used_count"); v.ok()) s.n_expert_used = *v;
  }
  if (s.architecture == "gemma4") {
    auto p = gguf::ReadGemma4Params(m);
    if (!p.ok()) s.error = "gemma4 parameters: " + p.status().ToString();
  }
  return s;
}

}  // namespace garnet::registry
