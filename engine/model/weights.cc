#include "engine/model/weights.h"

#include <string>

#include "engine/quant/quant.h"

namespace garnet::model {
namespace {

std::string Shape(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (uint32_t i = 0; i < t.n_dims; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.ne[i]);
  }
  return s + "]";
}

std::string Shape(std::initializer_list<int64_t> ne) {
  std::string s = "[";
  bool first = true;
  for (int64_t v : ne) {
    if (!first) s += ", ";
    first = false;
    s += std::to_string(v);
  }
  return s + "]";
}

class Binder {
 public:
  Binder(const gguf::Model& m) : m_(m) {}

  Result<const gguf::TensorInfo*> Get(const std::string& name, std::initializer_list<int64_t> ne,
                                      bool required = true) {
    const gguf::TensorInfo* t = m_.FindTensor(name);
    if (t == nullptr) {
      if (!required) return static_cast<const gguf::TensorInfo*>(nullptr);
      return Status::NotFound("tensor " + name, "missing (want shape " + Shape(ne) + ")");
    }
    uint64_t want[4] = {1, 1, 1, 1};
    size_t i = 0;
    for (int64_t v : ne) want[i++] = static_cast<uint64_t>(v);
    for (int d = 0; d < 4; ++d) {
      if (t->ne[d] != want[d]) {
        return Status::InvalidArgument("tensor " + name,
                                       "shape " + Shape(*t) + ", want " + Shape(ne));
      }
    }
    if (t->data == nullptr) return Status::DataLoss("tensor " + name, "no data");
    return t;
  }

  Status Vec(const std::string& name, int64_t n, std::vector<float>* out, bool required = true) {
    GARNET_ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Get(name, {n}, required));
    if (t == nullptr) return Status::OK();
    out->resize(static_cast<size_t>(n));
    Status s = DequantizeRow(t->type, t->data, out->data(), n);
    if (!s.ok()) return s.WithContext("tensor " + name);
    return Status::OK();
  }

  // Matrix of `rows` outputs by `cols` inputs: ggml ne = [cols, rows].
  Status Mat(const std::string& name, int64_t rows, int64_t cols, cpu::WeightMatrix* out,
             bool required = true) {
    GARNET_ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Get(name, {cols, rows}, required));
    if (t == nullptr) return Status::OK();
    GARNET_ASSIGN_OR_RETURN(*out,
                            cpu::MakeWeightMatrix("tensor " + name, t->type, t->data, rows, cols));
    return Status::OK();
  }

  Status Experts(const std::string& name, int64_t rows, int64_t cols, int64_t n_expert,
                 ExpertStack* out, bool required = true) {
    GARNET_ASSIGN_OR_RETURN(const gguf::TensorInfo* t, Get(name, {cols, rows, n_expert}, required));
    if (t == nullptr) return Status::OK();
    GARNET_ASSIGN_OR_RETURN(cpu::WeightMatrix w,
                            cpu::MakeWeightMatrix("tensor " + name, t->type, t->data, rows, cols));
    out->type = w.type;
    out->data = w.data;
    out->rows = rows;
    out->cols = cols;
    out->row_bytes = w.row_bytes;
    out->n_expert = n_expert;
    return Status::OK();
  }

 private:
  const gguf::Model& m_;
};

}  // namespace

