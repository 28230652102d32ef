// Split sets ("name-00001-of-00003.gguf"): written by Writer::FinishSplit, opened as one Model.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

namespace garnet::gguf {
namespace {

using testing::ScratchDir;

Writer::Producer Fill(uint8_t v) {
  return [v](uint64_t, std::span<uint8_t> c) {
    for (auto& b : c) b = v;
    return Status::OK();
  };
}

// Writes a 3-part set of 7 tensors "t0".."t6" (t_k filled with byte k+1) under dir/"m".
std::vector<std::string> WriteSet(const ScratchDir& dir) {
  Writer w;
  w.SetString("general.architecture", "test");
  w.SetU32("test.block_count", 7);
  for (int k = 0; k < 7; ++k) {
    std::string name = "t";  // (not "t" + ...: GCC 12 raises a false -Wrestrict there)
    name += std::to_string(k);
    w.AddTensor(name, GgmlType::kF32, {8, static_cast<uint64_t>(k + 1)},
                Fill(static_cast<uint8_t>(k + 1)));
  }
  auto parts = w.FinishSplit(dir.Path("m"), 3);
  EXPECT_TRUE(parts.ok()) << parts.status().ToString();
  return parts.ok() ? *parts : std::vector<std::string>{};
}

// One hand-made part with arbitrary split keys (the Writer allows split.* keys in Finish()).
void WritePart(const std::string& path, int64_t no, int64_t count, int64_t total,
               std::vector<std::string> tensors) {
  Writer w;
  w.SetU16("split.no", static_cast<uint16_t>(no));
  w.SetU32("split.count", static_cast<uint32_t>(count));  // u32: any integer width is accepted
  w.SetI32("split.tensors.count", static_cast<int32_t>(total));
  for (auto& t : tensors) w.AddTensor(t, GgmlType::kF32, {4}, nullptr);
  ASSERT_TRUE(w.Finish(path).ok());
}

TEST(GgufSplit, ThreePartsOpenAsOne) {
  ScratchDir dir;
  const auto parts = WriteSet(dir);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], dir.Path("m-00001-of-00003.gguf"));
  EXPECT_EQ(parts[2], dir.Path("m-00003-of-00003.gguf"));

  // Later parts carry only the split keys; the first carries everything.
  auto p1 = File::Open(parts[0]);
  auto p2 = File::Open(parts[1]);
  ASSERT_TRUE(p1.ok() && p2.ok());
  EXPECT_EQ((*p1)->metadata().size(), 5u);
  EXPECT_EQ((*p2)->metadata().size(), 3u);
  EXPECT_EQ((*p2)->Find("split.no")->type, ValueType::kUint16);
  EXPECT_EQ((*p2)->Find("split.no")->u, 1u);
  EXPECT_EQ((*p2)->Find("split.tensors.count")->type, ValueType::kInt32);
  EXPECT_EQ((*p1)->tensors().size(), 3u);
  EXPECT_EQ((*p2)->tensors().size(), 3u);

  for (const auto& open_path : parts) {  // opening any part opens the whole set
    SCOPED_TRACE(open_path);
    auto m = Model::Open(open_path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const Model& model = **m;
    EXPECT_EQ(model.file_count(), 3u);
    EXPECT_EQ(model.file(0).path(), parts[0]);
    EXPECT_EQ(*model.GetString("general.architecture"), "test");
    EXPECT_EQ(*model.GetU32("test.block_count"), 7u);
    ASSERT_EQ(model.tensors().size(), 7u);
    uint64_t sum = 0;
    for (const auto& p : parts) sum += std::filesystem::file_size(p);
    EXPECT_EQ(model.total_bytes(), sum);
    for (int k = 0; k < 7; ++k) {
      const TensorInfo* t = model.FindTensor("t" + std::to_string(k));
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->file_index, static_cast<uint32_t>(k / 3));
      EXPECT_EQ(t->ne[1], static_cast<uint64_t>(k + 1));
      for (uint64_t i = 0; i < t->bytes; ++i) ASSERT_EQ(t->data[i], k + 1);
    }
  }
  auto explicit_parts = Model::OpenParts(parts);
  ASSERT_TRUE(explicit_parts.ok()) << explicit_parts.status().ToString();
  EXPECT_EQ((*explicit_parts)->tensors().size(), 7u);
}

TEST(GgufSplit, MissingPart) {
  ScratchDir dir;
  const auto parts = WriteSet(dir);
  std::filesystem::remove(parts[1]);
  auto m = Model::Open(parts[0]);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsNotFound()) << m.status().ToString();
  EXPECT_NE(m.status().message().find("split part 2 of 3"), std::string::npos);
  EXPECT_NE(m.status().message().find("m-00002-of-00003.gguf"), std::string::npos);
}

