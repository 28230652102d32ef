// Hostile and broken GGUF images: every one must fail with a clear Status, never crash, never
// over-read (the images are heap copies of exactly their size, so ASan builds catch over-reads).
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

namespace garnet::gguf {
namespace {

using testing::RawBuilder;
using testing::ScratchDir;

Result<std::unique_ptr<File>> Parse(const std::vector<uint8_t>& bytes) {
  return File::FromMemory(bytes, "bad.gguf");
}

// Expects failure with `code` and every needle in the message.
void ExpectError(const std::vector<uint8_t>& bytes, Code code,
                 std::initializer_list<std::string_view> needles) {
  auto f = Parse(bytes);
  ASSERT_FALSE(f.ok()) << "parsed a malformed image";
  EXPECT_EQ(f.status().code(), code) << f.status().ToString();
  EXPECT_EQ(f.status().message().rfind("bad.gguf: ", 0), 0u) << f.status().ToString();
  for (std::string_view n : needles) {
    EXPECT_NE(f.status().message().find(n), std::string::npos)
        << "missing \"" << n << "\" in: " << f.status().ToString();
  }
}

// A small valid file written by the Writer: scalars, arrays of numbers and strings, tensors.
std::vector<uint8_t> SmallValidFile(const ScratchDir& dir, uint64_t* data_end) {
  Writer w;
  w.SetString("general.architecture", "test");
  w.SetU32("a.u32", 7);
  w.SetArrayI32("a.ints", {1, 2, 3});
  w.SetArrayString("a.strs", {"x", "yz"});
  w.SetArrayBool("a.bools", {true, false});
  w.SetF32("a.f", 0.25f);
  w.AddTensor("t0", GgmlType::kF32, {3, 2}, nullptr);
  w.AddTensor("t1", GgmlType::kQ8_0, {32}, nullptr);
  auto r = w.Finish(dir.Path("small.gguf"));
  EXPECT_TRUE(r.ok());
  auto bytes = testing::ReadAll(dir.Path("small.gguf"));
  auto f = Parse(bytes);
  EXPECT_TRUE(f.ok());
  uint64_t end = 0;
  for (const auto& t : (*f)->tensors()) {
    end = std::max(end, (*f)->data_offset() + t.offset + t.bytes);
  }
  *data_end = end;
  return bytes;
}

TEST(GgufMalformed, EveryTruncationFailsCleanly) {
  ScratchDir dir;
  uint64_t data_end = 0;
  const std::vector<uint8_t> full = SmallValidFile(dir, &data_end);
  ASSERT_GT(full.size(), 100u);
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto f = Parse(prefix);
    if (n >= data_end) {
      // Only the trailing padding is missing: the file is still complete.
      EXPECT_TRUE(f.ok()) << n << ": " << f.status().ToString();
    } else {
      ASSERT_FALSE(f.ok()) << "truncated to " << n << " bytes yet parsed";
      EXPECT_TRUE(f.status().IsDataLoss() || f.status().IsInvalidArgument())
          << f.status().ToString();
    }
  }
}

TEST(GgufMalformed, EmptyAndTinyFiles) {
  ExpectError({}, Code::kDataLoss, {"magic at offset 0"});
  ExpectError({'G', 'G', 'U'}, Code::kDataLoss, {"magic"});
  ScratchDir dir;
  testing::WriteAll(dir.Path("empty.gguf"), {});
  auto f = File::Open(dir.Path("empty.gguf"));
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(f.status().IsDataLoss());
  auto missing = File::Open(dir.Path("nope.gguf"));
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound());
  auto directory = File::Open(dir.path());
  ASSERT_FALSE(directory.ok());
}

TEST(GgufMalformed, BadMagicAndVersion) {
  RawBuilder b;
  b.U32(0x46554746).U32(3).U64(0).U64(0);
  ExpectError(b.bytes(), Code::kInvalidArgument, {"magic at offset 0", "0x46554746"});
  for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
    RawBuilder c;
    c.Header(0, 0, v);
    ExpectError(c.bytes(), Code::kInvalidArgument, {"version at offset 4", std::to_string(v)});
  }
}

TEST(GgufMalformed, HugeCountsFailFast) {
  RawBuilder a;
  a.Header(0, uint64_t{1} << 60).Zeros(64);
  ExpectError(a.bytes(), Code::kDataLoss, {"kv_count at offset 16", "1152921504606846976"});
  RawBuilder b;
  b.Header(uint64_t{1} << 60, 0).Zeros(64);
  ExpectError(b.bytes(), Code::kDataLoss, {"tensor_count at offset 8"});
  RawBuilder c;
  c.Header(~uint64_t{0}, ~uint64_t{0});
  ExpectError(c.bytes(), Code::kDataLoss, {"kv_count"});
  // Tensor count that fits the file as a whole but not after the metadata.
  RawBuilder d;
  d.Header(3, 1).Str("k").U32(8).Str(std::string(200, 'v'));
  ExpectError(d.bytes(), Code::kDataLoss, {"tensor_count", "after the metadata"});
}

