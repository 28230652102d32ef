// Writer -> reader round trips: every value type, every array element type, alignments, tensor
// data byte for byte, typed accessors, determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

namespace garnet::gguf {
namespace {

using testing::ReadAll;
using testing::ScratchDir;

// Deterministic pseudo-random bytes for tensor k.
Writer::Producer Pattern(uint32_t seed) {
  return [seed](uint64_t offset, std::span<uint8_t> chunk) {
    for (size_t i = 0; i < chunk.size(); ++i) {
      uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ull + seed;
      chunk[i] = static_cast<uint8_t>(x >> 56);
    }
    return Status::OK();
  };
}

uint8_t PatternByte(uint32_t seed, uint64_t i) {
  return static_cast<uint8_t>((i * 0x9E3779B97F4A7C15ull + seed) >> 56);
}

void AddAllScalars(Writer& w) {
  w.SetString("general.architecture", "test");
  w.SetU8("t.u8", 250);
  w.SetI8("t.i8", -120);
  w.SetU16("t.u16", 65000);
  w.SetI16("t.i16", -32000);
  w.SetU32("t.u32", 4000000000u);
  w.SetI32("t.i32", -2000000000);
  w.SetU64("t.u64", 18000000000000000000ull);
  w.SetI64("t.i64", -9000000000000000000ll);
  w.SetF32("t.f32", 1.5f);
  w.SetF64("t.f64", -2.25e300);
  w.SetBool("t.bool", true);
  w.SetString("t.str", std::string("h\0llo", 5));
  w.SetString("t.empty", "");
}

TEST(GgufRoundTrip, AllScalarTypes) {
  ScratchDir dir;
  Writer w;
  AddAllScalars(w);
  auto n = w.Finish(dir.Path("a.gguf"));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  auto f = File::Open(dir.Path("a.gguf"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->size(), *n);
  EXPECT_EQ((*f)->alignment(), 32u);
  ASSERT_EQ((*f)->metadata().size(), 14u);
  EXPECT_EQ((*f)->metadata()[0].first, "general.architecture");  // file order kept
  EXPECT_EQ((*f)->Find("t.u8")->type, ValueType::kUint8);
  EXPECT_EQ((*f)->Find("t.u8")->u, 250u);
  EXPECT_EQ((*f)->Find("t.i8")->i, -120);
  EXPECT_EQ((*f)->Find("t.u16")->u, 65000u);
  EXPECT_EQ((*f)->Find("t.i16")->i, -32000);
  EXPECT_EQ((*f)->Find("t.u32")->u, 4000000000u);
  EXPECT_EQ((*f)->Find("t.i32")->i, -2000000000);
  EXPECT_EQ((*f)->Find("t.u64")->u, 18000000000000000000ull);
  EXPECT_EQ((*f)->Find("t.u64")->AsInt(), std::nullopt);  // above int64
  EXPECT_EQ((*f)->Find("t.i64")->i, -9000000000000000000ll);
  EXPECT_EQ((*f)->Find("t.f32")->f, 1.5);
  EXPECT_EQ((*f)->Find("t.f64")->f, -2.25e300);
  EXPECT_EQ((*f)->Find("t.bool")->b, true);
  EXPECT_EQ((*f)->Find("t.str")->str, std::string_view("h\0llo", 5));
  EXPECT_EQ((*f)->Find("t.empty")->str, "");
  EXPECT_EQ((*f)->Find("missing"), nullptr);
  EXPECT_TRUE((*f)->tensors().empty());
  EXPECT_EQ((*f)->Find("t.i16")->AsInt(), -32000);
  EXPECT_EQ((*f)->Find("t.u16")->AsFloat(), 65000.0);
  EXPECT_EQ((*f)->Find("t.str")->AsInt(), std::nullopt);
}

TEST(GgufRoundTrip, ArraysOfEveryType) {
  ScratchDir dir;
  Writer w;
  w.SetArrayI32("a.i32", {-1, 0, 7, std::numeric_limits<int32_t>::min()});
  w.SetArrayU32("a.u32", {0, 1, 4294967295u});
  w.SetArrayF32("a.f32", {0.5f, -1.0f, 3.25f});
  w.SetArrayBool("a.bool", {true, false, true, true});
  w.SetArrayString("a.str", {"a", "", "ccc", std::string(300, 'x')});
  w.SetArrayI32("a.empty", {});
  auto raw = [](std::initializer_list<uint8_t> b) { return std::vector<uint8_t>(b); };
  w.SetArrayRaw("a.u8", ValueType::kUint8, 3, raw({1, 2, 255}));
  w.SetArrayRaw("a.i8", ValueType::kInt8, 2, raw({0x80, 0x7f}));
  w.SetArrayRaw("a.u16", ValueType::kUint16, 2, raw({0x34, 0x12, 0xff, 0xff}));
  w.SetArrayRaw("a.i16", ValueType::kInt16, 1, raw({0xfe, 0xff}));
  std::vector<uint8_t> u64(16), i64(8), f64(8);
  uint64_t big = 0xFFFFFFFFFFFFFFFFull, small = 5;
  std::memcpy(u64.data(), &small, 8);
  std::memcpy(u64.data() + 8, &big, 8);
  int64_t neg = -5;
  std::memcpy(i64.data(), &neg, 8);
  double d = 6.5;
  std::memcpy(f64.data(), &d, 8);
  w.SetArrayRaw("a.u64", ValueType::kUint64, 2, u64);
  w.SetArrayRaw("a.i64", ValueType::kInt64, 1, i64);
  w.SetArrayRaw("a.f64", ValueType::kFloat64, 1, f64);
  ASSERT_TRUE(w.Finish(dir.Path("a.gguf")).ok());

  auto m = Model::Open(dir.Path("a.gguf"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Model& model = **m;
  const Value* v = model.Find("a.i32");
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(v->is_array());
  EXPECT_EQ(v->elem_type, ValueType::kInt32);
  EXPECT_EQ(v->count, 4u);
  EXPECT_EQ(v->IntAt(0), -1);
  EXPECT_EQ(v->IntAt(3), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(v->IntAt(4), std::nullopt);
  EXPECT_EQ(*model.GetI32Array("a.i32"),
            (std::vector<int32_t>{-1, 0, 7, std::numeric_limits<int32_t>::min()}));
  // UINT32 arrays: values above INT32_MAX do not fit an int32 array, small ones do.
  EXPECT_FALSE(model.GetI32Array("a.u32").ok());
  EXPECT_EQ(model.Find("a.u32")->IntAt(2), 4294967295ll);
  EXPECT_EQ(*model.GetF32Array("a.f32"), (std::vector<float>{0.5f, -1.0f, 3.25f}));
  EXPECT_EQ(*model.GetBoolArray("a.bool"), (std::vector<bool>{true, false, true, true}));
  auto strs = model.GetStringArray("a.str");
  ASSERT_TRUE(strs.ok());
  ASSERT_EQ(strs->size(), 4u);
  EXPECT_EQ((*strs)[2], "ccc");
  EXPECT_EQ((*strs)[3], std::string(300, 'x'));
  EXPECT_EQ(model.GetI32Array("a.empty")->size(), 0u);
  EXPECT_EQ(*model.GetI32Array("a.u8"), (std::vector<int32_t>{1, 2, 255}));
  EXPECT_EQ(*model.GetI32Array("a.i8"), (std::vector<int32_t>{-128, 127}));
  EXPECT_EQ(*model.GetI32Array("a.u16"), (std::vector<int32_t>{0x1234, 0xffff}));
  EXPECT_EQ(*model.GetI32Array("a.i16"), (std::vector<int32_t>{-2}));
  EXPECT_EQ(model.Find("a.u64")->IntAt(0), 5);
  EXPECT_EQ(model.Find("a.u64")->IntAt(1), std::nullopt);  // above int64
  EXPECT_EQ(model.Find("a.i64")->IntAt(0), -5);
  EXPECT_EQ(model.Find("a.f64")->FloatAt(0), 6.5);
  EXPECT_EQ(model.Find("a.f64")->IntAt(0), std::nullopt);
  EXPECT_EQ(model.Find("a.i32")->FloatAt(2), 7.0);
  // Type mismatches name the key and the found type.
  auto bad = model.GetStringArray("a.i32");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsInvalidArgument());
  EXPECT_NE(bad.status().message().find("a.i32"), std::string::npos);
  EXPECT_NE(bad.status().message().find("int32"), std::string::npos);
  EXPECT_FALSE(model.GetBoolArray("a.f32").ok());
  EXPECT_FALSE(model.GetF32Array("a.str").ok());
}

TEST(GgufRoundTrip, TypedScalarAccessors) {
  ScratchDir dir;
  Writer w;
  AddAllScalars(w);
  w.SetI32("t.neg", -1);
  w.SetU64("t.u64small", 77);
  w.SetU8("t.one", 1);
  w.SetArrayI32("t.layers", {1, 2, 3});
  w.SetArrayU32("t.layers_u", {4, 5, 6});
  w.SetArrayI32("t.layers_neg", {1, -2, 3});
  ASSERT_TRUE(w.Finish(dir.Path("a.gguf")).ok());
  auto m = Model::Open(dir.Path("a.gguf"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Model& model = **m;

  EXPECT_EQ(*model.GetString("t.str"), std::string_view("h\0llo", 5));
  EXPECT_EQ(*model.GetU32("t.u8"), 250u);
  EXPECT_EQ(*model.GetU32("t.u32"), 4000000000u);
  EXPECT_EQ(*model.GetU32("t.u64small"), 77u);
  EXPECT_EQ(*model.GetU64("t.u64"), 18000000000000000000ull);
  EXPECT_EQ(*model.GetF32("t.f32"), 1.5f);
  EXPECT_EQ(*model.GetF32("t.u16"), 65000.0f);
  EXPECT_EQ(*model.GetBool("t.bool"), true);
  EXPECT_EQ(*model.GetBool("t.one"), true);

  auto missing = model.GetU32("nope.key");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_NE(missing.status().message().find("nope.key"), std::string::npos);
  auto neg = model.GetU32("t.neg");
  ASSERT_FALSE(neg.ok());
  EXPECT_TRUE(neg.status().IsInvalidArgument());
  EXPECT_NE(neg.status().message().find("t.neg"), std::string::npos);
  EXPECT_FALSE(model.GetU32("t.u64").ok());  // does not fit
  EXPECT_FALSE(model.GetU64("t.i64").ok());  // negative
  EXPECT_FALSE(model.GetF32("t.f64").ok());  // out of float range
  EXPECT_FALSE(model.GetString("t.u32").ok());
  EXPECT_FALSE(model.GetBool("t.u32").ok());
  EXPECT_FALSE(model.GetU32("t.str").ok());
  EXPECT_FALSE(model.GetU32("t.layers").ok());  // array where a scalar is wanted

  // Per-layer: scalar broadcast or exactly n_layers entries of any integer type.
  EXPECT_EQ(*model.GetPerLayerU32("t.u16", 3), (std::vector<uint32_t>{65000, 65000, 65000}));
  EXPECT_EQ(*model.GetPerLayerU32("t.layers", 3), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(*model.GetPerLayerU32("t.layers_u", 3), (std::vector<uint32_t>{4, 5, 6}));
  auto wrong_len = model.GetPerLayerU32("t.layers", 4);
  ASSERT_FALSE(wrong_len.ok());
  EXPECT_NE(wrong_len.status().message().find("t.layers"), std::string::npos);
  EXPECT_FALSE(model.GetPerLayerU32("t.layers_neg", 3).ok());
  EXPECT_FALSE(model.GetPerLayerU32("t.neg", 3).ok());
}

struct TensorCase {
  const char* name;
  GgmlType type;
  std::vector<uint64_t> ne;
};

void CheckTensorsRoundTrip(uint32_t alignment) {
  SCOPED_TRACE("alignment " + std::to_string(alignment));
  ScratchDir dir;
  const std::vector<TensorCase> cases = {
      {"f32.vec", GgmlType::kF32, {7}},
      {"f16.mat", GgmlType::kF16, {5, 3}},
      {"bf16.3d", GgmlType::kBF16, {4, 3, 2}},
      {"q8_0.mat", GgmlType::kQ8_0, {64, 3}},
      {"q4_k.mat", GgmlType::kQ4_K, {256, 2}},
      {"q6_k.4d", GgmlType::kQ6_K, {256, 1, 2, 2}},
      {"iq2_xxs.mat", GgmlType::kIQ2_XXS, {256, 1}},  // known but unsupported: sized, not decoded
      {"i32.one", GgmlType::kI32, {1}},
  };
  Writer w(alignment);
  w.SetString("general.architecture", "test");
  for (size_t k = 0; k < cases.size(); ++k) {
    w.AddTensor(cases[k].name, cases[k].type, cases[k].ne, Pattern(static_cast<uint32_t>(k)));
  }
  auto n = w.Finish(dir.Path("t.gguf"));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  const std::vector<uint8_t> bytes = ReadAll(dir.Path("t.gguf"));
  ASSERT_EQ(bytes.size(), *n);
  EXPECT_EQ(bytes.size() % alignment, 0u);  // the last tensor is padded too

  auto f = File::Open(dir.Path("t.gguf"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->alignment(), alignment);
  EXPECT_EQ((*f)->data_offset() % alignment, 0u);
  // general.alignment is written only when it differs from the default.
  EXPECT_EQ((*f)->Find("general.alignment") != nullptr, alignment != kDefaultAlignment);
  ASSERT_EQ((*f)->tensors().size(), cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    const TensorInfo& t = (*f)->tensors()[k];
    SCOPED_TRACE(cases[k].name);
    EXPECT_EQ(t.name, cases[k].name);
    EXPECT_EQ(t.type, cases[k].type);
    EXPECT_EQ(t.n_dims, cases[k].ne.size());
    for (size_t d = 0; d < cases[k].ne.size(); ++d) EXPECT_EQ(t.ne[d], cases[k].ne[d]);
    auto want = TensorBytes(t.type, t.ne, t.n_dims);
    EXPECT_EQ(t.bytes, *want);
    EXPECT_EQ(t.offset % alignment, 0u);
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ((*f)->FindTensor(cases[k].name), &t);
    const uint64_t abs = (*f)->data_offset() + t.offset;
    for (uint64_t i = 0; i < t.bytes; ++i) {
      ASSERT_EQ(t.data[i], PatternByte(static_cast<uint32_t>(k), i)) << "byte " << i;
      ASSERT_EQ(bytes[abs + i], t.data[i]);
    }
  }
  // Padding after the last tensor is zeros.
  const TensorInfo& last = (*f)->tensors().back();
  for (uint64_t i = (*f)->data_offset() + last.offset + last.bytes; i < bytes.size(); ++i) {
    EXPECT_EQ(bytes[i], 0) << i;
  }
}

TEST(GgufRoundTrip, TensorsDefaultAlignment) {
  CheckTensorsRoundTrip(32);
}
TEST(GgufRoundTrip, TensorsAlignment64) {
  CheckTensorsRoundTrip(64);
}
TEST(GgufRoundTrip, TensorsAlignment16) {
  CheckTensorsRoundTrip(16);
}
TEST(GgufRoundTrip, TensorsAlignment4096) {
  CheckTensorsRoundTrip(4096);
}
TEST(GgufRoundTrip, TensorsAlignment1) {
  CheckTensorsRoundTrip(1);
}

TEST(GgufRoundTrip, ProducerCalledInChunksAndNullProducerWritesZeros) {
  ScratchDir dir;
  Writer w;
  // 20 MiB of f32: more than one 8 MiB chunk.
  const uint64_t n = 5u << 20;
  uint64_t calls = 0, covered = 0;
  w.AddTensor("big", GgmlType::kF32, {n}, [&](uint64_t off, std::span<uint8_t> chunk) {
    EXPECT_EQ(off, covered);
    EXPECT_LE(chunk.size(), 64u << 20);
    covered += chunk.size();
    ++calls;
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<uint8_t>((off + i) % 251);
    return Status::OK();
  });
  w.AddTensor("zeros", GgmlType::kF32, {10}, nullptr);
  ASSERT_TRUE(w.Finish(dir.Path("c.gguf")).ok());
  EXPECT_EQ(covered, n * 4);
  EXPECT_GT(calls, 1u);
  auto f = File::Open(dir.Path("c.gguf"));
  ASSERT_TRUE(f.ok());
  const TensorInfo* big = (*f)->FindTensor("big");
  for (uint64_t i = 0; i < big->bytes; i += 4093) ASSERT_EQ(big->data[i], i % 251);
  const TensorInfo* zeros = (*f)->FindTensor("zeros");
  for (uint64_t i = 0; i < zeros->bytes; ++i) EXPECT_EQ(zeros->data[i], 0);
}

TEST(GgufRoundTrip, ProducerErrorAbortsAndLeavesNoFile) {
  ScratchDir dir;
  Writer w;
  w.AddTensor("x", GgmlType::kF32, {16},
              [](uint64_t, std::span<uint8_t>) { return Status::Cancelled("stop", "by test"); });
  auto r = w.Finish(dir.Path("x.gguf"));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCancelled());
  EXPECT_NE(r.status().message().find("tensor x"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.Path("x.gguf")));
  EXPECT_FALSE(std::filesystem::exists(dir.Path("x.gguf.tmp")));
}

TEST(GgufRoundTrip, WriterRejectsBadDeclarations) {
  ScratchDir dir;
  auto fails = [&](Writer& w, std::string_view needle) {
    auto r = w.Finish(dir.Path("bad.gguf"));
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().ToString();
    EXPECT_FALSE(std::filesystem::exists(dir.Path("bad.gguf")));
  };
  {
    Writer w;
    w.SetU32("k", 1);
    w.SetI32("k", 2);
    fails(w, "k");
  }
  {
    Writer w(48);
    fails(w, "alignment");
  }
  {
    Writer w;
    w.AddTensor("q", GgmlType::kQ4_K, {100, 2}, nullptr);  // not a multiple of 256
    fails(w, "q");
  }
  {
    Writer w;
    w.AddTensor("d", GgmlType::kF32, {1, 1, 1, 1, 1}, nullptr);
    fails(w, "dimensions");
  }
  {
    Writer w;
    w.AddTensor("z", GgmlType::kF32, {4, 0}, nullptr);
    fails(w, "zero");
  }
  {
    Writer w;
    w.AddTensor("t", GgmlType::kF32, {4}, nullptr);
    w.AddTensor("t", GgmlType::kF32, {4}, nullptr);
    fails(w, "t");
  }
  {
    Writer w;
    w.SetU32("general.alignment", 64);
    fails(w, "general.alignment");
  }
  {
    Writer w;
    w.SetArrayRaw("r", ValueType::kUint32, 3, std::vector<uint8_t>(8));
    fails(w, "r");
  }
  {
    Writer w;
    w.AddTensor(std::string(64, 'n'), GgmlType::kF32, {4}, nullptr);
    fails(w, "63");
  }
}

TEST(GgufRoundTrip, DeterministicBytes) {
  ScratchDir dir;
  auto build = [](const std::string& path) {
    Writer w(64);
    AddAllScalars(w);
    w.SetArrayString("s", {"x", "yy"});
    w.AddTensor("a", GgmlType::kQ8_0, {32, 4}, Pattern(1));
    w.AddTensor("b", GgmlType::kF32, {3}, [](uint64_t, std::span<uint8_t> c) {
      c[0] = 9;  // leaves the rest unfilled: still deterministic (zeros)
      return Status::OK();
    });
    return w.Finish(path);
  };
  ASSERT_TRUE(build(dir.Path("1.gguf")).ok());
  ASSERT_TRUE(build(dir.Path("2.gguf")).ok());
  EXPECT_EQ(ReadAll(dir.Path("1.gguf")), ReadAll(dir.Path("2.gguf")));
}

TEST(GgufRoundTrip, FinishReplacesExistingFileAtomically) {
  ScratchDir dir;
  const std::string path = dir.Path("m.gguf");
  testing::WriteAll(path, {1, 2, 3});
  Writer w;
  w.SetU32("x", 1);
  ASSERT_TRUE(w.Finish(path).ok());
  EXPECT_TRUE(File::Open(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // A failing write leaves the previous file in place.
  Writer bad;
  bad.SetU32("x", 1);
  bad.SetU32("x", 2);
  ASSERT_FALSE(bad.Finish(path).ok());
  auto f = File::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Find("x")->u, 1u);
}

TEST(GgufRoundTrip, ReadsVersion2) {
  // v2 has the same layout as v3 (64-bit counts); only the version field differs.
  testing::RawBuilder b;
  b.Header(0, 1, 2).KvU32("a", 5);
  auto f = File::FromMemory(b.bytes());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ((*f)->Find("a")->u, 5u);
}

TEST(GgufRoundTrip, SplitPathNames) {
  EXPECT_EQ(SplitPath("/m/x", 2, 3), "/m/x-00002-of-00003.gguf");
  std::string prefix;
  uint32_t part = 0, count = 0;
  ASSERT_TRUE(ParseSplitPath("/m/x-y-00002-of-00003.gguf", &prefix, &part, &count));
  EXPECT_EQ(prefix, "/m/x-y");
  EXPECT_EQ(part, 2u);
  EXPECT_EQ(count, 3u);
  EXPECT_FALSE(ParseSplitPath("/m/x.gguf", &prefix, &part, &count));
  EXPECT_FALSE(ParseSplitPath("/m/x-00004-of-00003.gguf", &prefix, &part, &count));
  EXPECT_FALSE(ParseSplitPath("/m/x-0001-of-0003.gguf", &prefix, &part, &count));
  EXPECT_FALSE(ParseSplitPath("-00001-of-00003.gguf", &prefix, &part, &count));
  EXPECT_FALSE(ParseSplitPath("x-00000-of-00003.gguf", &prefix, &part, &count));
}

}  // namespace
}  // namespace garnet::gguf
