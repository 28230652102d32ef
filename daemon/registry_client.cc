#include "daemon/registry_client.h"

#include <cstdio>
#include <map>
#include <set>

#include "daemon/pull_journal.h"
#include "engine/gguf/gguf.h"
#include "engine/quant/types.h"
#include "registry/mirror.h"
#include "registry/reference.h"
#include "registry/registry.h"

namespace garnet::daemon {
namespace {

using registry::ManifestRow;

// NotFound from the registry for a valid reference that is not pulled gets the next step.
Status NotPulled(const std::string& ref) {
  return Status::NotFound("model " + ref, "is not pulled; run `garnet pull " + ref + "`");
}

PullEvent::Phase MapPhase(registry::Phase p) {
  switch (p) {
    case registry::Phase::kResolving:
      return PullEvent::Phase::kResolving;
    case registry::Phase::kWaiting:
      return PullEvent::Phase::kWaiting;
    case registry::Phase::kDownloading:
      return PullEvent::Phase::kDownloading;
    case registry::Phase::kVerifying:
      return PullEvent::Phase::kVerifying;
    case registry::Phase::kDone:
      return PullEvent::Phase::kFileDone;
  }
  return PullEvent::Phase::kResolving;
}

std::vector<TypeCount> TypeHistogram(const std::vector<std::string>& paths) {
  std::vector<TypeCount> out;
  auto opened = gguf::Model::OpenParts(paths);
  if (!opened.ok()) return out;
  std::map<std::string, TypeCount> hist;
  for (const gguf::TensorInfo& t : (*opened)->tensors()) {
    TypeCount& c = hist[std::string(TypeName(t.type))];
    c.count++;
    c.bytes += t.bytes;
  }
  for (auto& [name, c] : hist) {
    c.type = name;
    out.push_back(c);
  }
  return out;
}

}  // namespace

RegistryClient::RegistryClient(std::unique_ptr<registry::Registry> reg)
    : reg_(std::move(reg)),
      journal_(std::make_unique<PullJournal>(reg_->store().root() + "/garnetd-pulls.json")) {}

RegistryClient::~RegistryClient() {
  mirror_.reset();  // stops serving before the registry goes
}

Result<std::unique_ptr<RegistryClient>> RegistryClient::Open(const RegistryOptions& options) {
  registry::RegistryOptions ro;
  ro.data_dir = options.data_dir;
  ro.base_url = options.base_url;
  ro.token = options.hf_token;
  ro.user_catalog = options.catalog;
  ro.download.max_attempts = static_cast<int>(options.download_attempts);
  GARNET_ASSIGN_OR_RETURN(std::unique_ptr<registry::Registry> reg,
                          registry::Registry::Open(std::move(ro)));
  return std::unique_ptr<RegistryClient>(new RegistryClient(std::move(reg)));
}

const registry::Catalog& RegistryClient::catalog() const {
  return reg_->catalog();
}
const std::string& RegistryClient::data_dir() const {
  return reg_->store().root();
}

Result<std::string> RegistryClient::CanonicalName(const std::string& ref) const {
  GARNET_ASSIGN_OR_RETURN(registry::Reference r, registry::ParseReference(ref));
  if (r.kind == registry::Reference::Kind::kLocalPath) {
    return Status::InvalidArgument(
        "model reference \"" + ref + "\"",
        "is a file path, not a model id; to use a local GGUF run `garnet import "
        "FILE --name NAME:TAG` first");
  }
  return reg_->ManifestName(ref);
}

Result<ResolvedModel> RegistryClient::Resolve(const std::string& ref) const {
  GARNET_ASSIGN_OR_RETURN(std::string name, CanonicalName(ref));
  GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> m, reg_->db().GetManifest(name));
  if (!m.has_value()) return NotPulled(ref);
  ResolvedModel out;
  out.name = m->name;
  out.size = m->total_size();
  for (const registry::ManifestFile& f : m->files) {
    GARNET_ASSIGN_OR_RETURN(std::string path, reg_->store().BlobPath(f.digest));
    if (!registry::FileSize(path).ok()) {
      return Status::DataLoss(
          "model " + name,
          "blob " + f.digest + " is missing from the store; run `garnet pull " + name + "` again");
    }
    out.paths.push_back(path);
  }
  if (out.paths.empty()) return Status::DataLoss("model " + name, "manifest lists no files");
  out.digest = m->files[0].digest;
  if (const registry::CatalogEntry* e = reg_->catalog().FindId(name)) {
    out.default_ctx = e->default_context;
  }
  return out;
}

Result<std::vector<ManifestRow>> RegistryClient::List() const {
  GARNET_ASSIGN_OR_RETURN(std::vector<registry::ModelInfo> models, reg_->List());
  std::vector<ManifestRow> out;
  for (auto& m : models) out.push_back(std::move(m.manifest));
  return out;
}

Result<ShowResult> RegistryClient::Show(const std::string& ref) const {
  GARNET_RETURN_IF_ERROR(CanonicalName(ref).status());
  auto info = reg_->Show(ref);
  if (!info.ok()) return info.status().IsNotFound() ? NotPulled(ref) : info.status();
  ShowResult r;
  r.manifest = std::move(info->manifest);
  r.tensor_types = TypeHistogram(info->paths);
  r.catalog = std::move(info->catalog);
  return r;
}

