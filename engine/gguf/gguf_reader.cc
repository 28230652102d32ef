// GGUF reader: parses a memory image (an mmap of the file, or caller-owned bytes) without ever
// trusting a count, length or offset. Every read goes through Cursor, which checks the remaining
// size first; counts are checked against the bytes they would need before anything is reserved.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "engine/gguf/gguf.h"

namespace garnet::gguf {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

constexpr uint32_t kMaxAlignment = 1u << 20;
constexpr uint32_t kMaxDims = 4;
// Smallest encodings, used to reject counts before looping: a key/value pair is a key length
// (8), a type (4) and at least one value byte; a tensor info is a name length (8), n_dims (4),
// one dimension (8), a type (4) and an offset (8).
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
// Sanity limits, far above real models (a Gemma 4 GGUF has ~40 keys, ~2k tensors and a
// 262144-entry vocabulary), so that decoded structures stay proportionate to the file even
// when a hostile count passes the file-size check.
constexpr uint64_t kMaxKvCount = 1u << 20;
constexpr uint64_t kMaxTensorCount = 1u << 20;
constexpr uint64_t kMaxStringArray = 1u << 26;
constexpr uint64_t kMaxReserve = 1u << 12;  // reserve no more up front; grow as entries parse

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

bool IsKnownValueType(uint32_t t) {
  return t <= static_cast<uint32_t>(ValueType::kFloat64);
}

// Bounds-checked sequential reads over [base, base+size). Errors carry the file name, the field
// and the absolute offset where the field starts.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& name)
      : base_(base), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  Status Error(Code code, std::string_view field, uint64_t at, std::string_view what) const {
    return Status(code, name_ + ": " + std::string(field) + " at offset " + std::to_string(at),
                  what);
  }
  Status Invalid(std::string_view field, uint64_t at, std::string_view what) const {
    return Error(Code::kInvalidArgument, field, at, what);
  }
  Status Truncated(std::string_view field, uint64_t at, std::string_view what) const {
    return Error(Code::kDataLoss, field, at, what);
  }

  Status Need(uint64_t n, std::string_view field) const {
    if (n > remaining()) {
      return Truncated(field, pos_,
                       "needs " + std::to_string(n) + " bytes but only " +
                           std::to_string(remaining()) + " remain before end of file");
    }
    return Status::OK();
  }

  template <typename T>
  Status Read(std::string_view field, T* out) {
    GARNET_RETURN_IF_ERROR(Need(sizeof(T), field));
    *out = Load<T>(base_ + pos_);
    pos_ += sizeof(T);
    return Status::OK();
  }

