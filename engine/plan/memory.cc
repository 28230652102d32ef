#include "engine/plan/memory.h"

#include <algorithm>
#include <charconv>

namespace garnet::plan {

std::string_view KvTypeName(KvType t) {
  switch (t) {
    case KvType::kF32:
      return "f32";
    case KvType::kF16:
      return "f16";
    case KvType::kQ8_0:
      return "q8_0";
  }
  return "f16";
}

std::optional<KvType> ParseKvType(std::string_view name) {
  if (name == "f32") return KvType::kF32;
  if (name == "f16") return KvType::kF16;
  if (name == "q8_0") return KvType::kQ8_0;
  return std::nullopt;
}

uint32_t KvCells(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  const gguf::Gemma4Layer& l = p.layers[il];
  if (!l.owns_kv()) return 0;
  if (l.kind == gguf::AttnKind::kFull) return o.n_ctx;
  const uint64_t ring = static_cast<uint64_t>(p.sliding_window) + o.n_ubatch;
  return static_cast<uint32_t>(std::min<uint64_t>(o.n_ctx, ring));
}

uint64_t KvRowBytes(const gguf::Gemma4Params& p, uint32_t il, KvType type) {
  const gguf::Gemma4Layer& l = p.layers[il];
  const uint64_t elems = static_cast<uint64_t>(l.n_head_kv) * l.head_dim;
  switch (type) {
    case KvType::kF32:
      return elems * 4;
    case KvType::kF16:
      return elems * 2;
    case KvType::kQ8_0:
      return (elems + 31) / 32 * 34;  // head dims are multiples of 32
  }
  return elems * 2;
}

uint64_t KvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  const uint64_t cells = static_cast<uint64_t>(KvCells(p, il, o)) * o.n_seq;
  return 2 * AlignUp(cells * KvRowBytes(p, il, o.type));
}

uint64_t KvTotalBytes(const gguf::Gemma4Params& p, const KvOptions& o) {
  uint64_t total = 0;
  for (uint32_t il = 0; il < p.n_layer; ++il) total += KvLayerBytes(p, il, o);
  return total;
}

std::vector<ScratchBuffer> ScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o) {
  uint64_t q_width = 0, kv_width = 0, ffn_width = 0;
  for (const auto& l : p.layers) {
    q_width = std::max<uint64_t>(q_width, static_cast<uint64_t>(l.n_head) * l.head_dim);
    kv_width = std::max<uint64_t>(kv_width, static_cast<uint64_t>(l.n_head_kv) * l.head_dim);
    ffn_width = std::max<uint64_t>(ffn_width, l.ffn_dim);
  }
  const uint64_t t = o.n_ubatch;
  const uint64_t f = sizeof(float);
  std::vector<ScratchBuffer> out = {
      {"hidden", t * p.n_embd * f},  {"norm", t * p.n_embd * f},
      {"q", t * q_width * f},        {"k", t * kv_width * f},
      {"v", t * kv_width * f},       {"attn", t * q_width * f},
      {"branch", t * p.n_embd * f},  {"ffn_gate", t * ffn_width * f},
      {"ffn_up", t * ffn_width * f}, {"logits", static_cast<uint64_t>(o.n_seq) * p.n_vocab * f},
  };
  if (p.is_moe()) {
    out.push_back({"router", t * p.n_expert * f});
    out.push_back({"moe_gate_up", t * p.n_expert_used * 2ull * p.expert_ffn_dim * f});
    out.push_back({"moe_out", t * p.n_embd * f});
  }
  if (p.has_ple()) {
    out.push_back({"ple", t * p.n_layer * static_cast<uint64_t>(p.n_embd_per_layer) * f});
  }
  for (auto& b : out) b.bytes = AlignUp(b.bytes);
  return out;
}

uint64_t ScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o) {
  uint64_t total = 0;
  for (const auto& b : ScratchLayout(p, o)) total += b.bytes;
  return total;
}

namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

Result<WeightTensor> ClassifyTensor(std::string_view name, GgmlType type, uint64_t bytes,
                                    const gguf::Gemma4Params& p) {
  WeightTensor w;
  w.name = std::string(name);
  w.type = type;
  w.bytes = bytes;
  if (name.substr(0, 4) != "blk.") {
    if (name == "token_embd.weight") {
      w.cls = TensorClass::kTokenEmbd;
    } else if (name == "per_layer_token_embd.weight") {
      w.cls = TensorClass::kPleTable;
    } else {
      w.cls = TensorClass::kGlobal;
    }
    return w;
  }
  const std::string_view rest = name.substr(4);
  const size_t dot = rest.find('.');
  uint32_t layer = 0;
  const auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
  if (dot == std::string_view::npos || dot == 0 || ec != std::errc() || ptr != rest.data() + dot) {
    return Status::InvalidArgument("tensor " + std::string(name), "malformed block index");
  }
  if (layer >= p.n_layer) {
    return Status::InvalidArgument("tensor " + std::string(name),
                                   "block index beyond block_count " + std::to_string(p.n_layer));
  }
  w.layer = static_cast<int32_t>(layer);
  const std::string_view suffix = rest.substr(dot + 1);
  if (EndsWith(suffix, "_exps.weight")) {
    w.cls = TensorClass::kExperts;
  } else if (!p.layers[layer].owns_kv() &&
             (suffix == "attn_k.weight" || suffix == "attn_v.weight" ||
              suffix == "attn_k_norm.weight")) {
    w.cls = TensorClass::kUnused;
  } else {
    w.cls = TensorClass::kLayer;
  }
  return w;
}

Result<std::vector<WeightTensor>> ClassifyTensors(const gguf::Model& model,
                                                  const gguf::Gemma4Params& p) {
  std::vector<WeightTensor> out;
  out.reserve(model.tensors().size());
  for (const auto& t : model.tensors()) {
    GARNET_ASSIGN_OR_RETURN(WeightTensor w, ClassifyTensor(t.name, t.type, t.bytes, p));
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace garnet::plan
