// Gemma 4 hyper-parameters from GGUF metadata (../shared/docs/gemma4.md §3.2) and the tensor
// facts that metadata cannot express (V present or not, vocabulary size, head-dim cross-check).
#include "engine/gguf/gemma4.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace garnet::gguf {
namespace {

constexpr uint32_t kMaxLayers = 4096;  // far above any real model; bounds per-layer allocations

// Prefixes the architecture to a key: "gemma4.block_count".
std::string ArchKey(std::string_view arch, std::string_view key) {
  return std::string(arch) + "." + std::string(key);
}

Status Bad(const Model& m, std::string_view key, std::string_view what) {
  return Status::InvalidArgument(m.file(0).path() + ": key " + std::string(key), what);
}

Status BadTensor(const Model& m, std::string_view name, std::string_view what) {
  return Status::InvalidArgument(m.file(0).path() + ": tensor " + std::string(name), what);
}

// Optional key: NotFound yields `fallback`; any other error is returned.
template <typename T>
Result<T> Optional(Result<T> r, T fallback) {
  if (r.ok()) return r;
  if (r.status().IsNotFound()) return fallback;
  return r.status();
}

Result<uint32_t> Positive(const Model& m, const std::string& key) {
  GARNET_ASSIGN_OR_RETURN(uint32_t v, m.GetU32(key));
  if (v == 0) return Bad(m, key, "must be positive");
  return v;
}

}  // namespace

std::string BlockTensorName(uint32_t layer, std::string_view suffix) {
  return "blk." + std::to_string(layer) + "." + std::string(suffix);
}

