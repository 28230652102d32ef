// The Registry facade end to end: real SQLite files, a real loopback HTTP server, real GGUFs.
#include "registry/registry.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string_view>
#include <thread>

extern char** environ;

#include "registry/sha256.h"
#include "tests/registry/fault_server.h"
#include "tests/registry/test_util.h"

namespace garnet::registry {
namespace {

using testing::FaultServer;

DownloadOptions FastOptions() {
  DownloadOptions o;
  o.connections = 3;
  o.min_part_bytes = 128 * 1024;
  o.stall_timeout = std::chrono::milliseconds(300);
  o.max_attempts = 4;
  o.backoff_initial = std::chrono::milliseconds(5);
  o.backoff_max = std::chrono::milliseconds(40);
  o.checkpoint_interval = std::chrono::milliseconds(10);
  o.progress_interval = std::chrono::milliseconds(5);
  o.disk_reserve_bytes = 0;
  return o;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::ClearProxyEnv();
    dir_ = testing::FreshTestDir();
    one_ = testing::MakeTestGguf(4, 2048, 1);  // ~2 MiB
    auto parts = testing::MakeTestGgufParts(5, 1024, 2, 2);
    ASSERT_EQ(parts.size(), 2u);
    part1_ = parts[0];
    part2_ = parts[1];
    server_.AddFile("/org/one/resolve/main/one-Q8_0.gguf", one_);
    server_.AddFile("/org/split/resolve/main/s-00001-of-00002.gguf", part1_);
    server_.AddFile("/org/split/resolve/main/s-00002-of-00002.gguf", part2_);
    const std::string catalog = R"({"version": 1, "defaults": {"test": "test:one"}, "models": [
      {"id": "test:one", "aliases": ["test:latest"], "family": "test", "variant": "one",
       "total_params": 1, "quant": "F32", "default_context": 16, "max_context": 4096,
       "files": [{"repo": "org/one", "path": "one-Q8_0.gguf", "size": )" +
                                std::to_string(one_.size()) + R"(, "sha256": ")" +
                                Sha256::HexOf(one_) + R"("}]},
      {"id": "test:same", "family": "test", "variant": "same", "total_params": 1, "quant": "F32",
       "default_context": 16, "max_context": 4096,
       "files": [{"repo": "org/one", "path": "one-Q8_0.gguf"}]},
      {"id": "test:split", "family": "test", "variant": "split", "total_params": 1, "quant": "F32",
       "default_context": 16, "max_context": 4096,
       "files": [{"repo": "org/split", "path": "s-00001-of-00002.gguf"},
                 {"repo": "org/split", "path": "s-00002-of-00002.gguf"}]}]})";
    catalog_path_ = dir_ + "/catalog.json";
    testing::WriteFile(catalog_path_, catalog);
    Open();
  }
  RegistryOptions Options() {
    RegistryOptions o;
    o.data_dir = dir_ + "/data";
    o.base_url = server_.BaseUrl();
    o.user_catalog = catalog_path_;
    o.use_environment = false;
    o.download = FastOptions();
    o.orphan_grace = std::chrono::seconds(0);
    return o;
  }
  void Open() {
    reg_.reset();
    auto r = Registry::Open(Options());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
  }
  size_t BlobFiles() {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/data/blobs")) {
      (void)e;
      ++n;
    }
    return n;
  }

  FaultServer server_;
  std::string dir_, catalog_path_;
  std::string one_, part1_, part2_;
  std::unique_ptr<Registry> reg_;
};

TEST_F(RegistryTest, PullListShowRemove) {
  std::vector<Progress> events;
  auto r = reg_->Pull(
      "test", [&](const Progress& p) { events.push_back(p); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->model.manifest.name, "test:one");
  EXPECT_FALSE(r->already_present);
  EXPECT_EQ(r->bytes_transferred, one_.size());
  ASSERT_EQ(r->model.paths.size(), 1u);
  EXPECT_EQ(testing::ReadFile(r->model.paths[0]), one_);
  EXPECT_EQ(r->model.manifest.summary.architecture, "testarch");
  EXPECT_EQ(r->model.manifest.summary.tensor_count, 4u);
  EXPECT_EQ(r->model.manifest.summary.context_length, 4096u);
  EXPECT_EQ(r->model.manifest.summary.file_type, "f32");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().phase, Phase::kDone);

  auto list = reg_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].manifest.name, "test:one");
  ASSERT_TRUE((*list)[0].catalog.has_value());

  auto show = reg_->Show("test:latest");
  ASSERT_TRUE(show.ok()) << show.status().ToString();
  EXPECT_EQ(show->manifest.summary.parameters, 4u * 64 * 2048);
  EXPECT_EQ(show->manifest.summary.name, "test model 1");

  auto du = reg_->GetDiskUsage();
  ASSERT_TRUE(du.ok());
  EXPECT_EQ(du->blob_bytes, one_.size());
  EXPECT_EQ(du->model_count, 1u);
  EXPECT_GT(du->database_bytes, 0u);

  ASSERT_TRUE(reg_->Remove("test").ok());
  EXPECT_TRUE(reg_->List()->empty());
  EXPECT_EQ(BlobFiles(), 0u);
  EXPECT_TRUE(reg_->Show("test").status().IsNotFound());
  EXPECT_TRUE(reg_->Remove("test").IsNotFound());
}