Result<DeleteResult> RegistryClient::Delete(const std::string& ref) {
  GARNET_ASSIGN_OR_RETURN(std::string name, CanonicalName(ref));
  GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> m, reg_->db().GetManifest(name));
  if (!m.has_value()) return NotPulled(ref);
  GARNET_RETURN_IF_ERROR(reg_->Remove(name));
  DeleteResult r;
  for (const registry::ManifestFile& f : m->files) {
    auto path = reg_->store().BlobPath(f.digest);
    if (path.ok() && !registry::FileSize(*path).ok()) {
      r.freed_bytes += f.size;
      r.removed_blobs.push_back(f.digest);
    }
  }
  return r;
}

Status RegistryClient::Pull(const std::string& ref, const PullEventFn& on_event,
                            const std::atomic<bool>* cancel) {
  GARNET_ASSIGN_OR_RETURN(std::string name, CanonicalName(ref));
  if (Status st = journal_->Begin(name); !st.ok()) {
    std::fprintf(stderr, "garnetd: %s (the pull of %s would not resume after a stop)\n",
                 st.message().c_str(), name.c_str());
  }
  auto progress = [&](const registry::Progress& p) {
    if (!on_event) return;
    PullEvent ev;
    ev.phase = MapPhase(p.phase);
    ev.model = name;
    ev.digest = p.digest;
    ev.file = p.file;
    ev.file_index = p.file_index;
    ev.file_count = p.file_count;
    ev.completed = p.completed;
    ev.total = p.total;
    ev.bytes_per_second = p.bytes_per_second;
    on_event(ev);
  };
  auto pulled = reg_->Pull(ref, progress, cancel);
  const bool interrupted = !pulled.ok() && stopping_.load();
  if (Status st = journal_->End(name, interrupted); !st.ok()) {
    std::fprintf(stderr, "garnetd: %s\n", st.message().c_str());
  }
  if (!pulled.ok()) return pulled.status();
  if (on_event) {
    PullEvent ev;
    ev.phase = PullEvent::Phase::kRegistered;
    ev.model = pulled->model.manifest.name;
    ev.file_count = static_cast<uint32_t>(pulled->model.manifest.files.size());
    ev.file_index = ev.file_count ? ev.file_count - 1 : 0;
    ev.completed = ev.total = pulled->model.manifest.total_size();
    on_event(ev);
  }
  return Status::OK();
}

std::vector<std::string> RegistryClient::InterruptedPulls() {
  std::vector<std::string> out;
  for (const std::string& name : journal_->interrupted()) {
    auto m = reg_->db().GetManifest(name);
    if (m.ok() && m->has_value()) {
      (void)journal_->Drop(name);  // finished after all (e.g. by another process)
      continue;
    }
    if (!CanonicalName(name).ok()) {  // not a reference (damaged or hostile journal)
      (void)journal_->Drop(name);
      continue;
    }
    out.push_back(name);
  }
  return out;
}

Result<std::vector<BlobCheck>> RegistryClient::Verify(const std::string& ref,
                                                      const std::atomic<bool>* cancel) {
  std::set<std::string> wanted;
  if (!ref.empty()) {
    GARNET_ASSIGN_OR_RETURN(std::string name, CanonicalName(ref));
    GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> m, reg_->db().GetManifest(name));
    if (!m.has_value()) return NotPulled(ref);
    for (const auto& f : m->files) wanted.insert(f.digest);
  }
  GARNET_ASSIGN_OR_RETURN(registry::VerifyReport report, reg_->Verify(cancel));
  std::vector<BlobCheck> out;
  for (const registry::VerifyItem& item : report.blobs) {
    if (!wanted.empty() && wanted.count(item.digest) == 0) continue;
    BlobCheck c;
    c.digest = item.digest;
    if (!item.ok) c.status = Status::DataLoss(item.digest, item.problem);
    out.push_back(std::move(c));
  }
  return out;
}

Result<ManifestRow> RegistryClient::Import(const std::string& path, const std::string& name_in) {
  if (path.empty() || path[0] != '/') {
    return Status::InvalidArgument("import", "the file path must be absolute");
  }
  std::string name = name_in;
  if (name.empty()) {
    std::string base = path.substr(path.rfind('/') + 1);
    if (base.size() > 5 && base.substr(base.size() - 5) == ".gguf") base.resize(base.size() - 5);
    for (char& ch : base) {
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') {
        ch = '-';
      }
    }
    name = base + ":latest";
  }
  GARNET_ASSIGN_OR_RETURN(registry::ModelInfo info,
                          reg_->Import(path, name, registry::ImportMode::kAuto));
  return std::move(info.manifest);
}

Result<PruneResult> RegistryClient::Prune() {
  GARNET_ASSIGN_OR_RETURN(registry::PruneReport report, reg_->Prune(/*partials=*/true));
  PruneResult r;
  r.freed_bytes = report.bytes_freed;
  r.blobs_removed = static_cast<uint32_t>(report.removed_blobs.size());
  r.partials_removed = static_cast<uint32_t>(report.removed_partials.size());
  return r;
}

Result<std::string> RegistryClient::StartMirror(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("mirror address \"" + address + "\"", "is not host:port");
  }
  registry::MirrorOptions mo;
  mo.host = address.substr(0, colon);
  if (mo.host.size() > 2 && mo.host.front() == '[') mo.host = mo.host.substr(1, mo.host.size() - 2);
  try {
    mo.port = std::stoi(address.substr(colon + 1));
  } catch (...) {
    return Status::InvalidArgument("mirror address \"" + address + "\"", "bad port");
  }
  if (mo.port < 0 || mo.port > 65535) {
    return Status::InvalidArgument("mirror address \"" + address + "\"", "bad port");
  }
  GARNET_ASSIGN_OR_RETURN(mirror_, registry::Mirror::Start(reg_.get(), mo));
  return mirror_->base_url();
}

}  // namespace garnet::daemon
