// The daemon's one door into registry/: a thin layer over registry::Registry (the facade) that
// resolves user references to pulled models for the model manager, words errors so they tell the
// user what to run next, and shapes results for the Models service (which only converts types).
//
// Thread-safety: every method may be called from any thread (the registry's Db serialises its
// own access; the catalog is immutable after Open).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/model_manager.h"
#include "engine/base/status.h"
#include "registry/catalog.h"
#include "registry/db.h"
#include "registry/store.h"

namespace garnet::registry {
class Registry;
class Mirror;
}  // namespace garnet::registry

namespace garnet::daemon {

struct RegistryOptions {
  std::string data_dir;  // empty: registry::DefaultDataDir()
  std::string catalog;   // user catalog file (optional)
  std::string base_url;  // empty: $GARNET_MIRROR, $HF_ENDPOINT, else https://huggingface.co
  std::string hf_token;  // empty: $HF_TOKEN
  uint32_t download_attempts = 6;
};

struct TypeCount {
  std::string type;
  uint64_t count = 0;
  uint64_t bytes = 0;
};

struct ShowResult {
  registry::ManifestRow manifest;
  std::vector<TypeCount> tensor_types;
  std::optional<registry::CatalogEntry> catalog;
};

struct DeleteResult {
  uint64_t freed_bytes = 0;
  std::vector<std::string> removed_blobs;
};

struct PruneResult {
  uint64_t freed_bytes = 0;
  uint32_t blobs_removed = 0;
  uint32_t partials_removed = 0;
};

struct BlobCheck {
  std::string digest;
  Status status;
};

// One pull progress event, as the Models service streams it.
struct PullEvent {
  enum class Phase { kResolving, kWaiting, kDownloading, kVerifying, kFileDone, kRegistered };
  Phase phase = Phase::kResolving;
  std::string model;
  std::string digest;
  std::string file;
  uint32_t file_index = 0;
  uint32_t file_count = 1;
  uint64_t completed = 0;
  uint64_t total = 0;
  double bytes_per_second = 0;
};
using PullEventFn = std::function<void(const PullEvent&)>;

class PullJournal;

class RegistryClient {
 public:
  // Opens the store and database and loads the catalog (builtin + user file). Errors name the
  // directory / file at fault.
  static Result<std::unique_ptr<RegistryClient>> Open(const RegistryOptions& options);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // The manifest name a reference maps to: a catalog id ("gemma4" -> "gemma4:e4b-q4_k_m"), the
  // canonical hf.co/... text, or the text itself for imported names. InvalidArgument for a
  // malformed reference, NotFound for an unknown catalog id (with the known tags).
  Result<std::string> CanonicalName(const std::string& ref) const;

  // A pulled model's files. NotFound: "model X is not pulled; run `garnet pull X`".
  Result<ResolvedModel> Resolve(const std::string& ref) const;

  Result<std::vector<registry::ManifestRow>> List() const;
  Result<ShowResult> Show(const std::string& ref) const;
  Result<DeleteResult> Delete(const std::string& ref);

  // Downloads every file of a catalog or Hugging Face model, verifies and registers it.
  // `on_event` runs on the download thread (must be quick; may be null). Cancelled when `cancel`
  // is set (partials stay for a resume). The model is recorded in the pull journal
  // (pull_journal.h) while the pull runs, and stays there when it ends because of BeginShutdown().
  Status Pull(const std::string& ref, const PullEventFn& on_event, const std::atomic<bool>* cancel);

  // Pulls that were in progress when the daemon last stopped (canonical names, from the journal
  // read at Open), minus those whose model is registered by now (dropped from the journal).
  std::vector<std::string> InterruptedPulls();
  // The daemon is stopping: pulls cancelled from now on stay in the journal for the next start.
  void BeginShutdown() { stopping_.store(true); }

  // Re-hashes blobs of `ref` (empty: every blob); corrupt blobs are reported, not deleted.
  Result<std::vector<BlobCheck>> Verify(const std::string& ref, const std::atomic<bool>* cancel);
  // Hard-links (or copies) a local GGUF into the store and registers it under `name` (default:
  // "<file stem>:latest"). InvalidArgument for a malformed name or a relative path, the GGUF
  // reader's errors for a bad file.
  Result<registry::ManifestRow> Import(const std::string& path, const std::string& name);
  Result<PruneResult> Prune();

  // Serves the store read-only over HTTP in the hub's URL shape (registry/mirror.h) on
  // `address` ("127.0.0.1:0"). Returns the base URL. The mirror lives as long as the client.
  Result<std::string> StartMirror(const std::string& address);

  const registry::Catalog& catalog() const;
  const std::string& data_dir() const;

 private:
  explicit RegistryClient(std::unique_ptr<registry::Registry> reg);

  std::unique_ptr<registry::Registry> reg_;
  std::unique_ptr<registry::Mirror> mirror_;
  std::unique_ptr<PullJournal> journal_;
  std::atomic<bool> stopping_{false};
};

}  // namespace garnet::daemon
