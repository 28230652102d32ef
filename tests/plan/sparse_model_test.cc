// tools/bench-fit's sparse model files: the header must be byte-identical to what garnet-mkmodel
// writes, the file as large, and the planner must read the same shape from it.
#include "tools/bench-fit/sparse_model.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "engine/gguf/gguf.h"
#include "engine/plan/planner.h"
#include "tests/gguf/test_util.h"
#include "tools/mkmodel/generator.h"
#include "tools/mkmodel/spec.h"

namespace garnet::benchfit {
namespace {

using gguf::testing::ReadAll;
using gguf::testing::ScratchDir;

mkmodel::ModelPlan Plan(const char* preset, const char* type) {
  auto spec = mkmodel::PresetSpec(preset);
  EXPECT_TRUE(spec.ok());
  mkmodel::TypeOptions t;
  t.base = type;
  auto plan = mkmodel::MakePlan(*spec, t);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  return *plan;
}

class SparseModel : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(SparseModel, HeaderIsByteIdenticalToTheWrittenModel) {
  ScratchDir dir;
  const auto [preset, type] = GetParam();
  const auto plan = Plan(preset, type);
  auto full = mkmodel::WriteModel(plan, {}, dir.Path("full.gguf"));
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  auto sparse = WriteSparseModel(plan, dir.Path("sparse.gguf"));
  ASSERT_TRUE(sparse.ok()) << sparse.status().ToString();
  EXPECT_EQ(*sparse, *full);

  auto a = gguf::Model::Open(dir.Path("full.gguf"));
  auto b = gguf::Model::Open(dir.Path("sparse.gguf"));
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  const uint64_t data = (*a)->file().data_offset();
  EXPECT_EQ((*b)->file().data_offset(), data);
  const auto fa = ReadAll(dir.Path("full.gguf"));
  const auto fb = ReadAll(dir.Path("sparse.gguf"));
  ASSERT_EQ(fa.size(), fb.size());
  EXPECT_TRUE(std::equal(fa.begin(), fa.begin() + static_cast<ptrdiff_t>(data), fb.begin()));
  EXPECT_FALSE(::access(dir.Path("sparse.gguf.meta").c_str(), F_OK) == 0);
  EXPECT_FALSE(::access(dir.Path("sparse.gguf.tmp").c_str(), F_OK) == 0);
}

INSTANTIATE_TEST_SUITE_P(Tiny, SparseModel,
                         ::testing::Values(std::make_pair("tiny", "f32"),
                                           std::make_pair("tiny-moe", "q4_k_m"),
                                           std::make_pair("tiny-ple", "q8_0")));

TEST(SparseModelReal, A26bFileIsSparseAndPlansFromItsHeader) {
  ScratchDir dir;
  const auto plan = Plan("26b-a4b", "q4_k_m");
  const std::string path = dir.Path("26b.gguf");
  auto size = WriteSparseModel(plan, path);
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_GT(*size, plan.data_bytes());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), *size);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 64ull << 20);  // a hole, not 16 GB

  auto model = gguf::Model::Open(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto shape = plan::ShapeFromModel(**model);
  ASSERT_TRUE(shape.ok()) << shape.status().ToString();
  EXPECT_EQ(shape->params.n_layer, 30u);
  EXPECT_EQ(shape->params.n_expert, 128u);
  ASSERT_EQ(shape->tensors.size(), plan.tensors.size());
  uint64_t sum = 0;
  for (const auto& t : shape->tensors) sum += t.bytes;
  EXPECT_EQ(sum, plan.data_bytes());
}

TEST(SparseModelReal, FailureLeavesNoFile) {
  const auto plan = Plan("tiny", "f32");
  auto r = WriteSparseModel(plan, "/nonexistent-garnet-dir/x.gguf");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace garnet::benchfit