  Status ReadString(std::string_view field, std::string_view* out) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    GARNET_RETURN_IF_ERROR(Read(field, &len));
    if (len > remaining()) {
      pos_ = at;
      return Truncated(field, at,
                       "string length " + std::to_string(len) + " runs past end of file (" +
                           std::to_string(remaining()) + " bytes remain)");
    }
    *out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return Status::OK();
  }

  // ReadString without error reporting: false (cursor unchanged) when it would run past the end.
  bool TryReadString(std::string_view* out) {
    if (remaining() < 8) return false;
    const uint64_t len = Load<uint64_t>(base_ + pos_);
    if (len > remaining() - 8) return false;
    *out = std::string_view(reinterpret_cast<const char*>(base_ + pos_ + 8), len);
    pos_ += 8 + len;
    return true;
  }

  const uint8_t* Skip(uint64_t n) {  // caller has checked n <= remaining()
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

// Decodes a scalar of `type` at the cursor into `v`.
Status ReadScalar(Cursor& c, std::string_view field, ValueType type, Value* v) {
  const uint64_t at = c.pos();
  switch (type) {
    case ValueType::kUint8: {
      uint8_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->u = x;
      return Status::OK();
    }
    case ValueType::kInt8: {
      int8_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->i = x;
      return Status::OK();
    }
    case ValueType::kUint16: {
      uint16_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->u = x;
      return Status::OK();
    }
    case ValueType::kInt16: {
      int16_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->i = x;
      return Status::OK();
    }
    case ValueType::kUint32: {
      uint32_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->u = x;
      return Status::OK();
    }
    case ValueType::kInt32: {
      int32_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->i = x;
      return Status::OK();
    }
    case ValueType::kUint64:
      return c.Read(field, &v->u);
    case ValueType::kInt64:
      return c.Read(field, &v->i);
    case ValueType::kFloat32: {
      float x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      v->f = x;
      return Status::OK();
    }
    case ValueType::kFloat64:
      return c.Read(field, &v->f);
    case ValueType::kBool: {
      uint8_t x;
      GARNET_RETURN_IF_ERROR(c.Read(field, &x));
      if (x > 1) return c.Invalid(field, at, "bool value " + std::to_string(x) + " is not 0 or 1");
      v->b = x != 0;
      return Status::OK();
    }
    case ValueType::kString:
      return c.ReadString(field, &v->str);
    case ValueType::kArray:
      break;
  }
  return c.Invalid(field, at, "not a scalar type");
}

Status ReadArray(Cursor& c, const std::string& field, Value* v) {
  const uint64_t type_at = c.pos();
  uint32_t et = 0;
  GARNET_RETURN_IF_ERROR(c.Read(field + " element type", &et));
  if (!IsKnownValueType(et)) {
    return c.Invalid(field + " element type", type_at, "unknown value type " + std::to_string(et));
  }
  v->elem_type = static_cast<ValueType>(et);
  if (v->elem_type == ValueType::kArray) {
    return c.Invalid(field + " element type", type_at, "nested arrays are not supported");
  }
  const uint64_t count_at = c.pos();
  GARNET_RETURN_IF_ERROR(c.Read(field + " count", &v->count));
  if (v->elem_type == ValueType::kString) {
    // Each string needs at least its 8-byte length.
    if (v->count > c.remaining() / 8) {
      return c.Truncated(field + " count", count_at,
                         "array of " + std::to_string(v->count) +
                             " strings runs past end of file (" + std::to_string(c.remaining()) +
                             " bytes remain)");
    }
    if (v->count > kMaxStringArray) {
      return c.Invalid(field + " count", count_at,
                       "array of " + std::to_string(v->count) + " strings exceeds the limit of " +
                           std::to_string(kMaxStringArray));
    }
    v->strings.reserve(std::min(v->count, kMaxReserve));
    for (uint64_t k = 0; k < v->count; ++k) {
      // Fast path without building a field name; on failure re-read for the error message.
      std::string_view s;
      if (!c.TryReadString(&s)) {
        GARNET_RETURN_IF_ERROR(c.ReadString(field + " element #" + std::to_string(k), &s));
      }
      v->strings.push_back(s);
    }
    return Status::OK();
  }
  const size_t es = ValueTypeSize(v->elem_type);
  if (v->count > c.remaining() / es) {
    return c.Truncated(field + " count", count_at,
                       "array of " + std::to_string(v->count) + " " +
                           std::string(ValueTypeName(v->elem_type)) + " runs past end of file (" +
                           std::to_string(c.remaining()) + " bytes remain)");
  }
  const uint64_t data_at = c.pos();
  v->raw = c.Skip(v->count * es);
  if (v->elem_type == ValueType::kBool) {
    for (uint64_t k = 0; k < v->count; ++k) {
      if (v->raw[k] > 1) {
        return c.Invalid(field + " element #" + std::to_string(k), data_at + k,
                         "bool value " + std::to_string(v->raw[k]) + " is not 0 or 1");
      }
    }
  }
  return Status::OK();
}

uint64_t AlignUp(uint64_t v, uint64_t a) {
  const uint64_t r = v % a;
  return r == 0 ? v : v + (a - r);  // callers ensure no overflow (v <= file size)
}

}  // namespace