TEST(GgufMalformed, HugeLengths) {
  RawBuilder key;
  key.Header(0, 1).U64(uint64_t{1} << 62).Zeros(16);
  ExpectError(key.bytes(), Code::kDataLoss, {"metadata key #0 at offset 24", "string length"});
  RawBuilder val;
  val.Header(0, 1).Str("k").U32(8).U64(~uint64_t{0} - 3).Zeros(16);
  ExpectError(val.bytes(), Code::kDataLoss, {"metadata key #0 (k) value at offset 37"});
  RawBuilder arr;
  arr.Header(0, 1).Str("k").U32(9).U32(6).U64(uint64_t{1} << 61).Zeros(16);
  ExpectError(arr.bytes(), Code::kDataLoss, {"(k) count", "float32 runs past end of file"});
  RawBuilder arr64;  // count * 8 would wrap around 2^64
  arr64.Header(0, 1).Str("k").U32(9).U32(10).U64(uint64_t{1} << 61).Zeros(16);
  ExpectError(arr64.bytes(), Code::kDataLoss, {"(k) count"});
  RawBuilder sarr;
  sarr.Header(0, 1).Str("k").U32(9).U32(8).U64(uint64_t{1} << 40).Zeros(16);
  ExpectError(sarr.bytes(), Code::kDataLoss, {"(k) count", "strings runs past end of file"});
  RawBuilder selem;
  selem.Header(0, 1).Str("k").U32(9).U32(8).U64(2).Str("ok").U64(1000).Zeros(8);
  ExpectError(selem.bytes(), Code::kDataLoss, {"element #1", "string length 1000"});
  RawBuilder tname;
  tname.Header(1, 0).U64(uint64_t{1} << 50).Zeros(40);
  ExpectError(tname.bytes(), Code::kDataLoss, {"tensor #0 name at offset 24"});
}

TEST(GgufMalformed, BadValueTypes) {
  RawBuilder unknown;
  unknown.Header(0, 1).Str("k").U32(13).U32(0);
  ExpectError(unknown.bytes(), Code::kInvalidArgument, {"(k) type at offset 33", "13"});
  RawBuilder nested;
  nested.Header(0, 1).Str("k").U32(9).U32(9).U64(1).U32(4).U64(1).U32(5);
  ExpectError(nested.bytes(), Code::kInvalidArgument, {"element type", "nested arrays"});
  RawBuilder elem;
  elem.Header(0, 1).Str("k").U32(9).U32(77).U64(0);
  ExpectError(elem.bytes(), Code::kInvalidArgument, {"element type", "77"});
  RawBuilder boolean;
  boolean.Header(0, 1).Str("k").U32(7).U8(2);
  ExpectError(boolean.bytes(), Code::kInvalidArgument, {"bool value 2"});
  RawBuilder bool_arr;
  bool_arr.Header(0, 1).Str("k").U32(9).U32(7).U64(3).U8(1).U8(0).U8(9);
  ExpectError(bool_arr.bytes(), Code::kInvalidArgument, {"element #2", "bool value 9"});
  RawBuilder empty_key;
  empty_key.Header(0, 1).Str("").U32(4).U32(1);
  ExpectError(empty_key.bytes(), Code::kInvalidArgument, {"empty key"});
}

TEST(GgufMalformed, DuplicateKeysAndTensors) {
  RawBuilder keys;
  keys.Header(0, 2).KvU32("same", 1).KvU32("same", 2);
  ExpectError(keys.bytes(), Code::kInvalidArgument, {"metadata key #1 (same)", "duplicate key"});
  RawBuilder tensors;
  tensors.Header(2, 0).TensorInfo("w", {8}, 0, 0).TensorInfo("w", {8}, 0, 32).PadTo(32).Zeros(64);
  ExpectError(tensors.bytes(), Code::kInvalidArgument, {"tensor #1 (w)", "duplicate tensor"});
}

