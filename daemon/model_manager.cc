#include "daemon/model_manager.h"

#include <algorithm>
#include <cstdio>

#include "daemon/decode_batcher.h"
#include "daemon/fit.h"
#include "engine/gguf/gguf.h"
#include "engine/model/engine.h"

namespace garnet::daemon {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr uint32_t kMaxCtx = 1u << 20;
constexpr uint32_t kMaxParallel = 256;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

bool Cancelled(const std::atomic<bool>* cancel) {
  return cancel != nullptr && cancel->load();
}

std::string Placement(const plan::Plan& p, uint32_t n_layer) {
  if (p.devices.size() <= 1 || n_layer == 0) return "CPU 100%";
  const uint32_t host_layers = p.layers_on_host();
  const uint32_t host_experts = p.expert_sets_on_host();
  if (host_layers == n_layer) return "CPU 100%";
  if (host_layers == 0 && host_experts == 0) return "GPU 100%";
  char buf[96];
  if (host_layers == 0) {
    // Every Gemma 4 MoE layer has one expert set.
    std::snprintf(buf, sizeof buf, "GPU 100%%, experts %u%% host", 100 * host_experts / n_layer);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "GPU %u%% / CPU %u%%", 100 * (n_layer - host_layers) / n_layer,
                100 * host_layers / n_layer);
  return buf;
}

}  // namespace

struct ModelManager::Entry {
  enum class State { kLoading, kReady, kFailed };
  std::string name;
  ResolvedModel model;
  LoadOptions opts;  // effective values
  State state = State::kLoading;
  Status error;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<DecodeBatcher> batcher;  // declared after `engine`: destroyed before it
  plan::Plan plan;
  uint32_t n_layer = 0;
  uint64_t planned_bytes = 0;
  uint64_t host_bytes = 0;  // the host's part of planned_bytes
  uint32_t active = 0;
  uint32_t queued = 0;
  uint32_t pending = 0;  // callers between GetLoaded and taking/refusing a slot
  int64_t keep_alive_s = 300;
  int64_t expires_at_ms = 0;
  int64_t loaded_at_ms = 0;
  Clock::time_point last_used;
  bool unload_requested = false;
  bool auto_backend = false;  // the backend was "auto": a failed Vulkan load falls back to cpu
};

ModelManager::Lease::~Lease() {
  mgr_->Release(entry_.get());
}
engine::Engine& ModelManager::Lease::engine() const {
  return *entry_->engine;
}
DecodeBatcher& ModelManager::Lease::batcher() const {
  return *entry_->batcher;
}

ModelManager::ModelManager(ManagerOptions options, ResolveFn resolve, OpenFn open)
    : options_(options), resolve_(std::move(resolve)), open_(std::move(open)) {
  reaper_ = std::thread([this] { ReaperLoop(); });
}

ModelManager::~ModelManager() {
  Shutdown();
  std::vector<std::shared_ptr<Entry>> all;
  {
    std::unique_lock lock(mu_);
    // Leases belong to workers that were cancelled first; wait for them to end.
    cv_.wait(lock, [&] {
      for (auto& [name, e] : models_) {
        if (e->active > 0 || e->queued > 0 || e->pending > 0 || e->state == Entry::State::kLoading)
          return false;
      }
      return true;
    });
    for (auto& [name, e] : models_) all.push_back(e);
    models_.clear();
  }
  cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  all.clear();  // engines destroyed here, outside the lock
}

