// Downloader against a real loopback HTTP server with injected faults.
#include "registry/downloader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "registry/sha256.h"
#include "tests/registry/fault_server.h"
#include "tests/scratch_dir.h"

namespace garnet::registry {
namespace {

using testing::FaultServer;
using testing::RandomBytes;

constexpr const char* kPath = "/org/repo/resolve/main/model.gguf";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

DownloadOptions FastOptions() {
  DownloadOptions o;
  o.connections = 4;
  o.min_part_bytes = 256 * 1024;
  o.stall_timeout = std::chrono::milliseconds(300);
  o.max_attempts = 4;
  o.backoff_initial = std::chrono::milliseconds(5);
  o.backoff_max = std::chrono::milliseconds(40);
  o.checkpoint_interval = std::chrono::milliseconds(20);
  o.progress_interval = std::chrono::milliseconds(5);
  o.disk_reserve_bytes = 0;
  o.http.connect_timeout = std::chrono::milliseconds(2000);
  o.http.probe_timeout = std::chrono::milliseconds(3000);
  return o;
}

class DownloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v :
         {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      unsetenv(v);
    }
    dir_ = ::testing::TempDir() + "/garnet_dl_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    garnet::testing::RemoveAtExit(dir_);
    content_ = RandomBytes(3 * 1024 * 1024 + 12345, 1);
    sha_ = Sha256::HexOf(content_);
    server_.AddFile(kPath, content_);
    Open(FastOptions());
  }
  void Open(DownloadOptions o) {
    dl_.reset();
    db_.reset();
    auto store = Store::Open(dir_);
    ASSERT_TRUE(store.ok());
    auto db = Db::Open(store->DbPath());
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    dl_ = std::make_unique<Downloader>(*store, db_.get(), o);
  }
  Result<FetchResult> Fetch(bool pin = true, const ProgressFn& fn = nullptr,
                            const std::atomic<bool>* cancel = nullptr) {
    FetchRequest req;
    req.url = server_.Url(kPath);
    if (pin) {
      req.expected_size = content_.size();
      req.expected_sha256 = sha_;
    }
    return dl_->Fetch(req, fn, cancel);
  }
  std::string BlobPath() const { return dir_ + "/blobs/sha256-" + sha_; }
  void ExpectStoredAndRegistered() {
    ASSERT_TRUE(Exists(BlobPath()));
    EXPECT_EQ(ReadFile(BlobPath()), content_);
    auto row = db_->GetBlob("sha256-" + sha_);
    ASSERT_TRUE(row.ok() && row->has_value());
    EXPECT_EQ((*row)->size, content_.size());
    EXPECT_TRUE((*db_->ListDownloads()).empty());
  }
  void ExpectNothingRegistered() {
    EXPECT_FALSE(Exists(BlobPath()));
    EXPECT_TRUE((*db_->ListBlobs()).empty());
  }

  FaultServer server_;
  std::string dir_;
  std::string content_;
  std::string sha_;
  std::unique_ptr<Db> db_;
  std::unique_ptr<Downloader> dl_;
};

TEST_F(DownloaderTest, CleanDownloadIsVerifiedAndRegistered) {
  std::vector<Phase> phases;
  auto r = Fetch(true, [&](const Progress& p) {
    if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, "sha256-" + sha_);
  EXPECT_EQ(r->bytes_transferred, content_.size());
  EXPECT_TRUE(r->digest_was_known);
  ExpectStoredAndRegistered();
  EXPECT_EQ(server_.body_bytes_sent(), content_.size());
  EXPECT_GE(server_.ranged_requests(), 2);  // parallel ranges
  // The download's own clock, in the order things happen (garnet-bench-pull prints it).
  const FetchTimings& t = r->timings;
  EXPECT_GT(t.resolved, 0);
  EXPECT_LE(t.resolved, t.transfer_start);
  EXPECT_LE(t.transfer_start, t.first_byte);
  EXPECT_LE(t.first_byte, t.last_byte);
  EXPECT_LE(t.last_byte, t.ranges_done);
  EXPECT_LE(t.ranges_done, t.hashed);
  EXPECT_LE(t.hashed, t.stored);
  EXPECT_GE(t.hash_starved, 0);
  ASSERT_FALSE(phases.empty());
  EXPECT_EQ(phases.front(), Phase::kResolving);
  EXPECT_EQ(phases.back(), Phase::kDone);
  // Second fetch: already present, nothing downloaded.
  server_.ResetCounters();
  auto again = Fetch();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already_present);
  EXPECT_EQ(server_.get_requests(), 0);
}