Result<Gemma4Params> ReadGemma4Params(const Model& model) {
  Gemma4Params p;
  GARNET_ASSIGN_OR_RETURN(std::string_view arch, model.GetString("general.architecture"));
  if (arch != "gemma4") {
    return Bad(model, "general.architecture", "is \"" + std::string(arch) + "\", want \"gemma4\"");
  }
  p.architecture = std::string(arch);
  auto key = [&arch](std::string_view k) { return ArchKey(arch, k); };

  GARNET_ASSIGN_OR_RETURN(p.n_embd, Positive(model, key("embedding_length")));
  GARNET_ASSIGN_OR_RETURN(p.n_layer, Positive(model, key("block_count")));
  if (p.n_layer > kMaxLayers) {
    return Bad(model, key("block_count"),
               std::to_string(p.n_layer) + " layers is more than the supported " +
                   std::to_string(kMaxLayers));
  }
  const uint32_t L = p.n_layer;
  GARNET_ASSIGN_OR_RETURN(p.context_length, Positive(model, key("context_length")));

  // Layer kinds: a bool array (true = sliding), or the older integer period form in which the
  // last layer of each period is full attention.
  std::vector<bool> sliding(L, false);
  const std::string pattern_key = key("attention.sliding_window_pattern");
  const Value* pattern = model.Find(pattern_key);
  if (pattern == nullptr)
    return Status::NotFound(model.file(0).path() + ": key " + pattern_key, "not present");
  if (pattern->is_array()) {
    GARNET_ASSIGN_OR_RETURN(sliding, model.GetBoolArray(pattern_key));
    if (sliding.size() != L) {
      return Bad(model, pattern_key,
                 "has " + std::to_string(sliding.size()) + " entries, want one per layer (" +
                     std::to_string(L) + ")");
    }
  } else {
    GARNET_ASSIGN_OR_RETURN(uint32_t period, model.GetU32(pattern_key));
    for (uint32_t il = 0; il < L; ++il) sliding[il] = period == 0 || il % period < period - 1;
  }

  GARNET_ASSIGN_OR_RETURN(auto n_head, model.GetPerLayerU32(key("attention.head_count"), L));
  GARNET_ASSIGN_OR_RETURN(auto n_head_kv, model.GetPerLayerU32(key("attention.head_count_kv"), L));
  GARNET_ASSIGN_OR_RETURN(auto ffn, model.GetPerLayerU32(key("feed_forward_length"), L));

  GARNET_ASSIGN_OR_RETURN(uint32_t hd_full, Positive(model, key("attention.key_length")));
  GARNET_ASSIGN_OR_RETURN(uint32_t hd_swa, Positive(model, key("attention.key_length_swa")));
  // llama.cpp requires value_length == key_length for this architecture; so do we.
  for (auto [vk, want] : {std::pair{key("attention.value_length"), hd_full},
                          std::pair{key("attention.value_length_swa"), hd_swa}}) {
    GARNET_ASSIGN_OR_RETURN(uint32_t v, Optional(model.GetU32(vk), want));
    if (v != want) {
      return Bad(model, vk,
                 "is " + std::to_string(v) + " but the key length is " + std::to_string(want) +
                     " (K and V head dims must match)");
    }
  }

  GARNET_ASSIGN_OR_RETURN(float base_full, model.GetF32(key("rope.freq_base")));
  GARNET_ASSIGN_OR_RETURN(float base_swa, model.GetF32(key("rope.freq_base_swa")));
  for (auto [k, v] : {std::pair{key("rope.freq_base"), base_full},
                      std::pair{key("rope.freq_base_swa"), base_swa}}) {
    if (!(v > 0) || !std::isfinite(v)) return Bad(model, k, "must be a positive finite number");
  }
  GARNET_ASSIGN_OR_RETURN(p.rope_dims_full,
                          Optional(model.GetU32(key("rope.dimension_count")), hd_full));
  GARNET_ASSIGN_OR_RETURN(p.rope_dims_swa,
                          Optional(model.GetU32(key("rope.dimension_count_swa")), hd_swa));
  if (p.rope_dims_full == 0 || p.rope_dims_full > hd_full || p.rope_dims_full % 2 != 0) {
    return Bad(model, key("rope.dimension_count"),
               "is " + std::to_string(p.rope_dims_full) + ", want an even number in [2, " +
                   std::to_string(hd_full) + "]");
  }
  if (p.rope_dims_swa == 0 || p.rope_dims_swa > hd_swa || p.rope_dims_swa % 2 != 0) {
    return Bad(model, key("rope.dimension_count_swa"),
               "is " + std::to_string(p.rope_dims_swa) + ", want an even number in [2, " +
                   std::to_string(hd_swa) + "]");
  }

  GARNET_ASSIGN_OR_RETURN(p.rms_eps,
                          Optional(model.GetF32(key("attention.layer_norm_rms_epsilon")), 1e-6f));
  if (!(p.rms_eps > 0) || !std::isfinite(p.rms_eps) || p.rms_eps > 1) {
    return Bad(model, key("attention.layer_norm_rms_epsilon"), "must be in (0, 1]");
  }
  GARNET_ASSIGN_OR_RETURN(p.final_logit_softcap,
                          Optional(model.GetF32(key("final_logit_softcapping")), 0.0f));
  if (!(p.final_logit_softcap >= 0) || !std::isfinite(p.final_logit_softcap)) {
    return Bad(model, key("final_logit_softcapping"), "must be a non-negative finite number");
  }

  bool any_sliding = false;
  for (bool s : sliding) any_sliding = any_sliding || s;
  GARNET_ASSIGN_OR_RETURN(p.sliding_window,
                          Optional(model.GetU32(key("attention.sliding_window")), 0u));
  if (any_sliding && p.sliding_window == 0) {
    return Bad(model, key("attention.sliding_window"),
               "must be present and positive when any layer uses sliding-window attention");
  }

  GARNET_ASSIGN_OR_RETURN(p.n_kv_shared,
                          Optional(model.GetU32(key("attention.shared_kv_layers")), 0u));
  if (p.n_kv_shared >= L) {
    return Bad(
        model, key("attention.shared_kv_layers"),
        "is " + std::to_string(p.n_kv_shared) + ", must be below block_count " + std::to_string(L));
  }
  GARNET_ASSIGN_OR_RETURN(p.n_embd_per_layer,
                          Optional(model.GetU32(key("embedding_length_per_layer_input")), 0u));

  GARNET_ASSIGN_OR_RETURN(p.n_expert, Optional(model.GetU32(key("expert_count")), 0u));
  GARNET_ASSIGN_OR_RETURN(p.n_expert_used, Optional(model.GetU32(key("expert_used_count")), 0u));
  GARNET_ASSIGN_OR_RETURN(p.expert_ffn_dim,
                          Optional(model.GetU32(key("expert_feed_forward_length")), 0u));
  if (p.n_expert > 0) {
    if (p.n_expert_used == 0 || p.n_expert_used > p.n_expert) {
      return Bad(model, key("expert_used_count"),
                 "is " + std::to_string(p.n_expert_used) + ", want 1 to expert_count (" +
                     std::to_string(p.n_expert) + ")");
    }
    if (p.expert_ffn_dim == 0) {
      return Bad(model, key("expert_feed_forward_length"), "must be positive for MoE models");
    }
  } else if (p.n_expert_used != 0) {
    return Bad(model, key("expert_used_count"),
               "is " + std::to_string(p.n_expert_used) + " but expert_count is 0");
  }

  // Vocabulary from the embedding matrix [n_embd, n_vocab].
  const TensorInfo* embd = model.FindTensor("token_embd.weight");
  if (embd == nullptr) return BadTensor(model, "token_embd.weight", "not present");
  if (embd->n_dims != 2 || embd->ne[0] != p.n_embd || embd->ne[1] == 0 ||
      embd->ne[1] > UINT32_MAX) {
    return BadTensor(model, "token_embd.weight",
                     "shape [" + std::to_string(embd->ne[0]) + ", " + std::to_string(embd->ne[1]) +
                         "] (" + std::to_string(embd->n_dims) +
                         " dims) does not match embedding_length " + std::to_string(p.n_embd));
  }
  p.n_vocab = static_cast<uint32_t>(embd->ne[1]);

  p.layers.resize(L);
  for (uint32_t il = 0; il < L; ++il) {
    Gemma4Layer& ly = p.layers[il];
    ly.kind = sliding[il] ? AttnKind::kSliding : AttnKind::kFull;
    ly.head_dim = sliding[il] ? hd_swa : hd_full;
    ly.rope_base = sliding[il] ? base_swa : base_full;
    ly.n_head = n_head[il];
    ly.n_head_kv = n_head_kv[il];
    ly.ffn_dim = ffn[il];
    const std::string idx = "[" + std::to_string(il) + "]";
    if (ly.n_head == 0) return Bad(model, key("attention.head_count") + idx, "must be positive");
    if (ly.n_head_kv == 0 || ly.n_head % ly.n_head_kv != 0) {
      return Bad(model, key("attention.head_count_kv") + idx,
                 "is " + std::to_string(ly.n_head_kv) + ", must be positive and divide " +
                     "head_count " + std::to_string(ly.n_head));
    }
    if (ly.ffn_dim == 0) return Bad(model, key("feed_forward_length") + idx, "must be positive");
    ly.has_v = model.FindTensor(BlockTensorName(il, "attn_v.weight")) != nullptr;
    for (std::string_view norm : {"attn_q_norm.weight", "attn_k_norm.weight"}) {
      const std::string name = BlockTensorName(il, norm);
      const TensorInfo* t = model.FindTensor(name);
      if (t != nullptr && (t->n_dims != 1 || t->ne[0] != ly.head_dim)) {
        return BadTensor(
            model, name,
            "has " + std::to_string(t->ne[0]) + " elements (" + std::to_string(t->n_dims) +
                " dims) but the layer's head_dim is " + std::to_string(ly.head_dim) + " (from " +
                key(sliding[il] ? "attention.key_length_swa" : "attention.key_length") + ")");
      }
    }
  }

  // Projection shapes where present (§3.3, ne = [in, out]); K/V of shared layers are unused and
  // not checked.
  for (uint32_t il = 0; il < L; ++il) {
    const Gemma4Layer& ly = p.layers[il];
    const uint64_t H = p.n_embd, q = uint64_t{ly.n_head} * ly.head_dim;
    const uint64_t kv = uint64_t{ly.n_head_kv} * ly.head_dim, I = ly.ffn_dim;
    struct Want {
      const char* suffix;
      uint64_t ne0, ne1;
      bool check;
    };
    const bool owns = il < p.first_shared_layer();
    for (const Want& w :
         {Want{"attn_q.weight", H, q, true}, Want{"attn_k.weight", H, kv, owns},
          Want{"attn_v.weight", H, kv, owns}, Want{"attn_output.weight", q, H, true},
          Want{"ffn_gate.weight", H, I, true}, Want{"ffn_up.weight", H, I, true},
          Want{"ffn_down.weight", I, H, true}}) {
      if (!w.check) continue;
      const std::string name = BlockTensorName(il, w.suffix);
      const TensorInfo* t = model.FindTensor(name);
      if (t != nullptr && (t->n_dims != 2 || t->ne[0] != w.ne0 || t->ne[1] != w.ne1)) {
        return BadTensor(model, name,
                         "shape [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
                             "] (" + std::to_string(t->n_dims) + " dims) does not match [" +
                             std::to_string(w.ne0) + ", " + std::to_string(w.ne1) +
                             "] from the layer's hyper-parameters");
      }
    }
  }

  // KV sharing (§1.2): a shared layer reads the cache of the last owning layer of its kind.
  const uint32_t first_shared = p.first_shared_layer();
  for (uint32_t il = first_shared; il < L; ++il) {
    Gemma4Layer& ly = p.layers[il];
    for (int32_t d = static_cast<int32_t>(first_shared) - 1; d >= 0; --d) {
      if (p.layers[d].kind == ly.kind) {
        ly.kv_source = d;
        break;
      }
    }
    if (ly.kv_source < 0) {
      return Bad(model, key("attention.shared_kv_layers"),
                 "layer " + std::to_string(il) + " shares KV but no earlier layer of its kind (" +
                     (ly.kind == AttnKind::kSliding ? "sliding" : "full") + ") owns a cache");
    }
    // Shared layers compute no K/V; report what their donor's cache holds.
    ly.has_v = p.layers[ly.kv_source].has_v;
    if (ly.head_dim != p.layers[ly.kv_source].head_dim ||
        ly.n_head_kv != p.layers[ly.kv_source].n_head_kv) {
      return Bad(
          model, key("attention.head_count_kv") + "[" + std::to_string(il) + "]",
          "shared layer's KV shape differs from its donor layer " + std::to_string(ly.kv_source));
    }
  }
  return p;
}

}  // namespace garnet::gguf