void ModelManager::Shutdown() {
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

Status ModelManager::ValidateOptions(const LoadOptions& o) {
  if (o.ctx > kMaxCtx) {
    return Status::InvalidArgument(
        "options ctx", std::to_string(o.ctx) + " exceeds the limit " + std::to_string(kMaxCtx));
  }
  if (o.ctx != 0 && o.ctx < 16) return Status::InvalidArgument("options ctx", "must be >= 16");
  if (o.parallel > kMaxParallel) {
    return Status::InvalidArgument(
        "options parallel",
        std::to_string(o.parallel) + " exceeds the limit " + std::to_string(kMaxParallel));
  }
  if (!o.kv_type.empty() && !model::KvTypeFromName(o.kv_type)) {
    return Status::InvalidArgument("options kv_type",
                                   "\"" + o.kv_type + "\" is not supported (f16, q8_0, f32)");
  }
  if (!o.backend.empty() && o.backend != "cpu" && o.backend != "vulkan" && o.backend != "auto") {
    return Status::InvalidArgument("options backend",
                                   "\"" + o.backend + "\" is not one of auto, cpu, vulkan");
  }
  if (o.threads > 1024) return Status::InvalidArgument("options threads", "exceeds 1024");
  return Status::OK();
}

int64_t ModelManager::ExpiryLocked(int64_t keep_alive_s) const {
  if (keep_alive_s < 0) return 0;
  return NowMs() + keep_alive_s * 1000;
}

Result<std::unique_ptr<ModelManager::Lease>> ModelManager::Acquire(
    const std::string& ref, const LoadOptions& options, int64_t keep_alive_s,
    const std::atomic<bool>* cancel) {
  GARNET_RETURN_IF_ERROR(ValidateOptions(options));
  GARNET_ASSIGN_OR_RETURN(ResolvedModel model, resolve_(ref));
  double load_seconds = 0;
  bool already = false;
  GARNET_ASSIGN_OR_RETURN(std::shared_ptr<Entry> e,
                          GetLoaded(model, options, keep_alive_s, cancel, &load_seconds, &already));
  const auto t0 = Clock::now();
  std::unique_lock lock(mu_);
  e->pending--;
  if (e->active >= e->opts.parallel) {
    if (e->queued >= options_.max_queue) {
      const std::string msg = "model " + e->name + " is busy: " + std::to_string(e->active) +
                              " requests running and " + std::to_string(e->queued) +
                              " queued (limit); retry later";
      cv_.notify_all();
      return Status::ResourceExhausted("busy", msg);
    }
    e->queued++;
    while (e->active >= e->opts.parallel) {
      if (shutdown_ || e->unload_requested) {
        e->queued--;
        cv_.notify_all();
        return Status::Unavailable("model " + e->name, "unloaded while the request was queued");
      }
      if (Cancelled(cancel)) {
        e->queued--;
        cv_.notify_all();
        return Status::Cancelled("request", "cancelled while queued");
      }
      cv_.wait_for(lock, kPoll);
    }
    e->queued--;
  }
  e->active++;
  e->keep_alive_s = keep_alive_s == 0 ? options_.default_keep_alive_s : keep_alive_s;
  std::unique_ptr<Lease> lease(new Lease(this, e));
  lease->info_ = InfoLocked(*e);
  lease->load_seconds_ = load_seconds;
  lease->queue_seconds_ = Seconds(Clock::now() - t0);
  return lease;
}

Result<ModelManager::LoadResult> ModelManager::Load(const std::string& ref,
                                                    const LoadOptions& options,
                                                    int64_t keep_alive_s,
                                                    const std::atomic<bool>* cancel) {
  GARNET_RETURN_IF_ERROR(ValidateOptions(options));
  GARNET_ASSIGN_OR_RETURN(ResolvedModel model, resolve_(ref));
  LoadResult r;
  GARNET_ASSIGN_OR_RETURN(std::shared_ptr<Entry> e, GetLoaded(model, options, keep_alive_s, cancel,
                                                              &r.load_seconds, &r.already_loaded));
  std::lock_guard lock(mu_);
  e->pending--;
  e->keep_alive_s = keep_alive_s == 0 ? options_.default_keep_alive_s : keep_alive_s;
  if (e->active == 0) e->expires_at_ms = ExpiryLocked(e->keep_alive_s);
  r.info = InfoLocked(*e);
  cv_.notify_all();
  return r;
}

Result<std::shared_ptr<ModelManager::Entry>> ModelManager::GetLoaded(
    const ResolvedModel& model, const LoadOptions& req, int64_t keep_alive_s,
    const std::atomic<bool>* cancel, double* load_seconds, bool* already_loaded) {
  // "auto": Vulkan when this machine has a GPU (the load falls back to the CPU if it cannot).
  const std::string asked = req.backend.empty() ? options_.default_backend : req.backend;
  const bool auto_backend = asked == "auto";
  const std::string backend = auto_backend ? (MachineGpus().empty() ? "cpu" : "vulkan") : asked;
  std::vector<std::shared_ptr<Entry>> dropped;  // destroyed after the lock is released
  std::unique_lock lock(mu_);
  for (;;) {
    if (shutdown_) return Status::Unavailable("garnetd", "shutting down");
    if (Cancelled(cancel)) return Status::Cancelled("request", "cancelled while the model loaded");
    auto it = models_.find(model.name);
    if (it == models_.end()) break;
    std::shared_ptr<Entry> e = it->second;
    if (e->state == Entry::State::kLoading) {
      cv_.wait_for(lock, kPoll);
      continue;
    }
    const bool differs = (req.ctx != 0 && req.ctx != e->opts.ctx) ||
                         (req.parallel != 0 && req.parallel != e->opts.parallel) ||
                         (!req.kv_type.empty() && req.kv_type != e->opts.kv_type) ||
                         (req.threads != 0 && req.threads != e->opts.threads) ||
                         (!req.backend.empty() && !auto_backend && backend != e->opts.backend) ||
                         e->model.digest != model.digest;
    if (e->unload_requested || differs) {
      if (e->active > 0 || e->queued > 0 || e->pending > 0) {
        return Status::FailedPrecondition(
            "model " + e->name, e->unload_requested
                                    ? "is being unloaded; retry when its requests finished"
                                    : "is loaded with other options (ctx " +
                                          std::to_string(e->opts.ctx) + ", parallel " +
                                          std::to_string(e->opts.parallel) +
                                          ") and busy; retry later or unload it first");
      }
      dropped.push_back(e);
      models_.erase(it);
      break;  // reload with the new options
    }
    e->pending++;
    *already_loaded = true;
    return e;
  }

  // This caller loads; later callers for the same name wait on the entry.
  auto e = std::make_shared<Entry>();
  e->name = model.name;
  e->model = model;
  e->opts.ctx = req.ctx;
  e->opts.parallel = req.parallel ? req.parallel : options_.default_parallel;
  e->opts.kv_type = req.kv_type.empty() ? "f16" : req.kv_type;
  e->opts.backend = backend;
  e->auto_backend = auto_backend;
  e->opts.threads = req.threads ? req.threads : options_.threads;
  e->keep_alive_s = keep_alive_s == 0 ? options_.default_keep_alive_s : keep_alive_s;
  e->pending = 1;
  models_[model.name] = e;
  lock.unlock();
  dropped.clear();

  const auto t0 = Clock::now();
  Status st = LoadEntry(e, model);
  *load_seconds = Seconds(Clock::now() - t0);
  *already_loaded = false;

  lock.lock();
  if (!st.ok()) {
    e->state = Entry::State::kFailed;
    e->error = st;
    auto it = models_.find(model.name);
    if (it != models_.end() && it->second == e) models_.erase(it);
    e->batcher.reset();
    std::unique_ptr<engine::Engine> engine = std::move(e->engine);
    lock.unlock();
    cv_.notify_all();
    return st;
  }
  e->state = Entry::State::kReady;
  e->loaded_at_ms = NowMs();
  e->last_used = Clock::now();
  e->expires_at_ms = ExpiryLocked(e->keep_alive_s);
  lock.unlock();
  cv_.notify_all();
  std::fprintf(stderr, "garnetd: loaded %s (%s, ctx %u, parallel %u, %.1f MiB planned) in %.2f s\n",
               e->name.c_str(), e->opts.backend.c_str(), e->opts.ctx, e->opts.parallel,
               e->planned_bytes / 1048576.0, *load_seconds);
  return e;
}

Status ModelManager::LoadEntry(const std::shared_ptr<Entry>& e, const ResolvedModel& model) {
  if (model.paths.empty()) return Status::Internal("model " + model.name, "has no files");
  // Plan from the header: context, memory per device, placement.
  GARNET_ASSIGN_OR_RETURN(auto header, gguf::Model::OpenParts(model.paths));
  GARNET_ASSIGN_OR_RETURN(plan::ModelShape shape, plan::ShapeFromModel(*header));
  header.reset();
  const uint32_t trained = shape.params.context_length;
  uint32_t ctx = e->opts.ctx;
  if (ctx == 0) {
    ctx = model.default_ctx ? model.default_ctx : options_.default_ctx;
    if (trained != 0) ctx = std::min(ctx, trained);
  } else if (trained != 0 && ctx > trained) {
    return Status::InvalidArgument(
        "options ctx",
        std::to_string(ctx) + " exceeds the model's trained context " + std::to_string(trained));
  }
  e->opts.ctx = ctx;
  e->n_layer = shape.params.n_layer;

  Status st = LoadWith(e, model, shape);
  if (!st.ok() && e->auto_backend && e->opts.backend != "cpu") {
    std::fprintf(stderr, "garnetd: %s on %s failed (%s); using the CPU backend\n",
                 model.name.c_str(), e->opts.backend.c_str(), st.message().c_str());
    e->opts.backend = "cpu";
    st = LoadWith(e, model, shape);
  }
  GARNET_RETURN_IF_ERROR(st);
  if (e->engine->tokenizer() == nullptr) {
    return Status::FailedPrecondition("model " + model.name, "has no tokenizer in its GGUF");
  }
  e->batcher = std::make_unique<DecodeBatcher>(e->engine.get());
  return Status::OK();
}

Status ModelManager::LoadWith(const std::shared_ptr<Entry>& e, const ResolvedModel& model,
                              const plan::ModelShape& shape) {
  plan::KvOptions kv;
  kv.n_ctx = e->opts.ctx;
  kv.n_seq = e->opts.parallel;
  // The engine's micro-batch (EngineOptions' default), capped at the context as the engine does.
  kv.n_ubatch =
      static_cast<uint32_t>(std::min<int64_t>(engine::EngineOptions{}.n_ubatch, kv.n_ctx));
  const model::KvType kv_type =
      model::KvTypeFromName(e->opts.kv_type).value_or(model::KvType::kF16);
  kv.type = model::PlanKvType(kv_type);
  const bool vulkan = e->opts.backend == "vulkan";
  plan::Inventory inv;
  GARNET_ASSIGN_OR_RETURN(inv.host, plan::HostInventory());
  plan::Policy policy;
  policy.mode = plan::PolicyMode::kCpuOnly;
  policy.host_reserve = 0;
  if (options_.memory_limit != 0) inv.host.free_bytes = options_.memory_limit;
  std::string device;
  if (vulkan) {
    if (kv_type == model::KvType::kF32) {
      return Status::InvalidArgument("options kv_type",
                                     "the Vulkan backend keeps its KV cache in f16 or q8_0");
    }
    // The engine runs on one GPU: plan for the one it picks (discrete first), by name.
    const std::vector<plan::DeviceInfo> gpus = MachineGpus();
    if (gpus.empty()) return Status::Unavailable("backend vulkan", "no Vulkan GPU on this machine");
    const plan::DeviceInfo* pick = &gpus[0];
    for (const plan::DeviceInfo& g : gpus) {
      if (g.type == plan::GpuType::kDiscrete) {
        pick = &g;
        break;
      }
    }
    inv.gpus = {*pick};
    device = pick->name;
    policy.mode = plan::PolicyMode::kAuto;
    // A larger prefill micro-batch where the model fits the GPU with it (the engine takes the
    // plan's ubatch).
    GARNET_ASSIGN_OR_RETURN(kv.n_ubatch, plan::ChooseUbatch(shape, kv, inv, policy));
  }
  GARNET_ASSIGN_OR_RETURN(e->plan, plan::MakePlan(shape, kv, inv, policy));
  // Layers or experts the plan puts on the host run on the CPU inside the Vulkan forward pass
  // (the engine is handed this plan, so it runs what was accounted for here).
  if (vulkan && e->plan.verdict == plan::Verdict::kDoesNotFit) {
    return Status::ResourceExhausted(
        "model " + model.name, "does not fit on " + device + " (" + e->plan.reason +
                                   "); use backend cpu, a smaller context or fewer sequences");
  }
  e->planned_bytes = 0;
  for (const plan::DeviceUse& d : e->plan.devices) e->planned_bytes += d.use.total();
  // Host memory is what the limit and eviction govern (GPU memory was checked by the plan
  // against the device's free bytes).
  const uint64_t host_bytes = e->plan.devices.empty() ? 0 : e->plan.devices.back().use.total();
  e->host_bytes = host_bytes;

  std::vector<std::shared_ptr<Entry>> evicted;
  GARNET_RETURN_IF_ERROR(MakeRoom(e->name, host_bytes, &evicted));
  evicted.clear();  // unloaded here, before the new engine allocates

  EngineSpec spec;
  spec.paths = model.paths;
  spec.ctx = e->opts.ctx;
  spec.kv_type = e->opts.kv_type;
  spec.backend = e->opts.backend;
  spec.threads = e->opts.threads;
  if (open_) {
    GARNET_ASSIGN_OR_RETURN(e->engine, open_(spec));
  } else {
    engine::EngineOptions eo;
    eo.n_ctx = e->opts.ctx;
    eo.n_threads = static_cast<int>(spec.threads);
    eo.kv_type = model::KvTypeFromName(spec.kv_type).value_or(engine::KvType::kF16);
    eo.backend = spec.backend;
    eo.device = device;
    eo.n_seq = e->opts.parallel;
    if (vulkan) eo.plan = e->plan;
    auto opened = engine::Engine::OpenParts(spec.paths, eo);
    if (!opened.ok()) return opened.status().WithContext("loading " + model.name);
    e->engine = std::move(opened).value();
  }
  return Status::OK();
}

Status ModelManager::MakeRoom(const std::string& name, uint64_t bytes,
                              std::vector<std::shared_ptr<Entry>>* evicted) {
  std::lock_guard lock(mu_);
  uint64_t loaded = 0;
  uint32_t count = 0;
  for (auto& [n, e] : models_) {
    if (n == name || e->state != Entry::State::kReady) continue;
    loaded += e->host_bytes;
    ++count;
  }
  uint64_t limit = options_.memory_limit;
  if (limit == 0) {
    auto host = plan::HostInventory();
    limit = (host.ok() ? host->free_bytes : 0) + loaded;
  }
  if (bytes > limit) {
    return Status::ResourceExhausted(
        "model " + name, "needs " + plan::FormatBytes(bytes) + " but only " +
                             plan::FormatBytes(limit) +
                             " is available for models; use a smaller context or quantisation");
  }
  // Evict idle models, least recently used first, until the new one fits.
  while (loaded + bytes > limit || count + 1 > options_.max_loaded) {
    std::shared_ptr<Entry> victim;
    for (auto& [n, e] : models_) {
      if (n == name || e->state != Entry::State::kReady) continue;
      if (e->active > 0 || e->queued > 0 || e->pending > 0) continue;
      if (!victim || e->last_used < victim->last_used) victim = e;
    }
    if (!victim) {
      return Status::ResourceExhausted(
          "model " + name, "needs " + plan::FormatBytes(bytes) + "; " + std::to_string(count) +
                               " loaded models (" + plan::FormatBytes(loaded) +
                               ") are busy and cannot be evicted; retry later");
    }
    std::fprintf(stderr, "garnetd: evicting %s to make room for %s\n", victim->name.c_str(),
                 name.c_str());
    loaded -= victim->host_bytes;
    --count;
    models_.erase(victim->name);
    evicted->push_back(victim);
  }
  return Status::OK();
}

void ModelManager::Release(Entry* e) {
  {
    std::lock_guard lock(mu_);
    e->active--;
    e->last_used = Clock::now();
    if (e->active == 0) e->expires_at_ms = ExpiryLocked(e->keep_alive_s);
  }
  cv_.notify_all();
}

Status ModelManager::Unload(const std::string& ref) {
  std::string name = ref;
  if (auto m = resolve_(ref); m.ok()) name = m->name;
  std::shared_ptr<Entry> drop;
  {
    std::lock_guard lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end() || it->second->state != Entry::State::kReady) {
      return Status::NotFound("model " + ref, "is not loaded (see garnet ps)");
    }
    std::shared_ptr<Entry> e = it->second;
    if (e->active == 0 && e->queued == 0 && e->pending == 0) {
      drop = e;
      models_.erase(it);
    } else {
      e->unload_requested = true;
    }
  }
  cv_.notify_all();
  if (drop) std::fprintf(stderr, "garnetd: unloaded %s\n", drop->name.c_str());
  return Status::OK();
}