TEST(GgufSplit, MismatchedSplitCount) {
  ScratchDir dir;
  WritePart(dir.Path("m-00001-of-00003.gguf"), 0, 3, 3, {"a"});
  WritePart(dir.Path("m-00002-of-00003.gguf"), 1, 4, 3, {"b"});
  WritePart(dir.Path("m-00003-of-00003.gguf"), 2, 3, 3, {"c"});
  auto m = Model::Open(dir.Path("m-00003-of-00003.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("m-00002-of-00003.gguf: key split.count"), std::string::npos)
      << m.status().ToString();
}

TEST(GgufSplit, WrongSplitNo) {
  ScratchDir dir;
  WritePart(dir.Path("m-00001-of-00002.gguf"), 0, 2, 2, {"a"});
  WritePart(dir.Path("m-00002-of-00002.gguf"), 0, 2, 2, {"b"});
  auto m = Model::Open(dir.Path("m-00001-of-00002.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("split.no"), std::string::npos) << m.status().ToString();
}

TEST(GgufSplit, DuplicateTensorAcrossParts) {
  ScratchDir dir;
  WritePart(dir.Path("m-00001-of-00002.gguf"), 0, 2, 2, {"a"});
  WritePart(dir.Path("m-00002-of-00002.gguf"), 1, 2, 2, {"a"});
  auto m = Model::Open(dir.Path("m-00001-of-00002.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsInvalidArgument());
  EXPECT_NE(m.status().message().find("tensor a"), std::string::npos) << m.status().ToString();
  EXPECT_NE(m.status().message().find("also present in"), std::string::npos);
}

TEST(GgufSplit, TensorCountMismatch) {
  ScratchDir dir;
  WritePart(dir.Path("m-00001-of-00002.gguf"), 0, 2, 5, {"a"});
  WritePart(dir.Path("m-00002-of-00002.gguf"), 1, 2, 5, {"b"});
  auto m = Model::Open(dir.Path("m-00001-of-00002.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("split.tensors.count"), std::string::npos);
  EXPECT_NE(m.status().message().find("hold 2 tensors"), std::string::npos)
      << m.status().ToString();
}

TEST(GgufSplit, PartWithoutSplitKeys) {
  ScratchDir dir;
  WritePart(dir.Path("m-00001-of-00002.gguf"), 0, 2, 2, {"a"});
  Writer w;
  w.AddTensor("b", GgmlType::kF32, {4}, nullptr);
  ASSERT_TRUE(w.Finish(dir.Path("m-00002-of-00002.gguf")).ok());
  auto m = Model::Open(dir.Path("m-00002-of-00002.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("lacks split.no"), std::string::npos)
      << m.status().ToString();
}

TEST(GgufSplit, SplitFileWithUnsplitName) {
  ScratchDir dir;
  WritePart(dir.Path("renamed.gguf"), 0, 3, 3, {"a"});
  auto m = Model::Open(dir.Path("renamed.gguf"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("split.count"), std::string::npos);
  EXPECT_NE(m.status().message().find("OpenParts"), std::string::npos);
}

TEST(GgufSplit, SinglePartSetsAndPlainFiles) {
  ScratchDir dir;
  // "-00001-of-00001" is a plain single file; its split keys must still agree.
  WritePart(dir.Path("one-00001-of-00001.gguf"), 0, 1, 1, {"a"});
  auto one = Model::Open(dir.Path("one-00001-of-00001.gguf"));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ((*one)->file_count(), 1u);
  WritePart(dir.Path("lie.gguf"), 0, 1, 9, {"a"});
  EXPECT_FALSE(Model::Open(dir.Path("lie.gguf")).ok());
  // FinishSplit with one part, and with more parts than tensors.
  Writer w;
  w.SetString("general.architecture", "x");
  w.AddTensor("only", GgmlType::kF32, {4}, nullptr);
  auto parts = w.FinishSplit(dir.Path("few"), 3);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  auto m = Model::Open((*parts)[2]);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->tensors().size(), 1u);
  EXPECT_EQ((*m)->file(2).tensors().size(), 0u);
  Writer bad;
  bad.SetU16("split.no", 0);
  EXPECT_FALSE(bad.FinishSplit(dir.Path("bad"), 2).ok());
  EXPECT_FALSE(Model::OpenParts({}).ok());
}

}  // namespace
}  // namespace garnet::gguf
