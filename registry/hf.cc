#include "registry/hf.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "registry/http.h"

namespace garnet::registry {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsBoundary(char c) {
  return c == '-' || c == '_' || c == '.' || c == '/';
}

// True when `tag` occurs in `path` delimited by boundaries or the ends (case-insensitive).
bool HasToken(std::string_view path, std::string_view tag) {
  std::string p = Lower(path), t = Lower(tag);
  for (size_t pos = p.find(t); pos != std::string::npos; pos = p.find(t, pos + 1)) {
    bool left = pos == 0 || IsBoundary(p[pos - 1]);
    size_t end = pos + t.size();
    bool right = end == p.size() || IsBoundary(p[end]);
    if (left && right) return true;
  }
  return false;
}

// "name-00002-of-00005.gguf" -> (prefix "name", 2, 5).
bool SplitPart(std::string_view path, std::string* prefix, int* no, int* count) {
  constexpr std::string_view kExt = ".gguf";
  if (!path.ends_with(kExt) || path.size() < kExt.size() + 15) return false;
  std::string_view stem = path.substr(0, path.size() - kExt.size());
  std::string_view tail = stem.substr(stem.size() - 15);  // "-00002-of-00005"
  if (tail[0] != '-' || tail.substr(6, 4) != "-of-") return false;
  uint64_t a = 0, b = 0;
  if (!ParseU64(tail.substr(1, 5), &a) || !ParseU64(tail.substr(10, 5), &b)) return false;
  if (a == 0 || b == 0 || a > b) return false;
  *prefix = std::string(stem.substr(0, stem.size() - 15));
  *no = static_cast<int>(a);
  *count = static_cast<int>(b);
  return true;
}

Status ValidateListingPath(std::string_view path) {
  if (path.empty() || path.size() > 1024) return Status::InvalidArgument("path", "bad length");
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    GARNET_RETURN_IF_ERROR(ValidateComponent("path component", comp, true));
    if (slash == std::string_view::npos) return Status::OK();
    start = slash + 1;
  }
}

}  // namespace

std::string HfTreeUrl(std::string_view base_url, const Reference& ref, std::string_view revision) {
  std::string base(base_url);
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/api/models/" + ref.org + "/" + ref.repo + "/tree/" + std::string(revision) +
         "?recursive=true";
}

Result<HfSelection> SelectHfFiles(std::string_view tree_json, const Reference& ref,
                                  std::string_view revision) {
  const std::string ctx = "repository listing of " + ref.ToString();
  nlohmann::json doc = nlohmann::json::parse(tree_json.begin(), tree_json.end(), nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_array()) {
    return Status::InvalidArgument(ctx, "not a JSON array of files");
  }
  std::vector<SourceFile> ggufs;
  for (const nlohmann::json& e : doc) {
    if (!e.is_object()) continue;
    auto type = e.find("type");
    auto path = e.find("path");
    if (type == e.end() || path == e.end() || !type->is_string() || !path->is_string()) continue;
    if (*type != "file") continue;
    std::string p = path->get<std::string>();
    if (!Lower(p).ends_with(".gguf") || Lower(p).find("mmproj") != std::string::npos) continue;
    Status s = ValidateListingPath(p);
    if (!s.ok()) return s.WithContext(ctx);
    SourceFile f;
    f.repo = ref.name;
    f.revision = std::string(revision);
    f.path = p;
    if (auto lfs = e.find("lfs"); lfs != e.end() && lfs->is_object()) {
      auto oid = lfs->find("oid");
      if (oid != lfs->end() && oid->is_string() && IsLowerHex64(oid->get<std::string>())) {
        f.sha256 = oid->get<std::string>();
      }
      auto size = lfs->find("size");
      if (size != lfs->end() && size->is_number_unsigned() && size->get<uint64_t>() > 0) {
        f.size = size->get<uint64_t>();
      }
    }
    if (!f.size) {
      if (auto size = e.find("size");
          size != e.end() && size->is_number_unsigned() && size->get<uint64_t>() > 0) {
        f.size = size->get<uint64_t>();
      }
    }
    ggufs.push_back(std::move(f));
  }
  if (ggufs.empty()) return Status::NotFound(ctx, "no .gguf files in the repository");

  std::vector<SourceFile> chosen;
  std::string quant = ref.tag;
  if (!quant.empty()) {
    for (const SourceFile& f : ggufs) {
      if (HasToken(f.path, quant)) chosen.push_back(f);
    }
  } else {
    for (const SourceFile& f : ggufs) {
      if (HasToken(f.path, "Q4_K_M")) chosen.push_back(f);
    }
    if (!chosen.empty()) {
      quant = "Q4_K_M";
    } else {
      chosen = ggufs;
    }
  }
  // Group by split set: all chosen files must form exactly one model.
  std::map<std::string, std::map<int, SourceFile>> sets;
  std::map<std::string, int> counts;
  std::vector<SourceFile> singles;
  for (const SourceFile& f : chosen) {
    std::string prefix;
    int no = 0, count = 0;
    if (SplitPart(f.path, &prefix, &no, &count)) {
      sets[prefix][no] = f;
      counts[prefix] = count;
    } else {
      singles.push_back(f);
    }
  }
  size_t models = singles.size() + sets.size();
  if (models != 1) {
    std::string names;
    std::set<std::string> seen;
    for (const SourceFile& f : (models == 0 ? ggufs : chosen)) {
      std::string n = f.path;
      if (seen.insert(n).second) names += (names.empty() ? "" : ", ") + n;
      if (names.size() > 600) {
        names += ", ...";
        break;
      }
    }
    if (models == 0) {
      return Status::NotFound(ctx, "no file matches quant \"" + quant + "\"; files: " + names);
    }
    return Status::InvalidArgument(ctx, "several models match" +
                                            (quant.empty() ? std::string() : " \"" + quant + "\"") +
                                            "; add a more specific :quant tag. Files: " + names);
  }
  HfSelection sel;
  sel.quant = quant;
  if (!singles.empty()) {
    sel.files = singles;
  } else {
    const auto& [prefix, parts] = *sets.begin();
    int count = counts[prefix];
    for (int i = 1; i <= count; ++i) {
      auto it = parts.find(i);
      if (it == parts.end()) {
        return Status::FailedPrecondition(ctx, "split set " + prefix + " is missing part " +
                                                   std::to_string(i) + " of " +
                                                   std::to_string(count));
      }
      sel.files.push_back(it->second);
    }
  }
  if (sel.quant.empty()) {
    // Single model without a tag: take a conventional quant token from the name, if any.
    std::string stem = sel.files[0].FileName();
    size_t dash = stem.find_last_of("-.", stem.size() - 6);
    sel.quant = dash == std::string::npos ? "" : stem.substr(dash + 1, stem.size() - 6 - dash);
    if (!ValidateComponent("quant", sel.quant, true).ok()) sel.quant.clear();
  }
  return sel;
}

}  // namespace garnet::registry
