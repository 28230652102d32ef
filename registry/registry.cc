#include "registry/registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <map>
#include <vector>

#include "registry/hf.h"
#include "registry/reference.h"
#include "registry/sha256.h"
#include "registry/summary.h"

namespace garnet::registry {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

int64_t Now() {
  return static_cast<int64_t>(std::time(nullptr));
}

std::string UpperAscii(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  ::closedir(d);
  return out;
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// "dir/name-00001-of-00003.gguf" -> all three part paths; otherwise just `path`.
std::vector<std::string> SplitSiblings(const std::string& path) {
  constexpr std::string_view kExt = ".gguf";
  if (path.size() < kExt.size() + 15 || !std::string_view(path).ends_with(kExt)) return {path};
  std::string stem = path.substr(0, path.size() - kExt.size());
  std::string tail = stem.substr(stem.size() - 15);  // "-00001-of-00003"
  if (tail[0] != '-' || tail.substr(6, 4) != "-of-" || tail.substr(1, 5) != "00001") return {path};
  int count = std::atoi(tail.substr(10, 5).c_str());
  if (count < 1 || count > 9999) return {path};
  std::vector<std::string> out;
  std::string prefix = stem.substr(0, stem.size() - 15);
  for (int i = 1; i <= count; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "-%05d-of-%05d", i, count);
    out.push_back(prefix + buf + std::string(kExt));
  }
  return out;
}

// Copies `src` to `dst` (created, must not exist) while hashing; returns the hex digest.
Result<std::string> CopyAndHash(const std::string& src, const std::string& dst, uint64_t* size) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return PosixError("reading " + src, errno);
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    Status s = PosixError("creating " + dst, errno);
    ::close(in);
    return s;
  }
  std::vector<char> buf(1 << 20);
  Sha256 h;
  uint64_t total = 0;
  Status status;
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = PosixError("reading " + src, errno);
      break;
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
    for (ssize_t off = 0; off < n;) {
      ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        status = (errno == ENOSPC || errno == EDQUOT)
                     ? Status::ResourceExhausted("importing " + src, "disk full writing " + dst)
                     : PosixError("writing " + dst, errno);
        break;
      }
      off += w;
    }
    if (!status.ok()) break;
    total += static_cast<uint64_t>(n);
  }
  ::close(in);
  ::close(out);
  if (!status.ok()) {
    ::unlink(dst.c_str());
    return status;
  }
  *size = total;
  return h.FinishHex();
}

}  // namespace

Registry::Registry(RegistryOptions options, Store store, std::unique_ptr<Db> db, Catalog catalog,
                   std::string base_url)
    : options_(std::move(options)),
      store_(std::move(store)),
      db_(std::move(db)),
      catalog_(std::move(catalog)),
      base_url_(std::move(base_url)) {
  downloader_ = std::make_unique<Downloader>(store_, db_.get(), options_.download);
}

Registry::~Registry() {
  downloader_.reset();
}

Result<std::unique_ptr<Registry>> Registry::Open(RegistryOptions options) {
  const bool env = options.use_environment;
  std::string dir = options.data_dir;
  if (dir.empty()) {
    if (!env) return Status::InvalidArgument("registry", "no data dir given");
    GARNET_ASSIGN_OR_RETURN(dir, DefaultDataDir());
  }
  std::string base = options.base_url;
  if (base.empty() && env) base = Env("GARNET_MIRROR");
  if (base.empty() && env) base = Env("HF_ENDPOINT");
  if (base.empty()) base = kDefaultBaseUrl;
  if (!(base.starts_with("http://") || base.starts_with("https://"))) {
    return Status::InvalidArgument("base URL \"" + base + "\"", "must start with http(s)://");
  }
  while (base.size() > 8 && base.back() == '/') base.pop_back();
  if (options.token.empty() && env) options.token = Env("HF_TOKEN");
  if (options.download.http.token.empty()) options.download.http.token = options.token;
  std::string user_catalog = options.user_catalog;
  if (user_catalog.empty() && env) {
    user_catalog = Env("GARNET_CATALOG");
    if (user_catalog.empty()) {
      std::string cfg = Env("XDG_CONFIG_HOME");
      if (cfg.empty() && !Env("HOME").empty()) cfg = Env("HOME") + "/.config";
      std::string candidate = cfg.empty() ? "" : cfg + "/garnet/catalog.json";
      struct stat st;
      if (!candidate.empty() && ::stat(candidate.c_str(), &st) == 0) user_catalog = candidate;
    }
  }
  GARNET_ASSIGN_OR_RETURN(Catalog catalog, Catalog::Load(user_catalog));
  GARNET_ASSIGN_OR_RETURN(Store store, Store::Open(dir));
  GARNET_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(store.DbPath()));
  return std::unique_ptr<Registry>(new Registry(std::move(options), std::move(store), std::move(db),
                                                std::move(catalog), std::move(base)));
}

