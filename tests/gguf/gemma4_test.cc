// ReadGemma4Params on small hand-built Gemma 4 headers: layer kinds, per-layer dims, KV-sharing
// donors (gemma4.md §1.2), K=V detection, MoE/PLE keys, and errors that name the key or tensor.
#include "engine/gguf/gemma4.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>

#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

namespace garnet::gguf {
namespace {

using testing::ScratchDir;

// An E2B-shaped miniature: 10 layers (S,S,S,S,F)x2, the last 5 share KV (first_shared = 5), so
// sliding layers 5..8 read layer 3 and full layer 9 reads layer 4.
struct Spec {
  uint32_t n_layer = 10;
  uint32_t n_embd = 64;
  uint32_t hd_swa = 32;
  uint32_t hd_full = 64;
  uint32_t n_vocab = 100;
  uint32_t shared = 5;
  uint32_t full_kv_heads = 1;  // sliding layers have 2
  bool full_has_v = false;     // K=V on full layers when false
  bool shared_have_k = false;  // unused K/V tensors on shared layers (some checkpoints)
  std::set<std::string> omit;  // keys or tensor names not to write
  std::function<void(Writer&)> extra;
  std::function<bool(uint32_t)> is_swa = [](uint32_t il) { return il % 5 != 4; };
};

std::string WriteModel(const ScratchDir& dir, const Spec& s, const std::string& name = "g.gguf") {
  Writer w;
  auto keep = [&s](const std::string& k) { return s.omit.count(k) == 0; };
  auto u32 = [&](const std::string& k, uint32_t v) {
    if (keep("gemma4." + k)) w.SetU32("gemma4." + k, v);
  };
  auto f32 = [&](const std::string& k, float v) {
    if (keep("gemma4." + k)) w.SetF32("gemma4." + k, v);
  };
  if (keep("general.architecture")) w.SetString("general.architecture", "gemma4");
  u32("context_length", 4096);
  u32("embedding_length", s.n_embd);
  u32("block_count", s.n_layer);
  u32("attention.head_count", 4);
  std::vector<int32_t> kv_heads, ffn;
  std::vector<bool> pattern;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    kv_heads.push_back(s.is_swa(il) ? 2 : static_cast<int32_t>(s.full_kv_heads));
    ffn.push_back(il < 5 ? 128 : 256);
    pattern.push_back(s.is_swa(il));
  }
  if (keep("gemma4.attention.head_count_kv"))
    w.SetArrayI32("gemma4.attention.head_count_kv", kv_heads);
  if (keep("gemma4.feed_forward_length")) w.SetArrayI32("gemma4.feed_forward_length", ffn);
  if (keep("gemma4.attention.sliding_window_pattern")) {
    w.SetArrayBool("gemma4.attention.sliding_window_pattern", pattern);
  }
  u32("attention.key_length", s.hd_full);
  u32("attention.value_length", s.hd_full);
  u32("attention.key_length_swa", s.hd_swa);
  u32("attention.value_length_swa", s.hd_swa);
  f32("attention.layer_norm_rms_epsilon", 1e-6f);
  u32("attention.sliding_window", 512);
  u32("attention.shared_kv_layers", s.shared);
  u32("embedding_length_per_layer_input", 16);
  f32("rope.freq_base", 1e6f);
  f32("rope.freq_base_swa", 1e4f);
  u32("rope.dimension_count", s.hd_full);
  u32("rope.dimension_count_swa", s.hd_swa);
  f32("final_logit_softcapping", 30.0f);
  if (s.extra) s.extra(w);

