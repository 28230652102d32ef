// The registry database (SQLite): blobs, manifests, downloads in progress, learned pins.
//
// Opened in WAL mode with foreign keys on and a 10 s busy timeout, so several processes may share
// one data dir. The schema version lives in PRAGMA user_version; Open() applies any missing
// migrations in order, each in its own transaction, and refuses a database newer than this
// binary (FailedPrecondition).
//
// Integrity rules the schema enforces (foreign keys):
//   - a manifest's files reference rows in `blobs`; a blob row is written only after the file
//     was verified and renamed into blobs/ (see registry.cc), so no manifest can point at a
//     missing or unverified blob;
//   - deleting a manifest cascades to its file list; deleting a referenced blob fails.
//
// Thread-safety: every method takes an internal mutex; one Db may be shared by threads.
// Lifetime: the Db owns the SQLite connection; close it by destroying the Db.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/base/status.h"

struct sqlite3;

namespace garnet::registry {

inline constexpr int kSchemaVersion = 1;

struct BlobRow {
  std::string digest;  // sha256-<hex>
  uint64_t size = 0;
  int64_t verified_at = 0;  // unix seconds of the last successful hash check
};

// What the registry learned from a model's GGUF header (empty fields when unknown).
struct GgufSummary {
  std::string architecture;  // general.architecture
  std::string name;          // general.name
  std::string file_type;     // quantisation label derived from the tensor types
  uint64_t parameters = 0;   // sum of tensor elements
  uint64_t tensor_count = 0;
  uint32_t context_length = 0;
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;
  uint32_t n_expert = 0;
  uint32_t n_expert_used = 0;
  std::string error;  // why the header could not be read, if it could not
};

struct ManifestFile {
  std::string digest;
  uint64_t size = 0;
  std::string filename;  // upstream file name ("gemma-4-E4B-it-Q4_K_M.gguf")
  std::string source;    // "<repo>/resolve/<rev>/<path>", a URL, or "import:<path>"
};

struct ManifestRow {
  std::string name;        // canonical reference: catalog id, "hf.co/org/repo:Q", or import name
  std::string catalog_id;  // empty for non-catalog models
  std::string kind;        // "catalog", "hf" or "import"
  int64_t created_at = 0;
  std::vector<ManifestFile> files;  // in order (split parts)
  GgufSummary summary;
  uint64_t total_size() const {
    uint64_t s = 0;
    for (const ManifestFile& f : files) s += f.size;
    return s;
  }
};

// One byte range of a download: [start, end) with `done` bytes written from `start`.
struct RangeRow {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t done = 0;
  bool complete() const { return start + done >= end; }
};

struct DownloadRow {
  std::string key;  // download key (store.h)
  std::string url;
  uint64_t size = 0;            // 0 when unknown (single stream, not resumable)
  std::string expected_digest;  // empty when unknown
  bool single_stream = false;   // the server ignored Range
  int64_t updated_at = 0;
  std::vector<RangeRow> ranges;
};

class Db {
 public:
  // Opens or creates the database at `path` and migrates it. Failure: Internal/DataLoss with
  // SQLite's message (a corrupt file reports DataLoss), FailedPrecondition for a newer schema.
  static Result<std::unique_ptr<Db>> Open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Result<int> SchemaVersion();

  // --- blobs
  // Inserts or updates a blob row.
  Status PutBlob(const BlobRow& blob);
  // nullopt when absent.
  Result<std::optional<BlobRow>> GetBlob(const std::string& digest);
  Result<std::vector<BlobRow>> ListBlobs();
  // Digests of blob rows that no manifest references.
  Result<std::vector<std::string>> UnreferencedBlobs();
  // Deletes a blob row. FailedPrecondition when a manifest still references it; OK if absent.
  Status DeleteBlob(const std::string& digest);

  // --- manifests
  // Inserts or replaces a manifest with its file list, in one transaction. Every file's digest
  // must already have a blob row (FailedPrecondition otherwise; nothing is written).
  Status PutManifest(const ManifestRow& m);
  Result<std::optional<ManifestRow>> GetManifest(const std::string& name);
  Result<std::vector<ManifestRow>> ListManifests();
  // NotFound when absent.
  Status DeleteManifest(const std::string& name);

  // --- downloads in progress
  Result<std::optional<DownloadRow>> GetDownload(const std::string& key);
  Result<std::vector<DownloadRow>> ListDownloads();
  // Replaces the row and its ranges.
  Status PutDownload(const DownloadRow& d);
  // Updates only the `done` counters of existing ranges (matched by start).
  Status UpdateRanges(const std::string& key, const std::vector<RangeRow>& ranges);
  Status DeleteDownload(const std::string& key);
  // In one transaction: insert the blob row and delete the download row.
  Status FinishDownload(const std::string& key, const BlobRow& blob);

  // --- pins learned from upstream (source -> size, digest), used when the catalog has none.
  Status PutPin(const std::string& source, uint64_t size, const std::string& digest);
  Result<std::optional<std::pair<uint64_t, std::string>>> GetPin(const std::string& source);

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  Status Migrate();
  Status ExecLocked(const char* sql);

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace garnet::registry
