#include "registry/catalog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "tests/scratch_dir.h"

namespace garnet::registry {
namespace {

TEST(Catalog, BuiltinParsesAndIsConsistent) {
  auto cat = Catalog::Builtin();
  ASSERT_TRUE(cat.ok()) << cat.status().ToString();
  std::set<std::string> names;
  for (const CatalogEntry& e : cat->entries()) {
    EXPECT_TRUE(names.insert(e.id).second) << "duplicate " << e.id;
    for (const std::string& a : e.aliases) EXPECT_TRUE(names.insert(a).second) << "duplicate " << a;
    EXPECT_EQ(e.family, "gemma4");
    EXPECT_FALSE(e.files.empty());
    EXPECT_LE(e.default_context, e.max_context);
    auto r = cat->Resolve(e.id);
    ASSERT_TRUE(r.ok()) << e.id;
    EXPECT_EQ((*r)->id, e.id);
  }
  // Coverage the issue asks for.
  for (const char* v : {"e2b", "e4b", "31b", "26b-a4b"}) {
    for (const char* q : {"q4_k_m", "q8_0", "bf16", "qat-q4_0"}) {
      std::string id = std::string("gemma4:") + v + "-" + q;
      EXPECT_NE(cat->FindId(id), nullptr) << id;
    }
  }
  EXPECT_NE(cat->FindId("gemma4:tiny"), nullptr);
  // Split BF16 models list several files in order.
  const CatalogEntry* big = cat->FindId("gemma4:31b-bf16");
  ASSERT_NE(big, nullptr);
  EXPECT_GE(big->files.size(), 2u);
  EXPECT_TRUE(cat->FindId("gemma4:26b-a4b-q4_k_m")->moe);
}

TEST(Catalog, DefaultsAndAliases) {
  auto cat = Catalog::Builtin();
  ASSERT_TRUE(cat.ok());
  auto r = cat->Resolve("gemma4");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->id, "gemma4:e4b-q4_k_m");
  r = cat->Resolve("gemma4:e4b");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->id, "gemma4:e4b-q4_k_m");
  r = cat->Resolve("GEMMA4:26B-A4B");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->id, "gemma4:26b-a4b-q4_k_m");
  r = cat->Resolve("gemma4:e5b");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_NE(r.status().message().find("gemma4:e4b"), std::string::npos) << r.status().message();
  EXPECT_TRUE(cat->Resolve("llama3").status().IsNotFound());
  EXPECT_TRUE(cat->Resolve("gemma4:../x").status().IsInvalidArgument());
}

TEST(Catalog, SourceUrls) {
  SourceFile f;
  f.repo = "org/repo";
  f.path = "BF16/model-00001-of-00002.gguf";
  EXPECT_EQ(f.ResolvePath(), "org/repo/resolve/main/BF16/model-00001-of-00002.gguf");
  EXPECT_EQ(f.Url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/org/repo/resolve/main/BF16/model-00001-of-00002.gguf");
  EXPECT_EQ(f.FileName(), "model-00001-of-00002.gguf");
}

constexpr const char* kUser = R"({
  "version": 1,
  "defaults": {"mine": "mine:a"},
  "models": [
    {"id": "mine:a", "aliases": ["mine:latest"], "family": "mine", "variant": "a",
     "total_params": 10, "quant": "F32",
     "files": [{"url": "http://example.invalid/a.gguf", "size": 5,
                "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}],
     "default_context": 16, "max_context": 32},
    {"id": "gemma4:tiny", "family": "gemma4", "variant": "tiny", "total_params": 2, "quant": "Q8_0",
     "files": [{"repo": "me/tiny", "path": "t.gguf"}], "default_context": 8, "max_context": 8}
  ]})";

TEST(Catalog, UserCatalogAddsAndOverrides) {
  std::string path = ::testing::TempDir() + "/user_catalog_" + std::to_string(::getpid()) + ".json";
  garnet::testing::RemoveAtExit(path);
  {
    std::ofstream f(path);
    f << kUser;
  }
  auto cat = Catalog::Load(path);
  ASSERT_TRUE(cat.ok()) << cat.status().ToString();
  auto r = cat->Resolve("mine");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->files[0].Url("ignored"), "http://example.invalid/a.gguf");
  EXPECT_EQ(*(*r)->files[0].size, 5u);
  const CatalogEntry* tiny = cat->FindId("gemma4:tiny");
  ASSERT_NE(tiny, nullptr);
  EXPECT_EQ(tiny->quant, "Q8_0");
  EXPECT_EQ(tiny->files[0].repo, "me/tiny");
  EXPECT_TRUE(Catalog::Load(path + ".missing").status().IsNotFound());
}

