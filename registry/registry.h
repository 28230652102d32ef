// Registry: the facade the daemon uses. Resolves references, pulls models (one or several files),
// registers them, and answers list / show / remove / prune / verify / import / disk usage.
//
// Invariants (crash safety): a manifest is written only after every one of its files is a
// verified blob (sha256 checked, renamed atomically into blobs/, `blobs` row committed), and the
// manifest with its file list is one SQLite transaction. Removing a model deletes its manifest
// first, then unreferenced blob rows, then their files. So killing the process at any point
// leaves a database that opens and has no manifest pointing at a missing or unverified blob; at
// worst an orphan file or partial remains, which Prune() removes.
//
// Manifest names: a catalog model is registered under its catalog id ("gemma4:e4b-q4_k_m";
// aliases and the bare family resolve to it), a Hugging Face model under
// "hf.co/<org>/<repo>:<QUANT>", an import under the name given.
//
// Errors use the gRPC-shaped codes of engine/base/status.h: InvalidArgument (bad reference),
// NotFound (unknown model, 404), Unauthenticated / PermissionDenied (401 / 403), DataLoss (hash
// mismatch), ResourceExhausted (disk full), Unavailable (retries exhausted), Cancelled,
// FailedPrecondition (pin disagrees with upstream).
//
// Thread-safety: every method may be called concurrently from any thread; concurrent pulls of the
// same blob share one download. The Registry must outlive all calls into it; destroying it
// cancels downloads still running. Several processes may share one data dir (SQLite WAL, flock
// on partial files).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "registry/catalog.h"
#include "registry/db.h"
#include "registry/downloader.h"
#include "registry/store.h"

namespace garnet::registry {

inline constexpr const char* kDefaultBaseUrl = "https://huggingface.co";

struct RegistryOptions {
  std::string data_dir;  // empty: DefaultDataDir() ($GARNET_HOME, $XDG_DATA_HOME/garnet, ...)
  // Where hub-style sources are fetched from. Empty: $GARNET_MIRROR, else $HF_ENDPOINT, else
  // https://huggingface.co.
  std::string base_url;
  std::string token;  // empty: $HF_TOKEN
  // A user catalog merged over the builtin one. Empty: $GARNET_CATALOG, else
  // $XDG_CONFIG_HOME/garnet/catalog.json (or ~/.config/garnet/catalog.json) when it exists.
  std::string user_catalog;
  bool use_environment = true;  // false: ignore the environment variables above (tests)
  DownloadOptions download;
  // Orphan blob files younger than this are left alone by Prune (a concurrent pull may be about
  // to register them).
  std::chrono::seconds orphan_grace{3600};
};

struct ModelInfo {
  ManifestRow manifest;
  std::vector<std::string> paths;       // blob paths, in file order (what the engine opens)
  std::optional<CatalogEntry> catalog;  // the catalog entry, for catalog models
};

struct PullResult {
  ModelInfo model;
  uint64_t bytes_transferred = 0;
  bool already_present = false;       // every file was already stored
  std::vector<FetchTimings> timings;  // per file, in manifest order (see FetchTimings)
};

struct VerifyItem {
  std::string digest;
  uint64_t size = 0;
  bool ok = false;
  std::string problem;              // "missing", "size 10 != 12", "sha256 mismatch: ..."
  std::vector<std::string> models;  // manifests that use it
};
struct VerifyReport {
  std::vector<VerifyItem> blobs;
  size_t corrupt = 0;
};

struct PruneReport {
  std::vector<std::string> removed_blobs;     // digests (unreferenced rows and orphan files)
  std::vector<std::string> removed_partials;  // download keys
  uint64_t bytes_freed = 0;
};

struct DiskUsage {
  std::string data_dir;
  uint64_t blob_bytes = 0;
  uint64_t partial_bytes = 0;
  uint64_t database_bytes = 0;
  uint64_t free_bytes = 0;
  size_t blob_count = 0;
  size_t model_count = 0;
};

enum class ImportMode { kCopy, kHardLink, kAuto /* hard link when possible, else copy */ };

class Registry {
 public:
  // Opens (creating if needed) the data dir and database, and loads the catalog. Failure: the
  // store/database/catalog error.
  static Result<std::unique_ptr<Registry>> Open(RegistryOptions options);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Downloads (or finds) every file of `ref` and registers the model. Progress events carry the
  // file index/count; `cancel` (nullable) stops the pull with Cancelled, keeping partials.
  Result<PullResult> Pull(std::string_view ref, const ProgressFn& progress,
                          const std::atomic<bool>* cancel);

  // Registered models, by name.
  Result<std::vector<ModelInfo>> List();
  // One registered model, its GGUF summary re-read from the blob headers. NotFound when the
  // reference is valid but not pulled.
  Result<ModelInfo> Show(std::string_view ref);
  // Removes a model's manifest and deletes blobs no other model uses. NotFound when absent.
  Status Remove(std::string_view ref);
  // Deletes unreferenced blobs and orphan blob files; with `partials`, also partial downloads
  // not currently in progress.
  Result<PruneReport> Prune(bool partials);
  // Re-hashes every blob and reports each one's state. Corrupt blobs are reported, not deleted.
  Result<VerifyReport> Verify(const std::atomic<bool>* cancel);
  // Imports a local GGUF (or every part of a split set when given its first part) under `name`
  // (name[:tag] grammar; must not be a catalog id or alias).
  Result<ModelInfo> Import(const std::string& path, std::string_view name, ImportMode mode);
  Result<DiskUsage> GetDiskUsage();

  // The manifest name a reference maps to ("gemma4" -> "gemma4:e4b-q4_k_m"); does not check that
  // the model is pulled. InvalidArgument / NotFound for bad or unknown references.
  Result<std::string> ManifestName(std::string_view ref);

  const Catalog& catalog() const { return catalog_; }
  const Store& store() const { return store_; }
  const std::string& base_url() const { return base_url_; }
  Db& db() { return *db_; }

 private:
  Registry(RegistryOptions options, Store store, std::unique_ptr<Db> db, Catalog catalog,
           std::string base_url);
  Result<ModelInfo> ToInfo(ManifestRow row);
  Status DeleteUnreferencedBlob(const std::string& digest, PruneReport* report);

  const RegistryOptions options_;
  const Store store_;
  std::unique_ptr<Db> db_;
  const Catalog catalog_;
  const std::string base_url_;
  std::unique_ptr<Downloader> downloader_;

  std::atomic<uint64_t> import_counter_{0};  // makes import partial names unique
};

}  // namespace garnet::registry
