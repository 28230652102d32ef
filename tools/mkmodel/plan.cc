#include "tools/mkmodel/plan.h"

#include <cctype>
#include <string>

namespace garnet::mkmodel {
namespace {

// What kind of tensor an entry is, for the type rules.
enum class Role : uint8_t {
  kOneD,         // norms, scales, rope_freqs: always F32
  kUnquantised,  // router, per_layer_model_proj: never quantised
  kMatrix,       // everything else: the weight type
};

struct Entry {
  PlannedTensor t;
  Role role = Role::kMatrix;
  int32_t layer = -1;
};

class Builder {
 public:
  explicit Builder(const ModelSpec& s) : s_(s) {}

  void Matrix(std::string name, std::vector<uint64_t> ne, int32_t layer = -1) {
    Add(std::move(name), std::move(ne), Role::kMatrix, layer, 0.0f, s_.weight_std);
  }
  void Unquantised(std::string name, std::vector<uint64_t> ne) {
    Add(std::move(name), std::move(ne), Role::kUnquantised, -1, 0.0f, s_.weight_std);
  }
  // Norm weights and scales: 1 + N(0, 0.05) (Gemma 4 norms multiply by w as is, §2).
  void NearOne(std::string name, std::vector<uint64_t> ne) {
    Add(std::move(name), std::move(ne), Role::kOneD, -1, 1.0f, 0.05f);
  }
  void RopeFreqs() {
    Entry e;
    e.t.name = "rope_freqs.weight";
    e.t.ne = {s_.head_dim_full / 2};
    e.t.init = Init::kRopeFreqs;
    e.t.rope_pairs = s_.RopePairsFull();
    e.role = Role::kOneD;
    entries_.push_back(std::move(e));
  }
  std::vector<Entry>& entries() { return entries_; }