Result<std::string> Registry::ManifestName(std::string_view text) {
  GARNET_ASSIGN_OR_RETURN(Reference ref, ParseReference(text));
  switch (ref.kind) {
    case Reference::Kind::kLocalPath:
      return Status::InvalidArgument("\"" + ref.path + "\"", "a local path is not a model name");
    case Reference::Kind::kCatalog: {
      auto entry = catalog_.Resolve(ref);
      if (entry.ok()) return (*entry)->id;
      // Not a catalog id: an imported model's own name.
      GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> m, db_->GetManifest(ref.ToString()));
      if (m) return m->name;
      return entry.status();
    }
    case Reference::Kind::kHuggingFace: {
      std::string prefix = "hf.co/" + ref.name;
      if (!ref.tag.empty()) return prefix + ":" + UpperAscii(ref.tag);
      GARNET_ASSIGN_OR_RETURN(std::vector<ManifestRow> all, db_->ListManifests());
      std::vector<std::string> matches;
      for (const ManifestRow& m : all) {
        if (m.name == prefix || m.name.starts_with(prefix + ":")) matches.push_back(m.name);
      }
      if (matches.size() == 1) return matches[0];
      return prefix + ":Q4_K_M";
    }
  }
  return Status::Internal("reference", "unhandled kind");
}

Result<ModelInfo> Registry::ToInfo(ManifestRow row) {
  ModelInfo info;
  for (const ManifestFile& f : row.files) {
    GARNET_ASSIGN_OR_RETURN(std::string p, store_.BlobPath(f.digest));
    info.paths.push_back(std::move(p));
  }
  if (!row.catalog_id.empty()) {
    if (const CatalogEntry* e = catalog_.FindId(row.catalog_id)) info.catalog = *e;
  }
  info.manifest = std::move(row);
  return info;
}