TEST_F(RegistryTest, SplitModelIsOneModel) {
  auto r = reg_->Pull("test:split", nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->model.manifest.files.size(), 2u);
  EXPECT_EQ(r->model.manifest.summary.tensor_count, 5u);
  EXPECT_TRUE(r->model.manifest.summary.error.empty()) << r->model.manifest.summary.error;
  EXPECT_EQ(testing::ReadFile(r->model.paths[0]), part1_);
  EXPECT_EQ(testing::ReadFile(r->model.paths[1]), part2_);
  EXPECT_EQ(r->model.manifest.files[1].filename, "s-00002-of-00002.gguf");
  // Unpinned in the catalog: the first pull learned size and sha256.
  auto pin = reg_->db().GetPin("org/split/resolve/main/s-00002-of-00002.gguf");
  ASSERT_TRUE(pin.ok() && pin->has_value());
  EXPECT_EQ((*pin)->second, "sha256-" + Sha256::HexOf(part2_));
  ASSERT_TRUE(reg_->Remove("test:split").ok());
  EXPECT_EQ(BlobFiles(), 0u);
}

TEST_F(RegistryTest, SharedBlobSurvivesRemovalOfOneModel) {
  ASSERT_TRUE(reg_->Pull("test:one", nullptr, nullptr).ok());
  server_.ResetCounters();
  auto same = reg_->Pull("test:same", nullptr, nullptr);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_TRUE(same->already_present);
  EXPECT_EQ(server_.get_requests(), 0);
  ASSERT_TRUE(reg_->Remove("test:one").ok());
  EXPECT_EQ(BlobFiles(), 1u);
  auto show = reg_->Show("test:same");
  ASSERT_TRUE(show.ok());
  EXPECT_EQ(testing::ReadFile(show->paths[0]), one_);
}

TEST_F(RegistryTest, PulledModelNeedsNoNetwork) {
  ASSERT_TRUE(reg_->Pull("test", nullptr, nullptr).ok());
  server_.faults().always_status = 503;
  auto again = reg_->Pull("test", nullptr, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->already_present);
}

TEST_F(RegistryTest, BadReferences) {
  EXPECT_TRUE(reg_->Pull("test:../../x", nullptr, nullptr).status().IsInvalidArgument());
  EXPECT_TRUE(reg_->Pull("/tmp/x.gguf", nullptr, nullptr).status().IsInvalidArgument());
  EXPECT_TRUE(reg_->Pull("nosuch", nullptr, nullptr).status().IsNotFound());
  EXPECT_TRUE(reg_->Pull("test:nosuch", nullptr, nullptr).status().IsNotFound());
  EXPECT_TRUE(reg_->Show("sha256-../x").status().IsInvalidArgument());
}

TEST_F(RegistryTest, UpstreamErrorsSurfaceWithTheirCodes) {
  server_.faults().always_status = 404;
  EXPECT_EQ(reg_->Pull("test", nullptr, nullptr).status().code(), Code::kNotFound);
  server_.faults().always_status = 401;
  auto r = reg_->Pull("test", nullptr, nullptr);
  EXPECT_EQ(r.status().code(), Code::kUnauthenticated);
  EXPECT_NE(r.status().message().find("test:one"), std::string::npos) << r.status().message();
  server_.faults().always_status = 0;
  server_.faults().corrupt_offset = 5000;
  EXPECT_EQ(reg_->Pull("test", nullptr, nullptr).status().code(), Code::kDataLoss);
  EXPECT_TRUE(reg_->List()->empty());
  EXPECT_EQ(BlobFiles(), 0u);
}

