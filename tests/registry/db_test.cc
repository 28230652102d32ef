#include "registry/db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "registry/store.h"
#include "tests/scratch_dir.h"

namespace garnet::registry {
namespace {

std::string FreshDir(const std::string& name) {
  std::string d =
      ::testing::TempDir() + "/garnet_db_test_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  garnet::testing::RemoveAtExit(d);
  return d;
}

const std::string kD1 = "sha256-" + std::string(64, '1');
const std::string kD2 = "sha256-" + std::string(64, '2');

TEST(Db, CreatesSchemaAndReopens) {
  std::string dir = FreshDir("schema");
  {
    auto db = Db::Open(dir + "/registry.db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ(*(*db)->SchemaVersion(), kSchemaVersion);
    ASSERT_TRUE((*db)->PutBlob({kD1, 10, 0}).ok());
  }
  auto db = Db::Open(dir + "/registry.db");
  ASSERT_TRUE(db.ok());
  auto b = (*db)->GetBlob(kD1);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->size, 10u);
}

TEST(Db, RefusesNewerSchemaAndGarbage) {
  std::string dir = FreshDir("newer");
  {
    sqlite3* raw;
    ASSERT_EQ(sqlite3_open((dir + "/registry.db").c_str(), &raw), SQLITE_OK);
    sqlite3_exec(raw, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
  }
  auto db = Db::Open(dir + "/registry.db");
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), Code::kFailedPrecondition);
  {
    FILE* f = std::fopen((dir + "/garbage.db").c_str(), "wb");
    std::string junk(8192, 'x');
    std::fwrite(junk.data(), 1, junk.size(), f);
    std::fclose(f);
  }
  auto g = Db::Open(dir + "/garbage.db");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), Code::kDataLoss) << g.status().ToString();
}

TEST(Db, ManifestsReferenceBlobs) {
  auto db = Db::Open(FreshDir("manifests") + "/registry.db");
  ASSERT_TRUE(db.ok());
  ManifestRow m;
  m.name = "gemma4:tiny";
  m.kind = "catalog";
  m.files = {{kD1, 10, "a-00001-of-00002.gguf", "x/y/resolve/main/a1"},
             {kD2, 20, "a-00002-of-00002.gguf", "x/y/resolve/main/a2"}};
  m.summary.architecture = "gemma4";
  m.summary.parameters = 1234;
  // Blobs not registered yet: refused, nothing written.
  Status s = (*db)->PutManifest(m);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_FALSE((*(*db)->GetManifest("gemma4:tiny")).has_value());

  ASSERT_TRUE((*db)->PutBlob({kD1, 10, 0}).ok());
  ASSERT_TRUE((*db)->PutBlob({kD2, 20, 0}).ok());
  ASSERT_TRUE((*db)->PutManifest(m).ok());
  auto got = (*db)->GetManifest("gemma4:tiny");
  ASSERT_TRUE(got.ok() && got->has_value());
  ASSERT_EQ((*got)->files.size(), 2u);
  EXPECT_EQ((*got)->files[1].digest, kD2);
  EXPECT_EQ((*got)->total_size(), 30u);
  EXPECT_EQ((*got)->summary.parameters, 1234u);

  // A referenced blob cannot be deleted.
  EXPECT_EQ((*db)->DeleteBlob(kD1).code(), Code::kFailedPrecondition);
  EXPECT_TRUE((*(*db)->UnreferencedBlobs()).empty());
  ASSERT_TRUE((*db)->DeleteManifest("gemma4:tiny").ok());
  EXPECT_TRUE((*db)->DeleteManifest("gemma4:tiny").IsNotFound());
  EXPECT_EQ((*(*db)->UnreferencedBlobs()).size(), 2u);
  EXPECT_TRUE((*db)->DeleteBlob(kD1).ok());
}

TEST(Db, DownloadProgress) {
  auto db = Db::Open(FreshDir("downloads") + "/registry.db");
  ASSERT_TRUE(db.ok());
  DownloadRow d{kD1, "http://x/y", 100, kD1, false, 0, {{0, 50, 0}, {50, 100, 0}}};
  ASSERT_TRUE((*db)->PutDownload(d).ok());
  ASSERT_TRUE((*db)->UpdateRanges(kD1, {{0, 50, 20}, {50, 100, 50}}).ok());
  auto got = (*db)->GetDownload(kD1);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->ranges[0].done, 20u);
  EXPECT_TRUE((*got)->ranges[1].complete());
  ASSERT_TRUE((*db)->FinishDownload(kD1, {kD1, 100, 0}).ok());
  EXPECT_FALSE((*(*db)->GetDownload(kD1)).has_value());
  EXPECT_TRUE((*(*db)->GetBlob(kD1)).has_value());
  ASSERT_TRUE((*db)->PutPin("a/b/resolve/main/c", 5, kD2).ok());
  auto pin = (*db)->GetPin("a/b/resolve/main/c");
  ASSERT_TRUE(pin.ok() && pin->has_value());
  EXPECT_EQ((*pin)->second, kD2);
}

TEST(Store, PathsAreValidated) {
  auto store = Store::Open(FreshDir("store") + "/data");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(store->BlobPath(kD1).ok());
  EXPECT_TRUE(store->BlobPath("sha256-../../etc/passwd").status().IsInvalidArgument());
  EXPECT_TRUE(store->BlobPath("../" + kD1).status().IsInvalidArgument());
  EXPECT_TRUE(store->PartialPath(UrlKey("http://x")).ok());
  EXPECT_TRUE(store->PartialPath("url-../../x").status().IsInvalidArgument());
  EXPECT_GT(*store->FreeBytes(), 0u);
}

TEST(Store, DataDirFromEnvironment) {
  const char* home = std::getenv("HOME");
  const std::string saved_home = home != nullptr ? home : "";
  setenv("GARNET_HOME", "/tmp/gh", 1);
  EXPECT_EQ(*DefaultDataDir(), "/tmp/gh");
  unsetenv("GARNET_HOME");
  setenv("XDG_DATA_HOME", "/tmp/xdg", 1);
  EXPECT_EQ(*DefaultDataDir(), "/tmp/xdg/garnet");
  unsetenv("XDG_DATA_HOME");
  setenv("HOME", "/home/u", 1);
  EXPECT_EQ(*DefaultDataDir(), "/home/u/.local/share/garnet");
  if (home != nullptr) setenv("HOME", saved_home.c_str(), 1);
}

}  // namespace
}  // namespace garnet::registry