Result<PullResult> Registry::Pull(std::string_view text, const ProgressFn& progress,
                                  const std::atomic<bool>* cancel) {
  GARNET_ASSIGN_OR_RETURN(Reference ref, ParseReference(text));
  std::string name, catalog_id, kind;
  std::vector<SourceFile> files;
  switch (ref.kind) {
    case Reference::Kind::kLocalPath:
      return Status::InvalidArgument("pull \"" + ref.path + "\"",
                                     "a local path: use import to register a local GGUF");
    case Reference::Kind::kCatalog: {
      GARNET_ASSIGN_OR_RETURN(const CatalogEntry* e, catalog_.Resolve(ref));
      name = e->id;
      catalog_id = e->id;
      kind = "catalog";
      files = e->files;
      break;
    }
    case Reference::Kind::kHuggingFace: {
      if (progress) progress(Progress{Phase::kResolving, "", ref.ToString(), 0, 1, 0, 0, 0});
      GARNET_ASSIGN_OR_RETURN(
          std::string listing,
          downloader_->GetSmall(HfTreeUrl(base_url_, ref, "main"), 32u << 20, cancel));
      GARNET_ASSIGN_OR_RETURN(HfSelection sel, SelectHfFiles(listing, ref, "main"));
      name = "hf.co/" + ref.name + (sel.quant.empty() ? "" : ":" + UpperAscii(sel.quant));
      kind = "hf";
      files = std::move(sel.files);
      break;
    }
  }
  const std::string what = "pull " + name;

  // Already registered with every blob present: nothing to do, no network needed.
  GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> existing, db_->GetManifest(name));
  if (existing && existing->files.size() == files.size()) {
    bool complete = true;
    for (size_t i = 0; i < files.size(); ++i) {
      const ManifestFile& f = existing->files[i];
      GARNET_ASSIGN_OR_RETURN(std::string p, store_.BlobPath(f.digest));
      auto size = FileSize(p);
      if (!size.ok() || *size != f.size) complete = false;
      // A catalog pin that moved since the model was pulled: pull the new file.
      if (!files[i].sha256.empty() && f.digest != "sha256-" + files[i].sha256) complete = false;
    }
    if (complete) {
      PullResult r;
      GARNET_ASSIGN_OR_RETURN(r.model, ToInfo(std::move(*existing)));
      r.already_present = true;
      if (progress) {
        uint64_t total = r.model.manifest.total_size();
        progress(Progress{Phase::kDone, "", name, 0, 1, total, total, 0});
      }
      return r;
    }
  }

  PullResult result;
  result.already_present = true;
  ManifestRow row;
  row.name = name;
  row.catalog_id = catalog_id;
  row.kind = kind;
  row.created_at = Now();
  const uint32_t n = static_cast<uint32_t>(files.size());
  for (uint32_t i = 0; i < n; ++i) {
    const SourceFile& f = files[i];
    const std::string source = f.url.empty() ? f.ResolvePath() : f.url;
    FetchRequest req;
    req.url = f.Url(base_url_);
    req.display_name = f.FileName();
    req.expected_size = f.size;
    req.expected_sha256 = f.sha256;
    bool learned = false;
    if (f.sha256.empty()) {
      GARNET_ASSIGN_OR_RETURN(auto pin, db_->GetPin(source));
      if (pin && (!f.size || *f.size == pin->first)) {
        req.expected_size = pin->first;
        req.expected_sha256 = pin->second.substr(7);
        learned = true;
      }
    }
    ProgressFn fn;
    if (progress) {
      fn = [&progress, i, n](const Progress& p) {
        Progress q = p;
        q.file_index = i;
        q.file_count = n;
        progress(q);
      };
    }
    Result<FetchResult> r = downloader_->Fetch(req, fn, cancel);
    if (!r.ok()) {
      std::string where = what + (n > 1 ? " (file " + std::to_string(i + 1) + " of " +
                                              std::to_string(n) + ", " + f.FileName() + ")"
                                        : "");
      if (learned && r.status().code() == Code::kFailedPrecondition) {
        where += " [size/sha256 pinned from the first pull of " + source + "]";
      }
      return r.status().WithContext(where);
    }
    if (f.sha256.empty() && !learned) {
      GARNET_RETURN_IF_ERROR(db_->PutPin(source, r->size, r->digest));
    }
    if (!r->already_present) result.already_present = false;
    result.bytes_transferred += r->bytes_transferred;
    result.timings.push_back(r->timings);
    row.files.push_back(ManifestFile{r->digest, r->size, f.FileName(), source});
  }
  std::vector<std::string> paths;
  for (const ManifestFile& mf : row.files) paths.push_back(*store_.BlobPath(mf.digest));
  row.summary = SummarizeGguf(paths);
  GARNET_RETURN_IF_ERROR(db_->PutManifest(row).WithContext(what));
  GARNET_ASSIGN_OR_RETURN(result.model, ToInfo(std::move(row)));
  return result;
}

Result<std::vector<ModelInfo>> Registry::List() {
  GARNET_ASSIGN_OR_RETURN(std::vector<ManifestRow> rows, db_->ListManifests());
  std::vector<ModelInfo> out;
  for (ManifestRow& r : rows) {
    GARNET_ASSIGN_OR_RETURN(ModelInfo info, ToInfo(std::move(r)));
    out.push_back(std::move(info));
  }
  return out;
}

Result<ModelInfo> Registry::Show(std::string_view ref) {
  GARNET_ASSIGN_OR_RETURN(std::string name, ManifestName(ref));
  GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> row, db_->GetManifest(name));
  if (!row) {
    return Status::NotFound("model " + name, "not pulled (run: garnet pull " + name + ")");
  }
  GARNET_ASSIGN_OR_RETURN(ModelInfo info, ToInfo(std::move(*row)));
  info.manifest.summary = SummarizeGguf(info.paths);
  return info;
}

Status Registry::DeleteUnreferencedBlob(const std::string& digest, PruneReport* report) {
  GARNET_ASSIGN_OR_RETURN(std::optional<BlobRow> row, db_->GetBlob(digest));
  Status s = db_->DeleteBlob(digest);
  if (s.code() == Code::kFailedPrecondition) return Status::OK();  // referenced again
  GARNET_RETURN_IF_ERROR(s);
  GARNET_ASSIGN_OR_RETURN(std::string path, store_.BlobPath(digest));
  uint64_t bytes = AllocatedBytes(path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return PosixError("removing " + path, errno);
  if (report != nullptr) {
    report->removed_blobs.push_back(digest);
    report->bytes_freed += bytes;
  }
  (void)row;
  return Status::OK();
}

Status Registry::Remove(std::string_view ref) {
  GARNET_ASSIGN_OR_RETURN(std::string name, ManifestName(ref));
  GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> row, db_->GetManifest(name));
  if (!row) return Status::NotFound("model " + name, "not in the registry");
  GARNET_RETURN_IF_ERROR(db_->DeleteManifest(name));
  GARNET_ASSIGN_OR_RETURN(std::vector<std::string> unref, db_->UnreferencedBlobs());
  std::set<std::string> mine;
  for (const ManifestFile& f : row->files) mine.insert(f.digest);
  for (const std::string& d : unref) {
    if (mine.count(d)) GARNET_RETURN_IF_ERROR(DeleteUnreferencedBlob(d, nullptr));
  }
  return Status::OK();
}