// Connections ahead of the hasher pause (max_hash_lag_bytes; here on lag alone, whatever the
// rates); the range the hasher waits for never does, so a tiny limit still finishes, verified,
// with every byte sent once, also when connections drop mid-range.
TEST_F(DownloaderTest, HashLagLimitNeverDeadlocks) {
  for (uint64_t lag : {uint64_t{1}, uint64_t{64 * 1024}}) {
    SCOPED_TRACE("max_hash_lag_bytes " + std::to_string(lag));
    std::filesystem::remove_all(dir_);
    DownloadOptions o = FastOptions();
    o.max_hash_lag_bytes = lag;
    o.hash_lag_rate_factor = 0;
    o.connections = 4;
    Open(o);
    server_.faults().drop_count = 3;
    server_.faults().drop_random = true;
    auto r = Fetch();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->digest, "sha256-" + sha_);
    ExpectStoredAndRegistered();
  }
  EXPECT_GE(server_.ranged_requests(), 2);
}

// On a link slower than hashing (here every connection is throttled to ~3 MB/s), connections far
// ahead of the hasher keep downloading: the server holds the first range after 512 KiB until the
// three others were sent in full, which never happens if they wait for the hasher (it waits for
// the first range). Both rates get measured (the others receive well over 1 MiB, the hasher
// hashes 512 KiB); before that a connection may pause 20 ms per request, no more. Before the
// hash lag rule looked at rates, large files (ranges far apart) downloaded one range at a time.
TEST_F(DownloaderTest, SlowConnectionsDoNotWaitForTheHasher) {
  std::filesystem::remove_all(dir_);
  content_ = RandomBytes(8 << 20, 7);
  sha_ = Sha256::HexOf(content_);
  server_.AddFile(kPath, content_);
  DownloadOptions o = FastOptions();
  o.connections = 4;
  o.min_part_bytes = o.max_part_bytes = 2 << 20;
  o.max_hash_lag_bytes = 64 * 1024;
  o.stall_timeout = std::chrono::milliseconds(30000);  // the held range sends nothing meanwhile
  Open(o);
  server_.faults().throttle_us = 20000;  // per 64 KiB
  server_.faults().hold_until_bodies = 3;
  server_.faults().hold_first_after = 512 * 1024;
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(server_.faults().hold_timed_out.load())
      << "the other ranges were not fetched while the first one was held";
  // At most the three far connections' first 20 ms while their rates were unknown (plus sleep
  // overshoot); waiting for the hasher would take seconds here.
  EXPECT_LT(r->timings.lag_paused, 0.3) << "connections paused for a hasher that was not behind";
  ExpectStoredAndRegistered();
  EXPECT_EQ(server_.body_bytes_sent(), content_.size());
}

TEST_F(DownloaderTest, LearnsDigestFromLinkedEtag) {
  auto r = Fetch(/*pin=*/false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->digest_was_known);
  EXPECT_EQ(r->digest, "sha256-" + sha_);
  ExpectStoredAndRegistered();
}

TEST_F(DownloaderTest, ContentLengthOnlyComputesDigest) {
  server_.faults().linked_headers = false;
  auto r = Fetch(/*pin=*/false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->digest_was_known);
  EXPECT_EQ(r->digest, "sha256-" + sha_);
  ExpectStoredAndRegistered();
}

TEST_F(DownloaderTest, UnknownSizeChunkedBody) {
  server_.faults().chunked = true;
  auto r = Fetch(/*pin=*/false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->digest_was_known);
  EXPECT_EQ(r->size, content_.size());
  ExpectStoredAndRegistered();
  // With a pin, the computed hash is still checked.
  std::filesystem::remove(BlobPath());
  ASSERT_TRUE(db_->DeleteBlob("sha256-" + sha_).ok());
  FetchRequest req;
  req.url = server_.Url(kPath);
  req.expected_sha256 = std::string(64, 'e');
  auto bad = dl_->Fetch(req, nullptr, nullptr);
  EXPECT_EQ(bad.status().code(), Code::kDataLoss) << bad.status().ToString();
  ExpectNothingRegistered();
}

TEST_F(DownloaderTest, BearerTokenForGatedFiles) {
  server_.faults().required_token = "secret-token";
  auto r = Fetch();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnauthenticated);
  EXPECT_NE(r.status().message().find("HF_TOKEN"), std::string::npos);
  DownloadOptions o = FastOptions();
  o.http.token = "secret-token";
  Open(o);
  r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
}

