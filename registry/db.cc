#include "registry/db.h"

#include <sqlite3.h>

#include <ctime>

namespace garnet::registry {
namespace {

// SQLite result codes are translated once, here.
Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string ctx = "registry database: " + std::string(what);
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::DataLoss(ctx, detail);
    case SQLITE_FULL:
      return Status::ResourceExhausted(ctx, detail);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Status::Unavailable(ctx, detail);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return Status::PermissionDenied(ctx, detail);
    case SQLITE_CONSTRAINT:
      return Status::FailedPrecondition(ctx, detail);
    default:
      return Status::Internal(ctx, detail);
  }
}

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status status(std::string_view what) const {
    return rc_ == SQLITE_OK ? Status::OK() : SqliteError(db_, rc_, what);
  }
  Stmt& Bind(int i, const std::string& s) {
    if (rc_ == SQLITE_OK)
      rc_ = sqlite3_bind_text(stmt_, i, s.data(), int(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindU(int i, uint64_t v) { return Bind(i, static_cast<int64_t>(v)); }
  // Returns SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() {
    if (rc_ != SQLITE_OK) return rc_;
    int rc = sqlite3_step(stmt_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) rc_ = rc;
    return rc;
  }
  Status Run(std::string_view what) {
    int rc = Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return Status::OK();
    return SqliteError(db_, rc, what);
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  uint64_t UInt(int col) const { return static_cast<uint64_t>(sqlite3_column_int64(stmt_, col)); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// Migration k takes the schema from version k to k+1.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE blobs(
  digest TEXT PRIMARY KEY CHECK (length(digest) = 71),
  size INTEGER NOT NULL CHECK (size >= 0),
  verified_at INTEGER NOT NULL
);
CREATE TABLE manifests(
  name TEXT PRIMARY KEY,
  catalog_id TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  architecture TEXT NOT NULL DEFAULT '',
  model_name TEXT NOT NULL DEFAULT '',
  file_type TEXT NOT NULL DEFAULT '',
  parameters INTEGER NOT NULL DEFAULT 0,
  tensor_count INTEGER NOT NULL DEFAULT 0,
  context_length INTEGER NOT NULL DEFAULT 0,
  n_layer INTEGER NOT NULL DEFAULT 0,
  n_embd INTEGER NOT NULL DEFAULT 0,
  n_expert INTEGER NOT NULL DEFAULT 0,
  n_expert_used INTEGER NOT NULL DEFAULT 0,
  summary_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE manifest_blobs(
  name TEXT NOT NULL REFERENCES manifests(name) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  digest TEXT NOT NULL REFERENCES blobs(digest),
  filename TEXT NOT NULL,
  source TEXT NOT NULL,
  PRIMARY KEY (name, idx)
);
CREATE INDEX manifest_blobs_digest ON manifest_blobs(digest);
CREATE TABLE downloads(
  key TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  size INTEGER NOT NULL,
  expected_digest TEXT NOT NULL DEFAULT '',
  single_stream INTEGER NOT NULL DEFAULT 0,
  updated_at INTEGER NOT NULL
);
CREATE TABLE download_ranges(
  key TEXT NOT NULL REFERENCES downloads(key) ON DELETE CASCADE,
  start INTEGER NOT NULL,
  end INTEGER NOT NULL,
  done INTEGER NOT NULL,
  PRIMARY KEY (key, start)
);
CREATE TABLE pins(
  source TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  digest TEXT NOT NULL
);
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

int64_t Now() {
  return static_cast<int64_t>(std::time(nullptr));
}

// RAII transaction: rolls back unless Commit() succeeded.
class Tx {
 public:
  explicit Tx(sqlite3* db) : db_(db) {
    rc_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
  }
  ~Tx() {
    if (rc_ == SQLITE_OK && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Status begun() const {
    return rc_ == SQLITE_OK ? Status::OK() : SqliteError(db_, rc_, "begin transaction");
  }
  Status Commit() {
    int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "commit");
    done_ = true;
    return Status::OK();
  }

 private:
  sqlite3* db_;
  int rc_;
  bool done_ = false;
};

ManifestRow ReadManifestRow(const Stmt& s) {
  ManifestRow m;
  m.name = s.Text(0);
  m.catalog_id = s.Text(1);
  m.kind = s.Text(2);
  m.created_at = s.Int(3);
  m.summary.architecture = s.Text(4);
  m.summary.name = s.Text(5);
  m.summary.file_type = s.Text(6);
  m.summary.parameters = s.UInt(7);
  m.summary.tensor_count = s.UInt(8);
  m.summary.context_length = static_cast<uint32_t>(s.UInt(9));
  m.summary.n_layer = static_cast<uint32_t>(s.UInt(10));
  m.summary.n_embd = static_cast<uint32_t>(s.UInt(11));
  m.summary.n_expert = static_cast<uint32_t>(s.UInt(12));
  m.summary.n_expert_used = static_cast<uint32_t>(s.UInt(13));
  m.summary.error = s.Text(14);
  return m;
}

constexpr const char* kManifestCols =
    "name, catalog_id, kind, created_at, architecture, model_name, file_type, parameters, "
    "tensor_count, context_length, n_layer, n_embd, n_expert, n_expert_used, summary_error";

}  // namespace

Result<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = SqliteError(raw, rc, "opening " + path);
    sqlite3_close(raw);
    return s;
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_busy_timeout(raw, 10000);
  std::lock_guard<std::mutex> lock(db->mu_);
  GARNET_RETURN_IF_ERROR(db->ExecLocked("PRAGMA journal_mode=WAL").WithContext(path));
  GARNET_RETURN_IF_ERROR(db->ExecLocked("PRAGMA synchronous=NORMAL"));
  GARNET_RETURN_IF_ERROR(db->ExecLocked("PRAGMA foreign_keys=ON"));
  GARNET_RETURN_IF_ERROR(db->Migrate().WithContext(path));
  return db;
}

Db::~Db() {
  sqlite3_close(db_);
}

Status Db::ExecLocked(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    Status s = SqliteError(nullptr, rc, sql);
    return Status(s.code(), "registry database", msg);
  }
  return Status::OK();
}

Status Db::Migrate() {
  Stmt q(db_, "PRAGMA user_version");
  if (q.Step() != SQLITE_ROW) return q.status("reading schema version");
  int version = static_cast<int>(q.Int(0));
  if (version > kSchemaVersion) {
    return Status::FailedPrecondition(
        "registry database", "schema version " + std::to_string(version) +
                                 " is newer than this garnet (" + std::to_string(kSchemaVersion) +
                                 "); upgrade garnet");
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    Tx tx(db_);
    GARNET_RETURN_IF_ERROR(tx.begun());
    GARNET_RETURN_IF_ERROR(ExecLocked(kMigrations[v]));
    std::string set = "PRAGMA user_version=" + std::to_string(v + 1);
    GARNET_RETURN_IF_ERROR(ExecLocked(set.c_str()));
    GARNET_RETURN_IF_ERROR(tx.Commit());
  }
  return Status::OK();
}

Result<int> Db::SchemaVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "PRAGMA user_version");
  if (q.Step() != SQLITE_ROW) return q.status("reading schema version");
  return static_cast<int>(q.Int(0));
}