Result<PruneReport> Registry::Prune(bool partials) {
  PruneReport report;
  const int64_t now = Now();
  const int64_t grace = options_.orphan_grace.count();
  // Unreferenced blob rows (older than the grace period: a pull may be about to use them).
  GARNET_ASSIGN_OR_RETURN(std::vector<std::string> unref, db_->UnreferencedBlobs());
  for (const std::string& d : unref) {
    GARNET_ASSIGN_OR_RETURN(std::optional<BlobRow> row, db_->GetBlob(d));
    if (row && now - row->verified_at < grace) continue;
    GARNET_RETURN_IF_ERROR(DeleteUnreferencedBlob(d, &report));
  }
  // Orphan files in blobs/ with no row.
  for (const std::string& name : ListDir(store_.BlobsDir())) {
    if (!IsValidDigest(name)) continue;
    GARNET_ASSIGN_OR_RETURN(std::optional<BlobRow> row, db_->GetBlob(name));
    if (row) continue;
    std::string path = store_.BlobsDir() + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || now - st.st_ctime < grace) continue;
    uint64_t bytes = AllocatedBytes(path);
    if (::unlink(path.c_str()) == 0) {
      report.removed_blobs.push_back(name);
      report.bytes_freed += bytes;
    }
  }
  if (partials) {
    for (const std::string& file : ListDir(store_.PartialsDir())) {
      if (!std::string_view(file).ends_with(".partial")) continue;
      std::string key = file.substr(0, file.size() - 8);
      if (!IsValidDownloadKey(key)) continue;
      std::string path = store_.PartialsDir() + "/" + file;
      int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {  // not in progress anywhere
        uint64_t bytes = AllocatedBytes(path);
        if (::unlink(path.c_str()) == 0) {
          report.removed_partials.push_back(key);
          report.bytes_freed += bytes;
        }
        Status s = db_->DeleteDownload(key);
        (void)s;
      }
      ::close(fd);
    }
    // Progress rows whose partial file is gone.
    GARNET_ASSIGN_OR_RETURN(std::vector<DownloadRow> rows, db_->ListDownloads());
    for (const DownloadRow& d : rows) {
      GARNET_ASSIGN_OR_RETURN(std::string p, store_.PartialPath(d.key));
      struct stat st;
      if (::stat(p.c_str(), &st) != 0) GARNET_RETURN_IF_ERROR(db_->DeleteDownload(d.key));
    }
  }
  return report;
}

Result<VerifyReport> Registry::Verify(const std::atomic<bool>* cancel) {
  VerifyReport report;
  GARNET_ASSIGN_OR_RETURN(std::vector<ManifestRow> manifests, db_->ListManifests());
  std::map<std::string, std::vector<std::string>> users;
  for (const ManifestRow& m : manifests) {
    for (const ManifestFile& f : m.files) users[f.digest].push_back(m.name);
  }
  GARNET_ASSIGN_OR_RETURN(std::vector<BlobRow> blobs, db_->ListBlobs());
  for (const BlobRow& b : blobs) {
    VerifyItem item;
    item.digest = b.digest;
    item.size = b.size;
    item.models = users[b.digest];
    GARNET_ASSIGN_OR_RETURN(std::string path, store_.BlobPath(b.digest));
    uint64_t size = 0;
    Result<std::string> hex = Sha256File(path, cancel, &size);
    if (!hex.ok()) {
      if (hex.status().IsCancelled()) return hex.status();
      item.problem = hex.status().IsNotFound() ? "missing" : hex.status().ToString();
    } else if (size != b.size) {
      item.problem = "size " + std::to_string(size) + " != " + std::to_string(b.size);
    } else if ("sha256-" + *hex != b.digest) {
      item.problem = "sha256 mismatch: content hashes to sha256-" + *hex;
    } else {
      item.ok = true;
      GARNET_RETURN_IF_ERROR(db_->PutBlob(BlobRow{b.digest, b.size, Now()}));
    }
    if (!item.ok) report.corrupt++;
    report.blobs.push_back(std::move(item));
  }
  return report;
}