TEST_F(RegistryTest, CancelledMultiFilePullRegistersNothingAndResumes) {
  server_.faults().throttle_us = 30000;
  std::atomic<bool> cancel{false};
  auto r = reg_->Pull(
      "test:split",
      [&](const Progress& p) {
        if (p.file_index == 1 && p.phase == Phase::kDownloading && p.completed > 0) {
          cancel = true;
        }
      },
      &cancel);
  ASSERT_TRUE(r.status().IsCancelled()) << r.status().ToString();
  EXPECT_TRUE(reg_->List()->empty());
  // "Kill": drop the registry, reopen from disk.
  server_.faults().throttle_us = 0;
  Open();
  EXPECT_TRUE(reg_->List()->empty());
  server_.ResetCounters();
  r = reg_->Pull("test:split", nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // Part 1 was complete, part 2 partly there: strictly less than both parts are fetched again.
  EXPECT_LT(server_.body_bytes_sent(), part2_.size());
  EXPECT_LT(r->bytes_transferred, part2_.size());
}

// A real kill: a child process pulls and is SIGKILLed mid-download. The database must open,
// show no model, and the next pull must fetch only what is missing.
TEST_F(RegistryTest, SigkillMidPullLeavesConsistentStore) {
  server_.faults().throttle_us = 4000;  // ~16 MB/s
  reg_.reset();
  // The child is this test binary re-executed (no fork of a threaded process): it runs
  // RegistryChild.PullForKillTest with the data dir, server and catalog passed in the environment.
  std::string env_dir = "GARNET_TEST_CHILD_DIR=" + dir_ + "/data";
  std::string env_base = "GARNET_TEST_CHILD_BASE=" + server_.BaseUrl();
  std::string env_cat = "GARNET_TEST_CHILD_CATALOG=" + catalog_path_;
  std::string filter = "--gtest_filter=RegistryChild.PullForKillTest";
  std::string exe = "/proc/self/exe";
  char* child_argv[] = {exe.data(), filter.data(), nullptr};
  std::vector<char*> child_env = {env_dir.data(), env_base.data(), env_cat.data()};
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("GARNET_TEST_CHILD_")) child_env.push_back(*e);
  }
  child_env.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, child_argv, child_env.data()), 0);
  // Wait until the child has checkpointed some progress, then kill it.
  bool saw_progress = false;
  for (int i = 0; i < 400 && !saw_progress; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto db = Db::Open(dir_ + "/data/registry.db");
    if (!db.ok()) continue;
    auto downloads = (*db)->ListDownloads();
    if (!downloads.ok()) continue;
    for (const DownloadRow& d : *downloads) {
      for (const RangeRow& rr : d.ranges) saw_progress |= rr.done > 0;
    }
  }
  ::kill(pid, SIGKILL);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  ASSERT_TRUE(saw_progress);
  ASSERT_TRUE(WIFSIGNALED(wstatus));
  server_.faults().throttle_us = 0;
  Open();
  EXPECT_TRUE(reg_->List()->empty());
  EXPECT_TRUE((*reg_->db().ListBlobs()).empty());
  server_.ResetCounters();
  auto r = reg_->Pull("test:one", nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(server_.body_bytes_sent(), one_.size());
  EXPECT_EQ(testing::ReadFile(r->model.paths[0]), one_);
}

// The child role of SigkillMidPullLeavesConsistentStore; skipped unless run by it.
TEST(RegistryChild, PullForKillTest) {
  const char* dir = std::getenv("GARNET_TEST_CHILD_DIR");
  if (dir == nullptr)
    GTEST_SKIP() << "only run as the child of SigkillMidPullLeavesConsistentStore";
  RegistryOptions o;
  o.data_dir = dir;
  o.base_url = std::getenv("GARNET_TEST_CHILD_BASE");
  o.user_catalog = std::getenv("GARNET_TEST_CHILD_CATALOG");
  o.use_environment = false;
  o.download = FastOptions();
  auto r = Registry::Open(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto p = (*r)->Pull("test:one", nullptr, nullptr);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
}

TEST_F(RegistryTest, VerifyReportsCorruption) {
  auto r = reg_->Pull("test:split", nullptr, nullptr);
  ASSERT_TRUE(r.ok());
  auto v = reg_->Verify(nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->corrupt, 0u);
  EXPECT_EQ(v->blobs.size(), 2u);
  const std::string victim = r->model.paths[1];
  ::chmod(victim.c_str(), 0644);
  std::string bytes = testing::ReadFile(victim);
  bytes[100] ^= 1;
  testing::WriteFile(victim, bytes);
  v = reg_->Verify(nullptr);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->corrupt, 1u);
  for (const VerifyItem& item : v->blobs) {
    if (item.ok) continue;
    EXPECT_NE(item.problem.find("sha256 mismatch"), std::string::npos);
    ASSERT_EQ(item.models.size(), 1u);
    EXPECT_EQ(item.models[0], "test:split");
  }
  std::filesystem::remove(r->model.paths[0]);
  v = reg_->Verify(nullptr);
  EXPECT_EQ(v->corrupt, 2u);
}

