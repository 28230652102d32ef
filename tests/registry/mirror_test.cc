// The mirror: hub-shaped URLs over the local store, feeding a second registry over loopback.
#include "registry/mirror.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>

#include "registry/registry.h"
#include "registry/sha256.h"
#include "tests/registry/fault_server.h"
#include "tests/registry/test_util.h"
#ifdef GARNET_HAVE_MKMODEL
#include "tools/mkmodel/generator.h"
#include "tools/mkmodel/plan.h"
#include "tools/mkmodel/spec.h"
#endif

namespace garnet::registry {
namespace {

RegistryOptions LocalOptions(const std::string& dir, const std::string& base,
                             const std::string& catalog = "") {
  RegistryOptions o;
  o.data_dir = dir;
  o.base_url = base;
  o.user_catalog = catalog;
  o.use_environment = false;
  o.download.disk_reserve_bytes = 0;
  o.download.min_part_bytes = 128 * 1024;
  o.download.backoff_initial = std::chrono::milliseconds(5);
  o.download.max_attempts = 3;
  return o;
}

class MirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::ClearProxyEnv();
    dir_ = testing::FreshTestDir();
  }
  std::string dir_;
};

TEST_F(MirrorTest, StartAndStopAtOnce) {
  for (int i = 0; i < 5; ++i) {
    auto m = Mirror::Start(nullptr, MirrorOptions{});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
  }
  // A port already in use is a clear error.
  auto a = Mirror::Start(nullptr, MirrorOptions{});
  ASSERT_TRUE(a.ok());
  MirrorOptions taken;
  taken.port = (*a)->port();
  auto b = Mirror::Start(nullptr, taken);
  EXPECT_EQ(b.status().code(), Code::kUnavailable) << b.status().ToString();
}

TEST_F(MirrorTest, ServesFilesWithHubHeadersAndRanges) {
  const std::string content = testing::RandomBytes(700000, 9);
  testing::WriteFile(dir_ + "/f.bin", content);
  auto mirror = Mirror::Start(nullptr, MirrorOptions{});
  ASSERT_TRUE(mirror.ok()) << mirror.status().ToString();
  ASSERT_TRUE((*mirror)->ServeFile("/org/repo/resolve/main/f.gguf", dir_ + "/f.bin").ok());
  EXPECT_TRUE((*mirror)->ServeFile("../etc/passwd", dir_ + "/f.bin").IsInvalidArgument());
  EXPECT_TRUE((*mirror)->ServeFile("org/repo/resolve/main/x", dir_ + "/nope").IsNotFound());

  httplib::Client cli("127.0.0.1", (*mirror)->port());
  auto head = cli.Head("/org/repo/resolve/main/f.gguf");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get_header_value("X-Linked-Size"), std::to_string(content.size()));
  std::string etag = "\"";
  etag += Sha256::HexOf(content);
  etag += "\"";
  EXPECT_EQ(head->get_header_value("X-Linked-Etag"), etag);
  EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(content.size()));

  auto get = cli.Get("/org/repo/resolve/main/f.gguf");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->body, content);
  auto range =
      cli.Get("/org/repo/resolve/main/f.gguf", {httplib::make_range_header({{1000, 1999}})});
  ASSERT_TRUE(range);
  EXPECT_EQ(range->status, 206);
  EXPECT_EQ(range->body, content.substr(1000, 1000));
  EXPECT_EQ(range->get_header_value("Content-Range"),
            "bytes 1000-1999/" + std::to_string(content.size()));

  for (const char* bad : {"/org/repo/resolve/main/other.gguf", "/../../etc/passwd",
                          "/org/repo/resolve/main/%2e%2e/f.gguf", "/org/repo/blob/main/f.gguf",
                          "/api/models/org/nothing/tree/main"}) {
    auto r = cli.Get(bad);
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 404) << bad;
  }
  auto tree = cli.Get("/api/models/org/repo/tree/main?recursive=true");
  ASSERT_TRUE(tree);
  EXPECT_EQ(tree->status, 200);
  EXPECT_NE(tree->body.find("\"f.gguf\""), std::string::npos) << tree->body;
}