  auto tensor = [&](const std::string& n, std::vector<uint64_t> ne) {
    if (keep(n)) w.AddTensor(n, GgmlType::kF32, std::move(ne), nullptr);
  };
  tensor("token_embd.weight", {s.n_embd, s.n_vocab});
  tensor("output_norm.weight", {s.n_embd});
  const uint32_t first_shared = s.n_layer - s.shared;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const bool swa = s.is_swa(il);
    const uint64_t hd = swa ? s.hd_swa : s.hd_full;
    const uint64_t nkv = swa ? 2 : s.full_kv_heads;
    const bool owns = il < first_shared;
    tensor(BlockTensorName(il, "attn_q.weight"), {s.n_embd, 4 * hd});
    tensor(BlockTensorName(il, "attn_q_norm.weight"), {hd});
    if (owns || s.shared_have_k) {
      tensor(BlockTensorName(il, "attn_k.weight"), {s.n_embd, nkv * hd});
      tensor(BlockTensorName(il, "attn_k_norm.weight"), {hd});
      if (swa || s.full_has_v) tensor(BlockTensorName(il, "attn_v.weight"), {s.n_embd, nkv * hd});
    }
  }
  const std::string path = dir.Path(name);
  auto r = w.Finish(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return path;
}

Result<Gemma4Params> Read(const ScratchDir& dir, const Spec& s) {
  GARNET_ASSIGN_OR_RETURN(auto model, Model::Open(WriteModel(dir, s)));
  return ReadGemma4Params(*model);
}

void ExpectError(const Spec& s, Code code, std::initializer_list<std::string_view> needles) {
  ScratchDir dir;
  auto p = Read(dir, s);
  ASSERT_FALSE(p.ok()) << "accepted a bad header";
  EXPECT_EQ(p.status().code(), code) << p.status().ToString();
  for (auto n : needles) {
    EXPECT_NE(p.status().message().find(n), std::string::npos)
        << "missing \"" << n << "\" in " << p.status().ToString();
  }
}

TEST(GgufGemma4, ReadsMiniatureE2B) {
  ScratchDir dir;
  auto p = Read(dir, Spec{});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->architecture, "gemma4");
  EXPECT_EQ(p->n_embd, 64u);
  EXPECT_EQ(p->n_layer, 10u);
  EXPECT_EQ(p->n_vocab, 100u);
  EXPECT_EQ(p->context_length, 4096u);
  EXPECT_EQ(p->sliding_window, 512u);
  EXPECT_EQ(p->n_kv_shared, 5u);
  EXPECT_EQ(p->first_shared_layer(), 5u);
  EXPECT_EQ(p->n_embd_per_layer, 16u);
  EXPECT_TRUE(p->has_ple());
  EXPECT_FALSE(p->is_moe());
  EXPECT_EQ(p->rope_dims_full, 64u);
  EXPECT_EQ(p->rope_dims_swa, 32u);
  EXPECT_FLOAT_EQ(p->rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(p->final_logit_softcap, 30.0f);
  ASSERT_EQ(p->layers.size(), 10u);
  for (uint32_t il = 0; il < 10; ++il) {
    SCOPED_TRACE(il);
    const Gemma4Layer& ly = p->layers[il];
    const bool swa = il % 5 != 4;
    EXPECT_EQ(ly.kind, swa ? AttnKind::kSliding : AttnKind::kFull);
    EXPECT_EQ(ly.head_dim, swa ? 32u : 64u);
    EXPECT_EQ(ly.n_head, 4u);
    EXPECT_EQ(ly.n_head_kv, swa ? 2u : 1u);
    EXPECT_EQ(ly.ffn_dim, il < 5 ? 128u : 256u);
    EXPECT_FLOAT_EQ(ly.rope_base, swa ? 1e4f : 1e6f);
    // Full layers have no attn_v (K=V); the shared full layer inherits that from its donor.
    EXPECT_EQ(ly.has_v, swa);
  }
  // §1.2: sliding shared layers read first_shared - 2 = 3, the full one reads first_shared - 1.
  for (uint32_t il = 0; il < 5; ++il) EXPECT_TRUE(p->layers[il].owns_kv()) << il;
  for (uint32_t il = 5; il < 9; ++il) EXPECT_EQ(p->layers[il].kv_source, 3) << il;
  EXPECT_EQ(p->layers[9].kv_source, 4);
}

TEST(GgufGemma4, FullLayersWithVAndUnusedSharedKv) {
  ScratchDir dir;
  Spec s;
  s.full_has_v = true;
  s.shared_have_k = true;  // K/V tensors on shared layers are ignored
  auto p = Read(dir, s);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  for (const auto& ly : p->layers) EXPECT_TRUE(ly.has_v);
  EXPECT_EQ(p->layers[9].kv_source, 4);
}

TEST(GgufGemma4, UnusedKvOnSharedLayersIsNotShapeChecked) {
  ScratchDir dir;
  Spec s;
  s.extra = [](Writer& w) {
    w.AddTensor("blk.6.attn_k.weight", GgmlType::kF32, {64, 8}, {});
    w.AddTensor("blk.6.ffn_down.weight", GgmlType::kF32, {256, 64}, {});
  };
  auto p = Read(dir, s);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->layers[6].kv_source, 3);
}

