#include "registry/catalog.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace garnet::registry {
namespace {

using nlohmann::json;

// Validates a repo-relative file path: '/'-separated components, each a valid component.
Status ValidateRepoPath(std::string_view path) {
  if (path.empty()) return Status::InvalidArgument("path", "must not be empty");
  if (path.size() > 1024) return Status::InvalidArgument("path", "longer than 1024 characters");
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    GARNET_RETURN_IF_ERROR(ValidateComponent("path component", comp, /*allow_upper=*/true));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::OK();
}

Status ValidateRepo(std::string_view repo) {
  size_t slash = repo.find('/');
  if (slash == std::string_view::npos || repo.find('/', slash + 1) != std::string_view::npos) {
    return Status::InvalidArgument("repo \"" + std::string(repo.substr(0, 200)) + "\"",
                                   "expected <org>/<name>");
  }
  GARNET_RETURN_IF_ERROR(ValidateComponent("repo org", repo.substr(0, slash), true));
  return ValidateComponent("repo name", repo.substr(slash + 1), true);
}

Status ValidateUrl(std::string_view url) {
  if (!(url.starts_with("https://") || url.starts_with("http://"))) {
    return Status::InvalidArgument("url", "must start with http:// or https://");
  }
  if (url.size() > 2048) return Status::InvalidArgument("url", "longer than 2048 characters");
  for (unsigned char c : url) {
    if (c <= 0x20 || c >= 0x7f) {
      return Status::InvalidArgument("url", "contains a space, control or non-ASCII character");
    }
  }
  return Status::OK();
}

// Typed field readers: each returns InvalidArgument naming the field on a type mismatch.
Status GetString(const json& obj, const char* key, bool required, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return required ? Status::InvalidArgument(key, "missing") : Status::OK();
  }
  if (!it->is_string()) return Status::InvalidArgument(key, "must be a string");
  *out = it->get<std::string>();
  return Status::OK();
}

Status GetU64(const json& obj, const char* key, bool required, std::optional<uint64_t>* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return required ? Status::InvalidArgument(key, "missing") : Status::OK();
  }
  if (!it->is_number_unsigned()) {
    return Status::InvalidArgument(key, "must be a non-negative integer");
  }
  *out = it->get<uint64_t>();
  return Status::OK();
}

Status ParseFile(const json& f, SourceFile* out) {
  if (!f.is_object()) return Status::InvalidArgument("file", "must be an object");
  GARNET_RETURN_IF_ERROR(GetString(f, "url", false, &out->url));
  if (!out->url.empty()) {
    GARNET_RETURN_IF_ERROR(ValidateUrl(out->url));
  } else {
    GARNET_RETURN_IF_ERROR(GetString(f, "repo", true, &out->repo));
    GARNET_RETURN_IF_ERROR(ValidateRepo(out->repo));
    GARNET_RETURN_IF_ERROR(GetString(f, "revision", false, &out->revision));
    GARNET_RETURN_IF_ERROR(ValidateComponent("revision", out->revision, true));
    GARNET_RETURN_IF_ERROR(GetString(f, "path", true, &out->path));
    GARNET_RETURN_IF_ERROR(ValidateRepoPath(out->path));
  }
  GARNET_RETURN_IF_ERROR(GetU64(f, "size", false, &out->size));
  if (out->size && *out->size == 0) return Status::InvalidArgument("size", "must be > 0");
  GARNET_RETURN_IF_ERROR(GetString(f, "sha256", false, &out->sha256));
  if (!out->sha256.empty() && !IsLowerHex64(out->sha256)) {
    return Status::InvalidArgument("sha256", "must be 64 lower-case hex characters");
  }
  return Status::OK();
}