TEST_F(DownloaderTest, SurvivesDroppedConnectionsAtRandomOffsets) {
  server_.faults().drop_random = true;
  server_.faults().drop_count = 6;
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
  // Resumed from where each connection dropped: little is sent twice.
  EXPECT_LT(server_.body_bytes_sent(), content_.size() * 3 / 2);
}

TEST_F(DownloaderTest, RetriesServerErrorBursts) {
  server_.faults().status = 503;
  server_.faults().status_count = 3;
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
  server_.faults().status = 500;
  server_.faults().status_count = 2;
  std::filesystem::remove(BlobPath());
  ASSERT_TRUE(db_->DeleteBlob("sha256-" + sha_).ok());
  r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
}

TEST_F(DownloaderTest, GivesUpOnPersistentServerErrors) {
  server_.faults().status = 503;
  server_.faults().status_count = 1000;
  auto r = Fetch();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("gave up"), std::string::npos);
  ExpectNothingRegistered();
}

TEST_F(DownloaderTest, RecoversFromStalls) {
  server_.faults().stall_after = 100000;
  server_.faults().stall_ms = 3000;
  server_.faults().stall_count = 2;
  auto start = std::chrono::steady_clock::now();
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(DownloaderTest, HashMismatchIsDataLossAndDiscarded) {
  server_.faults().corrupt_offset = 1000000;
  auto r = Fetch();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("discarded"), std::string::npos);
  ExpectNothingRegistered();
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/partials"));
  EXPECT_TRUE((*db_->ListDownloads()).empty());
  // Unpinned but advertised etag: same outcome.
  r = Fetch(/*pin=*/false);
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  ExpectNothingRegistered();
}

TEST_F(DownloaderTest, UpstreamLyingAboutSizeFails) {
  server_.faults().advertised_size = content_.size() + 5000;  // truncated upstream body
  auto r = Fetch(/*pin=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition) << r.status().ToString();
  ExpectNothingRegistered();
  // With a pin, the disagreement is caught before downloading.
  server_.ResetCounters();
  r = Fetch(/*pin=*/true);
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(server_.get_requests(), 0);
}

TEST_F(DownloaderTest, ServerWithoutRangeSupportFallsBackToOneStream) {
  server_.faults().ignore_range = true;
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
}

TEST_F(DownloaderTest, NoRangeSupportAndDroppedConnection) {
  server_.faults().ignore_range = true;
  server_.faults().drop_after = 500000;
  server_.faults().drop_count = 2;
  auto r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
}

TEST_F(DownloaderTest, PermanentHttpErrorsFailAtOnce) {
  struct Case {
    int status;
    Code code;
  } cases[] = {{404, Code::kNotFound},
               {401, Code::kUnauthenticated},
               {403, Code::kPermissionDenied},
               {400, Code::kFailedPrecondition}};
  for (const Case& c : cases) {
    server_.ResetCounters();
    server_.faults().always_status = c.status;
    auto r = Fetch();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status().ToString();
    EXPECT_EQ(server_.requests(), 1) << c.status;  // no retries
    if (c.status == 401 || c.status == 403) {
      EXPECT_NE(r.status().message().find("HF_TOKEN"), std::string::npos);
    }
  }
  server_.faults().always_status = 0;
  FetchRequest req;
  req.url = server_.Url("/org/repo/resolve/main/missing.gguf");
  auto r = dl_->Fetch(req, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  ExpectNothingRegistered();
}

TEST_F(DownloaderTest, ConnectionRefusedIsRetriedThenUnavailable) {
  // A port nothing listens on: bind one, then close it.
  FetchRequest req;
  {
    FaultServer gone;
    req.url = gone.Url(kPath);
  }
  auto start = std::chrono::steady_clock::now();
  auto r = dl_->Fetch(req, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("gave up after 4 attempts"), std::string::npos)
      << r.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(DownloaderTest, FreeDiskCheckBeforeStarting) {
  DownloadOptions o = FastOptions();
  o.disk_reserve_bytes = uint64_t{1} << 60;
  Open(o);
  auto r = Fetch();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted) << r.status().ToString();
  EXPECT_EQ(server_.get_requests(), 0);
}

TEST_F(DownloaderTest, CancelKeepsPartialAndResumeDownloadsOnlyTheRest) {
  server_.faults().throttle_us = 2000;  // ~32 MB/s
  std::atomic<bool> cancel{false};
  auto r = Fetch(
      true,
      [&](const Progress& p) {
        if (p.phase == Phase::kDownloading && p.completed >= content_.size() / 2) {
          cancel = true;
        }
      },
      &cancel);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCancelled) << r.status().ToString();
  ExpectNothingRegistered();
  auto saved = db_->GetDownload("sha256-" + sha_);
  ASSERT_TRUE(saved.ok() && saved->has_value());
  uint64_t done = 0;
  for (const RangeRow& rr : (*saved)->ranges) done += rr.done;
  EXPECT_GE(done, content_.size() / 2);

  // Simulated kill: drop every object, reopen from disk, pull again.
  server_.faults().throttle_us = 0;
  Open(FastOptions());
  server_.ResetCounters();
  r = Fetch();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectStoredAndRegistered();
  EXPECT_EQ(r->bytes_transferred, content_.size() - done);
  EXPECT_EQ(server_.body_bytes_sent(), content_.size() - done);
}

