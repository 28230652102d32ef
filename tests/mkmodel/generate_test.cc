// Generates each tiny preset into a scratch directory and reads it back with the GGUF reader:
// every key, tensor name, shape and type, the values' statistics, and byte-identical reruns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"
#include "engine/quant/quant.h"
#include "tests/scratch_dir.h"
#include "tools/mkmodel/generator.h"

namespace garnet::mkmodel {
namespace {

using Scratch = garnet::testing::ScratchDir;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string B(int i, const char* s) {
  return "blk." + std::to_string(i) + "." + s;
}

// Generates `preset` and opens it.
std::unique_ptr<gguf::Model> Generate(const Scratch& dir, const std::string& preset,
                                      const std::string& type = "", uint64_t seed = 0,
                                      uint32_t threads = 1, std::string* path_out = nullptr) {
  auto spec = PresetSpec(preset);
  EXPECT_TRUE(spec.ok());
  TypeOptions t;
  t.base = type;
  auto plan = MakePlan(*spec, t);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string path = dir.Path(preset + "-" + type + "-" + std::to_string(seed) + "-" +
                                    std::to_string(threads) + ".gguf");
  GenOptions g;
  g.seed = seed;
  g.threads = threads;
  auto written = WriteModel(*plan, g, path);
  EXPECT_TRUE(written.ok()) << written.status().ToString();
  if (path_out) *path_out = path;
  auto model = gguf::Model::Open(path);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::vector<float> Values(const gguf::TensorInfo& t) {
  std::vector<float> out(t.elements());
  const uint64_t row_bytes = *RowBytes(t.type, t.ne[0]);
  for (uint64_t r = 0; r < t.rows(); ++r) {
    EXPECT_TRUE(DequantizeRow(t.type, t.data + r * row_bytes, out.data() + r * t.ne[0],
                              static_cast<int64_t>(t.ne[0]))
                    .ok());
  }
  return out;
}

void ExpectShape(const gguf::Model& m, const std::string& name, std::vector<uint64_t> ne,
                 GgmlType type = GgmlType::kF32) {
  const gguf::TensorInfo* t = m.FindTensor(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->n_dims, ne.size()) << name;
  for (size_t i = 0; i < ne.size(); ++i) EXPECT_EQ(t->ne[i], ne[i]) << name << " dim " << i;
  EXPECT_EQ(t->type, type) << name << " is " << TypeName(t->type);
}

void ExpectCommonKeys(const gguf::Model& m, GgmlType embd_type = GgmlType::kF32) {
  EXPECT_EQ(*m.GetString("general.architecture"), "gemma4");
  EXPECT_TRUE(m.GetString("general.name").ok());
  EXPECT_EQ(*m.GetU32("general.quantization_version"), 2u);
  EXPECT_EQ(*m.GetU32("gemma4.context_length"), 512u);
  EXPECT_EQ(*m.GetU32("gemma4.embedding_length"), 256u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.head_count"), 4u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.key_length"), 64u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.value_length"), 64u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.key_length_swa"), 32u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.value_length_swa"), 32u);
  EXPECT_EQ(*m.GetU32("gemma4.attention.sliding_window"), 16u);
  EXPECT_EQ(*m.GetU32("gemma4.rope.dimension_count"), 64u);
  EXPECT_EQ(*m.GetU32("gemma4.rope.dimension_count_swa"), 32u);
  EXPECT_EQ(*m.GetF32("gemma4.rope.freq_base"), 1e6f);
  EXPECT_EQ(*m.GetF32("gemma4.rope.freq_base_swa"), 1e4f);
  EXPECT_EQ(*m.GetF32("gemma4.attention.layer_norm_rms_epsilon"), 1e-6f);
  EXPECT_EQ(*m.GetF32("gemma4.final_logit_softcapping"), 30.0f);
  // Value types as llama.cpp writes them.
  EXPECT_EQ(m.Find("gemma4.block_count")->type, gguf::ValueType::kUint32);
  EXPECT_EQ(m.Find("gemma4.attention.layer_norm_rms_epsilon")->type, gguf::ValueType::kFloat32);
  EXPECT_EQ(m.Find("gemma4.attention.sliding_window_pattern")->elem_type, gguf::ValueType::kBool);
  EXPECT_EQ(m.Find("tokenizer.ggml.token_type")->elem_type, gguf::ValueType::kInt32);
  // Tokenizer.
  EXPECT_EQ(*m.GetString("tokenizer.ggml.model"), "gemma4");
  EXPECT_EQ(*m.GetString("tokenizer.ggml.pre"), "gemma4");
  EXPECT_EQ(m.GetStringArray("tokenizer.ggml.tokens")->size(), 1024u);
  EXPECT_EQ(m.GetF32Array("tokenizer.ggml.scores")->size(), 1024u);
  EXPECT_EQ(m.GetI32Array("tokenizer.ggml.token_type")->size(), 1024u);
  EXPECT_FALSE(m.GetStringArray("tokenizer.ggml.merges")->empty());
  EXPECT_EQ((*m.GetStringArray("tokenizer.ggml.tokens"))[106], "<turn|>");
  EXPECT_EQ(*m.GetU32("tokenizer.ggml.bos_token_id"), 2u);
  EXPECT_EQ(*m.GetU32("tokenizer.ggml.eos_token_id"), 1u);
  EXPECT_EQ(*m.GetU32("tokenizer.ggml.eot_token_id"), 106u);
  EXPECT_EQ(*m.GetU32("tokenizer.ggml.padding_token_id"), 0u);
  EXPECT_EQ(*m.GetU32("tokenizer.ggml.unknown_token_id"), 3u);
  EXPECT_TRUE(*m.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(*m.GetBool("tokenizer.ggml.add_space_prefix"));
  EXPECT_NE(m.GetString("tokenizer.chat_template")->find("<|turn>"), std::string::npos);
  // Global tensors.
  ExpectShape(m, "token_embd.weight", {256, 1024}, embd_type);
  ExpectShape(m, "output_norm.weight", {256});
  ExpectShape(m, "rope_freqs.weight", {32});
  EXPECT_EQ(m.FindTensor("output.weight"), nullptr);  // tied embeddings
  const auto freqs = Values(*m.FindTensor("rope_freqs.weight"));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(freqs[j], j < 8 ? 1.0f : 1e30f) << j;  // 0.25*64/2 = 8
}

TEST(MkmodelGenerateTest, Tiny) {
  Scratch dir;
  auto m = Generate(dir, "tiny");
  ASSERT_NE(m, nullptr);
  ExpectCommonKeys(*m);
  EXPECT_EQ(*m->GetU32("general.file_type"), 0u);
  EXPECT_EQ(*m->GetU32("gemma4.block_count"), 6u);
  EXPECT_EQ(*m->GetU32("gemma4.feed_forward_length"), 512u);
  EXPECT_EQ(*m->GetI32Array("gemma4.attention.head_count_kv"),
            (std::vector<int32_t>{2, 2, 1, 2, 2, 1}));
  EXPECT_EQ(*m->GetBoolArray("gemma4.attention.sliding_window_pattern"),
            (std::vector<bool>{true, true, false, true, true, false}));
  EXPECT_EQ(m->Find("gemma4.expert_count"), nullptr);
  auto p = gguf::ReadGemma4Params(*m);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->n_vocab, 1024u);
  EXPECT_EQ(p->n_kv_shared, 0u);
  EXPECT_FALSE(p->is_moe());
  EXPECT_FALSE(p->has_ple());
  for (int i = 0; i < 6; ++i) {
    const bool full = i == 2 || i == 5;
    const auto& l = p->layers[i];
    EXPECT_EQ(l.kind, full ? gguf::AttnKind::kFull : gguf::AttnKind::kSliding) << i;
    EXPECT_EQ(l.head_dim, full ? 64u : 32u) << i;
    EXPECT_EQ(l.n_head_kv, full ? 1u : 2u) << i;
    EXPECT_EQ(l.has_v, !full) << i;  // K=V on full layers
    EXPECT_TRUE(l.owns_kv());
    EXPECT_EQ(l.ffn_dim, 512u);
    const uint64_t hd = full ? 64 : 32, nkv = full ? 1 : 2;
    ExpectShape(*m, B(i, "attn_q.weight"), {256, 4 * hd});
    ExpectShape(*m, B(i, "attn_k.weight"), {256, nkv * hd});
    EXPECT_EQ(m->FindTensor(B(i, "attn_v.weight")) == nullptr, full) << i;
    ExpectShape(*m, B(i, "attn_output.weight"), {4 * hd, 256});
    ExpectShape(*m, B(i, "attn_q_norm.weight"), {hd});
    ExpectShape(*m, B(i, "attn_k_norm.weight"), {hd});
    ExpectShape(*m, B(i, "ffn_gate.weight"), {256, 512});
    ExpectShape(*m, B(i, "ffn_up.weight"), {256, 512});
    ExpectShape(*m, B(i, "ffn_down.weight"), {512, 256});
    for (const char* n : {"attn_norm.weight", "post_attention_norm.weight", "ffn_norm.weight",
                          "post_ffw_norm.weight"}) {
      ExpectShape(*m, B(i, n), {256});
    }
    ExpectShape(*m, B(i, "layer_output_scale.weight"), {1});
  }
  EXPECT_EQ(m->tensors().size(), 85u);
  // Value statistics: matrices ~N(0, 0.05), norms ~1 + N(0, 0.05).
  const auto w = Values(*m->FindTensor("blk.0.ffn_up.weight"));
  double sum = 0, sq = 0;
  for (float x : w) {
    sum += x;
    sq += double(x) * x;
  }
  const double mean = sum / w.size(), sd = std::sqrt(sq / w.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(sd, 0.05, 0.002);
  for (float x : Values(*m->FindTensor("blk.3.ffn_norm.weight"))) EXPECT_NEAR(x, 1.0f, 0.31f);
  EXPECT_NEAR(Values(*m->FindTensor("blk.1.layer_output_scale.weight"))[0], 1.0f, 0.31f);
}

TEST(MkmodelGenerateTest, TinyMoe) {
  Scratch dir;
  auto m = Generate(dir, "tiny-moe", "q4_k_m");
  ASSERT_NE(m, nullptr);
  ExpectCommonKeys(*m, GgmlType::kQ6_K);
  EXPECT_EQ(*m->GetU32("general.file_type"), 15u);
  EXPECT_EQ(*m->GetU32("gemma4.expert_count"), 8u);
  EXPECT_EQ(*m->GetU32("gemma4.expert_used_count"), 2u);
  EXPECT_EQ(*m->GetU32("gemma4.expert_feed_forward_length"), 64u);
  EXPECT_EQ(*m->GetU32("gemma4.feed_forward_length"), 160u);
  auto p = gguf::ReadGemma4Params(*m);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->is_moe());
  EXPECT_EQ(p->n_expert, 8u);
  EXPECT_EQ(p->expert_ffn_dim, 64u);
  ExpectShape(*m, "token_embd.weight", {256, 1024}, GgmlType::kQ6_K);
  for (int i = 0; i < 6; ++i) {
    const bool more = i == 2 || i == 5;  // use_more_bits(i, 6)
    const GgmlType down = more ? GgmlType::kQ8_0 : GgmlType::kQ5_0;
    ExpectShape(*m, B(i, "ffn_gate_inp.weight"), {256, 8}, GgmlType::kF32);
    ExpectShape(*m, B(i, "ffn_gate_inp.scale"), {256});
    ExpectShape(*m, B(i, "ffn_gate_up_exps.weight"), {256, 128, 8}, GgmlType::kQ4_K);
    ExpectShape(*m, B(i, "ffn_down_exps.weight"), {64, 256, 8}, down);
    ExpectShape(*m, B(i, "ffn_down_exps.scale"), {8});
    ExpectShape(*m, B(i, "ffn_gate.weight"), {256, 160}, GgmlType::kQ4_K);
    ExpectShape(*m, B(i, "ffn_down.weight"), {160, 256}, down);
    for (const char* n : {"ffn_norm.weight", "pre_ffw_norm_2.weight", "post_ffw_norm_1.weight",
                          "post_ffw_norm_2.weight", "post_ffw_norm.weight"}) {
      ExpectShape(*m, B(i, n), {256});
    }
  }
  // Quantised values still look like N(0, 0.05) weights.
  const auto w = Values(*m->FindTensor("blk.0.ffn_gate_up_exps.weight"));
  double sq = 0;
  for (float x : w) sq += double(x) * x;
  EXPECT_NEAR(std::sqrt(sq / w.size()), 0.05, 0.004);
  for (float x : Values(*m->FindTensor("blk.0.ffn_down_exps.scale"))) EXPECT_NEAR(x, 1.0f, 0.31f);
}

TEST(MkmodelGenerateTest, TinyPle) {
  Scratch dir;
  auto m = Generate(dir, "tiny-ple");
  ASSERT_NE(m, nullptr);
  ExpectCommonKeys(*m);
  EXPECT_EQ(*m->GetU32("gemma4.block_count"), 8u);
  EXPECT_EQ(*m->GetU32("gemma4.attention.shared_kv_layers"), 4u);
  EXPECT_EQ(*m->GetU32("gemma4.embedding_length_per_layer_input"), 64u);
  EXPECT_EQ(*m->GetU32("gemma4.attention.head_count_kv"), 2u);  // scalar: equal per type
  EXPECT_EQ(*m->GetI32Array("gemma4.feed_forward_length"),
            (std::vector<int32_t>{256, 256, 256, 256, 512, 512, 512, 512}));
  auto p = gguf::ReadGemma4Params(*m);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->has_ple());
  EXPECT_EQ(p->n_embd_per_layer, 64u);
  EXPECT_EQ(p->first_shared_layer(), 4u);
  const int donors[8] = {-1, -1, -1, -1, 2, 2, 2, 3};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(p->layers[i].kv_source, donors[i]) << i;
    EXPECT_TRUE(p->layers[i].has_v) << i;
    const bool full = i == 3 || i == 7;
    const uint64_t hd = full ? 64 : 32, I = i < 4 ? 256 : 512;
    EXPECT_EQ(p->layers[i].ffn_dim, I);
    ExpectShape(*m, B(i, "attn_v.weight"), {256, 2 * hd});
    ExpectShape(*m, B(i, "attn_k.weight"), {256, 2 * hd});  // present, unused, on shared layers
    ExpectShape(*m, B(i, "ffn_up.weight"), {256, I});
    ExpectShape(*m, B(i, "ffn_down.weight"), {I, 256});
    ExpectShape(*m, B(i, "inp_gate.weight"), {256, 64});
    ExpectShape(*m, B(i, "proj.weight"), {64, 256});
    ExpectShape(*m, B(i, "post_norm.weight"), {256});
  }
  ExpectShape(*m, "per_layer_token_embd.weight", {512, 1024});
  ExpectShape(*m, "per_layer_model_proj.weight", {256, 512});
  ExpectShape(*m, "per_layer_proj_norm.weight", {64});
}

