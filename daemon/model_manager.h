// Model lifecycle inside garnetd: load on first use or on request, share one load between
// concurrent requests, bound the requests per model, keep models alive for a while after their
// last use, unload on expiry or request, and evict idle models (least recently used first) when a
// new load needs room — decided by the fit planner's numbers, never by trying.
//
// Threads: Acquire()/Load() run on the caller's thread (a daemon worker, never a gRPC reaction)
// and may block while a model loads or a slot frees up; they poll `cancel` every 50 ms. A reaper
// thread unloads expired models. Engines are destroyed outside the manager's mutex.
//
// Slots: each loaded model runs up to `parallel` requests at once (each with its own Sequence;
// their decode steps are batched by the model's DecodeBatcher) and lets up to `max_queue` more
// wait. Beyond that
// Acquire fails at once with ResourceExhausted ("busy"). Ps() never waits for a load or a slot.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/base/status.h"
#include "engine/plan/planner.h"

namespace garnet::engine {
class Engine;
}

namespace garnet::daemon {

class DecodeBatcher;

// A pulled model as the registry describes it.
struct ResolvedModel {
  std::string name;                // canonical reference
  std::string digest;              // of the first file
  std::vector<std::string> paths;  // GGUF files in order
  uint64_t size = 0;               // bytes on disk
  uint32_t default_ctx = 0;        // catalog default; 0 when unknown
};
// Resolves a user reference to a pulled model. NotFound ("run garnet pull ...") when absent,
// InvalidArgument for a malformed reference.
using ResolveFn = std::function<Result<ResolvedModel>(const std::string& ref)>;

// Per-request overrides; zero / empty means the daemon's default.
struct LoadOptions {
  uint32_t ctx = 0;
  uint32_t parallel = 0;
  std::string kv_type;  // "f16", "q8_0", "f32"
  std::string backend;  // "auto", "cpu", "vulkan"; empty: the daemon's default
  uint32_t threads = 0;
};

struct ManagerOptions {
  uint32_t default_ctx = 4096;
  uint32_t default_parallel = 4;
  uint32_t max_queue = 16;
  uint32_t max_loaded = 3;
  int64_t default_keep_alive_s = 300;  // < 0: forever
  uint64_t memory_limit = 0;           // 0: available host RAM at load time + what is loaded
  uint32_t threads = 0;
  // "cpu", "vulkan", or "auto" (Vulkan when this machine has a GPU, falling back to the CPU
  // when the model cannot load there).
  std::string default_backend = "cpu";
};

// What Ps() reports about one loaded model.
struct LoadedInfo {
  std::string name;
  std::string digest;
  std::string backend;
  uint32_t ctx = 0;
  uint32_t parallel = 0;
  uint32_t active = 0;
  uint32_t queued = 0;
  std::vector<plan::DeviceUse> memory;  // per device, from the plan the model was loaded with
  std::string placement;                // "CPU 100%", "GPU 100%", "experts 40% host"
  uint32_t layers_on_host = 0;
  uint32_t expert_sets_on_host = 0;
  int64_t expires_at_ms = 0;  // unix ms; 0: never (or busy)
  int64_t loaded_at_ms = 0;
  uint64_t size = 0;
  uint64_t planned_bytes = 0;  // total over devices
  // Decode batching since the load (DecodeBatcher::Stats).
  uint64_t decode_steps = 0;
  uint64_t decode_sequence_steps = 0;
  uint64_t decode_batched_steps = 0;
  uint64_t decode_max_batch = 0;
};

class ModelManager {
 public:
  struct Entry;  // one loaded (or loading) model; defined in model_manager.cc

  // A running request's hold on a loaded model: the engine stays loaded and the slot stays taken
  // until the Lease is destroyed (which restarts the keep-alive clock).
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    engine::Engine& engine() const;
    // The model's decode batcher (decode_batcher.h): generations on the same model step together.
    DecodeBatcher& batcher() const;
    const LoadedInfo& info() const { return info_; }
    double load_seconds() const { return load_seconds_; }
    double queue_seconds() const { return queue_seconds_; }

