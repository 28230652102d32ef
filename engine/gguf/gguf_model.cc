// Model: one GGUF file or a llama.cpp split set opened as one, plus typed metadata accessors.
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/gguf/gguf.h"

namespace garnet::gguf {
namespace {

std::string Describe(const Value& v) {
  if (!v.is_array()) return std::string(ValueTypeName(v.type));
  return "array of " + std::to_string(v.count) + " " + std::string(ValueTypeName(v.elem_type));
}

bool IsIntType(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(ValueType t) {
  return t == ValueType::kFloat32 || t == ValueType::kFloat64;
}

// Reads an optional integer split key; InvalidArgument if present with a non-integer type.
Status SplitKey(const File& f, std::string_view key, std::optional<int64_t>* out) {
  out->reset();
  const Value* v = f.Find(key);
  if (v == nullptr) return Status::OK();
  auto n = v->AsInt();
  if (!n || *n < 0) {
    return Status::InvalidArgument(f.path() + ": key " + std::string(key),
                                   "is " + Describe(*v) + ", want a non-negative integer");
  }
  *out = n;
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Model>> Model::Open(const std::string& path) {
  std::string prefix;
  uint32_t part = 0, count = 0;
  if (ParseSplitPath(path, &prefix, &part, &count) && count > 1) {
    std::vector<std::string> paths;
    paths.reserve(count);
    for (uint32_t i = 1; i <= count; ++i) paths.push_back(SplitPath(prefix, i, count));
    return OpenParts(paths);
  }
  GARNET_ASSIGN_OR_RETURN(auto file, File::Open(path));
  std::optional<int64_t> split_count;
  GARNET_RETURN_IF_ERROR(SplitKey(*file, kKeySplitCount, &split_count));
  if (split_count && *split_count > 1) {
    return Status::InvalidArgument(
        path + ": key split.count",
        "the file is one of " + std::to_string(*split_count) +
            " split parts but its name does not follow <prefix>-NNNNN-of-MMMMM.gguf; rename the "
            "parts or open them with OpenParts");
  }
  std::vector<std::unique_ptr<File>> files;
  files.push_back(std::move(file));
  return FromFiles(std::move(files));
}

Result<std::unique_ptr<Model>> Model::OpenParts(const std::vector<std::string>& paths) {
  if (paths.empty()) return Status::InvalidArgument("gguf model", "no files given");
  std::vector<std::unique_ptr<File>> files;
  files.reserve(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    auto f = File::Open(paths[i]);
    if (!f.ok()) {
      if (paths.size() == 1) return f.status();
      return f.status().WithContext("split part " + std::to_string(i + 1) + " of " +
                                    std::to_string(paths.size()));
    }
    files.push_back(std::move(f).value());
  }
  return FromFiles(std::move(files));
}

Result<std::unique_ptr<Model>> Model::FromFiles(std::vector<std::unique_ptr<File>> files) {
  const size_t n = files.size();
  if (n == 0) return Status::InvalidArgument("gguf model", "no files given");
  for (const auto& f : files) {
    if (f == nullptr) return Status::InvalidArgument("gguf model", "null file");
  }
  std::optional<int64_t> total;
  for (size_t i = 0; i < n; ++i) {
    const File& f = *files[i];
    std::optional<int64_t> no, count, tensors;
    GARNET_RETURN_IF_ERROR(SplitKey(f, kKeySplitNo, &no));
    GARNET_RETURN_IF_ERROR(SplitKey(f, kKeySplitCount, &count));
    GARNET_RETURN_IF_ERROR(SplitKey(f, kKeySplitTensorsCount, &tensors));
    if (n > 1 && (!no || !count)) {
      return Status::InvalidArgument(f.path(), "split part " + std::to_string(i + 1) + " of " +
                                                   std::to_string(n) +
                                                   " lacks split.no / split.count");
    }
    const int64_t want_count = static_cast<int64_t>(n);
    if (count && !(n == 1 && *count == 0) && *count != want_count) {
      return Status::InvalidArgument(
          f.path() + ": key split.count",
          "is " + std::to_string(*count) + " but the set has " + std::to_string(n) + " part(s)");
    }
    if (no && *no != static_cast<int64_t>(i)) {
      return Status::InvalidArgument(f.path() + ": key split.no",
                                     "is " + std::to_string(*no) + " but the file is part #" +
                                         std::to_string(i) + " (0-based) of the set");
    }
    if (tensors) {
      if (total && *total != *tensors) {
        return Status::InvalidArgument(
            f.path() + ": key split.tensors.count",
            "is " + std::to_string(*tensors) + " but part 1 says " + std::to_string(*total));
      }
      total = tensors;
    } else if (n > 1 && i == 0) {
      return Status::InvalidArgument(f.path(), "first split part lacks split.tensors.count");
    }
  }

  auto model = std::unique_ptr<Model>(new Model());
  model->files_ = std::move(files);
  for (size_t i = 0; i < n; ++i) {
    for (const TensorInfo& t : model->files_[i]->tensors()) {
      if (model->tensor_index_.count(t.name) != 0) {
        const TensorInfo& first = model->tensors_[model->tensor_index_[t.name]];
        return Status::InvalidArgument(
            model->files_[i]->path() + ": tensor " + std::string(t.name),
            "also present in " + model->files_[first.file_index]->path());
      }
      TensorInfo copy = t;
      copy.file_index = static_cast<uint32_t>(i);
      model->tensor_index_.emplace(copy.name, model->tensors_.size());
      model->tensors_.push_back(copy);
    }
  }
  if (total && static_cast<uint64_t>(*total) != model->tensors_.size()) {
    return Status::InvalidArgument(model->files_[0]->path() + ": key split.tensors.count",
                                   "is " + std::to_string(*total) + " but the parts hold " +
                                       std::to_string(model->tensors_.size()) + " tensors");
  }
  return model;
}

const TensorInfo* Model::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t Model::total_bytes() const {
  uint64_t sum = 0;
  for (const auto& f : files_) sum += f->size();
  return sum;
}

Result<const Value*> Model::Lookup(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Status::NotFound(KeyContext(key), "not present");
  return v;
}

std::string Model::KeyContext(std::string_view key) const {
  return files_[0]->path() + ": key " + std::string(key);
}

Status Model::TypeError(std::string_view key, const Value& v, std::string_view want) const {
  return Status::InvalidArgument(KeyContext(key),
                                 "is " + Describe(v) + ", want " + std::string(want));
}

Result<std::string_view> Model::GetString(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (v->type != ValueType::kString) return TypeError(key, *v, "string");
  return v->str;
}

Result<uint32_t> Model::GetU32(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!IsIntType(v->type)) return TypeError(key, *v, "an integer");
  auto n = v->AsInt();
  if (!n || *n < 0 || *n > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
    return Status::InvalidArgument(
        KeyContext(key),
        "value " + (n ? std::to_string(*n) : std::to_string(v->u)) + " does not fit in uint32");
  }
  return static_cast<uint32_t>(*n);
}

Result<uint64_t> Model::GetU64(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!IsIntType(v->type)) return TypeError(key, *v, "an integer");
  if (v->type == ValueType::kUint64) return v->u;
  auto n = v->AsInt();
  if (!n || *n < 0) {
    return Status::InvalidArgument(KeyContext(key),
                                   "value " + std::to_string(v->i) + " is negative");
  }
  return static_cast<uint64_t>(*n);
}

Result<float> Model::GetF32(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!IsFloatType(v->type) && !IsIntType(v->type)) return TypeError(key, *v, "a number");
  const double d = *v->AsFloat();
  if (d > std::numeric_limits<float>::max() || d < -std::numeric_limits<float>::max()) {
    return Status::InvalidArgument(KeyContext(key),
                                   "value " + std::to_string(d) + " does not fit in float32");
  }
  return static_cast<float>(d);
}

Result<bool> Model::GetBool(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (v->type == ValueType::kBool) return v->b;
  if (IsIntType(v->type)) {
    auto n = v->AsInt();
    if (n && (*n == 0 || *n == 1)) return *n == 1;
  }
  return TypeError(key, *v, "bool");
}

Result<std::vector<uint32_t>> Model::GetPerLayerU32(std::string_view key, uint32_t n_layers) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!v->is_array()) {
    GARNET_ASSIGN_OR_RETURN(uint32_t x, GetU32(key));
    return std::vector<uint32_t>(n_layers, x);
  }
  if (!IsIntType(v->elem_type)) return TypeError(key, *v, "an integer or an array of integers");
  if (v->count != n_layers) {
    return Status::InvalidArgument(KeyContext(key), "array has " + std::to_string(v->count) +
                                                        " entries, want one per layer (" +
                                                        std::to_string(n_layers) + ")");
  }
  std::vector<uint32_t> out(n_layers);
  for (uint32_t k = 0; k < n_layers; ++k) {
    auto x = v->IntAt(k);
    if (!x || *x < 0 || *x > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) {
      return Status::InvalidArgument(KeyContext(key) + "[" + std::to_string(k) + "]",
                                     "does not fit in uint32");
    }
    out[k] = static_cast<uint32_t>(*x);
  }
  return out;
}

