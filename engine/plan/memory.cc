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

uint64_t KvSeqBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  return AlignUp(uint64_t{KvCells(p, il, o)} * KvRowBytes(p, il, o.type));
}

uint64_t KvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  return 2 * o.n_seq * KvSeqBytes(p, il, o);
}

uint64_t HostKvLayerBytes(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  return 2ull * KvCells(p, il, o) * o.n_seq * KvRowBytes(p, il, o.type);
}

bool IsKvDonor(const gguf::Gemma4Params& p, uint32_t il) {
  for (const auto& l : p.layers) {
    if (l.kv_source >= 0 && static_cast<uint32_t>(l.kv_source) == il) return true;
  }
  return false;
}

uint64_t KvTotalBytes(const gguf::Gemma4Params& p, const KvOptions& o) {
  uint64_t total = 0;
  for (uint32_t il = 0; il < p.n_layer; ++il) total += KvLayerBytes(p, il, o);
  return total;
}

uint32_t AttentionSplitCount(uint32_t n_tokens, uint32_t n_q_heads, uint32_t max_keys) {
  constexpr uint64_t kTargetGroups = kSplitTargetGroups, kMinKeysPerSplit = 64, kMaxSplits = 64;
  const uint64_t work = static_cast<uint64_t>(n_tokens) * n_q_heads;
  if (work == 0 || work >= kTargetGroups || max_keys <= kMinKeysPerSplit) return 1;
  const uint64_t by_keys = (max_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  const uint64_t by_work = (kTargetGroups + work - 1) / work;
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min({by_keys, by_work, kMaxSplits})));
}

uint32_t AttentionMaxKeys(const gguf::Gemma4Params& p, uint32_t il, const KvOptions& o) {
  const gguf::Gemma4Layer& l = p.layers[il];
  const uint32_t owner = l.owns_kv() ? il : static_cast<uint32_t>(l.kv_source);
  if (owner >= p.layers.size()) return 0;
  const uint32_t cells = KvCells(p, owner, o);
  return l.kind == gguf::AttnKind::kFull ? cells : std::min(cells, p.sliding_window);
}

std::vector<ScratchBuffer> ScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o,
                                         const ScratchOptions& so) {
  uint64_t q_width = 0, kv_width = 0, ffn_width = 0, split_bytes = 0;
  for (uint32_t il = 0; il < p.layers.size(); ++il) {
    const auto& l = p.layers[il];
    q_width = std::max<uint64_t>(q_width, static_cast<uint64_t>(l.n_head) * l.head_dim);
    kv_width = std::max<uint64_t>(kv_width, static_cast<uint64_t>(l.n_head_kv) * l.head_dim);
    ffn_width = std::max<uint64_t>(ffn_width, l.ffn_dim);
    // The flash-decoding partials of the largest attention dispatch (one per sequence's run of
    // n <= T tokens; splits only happen while n * heads < 512, so n stays small).
    // AttentionSplitCount is 1 once n * heads reaches kSplitTargetGroups, so only n below
    // that can split: at most 511 / heads + 1 candidates per layer instead of n_ubatch.
    const uint32_t keys = AttentionMaxKeys(p, il, o);
    const uint32_t n_split_max = l.n_head == 0 ? 0 : (kSplitTargetGroups - 1) / l.n_head;
    for (uint32_t n = 1; n <= std::min<uint32_t>(o.n_ubatch, n_split_max); ++n) {
      const uint32_t splits = AttentionSplitCount(n, l.n_head, keys);
      if (splits > 1) {
        split_bytes = std::max<uint64_t>(
            split_bytes, static_cast<uint64_t>(n) * l.n_head * splits * (l.head_dim + 2ull) * 4);
      }
    }
  }
  const uint64_t t = o.n_ubatch;
  const uint64_t f = sizeof(float);
  const uint64_t rows = std::max<uint32_t>(o.n_seq, 1);
  const uint64_t tk = t * p.n_expert_used;
  const uint64_t lp = static_cast<uint64_t>(p.n_layer) * p.n_embd_per_layer;
  constexpr auto kUp = ScratchPlace::kHostUpload;
  std::vector<ScratchBuffer> out = {
      {"hidden", t * p.n_embd * f},
      {"norm", t * p.n_embd * f},
      {"branch", t * p.n_embd * f},
      {"q", t * q_width * f},
      {"attn", t * q_width * f},
      {"k", t * kv_width * f},
      {"v", t * kv_width * f},
      {"ffn_gate", t * ffn_width * f},
      {"ffn_up", t * ffn_width * f},
      {"attn_split", split_bytes},
      {"logits", rows * p.n_vocab * f},
      // The greedy picks' per-chunk bests (vk::Kernels::ArgmaxScratchBytes, same formula: 128
      // (value, id) pairs per row).
      {"pick_part", rows * 128 * 8},
      // Decode's normalised matvec inputs (VulkanBackendOptions::prenorm): the attention's, then
      // the feed-forward's and the routed experts'; for MoE a fourth row, the residual stream
      // before the attention block's update (VulkanBackendOptions::early_routing).
      {"prenorm", (p.is_moe() ? 4 : 3) * p.n_embd * f},
      // The same inputs quantised (VulkanBackendOptions::quantized_inputs): the attention's,
      // the feed-forward's and (MoE) the routed experts', n_embd * 3 / 2 bytes each
      // (vk::Kernels::Q8xBytes, same formula).
      {"prenorm_q8", (p.is_moe() ? 3 : 2) * (p.n_embd + p.n_embd / 2ull)},
  };
  if (p.is_moe()) {
    out.push_back({"router", t * p.n_expert * f});
    out.push_back({"moe_ids", tk * 4});
    out.push_back({"moe_weights", tk * f});
    // MatmulId's slot grouping (vk::MatmulIdScratchBytes(E, T*K), same formula): E + 1 counts,
    // T*K slot ids and two entries per tile, tiles = ceil(T*K / 64) + E + 1.
    const uint64_t tiles = (tk + 63) / 64 + p.n_expert + 1;
    out.push_back({"moe_group", (p.n_expert + 1ull + tk + 2 * tiles) * 4});
    out.push_back({"moe_gate_up", tk * 2ull * p.expert_ffn_dim * f});
    out.push_back({"moe_down", tk * p.n_embd * f});
    out.push_back({"moe_out", t * p.n_embd * f});
  }
  if (p.has_ple()) {
    out.push_back({"ple", t * lp * f});
    out.push_back({"ple_gate", t * p.n_embd_per_layer * f});
  }
  out.push_back({"tokens", t * 4, kUp});
  out.push_back({"positions", t * 4, kUp});
  out.push_back({"logit_rows", rows * 4, kUp});
  out.push_back({"attn_pos", t * kBufferAlign, kUp});
  if (p.has_ple()) out.push_back({"ple_rows", t * lp * f, kUp});
  out.push_back({"logits_out", rows * p.n_vocab * f, ScratchPlace::kHostReadback});
  out.push_back({"picks", rows * 4, ScratchPlace::kHostReadback});
  // Top candidates, up to 128 (value, id) pairs per 2048 logits of each row
  // (vk::Kernels::TopChunksBytes).
  out.push_back(
      {"top_chunks", rows * ((p.n_vocab + 2047) / 2048) * 128 * 8, ScratchPlace::kHostReadback});
  if (so.from_host) {
    out.push_back({"hidden_in", t * p.n_embd * f, kUp});
    uint64_t kv_in = 0;
    for (uint32_t il = 0; il < p.layers.size(); ++il) {
      if (IsKvDonor(p, il)) kv_in += 2 * AlignUp(t * KvRowBytes(p, il, KvType::kF32));
    }
    if (kv_in > 0) out.push_back({"kv_in", kv_in, kUp});
  }
  if (so.host_experts && p.is_moe()) {
    constexpr auto kRb = ScratchPlace::kHostReadback;
    out.push_back({"moe_x_out", t * p.n_embd * f, kRb});
    out.push_back({"moe_ids_out", tk * 4, kRb});
    out.push_back({"moe_weights_out", tk * f, kRb});
    out.push_back({"moe_out_in", t * p.n_embd * f, kUp});
  }
  for (auto& b : out) b.bytes = AlignUp(b.bytes);
  return out;
}