TEST_F(RegistryTest, PruneRemovesOrphansAndStalePartials) {
  ASSERT_TRUE(reg_->Pull("test:one", nullptr, nullptr).ok());
  // An orphan blob file, an unreferenced blob row and a stale partial.
  const std::string orphan = "sha256-" + std::string(64, 'a');
  testing::WriteFile(dir_ + "/data/blobs/" + orphan, "orphan");
  const std::string unref = "sha256-" + Sha256::HexOf("unref");
  testing::WriteFile(dir_ + "/data/blobs/" + unref, "unref");
  ASSERT_TRUE(reg_->db().PutBlob({unref, 5, 1}).ok());
  server_.faults().throttle_us = 30000;
  std::atomic<bool> cancel{false};
  auto c = reg_->Pull(
      "test:split",
      [&](const Progress& p) {
        if (p.phase == Phase::kDownloading && p.completed > 0) cancel = true;
      },
      &cancel);
  ASSERT_TRUE(c.status().IsCancelled());
  ASSERT_FALSE((*reg_->db().ListDownloads()).empty());

  auto report = reg_->Prune(/*partials=*/true);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->removed_blobs.size(), 2u);
  EXPECT_EQ(report->removed_partials.size(), 1u);
  EXPECT_TRUE((*reg_->db().ListDownloads()).empty());
  EXPECT_EQ(BlobFiles(), 1u);  // the model's blob stays
  ASSERT_TRUE(reg_->Show("test:one").ok());
}

TEST_F(RegistryTest, ImportCopyAndHardLink) {
  const std::string src = dir_ + "/local.gguf";
  testing::WriteFile(src, one_);
  auto copy = reg_->Import(src, "mine:v1", ImportMode::kCopy);
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_EQ(copy->manifest.kind, "import");
  EXPECT_EQ(testing::ReadFile(copy->paths[0]), one_);
  struct stat st;
  ASSERT_EQ(::stat(src.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  ASSERT_TRUE(reg_->Show("mine:v1").ok());
  ASSERT_TRUE(reg_->Remove("mine:v1").ok());

  auto link = reg_->Import(src, "mine:linked", ImportMode::kHardLink);
  ASSERT_TRUE(link.ok()) << link.status().ToString();
  ASSERT_EQ(::stat(src.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(link->manifest.files[0].digest, "sha256-" + Sha256::HexOf(one_));

  // Split import from the first part.
  testing::WriteFile(dir_ + "/s-00001-of-00002.gguf", part1_);
  testing::WriteFile(dir_ + "/s-00002-of-00002.gguf", part2_);
  auto split = reg_->Import(dir_ + "/s-00001-of-00002.gguf", "mine:split", ImportMode::kAuto);
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split->manifest.files.size(), 2u);
  EXPECT_EQ(split->manifest.summary.tensor_count, 5u);
  EXPECT_TRUE(split->manifest.summary.error.empty()) << split->manifest.summary.error;

  testing::WriteFile(dir_ + "/junk.gguf", "not a gguf at all");
  EXPECT_TRUE(reg_->Import(dir_ + "/junk.gguf", "mine:junk", ImportMode::kCopy)
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(reg_->Import(src, "test:one", ImportMode::kCopy).status().IsInvalidArgument());
  EXPECT_TRUE(reg_->Import(src, "../x", ImportMode::kCopy).status().IsInvalidArgument());
  EXPECT_TRUE(
      reg_->Import(dir_ + "/missing.gguf", "mine:m", ImportMode::kCopy).status().IsNotFound());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/data/partials"));
}

TEST_F(RegistryTest, ConcurrentPullsOfSameAndDifferentModels) {
  server_.faults().throttle_us = 300;
  std::vector<std::thread> threads;
  std::vector<Status> results(6);
  const char* refs[] = {"test:one", "test", "test:latest", "test:split", "test:split", "test:same"};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] { results[i] = reg_->Pull(refs[i], nullptr, nullptr).status(); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 6; ++i)
    EXPECT_TRUE(results[i].ok()) << refs[i] << ": " << results[i].ToString();
  EXPECT_EQ(server_.body_bytes_sent(), one_.size() + part1_.size() + part2_.size());
  EXPECT_EQ(reg_->List()->size(), 3u);
}

}  // namespace
}  // namespace garnet::registry
