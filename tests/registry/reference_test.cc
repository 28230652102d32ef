#include "registry/reference.h"

#include <gtest/gtest.h>

#include <string>

namespace garnet::registry {
namespace {

TEST(Reference, CatalogForms) {
  auto r = ParseReference("gemma4");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, Reference::Kind::kCatalog);
  EXPECT_EQ(r->name, "gemma4");
  EXPECT_EQ(r->tag, "");
  r = ParseReference("Gemma4:E4B");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToString(), "gemma4:e4b");
  r = ParseReference("gemma4:26b-a4b");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "26b-a4b");
  r = ParseReference("gemma4:31b-q8_0");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "31b-q8_0");
}

TEST(Reference, HuggingFaceForms) {
  auto r = ParseReference("hf.co/unsloth/gemma-4-E4B-it-GGUF:Q8_0");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, Reference::Kind::kHuggingFace);
  EXPECT_EQ(r->org, "unsloth");
  EXPECT_EQ(r->repo, "gemma-4-E4B-it-GGUF");
  EXPECT_EQ(r->tag, "Q8_0");
  EXPECT_EQ(r->ToString(), "hf.co/unsloth/gemma-4-E4B-it-GGUF:Q8_0");
  r = ParseReference("huggingface.co/google/gemma-4-26B-A4B-it-qat-q4_0-gguf");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "");
  EXPECT_EQ(r->ToString(), "hf.co/google/gemma-4-26B-A4B-it-qat-q4_0-gguf");
}

TEST(Reference, LocalPaths) {
  for (const char* p : {"/tmp/model.gguf", "./x.gguf", "../x.gguf", "~/m.gguf"}) {
    auto r = ParseReference(p);
    ASSERT_TRUE(r.ok()) << p;
    EXPECT_EQ(r->kind, Reference::Kind::kLocalPath);
    EXPECT_EQ(r->path, p);
  }
}

TEST(Reference, RejectsTraversalAndOddInput) {
  const std::string cases[] = {
      "",
      "gemma4:",
      ":e4b",
      "gemma4:../../etc",
      "gemma4:..",
      "gemma4:a..b",
      "hf..:x",
      "..:x",
      "gemma4/x",
      "gemma4:a/b",
      "gemma4:a:b",
      std::string("gemma4:e4b\0x", 12),
      "gemma4:e4b\n",
      "gemma4:e\x7f",
      "gemma4:\xc3\xa9",  // é
      "gemma4:.hidden",
      "gemma4:-x",
      "gemma4:e 4b",
      "gemma4:" + std::string(129, 'a'),
      std::string(600, 'a'),
      "hf.co/",
      "hf.co/org",
      "hf.co/org/",
      "hf.co/org/repo/extra",
      "hf.co/../repo",
      "hf.co/org/..",
      "hf.co/org/repo:../x",
      "hf.co/org/repo:a/b",
  };
  for (const std::string& c : cases) {
    auto r = ParseReference(c);
    EXPECT_FALSE(r.ok()) << "accepted: " << c;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c;
      EXPECT_FALSE(r.status().message().empty());
      // Messages never carry raw control bytes.
      for (unsigned char ch : r.status().message()) EXPECT_GE(ch, 0x20) << c;
    }
  }
}

TEST(Reference, MessagesNameTheProblem) {
  auto r = ParseReference("gemma4:a/b");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'/'"), std::string::npos) << r.status().message();
  r = ParseReference(std::string("gemma4:a\0b", 10));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("NUL"), std::string::npos) << r.status().message();
  r = ParseReference("gemma4:" + std::string(129, 'a'));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("longer than 128"), std::string::npos);
  r = ParseReference("gemma4:\xc3\xa9");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("non-ASCII"), std::string::npos);
}

TEST(Digest, Validation) {
  const std::string hex(64, 'a');
  EXPECT_TRUE(IsValidDigest("sha256-" + hex));
  EXPECT_FALSE(IsValidDigest("sha256:" + hex));
  EXPECT_FALSE(IsValidDigest("sha256-" + std::string(64, 'A')));
  EXPECT_FALSE(IsValidDigest("sha256-" + std::string(63, 'a')));
  EXPECT_FALSE(IsValidDigest("sha256-" + std::string(63, 'a') + "/"));
  EXPECT_FALSE(IsValidDigest("sha256-../../" + std::string(58, 'a')));
  auto n = NormalizeDigest("sha256:" + hex);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, "sha256-" + hex);
  EXPECT_TRUE(NormalizeDigest("md5-abc").status().IsInvalidArgument());
  EXPECT_TRUE(NormalizeDigest("sha256-" + std::string(64, 'g')).status().IsInvalidArgument());
}

}  // namespace
}  // namespace garnet::registry