TEST(GgufGemma4, NoSharingDenseScalarsAndIntPattern) {
  ScratchDir dir;
  Spec s;
  s.shared = 0;
  s.omit = {"gemma4.attention.head_count_kv",
            "gemma4.feed_forward_length",
            "gemma4.attention.sliding_window_pattern",
            "gemma4.embedding_length_per_layer_input",
            "gemma4.rope.dimension_count",
            "gemma4.final_logit_softcapping"};
  s.is_swa = [](uint32_t il) { return il % 5 != 4; };
  s.extra = [](Writer& w) {
    w.SetU32("gemma4.attention.head_count_kv", 2);
    w.SetU32("gemma4.feed_forward_length", 96);
    w.SetU32("gemma4.attention.sliding_window_pattern", 5);  // older integer period form
  };
  s.full_kv_heads = 2;  // a scalar head_count_kv applies to full layers too
  auto p = Read(dir, s);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->first_shared_layer(), 10u);
  EXPECT_FALSE(p->has_ple());
  EXPECT_EQ(p->rope_dims_full, 64u);  // defaults to the full head dim
  EXPECT_EQ(p->final_logit_softcap, 0.0f);
  for (uint32_t il = 0; il < 10; ++il) {
    EXPECT_EQ(p->layers[il].kind, il % 5 == 4 ? AttnKind::kFull : AttnKind::kSliding);
    EXPECT_EQ(p->layers[il].n_head_kv, 2u);
    EXPECT_EQ(p->layers[il].ffn_dim, 96u);
    EXPECT_TRUE(p->layers[il].owns_kv());
  }
}

TEST(GgufGemma4, MoeKeys) {
  ScratchDir dir;
  Spec s;
  s.extra = [](Writer& w) {
    w.SetU32("gemma4.expert_count", 8);
    w.SetU32("gemma4.expert_used_count", 2);
    w.SetU32("gemma4.expert_feed_forward_length", 32);
  };
  auto p = Read(dir, s);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->is_moe());
  EXPECT_EQ(p->n_expert, 8u);
  EXPECT_EQ(p->n_expert_used, 2u);
  EXPECT_EQ(p->expert_ffn_dim, 32u);
}