TEST(MkmodelGenerateTest, ByteIdenticalAcrossRunsAndThreads) {
  Scratch dir;
  std::string a, b, c, d;
  ASSERT_NE(Generate(dir, "tiny-ple", "q4_k_m", 7, 1, &a), nullptr);
  ASSERT_NE(Generate(dir, "tiny-ple", "q4_k_m", 7, 3, &b), nullptr);
  ASSERT_NE(Generate(dir, "tiny-ple", "q4_k_m", 8, 1, &c), nullptr);
  ASSERT_NE(Generate(dir, "tiny-moe", "q4_k_m", 7, 2, &d), nullptr);
  const auto ba = ReadAll(a), bb = ReadAll(b), bc = ReadAll(c);
  ASSERT_FALSE(ba.empty());
  EXPECT_TRUE(ba == bb) << "thread count changed the output";
  EXPECT_EQ(ba.size(), bc.size());
  EXPECT_FALSE(ba == bc) << "seed did not change the weights";
}

TEST(MkmodelGenerateTest, WritePreset) {
  Scratch dir;
  const std::string path = dir.Path("p.gguf");
  auto n = WritePreset("tiny", "q8_0", path, 3);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  auto m = gguf::Model::Open(path);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->FindTensor("blk.0.attn_q.weight")->type, GgmlType::kQ8_0);
  EXPECT_EQ(*(*m)->GetU32("general.file_type"), 7u);
  EXPECT_TRUE(WritePreset("nope", "", path).status().IsNotFound());
  EXPECT_TRUE(WritePreset("tiny", "iq2_xxs", path).status().IsInvalidArgument());
  EXPECT_FALSE(std::filesystem::exists(dir.Path("missing/dir/x.gguf")));
  EXPECT_FALSE(WritePreset("tiny", "", dir.Path("missing/dir/x.gguf")).ok());
}