Status Db::PutBlob(const BlobRow& b) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "INSERT INTO blobs(digest, size, verified_at) VALUES(?1, ?2, ?3) "
         "ON CONFLICT(digest) DO UPDATE SET size=excluded.size, verified_at=excluded.verified_at");
  s.Bind(1, b.digest).BindU(2, b.size).Bind(3, b.verified_at ? b.verified_at : Now());
  return s.Run("writing blob " + b.digest);
}

Result<std::optional<BlobRow>> Db::GetBlob(const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT digest, size, verified_at FROM blobs WHERE digest=?1");
  s.Bind(1, digest);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<BlobRow>();
  if (rc != SQLITE_ROW) return s.status("reading blob " + digest);
  return std::optional<BlobRow>(BlobRow{s.Text(0), s.UInt(1), s.Int(2)});
}

Result<std::vector<BlobRow>> Db::ListBlobs() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT digest, size, verified_at FROM blobs ORDER BY digest");
  std::vector<BlobRow> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(BlobRow{s.Text(0), s.UInt(1), s.Int(2)});
  if (rc != SQLITE_DONE) return s.status("listing blobs");
  return out;
}

Result<std::vector<std::string>> Db::UnreferencedBlobs() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT digest FROM blobs WHERE digest NOT IN (SELECT digest FROM manifest_blobs) "
         "ORDER BY digest");
  std::vector<std::string> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(s.Text(0));
  if (rc != SQLITE_DONE) return s.status("listing unreferenced blobs");
  return out;
}

Status Db::DeleteBlob(const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "DELETE FROM blobs WHERE digest=?1");
  s.Bind(1, digest);
  Status st = s.Run("deleting blob " + digest);
  if (st.code() == Code::kFailedPrecondition) {
    return Status::FailedPrecondition("blob " + digest, "still referenced by a model");
  }
  return st;
}