Status ParseEntry(const json& m, CatalogEntry* e) {
  if (!m.is_object()) return Status::InvalidArgument("entry", "must be an object");
  GARNET_RETURN_IF_ERROR(GetString(m, "id", true, &e->id));
  GARNET_ASSIGN_OR_RETURN(Reference id, ParseReference(e->id));
  if (id.kind != Reference::Kind::kCatalog || id.tag.empty() || id.ToString() != e->id) {
    return Status::InvalidArgument("id \"" + e->id + "\"", "must be a lower-case <family>:<tag>");
  }
  GARNET_RETURN_IF_ERROR(GetString(m, "family", true, &e->family));
  if (e->family != id.name) {
    return Status::InvalidArgument("family \"" + e->family + "\"", "must match the id's name");
  }
  if (auto it = m.find("aliases"); it != m.end()) {
    if (!it->is_array()) return Status::InvalidArgument("aliases", "must be an array");
    for (const json& a : *it) {
      if (!a.is_string()) return Status::InvalidArgument("aliases", "must hold strings");
      std::string alias = a.get<std::string>();
      GARNET_ASSIGN_OR_RETURN(Reference r, ParseReference(alias));
      if (r.kind != Reference::Kind::kCatalog || r.tag.empty() || r.ToString() != alias ||
          r.name != e->family) {
        return Status::InvalidArgument("alias \"" + alias + "\"",
                                       "must be a lower-case <family>:<tag> of the same family");
      }
      e->aliases.push_back(std::move(alias));
    }
  }
  GARNET_RETURN_IF_ERROR(GetString(m, "variant", true, &e->variant));
  GARNET_RETURN_IF_ERROR(ValidateComponent("variant", e->variant, false));
  if (auto it = m.find("moe"); it != m.end()) {
    if (!it->is_boolean()) return Status::InvalidArgument("moe", "must be true or false");
    e->moe = it->get<bool>();
  }
  std::optional<uint64_t> v;
  GARNET_RETURN_IF_ERROR(GetU64(m, "total_params", true, &v));
  e->total_params = *v;
  v.reset();
  GARNET_RETURN_IF_ERROR(GetU64(m, "active_params", false, &v));
  e->active_params = v.value_or(e->total_params);
  if (e->active_params > e->total_params) {
    return Status::InvalidArgument("active_params", "exceeds total_params");
  }
  GARNET_RETURN_IF_ERROR(GetString(m, "quant", true, &e->quant));
  GARNET_RETURN_IF_ERROR(ValidateComponent("quant", e->quant, true));
  auto files = m.find("files");
  if (files == m.end() || !files->is_array() || files->empty()) {
    return Status::InvalidArgument("files", "must be a non-empty array");
  }
  for (size_t i = 0; i < files->size(); ++i) {
    SourceFile f;
    Status s = ParseFile((*files)[i], &f);
    if (!s.ok()) return s.WithContext("files[" + std::to_string(i) + "]");
    e->files.push_back(std::move(f));
  }
  v.reset();
  GARNET_RETURN_IF_ERROR(GetU64(m, "max_context", true, &v));
  if (*v == 0 || *v > (1u << 24)) return Status::InvalidArgument("max_context", "out of range");
  e->max_context = static_cast<uint32_t>(*v);
  v.reset();
  GARNET_RETURN_IF_ERROR(GetU64(m, "default_context", true, &v));
  if (*v == 0 || *v > e->max_context) {
    return Status::InvalidArgument("default_context", "must be in 1..max_context");
  }
  e->default_context = static_cast<uint32_t>(*v);
  GARNET_RETURN_IF_ERROR(GetString(m, "license", false, &e->license));
  GARNET_RETURN_IF_ERROR(GetString(m, "note", false, &e->note));
  return Status::OK();
}

}  // namespace

std::string SourceFile::ResolvePath() const {
  if (!url.empty()) return {};
  return repo + "/resolve/" + revision + "/" + path;
}

std::string SourceFile::Url(std::string_view base_url) const {
  if (!url.empty()) return url;
  std::string base(base_url);
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/" + ResolvePath();
}

std::string SourceFile::FileName() const {
  std::string_view p = url.empty() ? std::string_view(path) : std::string_view(url);
  if (size_t q = p.find_first_of("?#"); q != std::string_view::npos) p = p.substr(0, q);
  size_t slash = p.rfind('/');
  return std::string(slash == std::string_view::npos ? p : p.substr(slash + 1));
}

Result<Catalog> Catalog::Parse(std::string_view text, std::string_view origin) {
  const std::string ctx(origin);
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::InvalidArgument(ctx, "not valid JSON");
  if (!doc.is_object()) return Status::InvalidArgument(ctx, "top level must be an object");
  Catalog cat;
  try {
    if (auto it = doc.find("version"); it != doc.end() && (!it->is_number_unsigned() || *it != 1)) {
      return Status::InvalidArgument(ctx, "unsupported \"version\" (expected 1)");
    }
    auto models = doc.find("models");
    if (models == doc.end() || !models->is_array()) {
      return Status::InvalidArgument(ctx, "\"models\" must be an array");
    }
    for (size_t i = 0; i < models->size(); ++i) {
      CatalogEntry e;
      Status s = ParseEntry((*models)[i], &e);
      if (!s.ok()) {
        std::string where = "models[" + std::to_string(i) + "]";
        if (!e.id.empty()) where += " (" + e.id + ")";
        return s.WithContext(ctx + ": " + where);
      }
      cat.entries_.push_back(std::move(e));
    }
    if (auto it = doc.find("defaults"); it != doc.end()) {
      if (!it->is_object()) return Status::InvalidArgument(ctx, "\"defaults\" must be an object");
      for (const auto& [family, id] : it->items()) {
        if (!id.is_string()) {
          return Status::InvalidArgument(ctx, "defaults." + family + " must be a string");
        }
        Status s = ValidateComponent("default family", family, false);
        if (!s.ok()) return s.WithContext(ctx);
        cat.defaults_[family] = id.get<std::string>();
      }
    }
  } catch (const std::exception& ex) {
    return Status::InvalidArgument(ctx, ex.what());
  }
  Status s = cat.Index();
  if (!s.ok()) return s.WithContext(ctx);
  return cat;
}