Result<std::vector<bool>> Model::GetBoolArray(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!v->is_array() || (v->elem_type != ValueType::kBool && !IsIntType(v->elem_type))) {
    return TypeError(key, *v, "an array of bool");
  }
  std::vector<bool> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) {
    auto x = v->IntAt(k);
    if (!x || (*x != 0 && *x != 1)) {
      return Status::InvalidArgument(KeyContext(key) + "[" + std::to_string(k) + "]",
                                     "is not 0 or 1");
    }
    out[k] = *x == 1;
  }
  return out;
}

Result<std::vector<int32_t>> Model::GetI32Array(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!v->is_array() || !IsIntType(v->elem_type)) return TypeError(key, *v, "an array of int32");
  std::vector<int32_t> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) {
    auto x = v->IntAt(k);
    if (!x || *x < std::numeric_limits<int32_t>::min() ||
        *x > std::numeric_limits<int32_t>::max()) {
      return Status::InvalidArgument(KeyContext(key) + "[" + std::to_string(k) + "]",
                                     "does not fit in int32");
    }
    out[k] = static_cast<int32_t>(*x);
  }
  return out;
}

Result<std::vector<float>> Model::GetF32Array(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!v->is_array() || (!IsFloatType(v->elem_type) && !IsIntType(v->elem_type))) {
    return TypeError(key, *v, "an array of float32");
  }
  std::vector<float> out(v->count);
  for (uint64_t k = 0; k < v->count; ++k) {
    auto x = v->FloatAt(k);
    if (!x) {
      return Status::InvalidArgument(KeyContext(key) + "[" + std::to_string(k) + "]",
                                     "is not a number");
    }
    out[k] = static_cast<float>(*x);
  }
  return out;
}

Result<std::vector<std::string_view>> Model::GetStringArray(std::string_view key) const {
  GARNET_ASSIGN_OR_RETURN(const Value* v, Lookup(key));
  if (!v->is_array() || v->elem_type != ValueType::kString) {
    return TypeError(key, *v, "an array of strings");
  }
  return v->strings;
}

}  // namespace garnet::gguf
