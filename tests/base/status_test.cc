#include "engine/base/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace garnet {
namespace {

TEST(Status, OkIsDefaultAndCarriesNoMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(Status, NamedConstructorsJoinContextAndDetail) {
  Status s = Status::NotFound("model gemma4:e4b", "not pulled");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_FALSE(s.IsInternal());
  EXPECT_EQ(s.message(), "model gemma4:e4b: not pulled");
  EXPECT_EQ(s.ToString(), "not found: model gemma4:e4b: not pulled");
  EXPECT_EQ(static_cast<int>(s.code()), 5);  // grpc::StatusCode::NOT_FOUND
}

TEST(Status, CopyAndContext) {
  Status a = Status::DataLoss("blob", "sha256 mismatch");
  Status b = a;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(b.message(), a.message());
  Status c = b.WithContext("pull gemma4:tiny");
  EXPECT_EQ(c.message(), "pull gemma4:tiny: blob: sha256 mismatch");
  EXPECT_TRUE(c.IsDataLoss());
  EXPECT_TRUE(Status().WithContext("x").ok());
}

TEST(Status, PosixErrorMapsCommonErrnos) {
  EXPECT_TRUE(PosixError("open", ENOENT).IsNotFound());
  EXPECT_TRUE(PosixError("open", EACCES).IsPermissionDenied());
  EXPECT_TRUE(PosixError("write", ENOSPC).IsResourceExhausted());
  EXPECT_TRUE(PosixError("mkdir", EEXIST).IsAlreadyExists());
  EXPECT_TRUE(PosixError("read", EIO).IsInternal());
  EXPECT_NE(PosixError("open", ENOENT).message().find("open: "), std::string::npos);
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("half", "odd input");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  GARNET_ASSIGN_OR_RETURN(int h, Half(x));
  *out = h;
  return Status::OK();
}

TEST(Result, ValueOrStatusAndMacros) {
  auto r = Half(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 4);
  auto e = Half(3);
  EXPECT_FALSE(e.ok());
  EXPECT_TRUE(e.status().IsInvalidArgument());
  int out = 0;
  EXPECT_TRUE(UseHalf(10, &out).ok());
  EXPECT_EQ(out, 5);
  EXPECT_TRUE(UseHalf(11, &out).IsInvalidArgument());
}

TEST(Result, OkStatusBecomesInternalError) {
  Result<int> r{Status::OK()};
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInternal());
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  EXPECT_DEATH({ (void)Half(1).value(); }, "failed Result");
}

}  // namespace
}  // namespace garnet