size_t ValueTypeSize(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

std::string_view ValueTypeName(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
      return "uint8";
    case ValueType::kInt8:
      return "int8";
    case ValueType::kUint16:
      return "uint16";
    case ValueType::kInt16:
      return "int16";
    case ValueType::kUint32:
      return "uint32";
    case ValueType::kInt32:
      return "int32";
    case ValueType::kFloat32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "uint64";
    case ValueType::kInt64:
      return "int64";
    case ValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

std::optional<int64_t> Value::AsInt() const {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
    case ValueType::kUint64:
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(u);
    case ValueType::kInt8:
    case ValueType::kInt16:
    case ValueType::kInt32:
    case ValueType::kInt64:
      return i;
    default:
      return std::nullopt;
  }
}

std::optional<double> Value::AsFloat() const {
  switch (type) {
    case ValueType::kFloat32:
    case ValueType::kFloat64:
      return f;
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
    case ValueType::kUint64:
      return static_cast<double>(u);
    case ValueType::kInt8:
    case ValueType::kInt16:
    case ValueType::kInt32:
    case ValueType::kInt64:
      return static_cast<double>(i);
    default:
      return std::nullopt;
  }
}

std::optional<int64_t> Value::IntAt(uint64_t k) const {
  if (!is_array() || k >= count || raw == nullptr) return std::nullopt;
  const uint8_t* p = raw + k * ValueTypeSize(elem_type);
  switch (elem_type) {
    case ValueType::kUint8:
    case ValueType::kBool:
      return Load<uint8_t>(p);
    case ValueType::kInt8:
      return Load<int8_t>(p);
    case ValueType::kUint16:
      return Load<uint16_t>(p);
    case ValueType::kInt16:
      return Load<int16_t>(p);
    case ValueType::kUint32:
      return Load<uint32_t>(p);
    case ValueType::kInt32:
      return Load<int32_t>(p);
    case ValueType::kUint64: {
      const uint64_t x = Load<uint64_t>(p);
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(x);
    }
    case ValueType::kInt64:
      return Load<int64_t>(p);
    default:
      return std::nullopt;
  }
}

std::optional<double> Value::FloatAt(uint64_t k) const {
  if (!is_array() || k >= count || raw == nullptr) return std::nullopt;
  const uint8_t* p = raw + k * ValueTypeSize(elem_type);
  switch (elem_type) {
    case ValueType::kFloat32:
      return Load<float>(p);
    case ValueType::kFloat64:
      return Load<double>(p);
    case ValueType::kUint64:
      return static_cast<double>(Load<uint64_t>(p));
    case ValueType::kBool:
      return std::nullopt;
    default: {
      auto x = IntAt(k);
      if (!x) return std::nullopt;
      return static_cast<double>(*x);
    }
  }
}

File::~File() {
  if (mapped_ && base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

Result<std::unique_ptr<File>> File::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError(path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return PosixError(path + ": stat", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path, "not a regular file");
  }
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return PosixError(path + ": mmap", err);
    }
    f->base_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
  }
  ::close(fd);
  GARNET_RETURN_IF_ERROR(f->Parse());
  return f;
}

Result<std::unique_ptr<File>> File::FromMemory(std::span<const uint8_t> bytes,
                                               std::string display_name) {
  std::unique_ptr<File> f(new File());
  f->path_ = std::move(display_name);
  f->base_ = bytes.data();
  f->size_ = bytes.size();
  GARNET_RETURN_IF_ERROR(f->Parse());
  return f;
}