TEST(Catalog, RejectsBadDocuments) {
  auto bad = [](const std::string& json) { return Catalog::Parse(json, "test").status(); };
  EXPECT_TRUE(bad("{").IsInvalidArgument());
  EXPECT_TRUE(bad("[]").IsInvalidArgument());
  EXPECT_TRUE(bad(R"({"models": 3})").IsInvalidArgument());
  const std::string ok_file = R"("files": [{"repo": "a/b", "path": "x.gguf"}])";
  auto entry = [&](const std::string& fields) {
    return R"({"models": [{"family": "f", "variant": "v", "total_params": 1, "quant": "Q8_0",
      "default_context": 1, "max_context": 2, )" +
           fields + "}]}";
  };
  EXPECT_TRUE(Catalog::Parse(entry(R"("id": "f:v", )" + ok_file), "t").ok());
  EXPECT_TRUE(bad(entry(R"("id": "f:v")")).IsInvalidArgument());              // no files
  EXPECT_TRUE(bad(entry(R"("id": "F:v", )" + ok_file)).IsInvalidArgument());  // not canonical
  EXPECT_TRUE(bad(entry(R"("id": "g:v", )" + ok_file)).IsInvalidArgument());  // family mismatch
  EXPECT_TRUE(
      bad(entry(R"("id": "f:v", "files": [{"repo": "a/b", "path": "../x"}])")).IsInvalidArgument());
  EXPECT_TRUE(
      bad(entry(R"("id": "f:v", "files": [{"repo": "a/b/c", "path": "x"}])")).IsInvalidArgument());
  EXPECT_TRUE(bad(entry(R"("id": "f:v", "files": [{"repo": "a/b", "path": "x", "sha256": "AB"}])"))
                  .IsInvalidArgument());
  EXPECT_TRUE(
      bad(entry(R"("id": "f:v", "files": [{"url": "file:///etc/passwd"}])")).IsInvalidArgument());
  EXPECT_TRUE(bad(entry(R"("id": "f:v", "aliases": ["f:v"], )" + ok_file)).IsInvalidArgument());
  Status s = bad(entry(R"("id": "f:v", "total_params": "many", )" + ok_file));
  EXPECT_FALSE(s.ok());
}

// Every `gemma4:<tag>` the README mentions must resolve.
TEST(Catalog, ReadmeReferencesResolve) {
  const char* src = std::getenv("GARNET_SOURCE_DIR");
  if (src == nullptr) GTEST_SKIP() << "GARNET_SOURCE_DIR not set";
  std::ifstream in(std::string(src) + "/README.md");
  if (!in) GTEST_SKIP() << "no README.md";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  auto cat = Catalog::Builtin();
  ASSERT_TRUE(cat.ok());
  std::regex re("gemma4:[a-z0-9._-]+");
  int n = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    std::string ref = it->str();
    while (!ref.empty() && (ref.back() == '.' || ref.back() == '-')) ref.pop_back();
    auto r = cat->Resolve(ref);
    EXPECT_TRUE(r.ok()) << "README mentions " << ref << ": " << r.status().ToString();
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace garnet::registry