uint64_t ScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o, const ScratchOptions& s) {
  uint64_t total = 0;
  for (const auto& b : ScratchLayout(p, o, s)) total += b.bytes;
  return total;
}

std::vector<ScratchBuffer> HostScratchLayout(const gguf::Gemma4Params& p, const KvOptions& o,
                                             bool layers) {
  uint64_t q_width = 0, kv_width = 0, ffn_width = 0;
  for (const auto& l : p.layers) {
    q_width = std::max<uint64_t>(q_width, static_cast<uint64_t>(l.n_head) * l.head_dim);
    kv_width = std::max<uint64_t>(kv_width, static_cast<uint64_t>(l.n_head_kv) * l.head_dim);
    ffn_width = std::max<uint64_t>(ffn_width, l.ffn_dim);
  }
  const uint64_t t = o.n_ubatch, f = sizeof(float), h = p.n_embd;
  std::vector<ScratchBuffer> out;
  if (layers) {
    out = {{"x", t * h * f},
           {"a", t * h * f},
           {"o", t * h * f},
           {"q", t * q_width * f},
           {"att", t * q_width * f},
           {"k", t * kv_width * f},
           {"v", t * kv_width * f},
           {"rope", t * 1024 * f},
           {"ffn_gate", t * ffn_width * f},
           {"ffn_up", t * ffn_width * f}};
    if (p.has_ple()) {
      out.push_back({"ple", t * p.n_layer * p.n_embd_per_layer * f});
      out.push_back({"ple_gate", t * p.n_embd_per_layer * f});
    }
    if (p.is_moe()) {
      out.push_back({"moe_dense", t * h * f});
      out.push_back({"router", t * p.n_expert * f});
      out.push_back({"moe_out", t * h * f});
    }
  }
  if (p.is_moe()) {
    // Slots of several experts are computed in one parallel step: rows for max(T, K) slots.
    const uint64_t r = std::max<uint64_t>(t, p.n_expert_used);
    out.push_back({"moe_x", r * h * f});
    out.push_back({"moe_gate_up", r * 2ull * p.expert_ffn_dim * f});
    out.push_back({"moe_down", r * h * f});
  }
  for (auto& b : out) b.bytes = AlignUp(b.bytes);
  return out;
}

uint64_t HostScratchBytes(const gguf::Gemma4Params& p, const KvOptions& o, bool layers) {
  uint64_t total = 0;
  for (const auto& b : HostScratchLayout(p, o, layers)) total += b.bytes;
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