TEST(GgufGemma4, Errors) {
  {
    Spec s;
    s.omit = {"gemma4.block_count"};
    ExpectError(s, Code::kNotFound, {"gemma4.block_count"});
  }
  {
    Spec s;
    s.omit = {"general.architecture"};
    s.extra = [](Writer& w) { w.SetString("general.architecture", "llama"); };
    ExpectError(s, Code::kInvalidArgument, {"general.architecture", "llama"});
  }
  {
    Spec s;
    s.omit = {"gemma4.attention.sliding_window_pattern"};
    s.extra = [](Writer& w) {
      w.SetArrayBool("gemma4.attention.sliding_window_pattern", {true, false});
    };
    ExpectError(s, Code::kInvalidArgument, {"sliding_window_pattern", "2 entries"});
  }
  {
    Spec s;
    s.omit = {"gemma4.feed_forward_length"};
    s.extra = [](Writer& w) { w.SetArrayI32("gemma4.feed_forward_length", {1, 2, 3}); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.feed_forward_length", "3 entries"});
  }
  {
    Spec s;
    s.extra = [](Writer& w) {
      w.SetU32("gemma4.expert_count", 4);
      w.SetU32("gemma4.expert_used_count", 5);
      w.SetU32("gemma4.expert_feed_forward_length", 32);
    };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.expert_used_count"});
  }
  {
    Spec s;
    s.extra = [](Writer& w) { w.SetU32("gemma4.expert_used_count", 2); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.expert_used_count", "expert_count is 0"});
  }
  {
    Spec s;  // q_norm says 32 on a full layer whose key_length is 64
    s.omit = {"blk.4.attn_q_norm.weight"};
    s.extra = [](Writer& w) { w.AddTensor("blk.4.attn_q_norm.weight", GgmlType::kF32, {32}, {}); };
    ExpectError(s, Code::kInvalidArgument, {"blk.4.attn_q_norm.weight", "head_dim is 64"});
  }
  {
    Spec s;  // K projection of an owning sliding layer sized for 3 KV heads instead of 2
    s.omit = {"blk.1.attn_k.weight"};
    s.extra = [](Writer& w) { w.AddTensor("blk.1.attn_k.weight", GgmlType::kF32, {64, 96}, {}); };
    ExpectError(s, Code::kInvalidArgument, {"blk.1.attn_k.weight", "[64, 64]"});
  }
  {
    Spec s;
    s.extra = [](Writer& w) {
      w.AddTensor("blk.7.ffn_down.weight", GgmlType::kF32, {64, 256}, {});
    };
    ExpectError(s, Code::kInvalidArgument, {"blk.7.ffn_down.weight", "[256, 64]"});
  }
  {
    Spec s;
    s.omit = {"gemma4.attention.shared_kv_layers"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.attention.shared_kv_layers", 10); };
    ExpectError(s, Code::kInvalidArgument, {"shared_kv_layers", "below block_count"});
  }
  {
    Spec s;  // layers 0..3 sliding, 4 full, and sharing starts at 4: no earlier full layer
    s.shared = 6;
    ExpectError(s, Code::kInvalidArgument, {"shared_kv_layers", "no earlier layer"});
  }
  {
    Spec s;
    s.omit = {"gemma4.attention.head_count_kv"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.attention.head_count_kv", 3); };
    ExpectError(s, Code::kInvalidArgument, {"head_count_kv[0]", "divide"});
  }
  {
    Spec s;
    s.omit = {"gemma4.attention.value_length"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.attention.value_length", 32); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.attention.value_length"});
  }
  {
    Spec s;
    s.omit = {"token_embd.weight"};
    ExpectError(s, Code::kInvalidArgument, {"token_embd.weight", "not present"});
  }
  {
    Spec s;
    s.omit = {"token_embd.weight"};
    s.extra = [](Writer& w) { w.AddTensor("token_embd.weight", GgmlType::kF32, {32, 10}, {}); };
    ExpectError(s, Code::kInvalidArgument, {"token_embd.weight", "embedding_length 64"});
  }
  {
    Spec s;
    s.omit = {"gemma4.embedding_length"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.embedding_length", 0); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.embedding_length", "positive"});
  }
  {
    Spec s;
    s.omit = {"gemma4.rope.freq_base"};
    s.extra = [](Writer& w) { w.SetF32("gemma4.rope.freq_base", -1.0f); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.rope.freq_base"});
  }
  {
    Spec s;
    s.omit = {"gemma4.rope.dimension_count_swa"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.rope.dimension_count_swa", 33); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.rope.dimension_count_swa"});
  }
  {
    Spec s;
    s.omit = {"gemma4.block_count"};
    s.extra = [](Writer& w) { w.SetString("gemma4.block_count", "ten"); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.block_count", "string"});
  }
  {
    Spec s;
    s.omit = {"gemma4.block_count"};
    s.extra = [](Writer& w) { w.SetU32("gemma4.block_count", 4000000000u); };
    ExpectError(s, Code::kInvalidArgument, {"gemma4.block_count"});
  }
}

TEST(GgufGemma4, BlockTensorName) {
  EXPECT_EQ(BlockTensorName(3, "attn_q.weight"), "blk.3.attn_q.weight");
  EXPECT_EQ(BlockTensorName(41, "ffn_down_exps.scale"), "blk.41.ffn_down_exps.scale");
}

}  // namespace
}  // namespace garnet::gguf