// Registry A pulls from an "upstream"; a mirror serves A's store; registry B (a separate data
// dir, as on an air-gapped machine) pulls the same model and an hf.co reference from the mirror.
TEST_F(MirrorTest, FeedsAnotherRegistry) {
  testing::FaultServer upstream;
  const std::string model = testing::MakeTestGguf(3, 1024, 5);
  upstream.AddFile("/acme/thing-GGUF/resolve/main/thing-Q8_0.gguf", model);
  const std::string catalog = dir_ + "/catalog.json";
  testing::WriteFile(catalog, R"({"version": 1, "models": [
      {"id": "thing:q8", "family": "thing", "variant": "q8", "total_params": 1, "quant": "Q8_0",
       "default_context": 16, "max_context": 16,
       "files": [{"repo": "acme/thing-GGUF", "path": "thing-Q8_0.gguf"}]}]})");
  auto a = Registry::Open(LocalOptions(dir_ + "/a", upstream.BaseUrl(), catalog));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Pull("thing:q8", nullptr, nullptr).ok());

  auto mirror = Mirror::Start(a->get(), MirrorOptions{});
  ASSERT_TRUE(mirror.ok());
  auto b = Registry::Open(LocalOptions(dir_ + "/b", (*mirror)->base_url(), catalog));
  ASSERT_TRUE(b.ok());
  auto pulled = (*b)->Pull("thing:q8", nullptr, nullptr);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  EXPECT_EQ(testing::ReadFile(pulled->model.paths[0]), model);
  EXPECT_EQ((*mirror)->body_bytes_sent(), model.size());

  auto hf = (*b)->Pull("hf.co/acme/thing-GGUF:q8_0", nullptr, nullptr);
  ASSERT_TRUE(hf.ok()) << hf.status().ToString();
  EXPECT_EQ(hf->model.manifest.name, "hf.co/acme/thing-GGUF:Q8_0");
  EXPECT_TRUE(hf->already_present);  // same blob as thing:q8
  auto shown = (*b)->Show("hf.co/acme/thing-GGUF");
  ASSERT_TRUE(shown.ok()) << shown.status().ToString();
  EXPECT_EQ(shown->manifest.summary.architecture, "testarch");
  EXPECT_TRUE((*b)->Pull("hf.co/acme/thing-GGUF:Q2_K", nullptr, nullptr).status().IsNotFound());
  EXPECT_TRUE((*b)->Pull("hf.co/acme/nothing", nullptr, nullptr).status().IsNotFound());
}

#ifdef GARNET_HAVE_MKMODEL
// The demo path: gemma4:tiny is mkmodel's deterministic output, pinned in the builtin catalog,
// served by a mirror and pulled offline.
TEST_F(MirrorTest, TinyModelMatchesCatalogPinAndPullsFromMirror) {
  auto cat = Catalog::Builtin();
  ASSERT_TRUE(cat.ok());
  const CatalogEntry* tiny = cat->FindId("gemma4:tiny");
  ASSERT_NE(tiny, nullptr);
  ASSERT_EQ(tiny->files.size(), 1u);
  const SourceFile& f = tiny->files[0];
  ASSERT_TRUE(f.size.has_value());
  ASSERT_FALSE(f.sha256.empty());

  auto spec = mkmodel::PresetSpec("tiny");
  ASSERT_TRUE(spec.ok());
  auto plan = mkmodel::MakePlan(*spec, mkmodel::TypeOptions{});
  ASSERT_TRUE(plan.ok());
  const std::string path = dir_ + "/tiny.gguf";
  ASSERT_TRUE(mkmodel::WriteModel(*plan, mkmodel::GenOptions{}, path).ok());
  uint64_t size = 0;
  auto sha = Sha256File(path, nullptr, &size);
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(size, *f.size) << "garnet-mkmodel --preset tiny changed: update registry/catalog.json";
  EXPECT_EQ(*sha, f.sha256) << "garnet-mkmodel --preset tiny changed: update registry/catalog.json";

  auto mirror = Mirror::Start(nullptr, MirrorOptions{});
  ASSERT_TRUE(mirror.ok());
  ASSERT_TRUE((*mirror)->ServeFile(f.ResolvePath(), path, *sha).ok());
  auto reg = Registry::Open(LocalOptions(dir_ + "/data", (*mirror)->base_url()));
  ASSERT_TRUE(reg.ok());
  auto pulled = (*reg)->Pull("gemma4:tiny", nullptr, nullptr);
  ASSERT_TRUE(pulled.ok()) << pulled.status().ToString();
  const GgufSummary& s = pulled->model.manifest.summary;
  EXPECT_EQ(s.architecture, "gemma4");
  EXPECT_TRUE(s.error.empty()) << s.error;
  EXPECT_EQ(s.parameters, tiny->total_params);
  EXPECT_EQ(s.context_length, tiny->max_context);
  EXPECT_EQ(s.file_type, "f32");
}
#endif

}  // namespace
}  // namespace garnet::registry