Result<ModelWeights> LoadWeights(const gguf::Model& model, const gguf::Gemma4Params& p) {
  Binder b(model);
  ModelWeights w;
  const int64_t H = p.n_embd, V = p.n_vocab, L = p.n_layer, P = p.n_embd_per_layer;
  GARNET_RETURN_IF_ERROR(b.Mat("token_embd.weight", V, H, &w.tok_embd));
  GARNET_RETURN_IF_ERROR(b.Vec("output_norm.weight", H, &w.output_norm));
  {
    const gguf::TensorInfo* rf = model.FindTensor("rope_freqs.weight");
    if (rf != nullptr) {
      int64_t n = static_cast<int64_t>(rf->ne[0]);
      if (rf->n_dims != 1 || n * 2 != static_cast<int64_t>(p.rope_dims_full)) {
        return Status::InvalidArgument(
            "tensor rope_freqs.weight",
            "shape " + Shape(*rf) + ", want [" + std::to_string(p.rope_dims_full / 2) + "]");
      }
      GARNET_RETURN_IF_ERROR(b.Vec("rope_freqs.weight", n, &w.rope_freqs));
    }
  }
  if (p.has_ple()) {
    GARNET_RETURN_IF_ERROR(b.Mat("per_layer_token_embd.weight", V, L * P, &w.ple_tok));
    GARNET_RETURN_IF_ERROR(b.Mat("per_layer_model_proj.weight", L * P, H, &w.ple_model_proj));
    GARNET_RETURN_IF_ERROR(b.Vec("per_layer_proj_norm.weight", P, &w.ple_proj_norm));
  }
  w.layers.resize(static_cast<size_t>(L));
  for (uint32_t il = 0; il < p.n_layer; ++il) {
    const gguf::Gemma4Layer& ly = p.layers[il];
    LayerWeights& lw = w.layers[il];
    auto n = [il](const char* s) { return gguf::BlockTensorName(il, s); };
    const int64_t hd = ly.head_dim, nq = int64_t{ly.n_head} * hd, nkv = int64_t{ly.n_head_kv} * hd;
    GARNET_RETURN_IF_ERROR(b.Vec(n("attn_norm.weight"), H, &lw.attn_norm));
    GARNET_RETURN_IF_ERROR(b.Mat(n("attn_q.weight"), nq, H, &lw.wq));
    GARNET_RETURN_IF_ERROR(b.Vec(n("attn_q_norm.weight"), hd, &lw.q_norm));
    if (ly.owns_kv()) {
      GARNET_RETURN_IF_ERROR(b.Mat(n("attn_k.weight"), nkv, H, &lw.wk));
      GARNET_RETURN_IF_ERROR(b.Vec(n("attn_k_norm.weight"), hd, &lw.k_norm));
      if (ly.has_v) GARNET_RETURN_IF_ERROR(b.Mat(n("attn_v.weight"), nkv, H, &lw.wv));
    }
    GARNET_RETURN_IF_ERROR(b.Mat(n("attn_output.weight"), H, nq, &lw.wo));
    GARNET_RETURN_IF_ERROR(b.Vec(n("post_attention_norm.weight"), H, &lw.post_attention_norm));
    GARNET_RETURN_IF_ERROR(b.Vec(n("ffn_norm.weight"), H, &lw.ffn_norm));
    const int64_t I = ly.ffn_dim;
    GARNET_RETURN_IF_ERROR(b.Mat(n("ffn_gate.weight"), I, H, &lw.ffn_gate));
    GARNET_RETURN_IF_ERROR(b.Mat(n("ffn_up.weight"), I, H, &lw.ffn_up));
    GARNET_RETURN_IF_ERROR(b.Mat(n("ffn_down.weight"), H, I, &lw.ffn_down));
    GARNET_RETURN_IF_ERROR(b.Vec(n("post_ffw_norm.weight"), H, &lw.post_ffw_norm));
    std::vector<float> scale;
    GARNET_RETURN_IF_ERROR(b.Vec(n("layer_output_scale.weight"), 1, &scale, /*required=*/false));
    if (!scale.empty()) lw.output_scale = scale[0];
    if (p.has_ple()) {
      GARNET_RETURN_IF_ERROR(b.Mat(n("inp_gate.weight"), P, H, &lw.ple_gate));
      GARNET_RETURN_IF_ERROR(b.Mat(n("proj.weight"), H, P, &lw.ple_proj));
      GARNET_RETURN_IF_ERROR(b.Vec(n("post_norm.weight"), H, &lw.ple_post_norm));
    }
    if (p.is_moe()) {
      const int64_t E = p.n_expert, Ie = p.expert_ffn_dim;
      GARNET_RETURN_IF_ERROR(b.Mat(n("ffn_gate_inp.weight"), E, H, &lw.router));
      GARNET_RETURN_IF_ERROR(b.Vec(n("ffn_gate_inp.scale"), H, &lw.router_scale));
      GARNET_RETURN_IF_ERROR(b.Vec(n("ffn_down_exps.scale"), E, &lw.expert_scale, false));
      if (lw.expert_scale.empty()) lw.expert_scale.assign(static_cast<size_t>(E), 1.0f);
      GARNET_RETURN_IF_ERROR(b.Vec(n("pre_ffw_norm_2.weight"), H, &lw.pre_ffw_norm_2));
      GARNET_RETURN_IF_ERROR(b.Vec(n("post_ffw_norm_1.weight"), H, &lw.post_ffw_norm_1));
      GARNET_RETURN_IF_ERROR(b.Vec(n("post_ffw_norm_2.weight"), H, &lw.post_ffw_norm_2));
      if (model.FindTensor(n("ffn_gate_up_exps.weight")) != nullptr) {
        lw.fused_gate_up = true;
        GARNET_RETURN_IF_ERROR(
            b.Experts(n("ffn_gate_up_exps.weight"), 2 * Ie, H, E, &lw.gate_up_exps));
      } else {
        lw.fused_gate_up = false;
        GARNET_RETURN_IF_ERROR(b.Experts(n("ffn_gate_exps.weight"), Ie, H, E, &lw.gate_up_exps));
        GARNET_RETURN_IF_ERROR(b.Experts(n("ffn_up_exps.weight"), Ie, H, E, &lw.up_exps));
      }
      GARNET_RETURN_IF_ERROR(b.Experts(n("ffn_down_exps.weight"), H, Ie, E, &lw.down_exps));
    }
  }
  return w;
}

}  // namespace garnet::model