   private:
    friend class ModelManager;
    Lease(ModelManager* mgr, std::shared_ptr<Entry> entry) : mgr_(mgr), entry_(std::move(entry)) {}
    ModelManager* mgr_;
    std::shared_ptr<Entry> entry_;
    LoadedInfo info_;
    double load_seconds_ = 0;
    double queue_seconds_ = 0;
  };

  // Opens an engine; injectable so tests can count loads. Default: engine::Engine::OpenParts
  // (every part of a split model, in manifest order).
  struct EngineSpec {
    std::vector<std::string> paths;  // GGUF parts in order (one for an unsplit model)
    uint32_t ctx = 0;
    std::string kv_type;
    std::string backend;
    uint32_t threads = 0;
  };
  using OpenFn = std::function<Result<std::unique_ptr<engine::Engine>>(const EngineSpec& spec)>;

  ModelManager(ManagerOptions options, ResolveFn resolve, OpenFn open = nullptr);
  // Cancels waiting requests, waits for leases to end (they must end: their owners are the
  // daemon's workers, cancelled first), unloads everything.
  ~ModelManager();
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Waits for the model to be loaded (loading it if needed; concurrent callers share one load)
  // and for a free slot. `keep_alive_s`: 0 = default, < 0 = forever. Errors: the resolver's,
  // InvalidArgument for bad options, ResourceExhausted when the queue is full or the model cannot
  // fit next to models in use, Cancelled when `cancel` was set while waiting, FailedPrecondition
  // when the model is loaded with other options and busy, and the engine's load errors.
  Result<std::unique_ptr<Lease>> Acquire(const std::string& ref, const LoadOptions& options,
                                         int64_t keep_alive_s, const std::atomic<bool>* cancel);

  // Loads without taking a slot (or refreshes the keep-alive). `already_loaded` reports whether
  // no load happened.
  struct LoadResult {
    LoadedInfo info;
    double load_seconds = 0;
    bool already_loaded = false;
  };
  Result<LoadResult> Load(const std::string& ref, const LoadOptions& options, int64_t keep_alive_s,
                          const std::atomic<bool>* cancel);

  // Unloads now if idle, else as soon as the running requests end (queued ones fail with
  // Unavailable). NotFound when the model is not loaded.
  Status Unload(const std::string& ref);

  // Loaded models (not the ones still loading), by name.
  std::vector<LoadedInfo> Ps() const;

  // Fails every waiting request with Unavailable and refuses new ones; used at shutdown.
  void Shutdown();

  // Validates options against limits (context vs the model's trained maximum is checked by the
  // engine). InvalidArgument names the field.
  static Status ValidateOptions(const LoadOptions& options);

 private:
  Result<std::shared_ptr<Entry>> GetLoaded(const ResolvedModel& model, const LoadOptions& options,
                                           int64_t keep_alive_s, const std::atomic<bool>* cancel,
                                           double* load_seconds, bool* already_loaded);
  Status LoadEntry(const std::shared_ptr<Entry>& entry, const ResolvedModel& model);
  Status LoadWith(const std::shared_ptr<Entry>& entry, const ResolvedModel& model,
                  const plan::ModelShape& shape);
  Status MakeRoom(const std::string& name, uint64_t bytes,
                  std::vector<std::shared_ptr<Entry>>* evicted);
  void Release(Entry* entry);
  LoadedInfo InfoLocked(const Entry& e) const;
  int64_t ExpiryLocked(int64_t keep_alive_s) const;
  void ReaperLoop();

  const ManagerOptions options_;
  const ResolveFn resolve_;
  const OpenFn open_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // load finished, slot freed, unload, shutdown
  std::map<std::string, std::shared_ptr<Entry>> models_;  // by canonical name; guarded by mu_
  bool shutdown_ = false;                                 // guarded by mu_
  std::thread reaper_;
};

}  // namespace garnet::daemon