Status Catalog::Index() {
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < entries_.size(); ++i) {
    std::vector<std::string> names = entries_[i].aliases;
    names.insert(names.begin(), entries_[i].id);
    for (const std::string& n : names) {
      auto [it, inserted] = by_name.emplace(n, i);
      if (!inserted) {
        return Status::InvalidArgument(
            "\"" + n + "\"", "used by both " + entries_[it->second].id + " and " + entries_[i].id);
      }
    }
  }
  for (const auto& [family, id] : defaults_) {
    auto it = by_name.find(id);
    if (it == by_name.end() || entries_[it->second].family != family) {
      return Status::InvalidArgument("defaults." + family,
                                     "\"" + id + "\" is not an entry of that family");
    }
  }
  by_name_ = std::move(by_name);
  return Status::OK();
}

Result<Catalog> Catalog::Builtin() {
  return Parse(BuiltinCatalogJson(), "builtin catalog");
}

Result<Catalog> Catalog::Load(const std::string& user_path) {
  GARNET_ASSIGN_OR_RETURN(Catalog cat, Builtin());
  if (user_path.empty()) return cat;
  std::ifstream in(user_path, std::ios::binary);
  if (!in) return PosixError("user catalog " + user_path, errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (16u << 20)) {
    return Status::InvalidArgument("user catalog " + user_path, "larger than 16 MiB");
  }
  GARNET_ASSIGN_OR_RETURN(Catalog user, Parse(ss.str(), "user catalog " + user_path));
  GARNET_RETURN_IF_ERROR(cat.Merge(user));
  return cat;
}

Status Catalog::Merge(const Catalog& other) {
  Catalog merged = *this;
  for (const CatalogEntry& e : other.entries_) {
    bool replaced = false;
    for (CatalogEntry& mine : merged.entries_) {
      if (mine.id == e.id) {
        mine = e;
        replaced = true;
        break;
      }
    }
    if (!replaced) merged.entries_.push_back(e);
  }
  for (const auto& [family, id] : other.defaults_) merged.defaults_[family] = id;
  GARNET_RETURN_IF_ERROR(merged.Index().WithContext("merging catalogs"));
  *this = std::move(merged);
  return Status::OK();
}

const CatalogEntry* Catalog::FindId(std::string_view id) const {
  auto it = by_name_.find(std::string(id));
  if (it == by_name_.end() || entries_[it->second].id != id) return nullptr;
  return &entries_[it->second];
}

Result<const CatalogEntry*> Catalog::Resolve(const Reference& ref) const {
  if (ref.kind != Reference::Kind::kCatalog) {
    return Status::InvalidArgument("catalog lookup of \"" + ref.ToString() + "\"",
                                   "not a catalog reference");
  }
  std::string key = ref.ToString();
  if (ref.tag.empty()) {
    auto d = defaults_.find(ref.name);
    if (d != defaults_.end()) key = d->second;
  }
  auto it = by_name_.find(key);
  if (it != by_name_.end()) return &entries_[it->second];
  // Build a helpful list of what exists.
  std::set<std::string> tags, families;
  for (const CatalogEntry& e : entries_) {
    families.insert(e.family);
    if (e.family != ref.name) continue;
    for (const std::string& n : e.aliases) tags.insert(n);
    tags.insert(e.id);
  }
  std::string known;
  for (const std::string& t : (tags.empty() ? families : tags)) {
    known += (known.empty() ? "" : ", ") + t;
  }
  return Status::NotFound(
      "model \"" + ref.ToString() + "\"",
      std::string("not in the catalog; known ") + (tags.empty() ? "families: " : "tags: ") + known);
}

Result<const CatalogEntry*> Catalog::Resolve(std::string_view text) const {
  GARNET_ASSIGN_OR_RETURN(Reference ref, ParseReference(text));
  return Resolve(ref);
}

}  // namespace garnet::registry