TEST(GgufMalformed, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u, 1u << 21, 0x80000000u}) {
    RawBuilder b;
    b.Header(0, 1).KvU32("general.alignment", a);
    ExpectError(b.bytes(), Code::kInvalidArgument,
                {"general.alignment at offset 49", "power of two"});
  }
  RawBuilder s;
  s.Header(0, 1).Str("general.alignment").U32(8).Str("64");
  ExpectError(s.bytes(), Code::kInvalidArgument, {"general.alignment", "string"});
  RawBuilder neg;
  neg.Header(0, 1).Str("general.alignment").U32(5).Pod<int32_t>(-32);
  ExpectError(neg.bytes(), Code::kInvalidArgument, {"general.alignment"});
  // Any integer width is accepted, as long as the value is sane.
  RawBuilder ok;
  ok.Header(1, 1).Str("general.alignment").U32(10).U64(64).TensorInfo("t", {16}, 0, 0);
  ok.PadTo(64).Zeros(64);
  auto f = Parse(ok.bytes());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset() % 64, 0u);
}

TEST(GgufMalformed, BadTensorInfos) {
  auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data) {
    RawBuilder b;
    b.Header(1, 0).TensorInfo("t", std::move(ne), type, offset).PadTo(32).Zeros(data);
    return b.bytes();
  };
  ExpectError(one({}, 0, 0, 64), Code::kInvalidArgument, {"tensor #0 (t) n_dims", "0 dim"});
  ExpectError(one({1, 1, 1, 1, 1}, 0, 0, 64), Code::kInvalidArgument, {"n_dims", "5 dim"});
  ExpectError(one({4}, 4, 0, 64), Code::kInvalidArgument, {"type at offset", "ggml type id 4"});
  ExpectError(one({4}, 1000, 0, 64), Code::kInvalidArgument, {"1000"});
  ExpectError(one({100}, 12, 0, 512), Code::kInvalidArgument, {"(t) shape", "q4_k"});
  ExpectError(one({uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0, 64), Code::kInvalidArgument,
              {"ne[1]", "overflow"});
  ExpectError(one({uint64_t{1} << 63}, 0, 0, 64), Code::kInvalidArgument, {"ne[0]"});
  // Byte size overflow although the element count fits int64.
  ExpectError(one({uint64_t{1} << 62}, 0, 0, 64), Code::kInvalidArgument, {"(t) shape"});
  ExpectError(one({4}, 0, 16, 64), Code::kInvalidArgument, {"offset", "not a multiple of the 32"});
  ExpectError(one({16}, 0, 0, 63), Code::kDataLoss, {"tensor t offset", "runs past the end"});
  ExpectError(one({16}, 0, 32, 64), Code::kDataLoss, {"runs past the end"});
  ExpectError(one({16}, 0, uint64_t{1} << 63, 64), Code::kDataLoss, {"runs past the end"});
  ExpectError(one({16}, 0, ~uint64_t{0} - 31, 64), Code::kDataLoss, {"runs past the end"});
  auto ok = Parse(one({16}, 0, 0, 64));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  // Data section start past end of file.
  RawBuilder nodata;
  nodata.Header(1, 0).TensorInfo("t", {1}, 0, 0);
  ExpectError(nodata.bytes(), Code::kDataLoss, {"data section"});
  RawBuilder empty_name;
  empty_name.Header(1, 0).TensorInfo("", {1}, 0, 0).PadTo(32).Zeros(32);
  ExpectError(empty_name.bytes(), Code::kInvalidArgument, {"empty tensor name"});
}

TEST(GgufMalformed, OverlappingTensors) {
  RawBuilder b;
  b.Header(2, 0).TensorInfo("a", {16}, 0, 0).TensorInfo("b", {8}, 0, 32).PadTo(32).Zeros(128);
  ExpectError(b.bytes(), Code::kInvalidArgument, {"tensor b data", "overlaps tensor a"});
  RawBuilder same;
  same.Header(2, 0).TensorInfo("a", {8}, 0, 0).TensorInfo("b", {8}, 0, 0).PadTo(32).Zeros(64);
  ExpectError(same.bytes(), Code::kInvalidArgument, {"overlaps"});
  // Out-of-order but disjoint tensors are fine.
  RawBuilder ok;
  ok.Header(2, 0).TensorInfo("a", {8}, 0, 32).TensorInfo("b", {8}, 0, 0).PadTo(32).Zeros(64);
  auto f = Parse(ok.bytes());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->FindTensor("a")->data, (*f)->FindTensor("b")->data + 32);
}

TEST(GgufMalformed, ZeroSizedTensorAccepted) {
  RawBuilder b;
  b.Header(1, 0).TensorInfo("e", {0, 4}, 0, 0).PadTo(32);
  auto f = Parse(b.bytes());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->FindTensor("e")->bytes, 0u);
}

}  // namespace
}  // namespace garnet::gguf