Result<ModelInfo> Registry::Import(const std::string& path, std::string_view name_text,
                                   ImportMode mode) {
  GARNET_ASSIGN_OR_RETURN(Reference ref, ParseReference(name_text));
  if (ref.kind != Reference::Kind::kCatalog) {
    return Status::InvalidArgument("import name \"" + std::string(name_text) + "\"",
                                   "expected name[:tag]");
  }
  if (catalog_.Resolve(ref).ok()) {
    return Status::InvalidArgument("import name \"" + ref.ToString() + "\"",
                                   "is a catalog model; choose another name");
  }
  const std::string name = ref.ToString();
  const std::string what = "import " + path;
  std::vector<std::string> parts = SplitSiblings(path);
  uint64_t total = 0;
  for (const std::string& p : parts) {
    GARNET_ASSIGN_OR_RETURN(uint64_t size, FileSize(p));
    total += size;
  }
  GgufSummary check = SummarizeGguf(parts);
  if (!check.error.empty()) {
    return Status::InvalidArgument(what, "not a readable GGUF: " + check.error);
  }
  ManifestRow row;
  row.name = name;
  row.kind = "import";
  row.created_at = Now();
  for (const std::string& p : parts) {
    char absbuf[PATH_MAX];
    std::string abs = ::realpath(p.c_str(), absbuf) != nullptr ? absbuf : p;
    std::string key = UrlKey("import:" + abs + ":" + std::to_string(::getpid()) + ":" +
                             std::to_string(Now()) + ":" + std::to_string(import_counter_++));
    GARNET_ASSIGN_OR_RETURN(std::string partial, store_.PartialPath(key));
    bool linked = false;
    if (mode != ImportMode::kCopy) {
      if (::link(p.c_str(), partial.c_str()) == 0) {
        linked = true;
      } else if (mode == ImportMode::kHardLink) {
        return PosixError(what + ": hard link into " + store_.root(), errno);
      }
    }
    std::string hex;
    uint64_t size = 0;
    if (linked) {
      GARNET_ASSIGN_OR_RETURN(hex, Sha256File(partial, nullptr, &size));
    } else {
      GARNET_ASSIGN_OR_RETURN(uint64_t free_bytes, store_.FreeBytes());
      GARNET_ASSIGN_OR_RETURN(uint64_t need, FileSize(p));
      if (free_bytes < need + options_.download.disk_reserve_bytes) {
        return Status::ResourceExhausted(
            what, "not enough disk space to copy " + std::to_string(need) + " bytes");
      }
      GARNET_ASSIGN_OR_RETURN(hex, CopyAndHash(p, partial, &size));
    }
    const std::string digest = "sha256-" + hex;
    Status s = store_.Publish(partial, digest, /*make_readonly=*/!linked);
    if (!s.ok()) {
      ::unlink(partial.c_str());
      return s.WithContext(what);
    }
    GARNET_RETURN_IF_ERROR(db_->PutBlob(BlobRow{digest, size, Now()}));
    std::string fname =
        p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
    row.files.push_back(ManifestFile{digest, size, fname, "import:" + abs});
  }
  (void)total;
  std::vector<std::string> paths;
  for (const ManifestFile& f : row.files) paths.push_back(*store_.BlobPath(f.digest));
  row.summary = SummarizeGguf(paths);
  GARNET_RETURN_IF_ERROR(db_->PutManifest(row).WithContext(what));
  return ToInfo(std::move(row));
}

Result<DiskUsage> Registry::GetDiskUsage() {
  DiskUsage u;
  u.data_dir = store_.root();
  GARNET_ASSIGN_OR_RETURN(std::vector<BlobRow> blobs, db_->ListBlobs());
  for (const BlobRow& b : blobs) {
    u.blob_bytes += b.size;
    u.blob_count++;
  }
  for (const std::string& f : ListDir(store_.PartialsDir())) {
    u.partial_bytes += AllocatedBytes(store_.PartialsDir() + "/" + f);
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    u.database_bytes += AllocatedBytes(store_.DbPath() + suffix);
  }
  GARNET_ASSIGN_OR_RETURN(u.free_bytes, store_.FreeBytes());
  GARNET_ASSIGN_OR_RETURN(std::vector<ManifestRow> rows, db_->ListManifests());
  u.model_count = rows.size();
  return u;
}

}  // namespace garnet::registry