// A resumed pull with no digest known (no pin, no X-Linked-Etag) whose server stopped honouring
// Range and now serves a changed file: the download starts over as one stream, and the digest it
// registers must be the hash of the bytes stored, not of the old partial's prefix plus the new
// rest.
TEST_F(DownloaderTest, ResumeThatFallsBackToOneStreamHashesOnlyTheNewBytes) {
  server_.faults().linked_headers = false;
  server_.faults().throttle_us = 2000;
  std::atomic<bool> cancel{false};
  auto r = Fetch(
      false,
      [&](const Progress& p) {
        if (p.phase == Phase::kDownloading && p.completed >= content_.size() / 2) cancel = true;
      },
      &cancel);
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.status().code(), Code::kCancelled) << r.status().ToString();

  const std::string changed = RandomBytes(content_.size(), 2);
  server_.AddFile(kPath, changed);
  server_.faults().throttle_us = 0;
  server_.faults().ignore_range = true;
  Open(FastOptions());
  r = Fetch(false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, "sha256-" + Sha256::HexOf(changed));
  EXPECT_EQ(ReadFile(dir_ + "/blobs/" + r->digest), changed);
}

TEST_F(DownloaderTest, ConcurrentPullsOfOneBlobShareOneDownload) {
  server_.faults().throttle_us = 200;
  std::vector<std::thread> threads;
  std::vector<Result<FetchResult>> results(4, Status::Internal("unset"));
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = Fetch(); });
  }
  for (auto& t : threads) t.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->digest, "sha256-" + sha_);
  }
  ExpectStoredAndRegistered();
  EXPECT_EQ(server_.body_bytes_sent(), content_.size());
}

TEST_F(DownloaderTest, ConcurrentPullsOfDifferentBlobs) {
  std::vector<std::string> contents;
  for (int i = 0; i < 3; ++i) {
    contents.push_back(RandomBytes(1024 * 1024 + i, 100 + i));
    server_.AddFile("/o/r/resolve/main/f" + std::to_string(i), contents.back());
  }
  std::vector<std::thread> threads;
  std::vector<Result<FetchResult>> results(6, Status::Internal("unset"));
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      FetchRequest req;
      req.url = server_.Url("/o/r/resolve/main/f" + std::to_string(i % 3));
      results[i] = dl_->Fetch(req, nullptr, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status().ToString();
    EXPECT_EQ(results[i]->digest, "sha256-" + Sha256::HexOf(contents[i % 3]));
    EXPECT_EQ(ReadFile(dir_ + "/blobs/" + results[i]->digest), contents[i % 3]);
  }
  EXPECT_EQ((*db_->ListBlobs()).size(), 3u);
}

TEST_F(DownloaderTest, OneCancelledCallerDoesNotStopTheOthers) {
  server_.faults().throttle_us = 1000;
  std::atomic<bool> cancel_a{false};
  Result<FetchResult> a = Status::Internal("unset"), b = Status::Internal("unset");
  std::thread ta([&] { a = Fetch(true, nullptr, &cancel_a); });
  std::thread tb([&] { b = Fetch(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  cancel_a = true;
  ta.join();
  tb.join();
  EXPECT_TRUE(a.status().IsCancelled() || a.ok());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ExpectStoredAndRegistered();
}

}  // namespace
}  // namespace garnet::registry