const Value* File::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Status File::Parse() {
  Cursor c(base_, size_, path_);
  uint32_t magic = 0;
  GARNET_RETURN_IF_ERROR(c.Read("magic", &magic));
  if (magic != kMagic) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "0x%08x", magic);
    return c.Invalid("magic", 0, std::string("got ") + buf + ", want 0x46554747 (\"GGUF\")");
  }
  GARNET_RETURN_IF_ERROR(c.Read("version", &version_));
  if (version_ != 2 && version_ != 3) {
    return c.Invalid("version", 4,
                     "version " + std::to_string(version_) + " is not supported (want 2 or 3)");
  }
  uint64_t tensor_count = 0, kv_count = 0;
  GARNET_RETURN_IF_ERROR(c.Read("tensor_count", &tensor_count));
  GARNET_RETURN_IF_ERROR(c.Read("kv_count", &kv_count));
  // Both sections follow: each entry has a minimum size, so the counts are bounded by the file.
  if (kv_count > c.remaining() / kMinKvBytes) {
    return c.Truncated("kv_count", 16,
                       std::to_string(kv_count) + " key/value pairs cannot fit in the " +
                           std::to_string(c.remaining()) + " bytes that remain");
  }
  if (tensor_count > (c.remaining() - kv_count * kMinKvBytes) / kMinTensorInfoBytes) {
    return c.Truncated("tensor_count", 8,
                       std::to_string(tensor_count) + " tensor infos cannot fit in the " +
                           std::to_string(c.remaining()) + " bytes that remain");
  }

  if (kv_count > kMaxKvCount) {
    return c.Invalid("kv_count", 16,
                     std::to_string(kv_count) + " key/value pairs exceed the limit of " +
                         std::to_string(kMaxKvCount));
  }
  if (tensor_count > kMaxTensorCount) {
    return c.Invalid("tensor_count", 8,
                     std::to_string(tensor_count) + " tensors exceed the limit of " +
                         std::to_string(kMaxTensorCount));
  }
  kv_.reserve(std::min(kv_count, kMaxReserve));
  uint64_t alignment_at = 0;  // where general.alignment's type field sits, for errors
  for (uint64_t k = 0; k < kv_count; ++k) {
    const std::string field = "metadata key #" + std::to_string(k);
    const uint64_t key_at = c.pos();
    std::string_view key;
    GARNET_RETURN_IF_ERROR(c.ReadString(field, &key));
    if (key.empty()) return c.Invalid(field, key_at, "empty key");
    const std::string kfield = field + " (" + std::string(key) + ")";
    if (kv_index_.count(key) != 0) {
      return c.Invalid(kfield, key_at, "duplicate key");
    }
    const uint64_t type_at = c.pos();
    uint32_t type = 0;
    GARNET_RETURN_IF_ERROR(c.Read(kfield + " type", &type));
    if (!IsKnownValueType(type)) {
      return c.Invalid(kfield + " type", type_at, "unknown value type " + std::to_string(type));
    }
    Value v;
    v.type = static_cast<ValueType>(type);
    if (v.type == ValueType::kArray) {
      GARNET_RETURN_IF_ERROR(ReadArray(c, kfield, &v));
    } else {
      GARNET_RETURN_IF_ERROR(ReadScalar(c, kfield + " value", v.type, &v));
    }
    if (key == kKeyAlignment) alignment_at = type_at;
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(key, std::move(v));
  }

  if (const Value* a = Find(kKeyAlignment)) {
    auto n = a->AsInt();
    if (!n || *n <= 0 || *n > kMaxAlignment || !std::has_single_bit(static_cast<uint64_t>(*n))) {
      return c.Invalid("general.alignment", alignment_at,
                       "must be an integer power of two in [1, " + std::to_string(kMaxAlignment) +
                           "] (got " +
                           (n ? std::to_string(*n) : std::string(ValueTypeName(a->type))) + ")");
    }
    alignment_ = static_cast<uint32_t>(*n);
  }

  if (tensor_count > c.remaining() / kMinTensorInfoBytes) {
    return c.Truncated("tensor_count", 8,
                       std::to_string(tensor_count) + " tensor infos cannot fit in the " +
                           std::to_string(c.remaining()) + " bytes after the metadata");
  }
  tensors_.reserve(std::min(tensor_count, kMaxReserve));
  std::vector<uint64_t> offset_field_at;  // where each tensor's offset field sits, for errors
  offset_field_at.reserve(std::min(tensor_count, kMaxReserve));
  for (uint64_t k = 0; k < tensor_count; ++k) {
    std::string field = "tensor #" + std::to_string(k);
    const uint64_t name_at = c.pos();
    TensorInfo t;
    GARNET_RETURN_IF_ERROR(c.ReadString(field + " name", &t.name));
    if (t.name.empty()) return c.Invalid(field + " name", name_at, "empty tensor name");
    field += " (" + std::string(t.name) + ")";
    if (tensor_index_.count(t.name) != 0) {
      return c.Invalid(field, name_at, "duplicate tensor name");
    }
    const uint64_t dims_at = c.pos();
    GARNET_RETURN_IF_ERROR(c.Read(field + " n_dims", &t.n_dims));
    if (t.n_dims < 1 || t.n_dims > kMaxDims) {
      return c.Invalid(field + " n_dims", dims_at,
                       std::to_string(t.n_dims) + " dimensions (need 1 to 4)");
    }
    uint64_t elems = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const uint64_t ne_at = c.pos();
      GARNET_RETURN_IF_ERROR(c.Read(field + " ne[" + std::to_string(d) + "]", &t.ne[d]));
      const uint64_t ne = t.ne[d];
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (ne != 0 && elems > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne)) {
        return c.Invalid(field + " ne[" + std::to_string(d) + "]", ne_at,
                         "dimension " + std::to_string(ne) + " makes the element count overflow");
      }
      elems *= ne;
    }
    const uint64_t type_at = c.pos();
    uint32_t type_id = 0;
    GARNET_RETURN_IF_ERROR(c.Read(field + " type", &type_id));
    auto traits = LookupType(type_id);
    if (!traits) {
      return c.Invalid(field + " type", type_at, "unknown ggml type id " + std::to_string(type_id));
    }
    t.type = traits->type;
    auto bytes = TensorBytes(t.type, t.ne, t.n_dims);
    if (!bytes.ok()) {
      return c.Invalid(field + " shape", dims_at, bytes.status().message());
    }
    t.bytes = *bytes;
    const uint64_t off_at = c.pos();
    GARNET_RETURN_IF_ERROR(c.Read(field + " offset", &t.offset));
    if (t.offset % alignment_ != 0) {
      return c.Invalid(field + " offset", off_at,
                       "data offset " + std::to_string(t.offset) + " is not a multiple of the " +
                           std::to_string(alignment_) + "-byte alignment");
    }
    offset_field_at.push_back(off_at);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(t);
  }

  data_offset_ = AlignUp(c.pos(), alignment_);
  const uint64_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
  if (!tensors_.empty() && data_offset_ > size_) {
    return c.Truncated("data section", c.pos(),
                       "padded start " + std::to_string(data_offset_) + " is past end of file (" +
                           std::to_string(size_) + " bytes)");
  }
  for (size_t k = 0; k < tensors_.size(); ++k) {
    TensorInfo& t = tensors_[k];
    const uint64_t off_at = offset_field_at[k];
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      return c.Truncated("tensor " + std::string(t.name) + " offset", off_at,
                         "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.bytes) +
                             ") runs past the end of the " + std::to_string(data_size) +
                             "-byte data section");
    }
    t.data = base_ + data_offset_ + t.offset;
  }
  // No two tensors may share bytes.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) {
    if (t.bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
  });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo* a = by_offset[k - 1];
    const TensorInfo* b = by_offset[k];
    if (b->offset < a->offset + a->bytes) {
      return c.Invalid("tensor " + std::string(b->name) + " data", data_offset_ + b->offset,
                       "overlaps tensor " + std::string(a->name) + " at data offset " +
                           std::to_string(a->offset) + " (+" + std::to_string(a->bytes) + ")");
    }
  }
  return Status::OK();
}

}  // namespace garnet::gguf