Status Db::PutManifest(const ManifestRow& m) {
  std::lock_guard<std::mutex> lock(mu_);
  Tx tx(db_);
  GARNET_RETURN_IF_ERROR(tx.begun());
  {
    Stmt del(db_, "DELETE FROM manifests WHERE name=?1");
    del.Bind(1, m.name);
    GARNET_RETURN_IF_ERROR(del.Run("replacing manifest " + m.name));
  }
  {
    std::string sql = std::string("INSERT INTO manifests(") + kManifestCols +
                      ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)";
    Stmt ins(db_, sql.c_str());
    const GgufSummary& g = m.summary;
    ins.Bind(1, m.name)
        .Bind(2, m.catalog_id)
        .Bind(3, m.kind)
        .Bind(4, m.created_at ? m.created_at : Now());
    ins.Bind(5, g.architecture).Bind(6, g.name).Bind(7, g.file_type).BindU(8, g.parameters);
    ins.BindU(9, g.tensor_count).BindU(10, g.context_length).BindU(11, g.n_layer);
    ins.BindU(12, g.n_embd).BindU(13, g.n_expert).BindU(14, g.n_expert_used).Bind(15, g.error);
    GARNET_RETURN_IF_ERROR(ins.Run("writing manifest " + m.name));
  }
  for (size_t i = 0; i < m.files.size(); ++i) {
    const ManifestFile& f = m.files[i];
    Stmt ins(db_,
             "INSERT INTO manifest_blobs(name, idx, digest, filename, source) "
             "VALUES(?1, ?2, ?3, ?4, ?5)");
    ins.Bind(1, m.name).Bind(2, static_cast<int64_t>(i)).Bind(3, f.digest).Bind(4, f.filename);
    ins.Bind(5, f.source);
    Status s = ins.Run("writing manifest " + m.name);
    if (s.code() == Code::kFailedPrecondition) {
      return Status::FailedPrecondition("manifest " + m.name,
                                        "file " + f.digest + " is not a registered blob");
    }
    GARNET_RETURN_IF_ERROR(s);
  }
  return tx.Commit();
}

Result<std::optional<ManifestRow>> Db::GetManifest(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = std::string("SELECT ") + kManifestCols + " FROM manifests WHERE name=?1";
  Stmt s(db_, sql.c_str());
  s.Bind(1, name);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<ManifestRow>();
  if (rc != SQLITE_ROW) return s.status("reading manifest " + name);
  ManifestRow m = ReadManifestRow(s);
  Stmt f(db_,
         "SELECT mb.digest, b.size, mb.filename, mb.source FROM manifest_blobs mb "
         "JOIN blobs b ON b.digest = mb.digest WHERE mb.name=?1 ORDER BY mb.idx");
  f.Bind(1, name);
  while ((rc = f.Step()) == SQLITE_ROW) {
    m.files.push_back(ManifestFile{f.Text(0), f.UInt(1), f.Text(2), f.Text(3)});
  }
  if (rc != SQLITE_DONE) return f.status("reading manifest files of " + name);
  return std::optional<ManifestRow>(std::move(m));
}

Result<std::vector<ManifestRow>> Db::ListManifests() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "SELECT name FROM manifests ORDER BY name");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) names.push_back(s.Text(0));
    if (rc != SQLITE_DONE) return s.status("listing manifests");
  }
  std::vector<ManifestRow> out;
  for (const std::string& n : names) {
    GARNET_ASSIGN_OR_RETURN(std::optional<ManifestRow> m, GetManifest(n));
    if (m) out.push_back(std::move(*m));  // removed concurrently: skip
  }
  return out;
}

Status Db::DeleteManifest(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "DELETE FROM manifests WHERE name=?1");
  s.Bind(1, name);
  GARNET_RETURN_IF_ERROR(s.Run("deleting manifest " + name));
  if (sqlite3_changes(db_) == 0) return Status::NotFound("model " + name, "not in the registry");
  return Status::OK();
}

Result<std::optional<DownloadRow>> Db::GetDownload(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT key, url, size, expected_digest, single_stream, updated_at FROM downloads "
         "WHERE key=?1");
  s.Bind(1, key);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<DownloadRow>();
  if (rc != SQLITE_ROW) return s.status("reading download " + key);
  DownloadRow d{s.Text(0), s.Text(1), s.UInt(2), s.Text(3), s.Int(4) != 0, s.Int(5), {}};
  Stmt r(db_, "SELECT start, end, done FROM download_ranges WHERE key=?1 ORDER BY start");
  r.Bind(1, key);
  while ((rc = r.Step()) == SQLITE_ROW)
    d.ranges.push_back(RangeRow{r.UInt(0), r.UInt(1), r.UInt(2)});
  if (rc != SQLITE_DONE) return r.status("reading download ranges of " + key);
  return std::optional<DownloadRow>(std::move(d));
}

