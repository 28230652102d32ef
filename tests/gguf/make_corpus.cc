// Regenerates the seed corpus in tests/gguf/corpus/ (tiny valid and invalid GGUF images, each
// under 4 KB). Not part of the default build: `cmake --build <dir> --target gguf_make_corpus`
// then `<dir>/tests/gguf/gguf_make_corpus tests/gguf/corpus`. Output is deterministic.
#include <cstdio>
#include <string>
#include <vector>

#include "engine/gguf/gemma4.h"
#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

namespace garnet::gguf {
namespace {

using testing::RawBuilder;

Writer::Producer Ramp() {
  return [](uint64_t off, std::span<uint8_t> c) {
    for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>((off + i) * 7 + 1);
    return Status::OK();
  };
}

Status WriteValid(const std::string& dir) {
  {
    Writer w;
    w.SetString("general.architecture", "test");
    w.SetU8("a.u8", 1);
    w.SetI8("a.i8", -1);
    w.SetU16("a.u16", 2);
    w.SetI16("a.i16", -2);
    w.SetU32("a.u32", 3);
    w.SetI32("a.i32", -3);
    w.SetU64("a.u64", 4);
    w.SetI64("a.i64", -4);
    w.SetF32("a.f32", 0.5f);
    w.SetF64("a.f64", 0.25);
    w.SetBool("a.bool", true);
    w.SetArrayI32("a.ai32", {1, -2, 3});
    w.SetArrayU32("a.au32", {4, 5});
    w.SetArrayF32("a.af32", {1.5f});
    w.SetArrayBool("a.abool", {true, false});
    w.SetArrayString("a.astr", {"x", "yz", ""});
    w.AddTensor("f32", GgmlType::kF32, {4, 2}, Ramp());
    w.AddTensor("q8", GgmlType::kQ8_0, {32}, Ramp());
    w.AddTensor("f16", GgmlType::kF16, {3, 1, 2}, Ramp());
    GARNET_RETURN_IF_ERROR(w.Finish(dir + "/valid_small.gguf").status());
  }
  {
    Writer w(64);
    w.SetString("general.name", "aligned");
    w.AddTensor("a", GgmlType::kF32, {5}, Ramp());
    w.AddTensor("b", GgmlType::kBF16, {2, 2, 2, 2}, Ramp());
    GARNET_RETURN_IF_ERROR(w.Finish(dir + "/valid_align64.gguf").status());
  }
  {
    // A 3-layer gemma4 header (S, S, F; last layer shares KV) with tiny tensors.
    Writer w;
    w.SetString("general.architecture", "gemma4");
    w.SetU32("gemma4.context_length", 128);
    w.SetU32("gemma4.embedding_length", 8);
    w.SetU32("gemma4.block_count", 4);
    w.SetU32("gemma4.attention.head_count", 2);
    w.SetArrayI32("gemma4.attention.head_count_kv", {1, 1, 1, 1});
    w.SetArrayI32("gemma4.feed_forward_length", {16, 16, 32, 32});
    w.SetArrayBool("gemma4.attention.sliding_window_pattern", {true, false, true, false});
    w.SetU32("gemma4.attention.key_length", 8);
    w.SetU32("gemma4.attention.key_length_swa", 4);
    w.SetU32("gemma4.attention.sliding_window", 16);
    w.SetU32("gemma4.attention.shared_kv_layers", 2);
    w.SetU32("gemma4.embedding_length_per_layer_input", 2);
    w.SetF32("gemma4.rope.freq_base", 1e6f);
    w.SetF32("gemma4.rope.freq_base_swa", 1e4f);
    w.SetF32("gemma4.final_logit_softcapping", 30.0f);
    w.AddTensor("token_embd.weight", GgmlType::kF32, {8, 16}, Ramp());
    for (uint32_t il = 0; il < 4; ++il) {
      const uint64_t hd = il % 2 == 0 ? 4 : 8;
      w.AddTensor(BlockTensorName(il, "attn_q_norm.weight"), GgmlType::kF32, {hd}, Ramp());
      if (il < 2) w.AddTensor(BlockTensorName(il, "attn_k_norm.weight"), GgmlType::kF32, {hd}, {});
    }
    w.AddTensor("blk.0.attn_v.weight", GgmlType::kF16, {8, 4}, Ramp());
    GARNET_RETURN_IF_ERROR(w.Finish(dir + "/valid_gemma4_tiny.gguf").status());
  }
  return Status::OK();
}

void Put(const std::string& path, const std::vector<uint8_t>& bytes) {
  testing::WriteAll(path, bytes);
}

void WriteInvalid(const std::string& dir) {
  Put(dir + "/bad_magic.gguf", RawBuilder().U32(0x46554746).U32(3).U64(0).U64(0).bytes());
  Put(dir + "/bad_version.gguf", RawBuilder().Header(0, 0, 1).bytes());
  Put(dir + "/huge_kv_count.gguf", RawBuilder().Header(0, uint64_t{1} << 60).Zeros(32).bytes());
  Put(dir + "/huge_string.gguf",
      RawBuilder().Header(0, 1).Str("k").U32(8).U64(uint64_t{1} << 40).Zeros(8).bytes());
  Put(dir + "/nested_array.gguf",
      RawBuilder().Header(0, 1).Str("k").U32(9).U32(9).U64(1).U32(4).U64(1).U32(1).bytes());
  Put(dir + "/dup_key.gguf", RawBuilder().Header(0, 2).KvU32("a", 1).KvU32("a", 2).bytes());
  Put(dir + "/overlap.gguf", RawBuilder()
                                 .Header(2, 0)
                                 .TensorInfo("a", {16}, 0, 0)
                                 .TensorInfo("b", {8}, 0, 32)
                                 .PadTo(32)
                                 .Zeros(128)
                                 .bytes());
  Put(dir + "/past_eof.gguf",
      RawBuilder().Header(1, 0).TensorInfo("a", {64}, 0, 0).PadTo(32).Zeros(16).bytes());
  Put(dir + "/bad_alignment.gguf",
      RawBuilder().Header(0, 1).KvU32("general.alignment", 24).bytes());
  Put(dir + "/unknown_type.gguf",
      RawBuilder().Header(1, 0).TensorInfo("a", {4}, 99, 0).PadTo(32).Zeros(32).bytes());
}

}  // namespace
}  // namespace garnet::gguf

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_make_corpus <dir>\n");
    return 2;
  }
  const std::string dir = argv[1];
  garnet::Status s = garnet::gguf::WriteValid(dir);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  garnet::gguf::WriteInvalid(dir);
  return 0;
}