 private:
  void Add(std::string name, std::vector<uint64_t> ne, Role role, int32_t layer, float mean,
           float std) {
    Entry e;
    e.t.name = std::move(name);
    e.t.ne = std::move(ne);
    e.t.mean = mean;
    e.t.std = std;
    e.role = role;
    e.layer = layer;
    entries_.push_back(std::move(e));
  }
  const ModelSpec& s_;
  std::vector<Entry> entries_;
};

std::string Blk(uint32_t i, std::string_view suffix) {
  return "blk." + std::to_string(i) + "." + std::string(suffix);
}

bool Contains(std::string_view s, std::string_view sub) {
  return s.find(sub) != s.npos;
}

std::vector<Entry> ListTensors(const ModelSpec& s) {
  Builder b(s);
  const uint64_t H = s.n_embd, V = s.n_vocab, L = s.n_layer, P = s.n_embd_per_layer;
  b.Matrix("token_embd.weight", {H, V});
  if (s.has_ple()) {
    b.Matrix("per_layer_token_embd.weight", {L * P, V});
    b.Unquantised("per_layer_model_proj.weight", {H, L * P});
    b.NearOne("per_layer_proj_norm.weight", {P});
  }
  b.RopeFreqs();
  b.NearOne("output_norm.weight", {H});
  for (uint32_t i = 0; i < s.n_layer; ++i) {
    const int32_t li = static_cast<int32_t>(i);
    const uint64_t hd = s.HeadDim(i), nkv = s.NHeadKv(i), I = s.FfnDim(i);
    const uint64_t q_width = s.n_head * hd, kv_width = nkv * hd;
    b.NearOne(Blk(i, "attn_norm.weight"), {H});
    b.Matrix(Blk(i, "attn_q.weight"), {H, q_width}, li);
    b.NearOne(Blk(i, "attn_q_norm.weight"), {hd});
    if (s.OwnsKv(i) || s.shared_layers_have_kv) {
      b.Matrix(Blk(i, "attn_k.weight"), {H, kv_width}, li);
      b.NearOne(Blk(i, "attn_k_norm.weight"), {hd});
      if (s.HasV(i)) b.Matrix(Blk(i, "attn_v.weight"), {H, kv_width}, li);
    }
    b.Matrix(Blk(i, "attn_output.weight"), {q_width, H}, li);
    b.NearOne(Blk(i, "post_attention_norm.weight"), {H});
    b.NearOne(Blk(i, "ffn_norm.weight"), {H});
    b.Matrix(Blk(i, "ffn_gate.weight"), {H, I}, li);
    b.Matrix(Blk(i, "ffn_up.weight"), {H, I}, li);
    b.Matrix(Blk(i, "ffn_down.weight"), {I, H}, li);
    b.NearOne(Blk(i, "post_ffw_norm.weight"), {H});
    if (s.is_moe()) {
      const uint64_t E = s.n_expert, Ie = s.expert_ffn_dim;
      b.Unquantised(Blk(i, "ffn_gate_inp.weight"), {H, E});
      b.NearOne(Blk(i, "ffn_gate_inp.scale"), {H});
      b.NearOne(Blk(i, "pre_ffw_norm_2.weight"), {H});
      b.NearOne(Blk(i, "post_ffw_norm_1.weight"), {H});
      b.NearOne(Blk(i, "post_ffw_norm_2.weight"), {H});
      b.Matrix(Blk(i, "ffn_gate_up_exps.weight"), {H, 2 * Ie, E}, li);
      b.Matrix(Blk(i, "ffn_down_exps.weight"), {Ie, H, E}, li);
      b.NearOne(Blk(i, "ffn_down_exps.scale"), {E});
    }
    if (s.has_ple()) {
      b.Matrix(Blk(i, "inp_gate.weight"), {H, P}, li);
      b.Matrix(Blk(i, "proj.weight"), {P, H}, li);
      b.NearOne(Blk(i, "post_norm.weight"), {H});
    }
    b.NearOne(Blk(i, "layer_output_scale.weight"), {1});
  }
  return std::move(b.entries());
}

}  // namespace

uint64_t PlannedTensor::elements() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

uint64_t PlannedTensor::rows() const {
  uint64_t n = 1;
  for (size_t i = 1; i < ne.size(); ++i) n *= ne[i];
  return n;
}

uint64_t ModelPlan::data_bytes() const {
  uint64_t total = 0;
  for (const auto& t : tensors) {
    auto b = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
    if (b.ok()) total += *b;
  }
  return total;
}

const PlannedTensor* ModelPlan::Find(std::string_view name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

GgmlType FallbackForRow(GgmlType type, uint64_t ne0) {
  const uint32_t block = Traits(type).block_elems;
  if (ne0 % block == 0) return type;
  switch (type) {
    case GgmlType::kQ4_K:
      type = GgmlType::kQ5_0;
      break;
    case GgmlType::kQ5_K:
      type = GgmlType::kQ5_1;
      break;
    case GgmlType::kQ6_K:
      type = GgmlType::kQ8_0;
      break;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kIQ4_XS:
      type = GgmlType::kIQ4_NL;
      break;
    default:
      break;
  }
  return ne0 % Traits(type).block_elems == 0 ? type : GgmlType::kF16;
}

bool UseMoreBits(uint32_t i, uint32_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

std::optional<uint32_t> FileTypeFor(std::string_view base) {
  struct Ft {
    std::string_view name;
    uint32_t id;
  };
  // llama_ftype values (llama.h): pure K types map to their "_S" ftype.
  static constexpr Ft kTypes[] = {
      {"f32", 0},     {"f16", 1},     {"q4_0", 2},  {"q4_1", 3},  {"q8_0", 7},    {"q5_0", 8},
      {"q5_1", 9},    {"q4_k", 14},   {"q5_k", 16}, {"q6_k", 18}, {"q4_k_m", 15}, {"bf16", 32},
      {"iq4_nl", 25}, {"iq4_xs", 30}, {"q2_k", 10}, {"q3_k", 11},
  };
  for (const auto& t : kTypes) {
    if (t.name == base) return t.id;
  }
  return std::nullopt;
}

Result<ModelPlan> MakePlan(const ModelSpec& spec, const TypeOptions& types) {
  GARNET_RETURN_IF_ERROR(ValidateSpec(spec));
  ModelPlan plan;
  plan.spec = spec;
  plan.type_name = types.base.empty() ? spec.default_type : types.base;
  for (char& c : plan.type_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto file_type = FileTypeFor(plan.type_name);
  if (!file_type) {
    return Status::InvalidArgument("weight type \"" + plan.type_name + "\"",
                                   "use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, "
                                   "q2_k, q3_k, q6_k, iq4_nl, iq4_xs or q4_k_m");
  }
  plan.file_type = *file_type;
  const bool mix = plan.type_name == "q4_k_m";
  const GgmlType base = mix ? GgmlType::kQ4_K : *ParseTypeName(plan.type_name);
  const GgmlType unquantised =
      spec.tiny || base == GgmlType::kF32 ? GgmlType::kF32 : GgmlType::kBF16;

  std::vector<Entry> entries = ListTensors(spec);
  uint32_t n_attn_v = 0;
  for (const auto& e : entries) n_attn_v += Contains(e.t.name, "attn_v.weight");
  uint32_t i_attn_v = 0;
  for (auto& e : entries) {
    GgmlType type = GgmlType::kF32;
    if (e.role == Role::kUnquantised) {
      type = unquantised;
    } else if (e.role == Role::kMatrix) {
      type = base;
      const std::string_view name = e.t.name;
      if (mix) {
        if (name == "token_embd.weight") {
          type = GgmlType::kQ6_K;
        } else if (Contains(name, "attn_v.weight")) {
          if (UseMoreBits(i_attn_v, n_attn_v)) type = GgmlType::kQ6_K;
        } else if (Contains(name, "ffn_down") && e.layer >= 0) {
          if (UseMoreBits(static_cast<uint32_t>(e.layer), spec.n_layer)) type = GgmlType::kQ6_K;
        }
      }
      if (Contains(name, "attn_v.weight")) ++i_attn_v;
      bool overridden = false;
      if (types.embd && name == "token_embd.weight") {
        type = *types.embd;
        overridden = true;
      }
      for (const auto& [sub, t] : types.overrides) {
        if (overridden) break;
        if (Contains(name, sub)) {
          type = t;
          overridden = true;
        }
      }
      if (!Traits(type).supported) {
        return Status::InvalidArgument("type override for " + e.t.name,
                                       std::string(TypeName(type)) + " cannot be quantised");
      }
      type = FallbackForRow(type, e.t.ne[0]);
    }
    e.t.type = type;
    plan.tensors.push_back(std::move(e.t));
  }
  return plan;
}

}  // namespace garnet::mkmodel