Result<std::vector<DownloadRow>> Db::ListDownloads() {
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "SELECT key FROM downloads ORDER BY key");
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) keys.push_back(s.Text(0));
    if (rc != SQLITE_DONE) return s.status("listing downloads");
  }
  std::vector<DownloadRow> out;
  for (const std::string& k : keys) {
    GARNET_ASSIGN_OR_RETURN(std::optional<DownloadRow> d, GetDownload(k));
    if (d) out.push_back(std::move(*d));
  }
  return out;
}

Status Db::PutDownload(const DownloadRow& d) {
  std::lock_guard<std::mutex> lock(mu_);
  Tx tx(db_);
  GARNET_RETURN_IF_ERROR(tx.begun());
  Stmt del(db_, "DELETE FROM downloads WHERE key=?1");
  del.Bind(1, d.key);
  GARNET_RETURN_IF_ERROR(del.Run("replacing download " + d.key));
  Stmt ins(db_,
           "INSERT INTO downloads(key, url, size, expected_digest, single_stream, updated_at) "
           "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
  ins.Bind(1, d.key).Bind(2, d.url).BindU(3, d.size).Bind(4, d.expected_digest);
  ins.Bind(5, int64_t{d.single_stream}).Bind(6, Now());
  GARNET_RETURN_IF_ERROR(ins.Run("writing download " + d.key));
  for (const RangeRow& r : d.ranges) {
    Stmt ri(db_, "INSERT INTO download_ranges(key, start, end, done) VALUES(?1, ?2, ?3, ?4)");
    ri.Bind(1, d.key).BindU(2, r.start).BindU(3, r.end).BindU(4, r.done);
    GARNET_RETURN_IF_ERROR(ri.Run("writing download range of " + d.key));
  }
  return tx.Commit();
}

Status Db::UpdateRanges(const std::string& key, const std::vector<RangeRow>& ranges) {
  std::lock_guard<std::mutex> lock(mu_);
  Tx tx(db_);
  GARNET_RETURN_IF_ERROR(tx.begun());
  for (const RangeRow& r : ranges) {
    Stmt u(db_, "UPDATE download_ranges SET done=?3 WHERE key=?1 AND start=?2");
    u.Bind(1, key).BindU(2, r.start).BindU(3, r.done);
    GARNET_RETURN_IF_ERROR(u.Run("updating download progress of " + key));
  }
  Stmt t(db_, "UPDATE downloads SET updated_at=?2 WHERE key=?1");
  t.Bind(1, key).Bind(2, Now());
  GARNET_RETURN_IF_ERROR(t.Run("updating download " + key));
  return tx.Commit();
}

Status Db::DeleteDownload(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "DELETE FROM downloads WHERE key=?1");
  s.Bind(1, key);
  return s.Run("deleting download " + key);
}

Status Db::FinishDownload(const std::string& key, const BlobRow& b) {
  std::lock_guard<std::mutex> lock(mu_);
  Tx tx(db_);
  GARNET_RETURN_IF_ERROR(tx.begun());
  Stmt ins(
      db_,
      "INSERT INTO blobs(digest, size, verified_at) VALUES(?1, ?2, ?3) "
      "ON CONFLICT(digest) DO UPDATE SET size=excluded.size, verified_at=excluded.verified_at");
  ins.Bind(1, b.digest).BindU(2, b.size).Bind(3, b.verified_at ? b.verified_at : Now());
  GARNET_RETURN_IF_ERROR(ins.Run("writing blob " + b.digest));
  Stmt del(db_, "DELETE FROM downloads WHERE key=?1");
  del.Bind(1, key);
  GARNET_RETURN_IF_ERROR(del.Run("deleting download " + key));
  return tx.Commit();
}

Status Db::PutPin(const std::string& source, uint64_t size, const std::string& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "INSERT INTO pins(source, size, digest) VALUES(?1, ?2, ?3) "
         "ON CONFLICT(source) DO UPDATE SET size=excluded.size, digest=excluded.digest");
  s.Bind(1, source).BindU(2, size).Bind(3, digest);
  return s.Run("writing pin for " + source);
}

Result<std::optional<std::pair<uint64_t, std::string>>> Db::GetPin(const std::string& source) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT size, digest FROM pins WHERE source=?1");
  s.Bind(1, source);
  int rc = s.Step();
  using Pin = std::optional<std::pair<uint64_t, std::string>>;
  if (rc == SQLITE_DONE) return Pin();
  if (rc != SQLITE_ROW) return s.status("reading pin for " + source);
  return Pin(std::make_pair(s.UInt(0), s.Text(1)));
}

}  // namespace garnet::registry