TEST(MkmodelGenerateTest, ProgressReachesTotal) {
  Scratch dir;
  auto spec = PresetSpec("tiny-moe");
  ASSERT_TRUE(spec.ok());
  auto plan = MakePlan(*spec, {});
  ASSERT_TRUE(plan.ok());
  GenOptions g;
  uint64_t calls = 0, last_done = 0, last_total = 0;
  bool monotonic = true;
  g.progress = [&](uint64_t done, uint64_t total) {
    monotonic = monotonic && done > last_done;
    ++calls;
    last_done = done;
    last_total = total;
  };
  ASSERT_TRUE(WriteModel(*plan, g, dir.Path("m.gguf")).ok());
  EXPECT_GE(calls, plan->tensors.size());
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_total, plan->data_bytes());
  EXPECT_EQ(last_done, last_total);
}

TEST(MkmodelGenerateTest, SplitSetMatchesSingleFile) {
  Scratch dir;
  std::string single;
  auto whole = Generate(dir, "tiny-ple", "q8_0", 0, 1, &single);
  ASSERT_NE(whole, nullptr);
  auto spec = PresetSpec("tiny-ple");
  TypeOptions t;
  t.base = "q8_0";
  auto plan = MakePlan(*spec, t);
  ASSERT_TRUE(plan.ok());
  auto parts = WriteModelSplit(*plan, GenOptions{}, dir.Path("split"), 3);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[1], dir.Path("split-00002-of-00003.gguf"));
  auto m = gguf::Model::Open((*parts)[0]);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->file_count(), 3u);
  ASSERT_EQ((*m)->tensors().size(), whole->tensors().size());
  for (const auto& want : whole->tensors()) {
    const gguf::TensorInfo* got = (*m)->FindTensor(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    ASSERT_EQ(got->bytes, want.bytes);
    EXPECT_EQ(std::memcmp(got->data, want.data, want.bytes), 0) << want.name;
  }
  EXPECT_TRUE(gguf::ReadGemma4Params(**m).ok());
}

uint64_t Fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t x : bytes) {
    h ^= x;
    h *= 1099511628211ull;
  }
  return h;
}

// Pins the exact file bytes of two configurations, so a change of generator, quantiser or
// writer output on any machine shows up here. Update the constants only on purpose.
TEST(MkmodelGenerateTest, GoldenFiles) {
  Scratch dir;
  std::string f32, q;
  ASSERT_NE(Generate(dir, "tiny", "f32", 0, 2, &f32), nullptr);
  ASSERT_NE(Generate(dir, "tiny-moe", "q4_k_m", 0, 2, &q), nullptr);
  EXPECT_EQ(Fnv1a(ReadAll(f32)), 0x09d5fbd542e0ba9bull) << std::hex << Fnv1a(ReadAll(f32));
  EXPECT_EQ(Fnv1a(ReadAll(q)), 0xac868aa2b4020b86ull) << std::hex << Fnv1a(ReadAll(q));
}

}  // namespace
}  // namespace garnet::mkmodel
