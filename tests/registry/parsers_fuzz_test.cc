// Randomised robustness checks for every parser of outside input in registry/: references and
// digests, catalog documents, hub tree listings, Content-Range values. Each must return a value
// or a clear Status for any bytes, never crash (run under ASan/UBSan in the sanitizer build).
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "registry/catalog.h"
#include "registry/hf.h"
#include "registry/http.h"
#include "registry/reference.h"

namespace garnet::registry {
namespace {

std::string Mutate(const std::string& seed, std::mt19937& rng) {
  std::string s = seed;
  int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 5) {
      case 0:  // flip a byte
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 1:  // insert an interesting byte
        s.insert(s.begin() + static_cast<long>(s.empty() ? 0 : rng() % s.size()),
                 "\0/:.\\\"{}[]-9\xff\n"[rng() % 15]);
        break;
      case 2:  // delete a span
        if (!s.empty()) {
          size_t at = rng() % s.size();
          s.erase(at, rng() % 16);
        }
        break;
      case 3:  // duplicate a span
        if (!s.empty()) {
          size_t at = rng() % s.size();
          s.insert(at, s.substr(at, rng() % 32));
        }
        break;
      case 4:  // truncate
        s.resize(rng() % (s.size() + 1));
        break;
    }
  }
  return s;
}

TEST(ParsersFuzz, References) {
  std::mt19937 rng(1);
  const std::vector<std::string> seeds = {"gemma4:e4b", "hf.co/org/repo:Q4_K_M", "/tmp/x.gguf",
                                          "sha256-" + std::string(64, 'a'), "gemma4"};
  for (int i = 0; i < 20000; ++i) {
    std::string in = Mutate(seeds[i % seeds.size()], rng);
    auto r = ParseReference(in);
    if (r.ok() && r->kind != Reference::Kind::kLocalPath) {
      // Whatever is accepted can never name a path outside the store.
      for (const std::string* part : {&r->name, &r->tag}) {
        EXPECT_EQ(part->find(".."), std::string::npos) << in;
        EXPECT_EQ(part->find('\0'), std::string::npos) << in;
      }
      EXPECT_EQ(r->tag.find('/'), std::string::npos) << in;
    }
    auto d = NormalizeDigest(in);
    if (d.ok()) {
      EXPECT_TRUE(IsValidDigest(*d));
    }
  }
}

TEST(ParsersFuzz, CatalogDocuments) {
  std::mt19937 rng(2);
  std::string seed(BuiltinCatalogJson().substr(0, 3000));
  seed += "]}";
  for (int i = 0; i < 3000; ++i) {
    std::string in = Mutate(std::string(BuiltinCatalogJson()), rng);
    auto c = Catalog::Parse(in, "fuzz");
    if (c.ok()) {
      for (const CatalogEntry& e : c->entries()) {
        for (const SourceFile& f : e.files) EXPECT_EQ(f.path.find(".."), std::string::npos);
      }
    }
  }
}

TEST(ParsersFuzz, HubListings) {
  std::mt19937 rng(3);
  const std::string seed =
      R"([{"type":"file","path":"a-Q4_K_M.gguf","size":10,"lfs":{"oid":")" + std::string(64, 'b') +
      R"(","size":10}},{"type":"file","path":"BF16/a-BF16-00001-of-00002.gguf","size":5},)"
      R"({"type":"file","path":"BF16/a-BF16-00002-of-00002.gguf","size":5},)"
      R"({"type":"directory","path":"BF16"}])";
  auto ref = ParseReference("hf.co/org/repo:BF16");
  ASSERT_TRUE(ref.ok());
  auto ok = SelectHfFiles(seed, *ref, "main");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->files.size(), 2u);
  for (int i = 0; i < 10000; ++i) {
    std::string in = Mutate(seed, rng);
    auto r = SelectHfFiles(in, *ref, "main");
    if (r.ok()) {
      for (const SourceFile& f : r->files) {
        EXPECT_EQ(f.path.find(".."), std::string::npos) << in;
        EXPECT_FALSE(f.path.empty());
      }
    }
  }
}

TEST(ParsersFuzz, ContentRange) {
  std::mt19937 rng(4);
  uint64_t a, b, t;
  bool known;
  ASSERT_TRUE(ParseContentRange("bytes 0-9/10", &a, &b, &t, &known));
  EXPECT_FALSE(ParseContentRange("bytes 5-4/10", &a, &b, &t, &known));
  EXPECT_FALSE(ParseContentRange("bytes 0-10/10", &a, &b, &t, &known));
  EXPECT_FALSE(ParseContentRange("bytes 0-99999999999999999999/1", &a, &b, &t, &known));
  for (int i = 0; i < 20000; ++i) {
    std::string in = Mutate("bytes 100-199/1000", rng);
    if (ParseContentRange(in, &a, &b, &t, &known)) {
      EXPECT_LE(a, b);
      if (known) {
        EXPECT_LT(b, t);
      }
    }
  }
}

}  // namespace
}  // namespace garnet::registry