LoadedInfo ModelManager::InfoLocked(const Entry& e) const {
  LoadedInfo i;
  i.name = e.name;
  i.digest = e.model.digest;
  i.backend = e.engine ? std::string(e.engine->backend_name()) : e.opts.backend;
  i.ctx = e.opts.ctx;
  i.parallel = e.opts.parallel;
  i.active = e.active;
  i.queued = e.queued;
  i.memory = e.plan.devices;
  i.placement = Placement(e.plan, e.n_layer);
  i.layers_on_host = e.plan.layers_on_host();
  i.expert_sets_on_host = e.plan.expert_sets_on_host();
  i.expires_at_ms = e.active > 0 ? 0 : e.expires_at_ms;
  i.loaded_at_ms = e.loaded_at_ms;
  i.size = e.model.size;
  i.planned_bytes = e.planned_bytes;
  if (e.batcher) {
    const DecodeBatcher::Stats st = e.batcher->stats();
    i.decode_steps = st.steps;
    i.decode_sequence_steps = st.sequence_steps;
    i.decode_batched_steps = st.batched_steps;
    i.decode_max_batch = st.max_batch;
  }
  return i;
}

std::vector<LoadedInfo> ModelManager::Ps() const {
  std::lock_guard lock(mu_);
  std::vector<LoadedInfo> out;
  for (const auto& [name, e] : models_) {
    if (e->state == Entry::State::kReady) out.push_back(InfoLocked(*e));
  }
  return out;
}

void ModelManager::ReaperLoop() {
  std::unique_lock lock(mu_);
  while (!shutdown_) {
    cv_.wait_for(lock, std::chrono::milliseconds(200));
    const int64_t now = NowMs();
    std::vector<std::shared_ptr<Entry>> drop;
    for (auto it = models_.begin(); it != models_.end();) {
      Entry& e = *it->second;
      const bool idle =
          e.state == Entry::State::kReady && e.active == 0 && e.queued == 0 && e.pending == 0;
      const bool expired = e.expires_at_ms != 0 && now >= e.expires_at_ms;
      if (idle && (e.unload_requested || expired)) {
        drop.push_back(it->second);
        it = models_.erase(it);
      } else {
        ++it;
      }
    }
    if (!drop.empty()) {
      lock.unlock();
      for (auto& e : drop) {
        std::fprintf(stderr, "garnetd: unloaded %s (%s)\n", e->name.c_str(),
                     e->unload_requested ? "requested" : "keep-alive expired");
      }
      drop.clear();
      lock.lock();
    }
  }
}

}  // namespace garnet::daemon
