// GGUF writer: declarations are collected in memory (metadata and tensor shapes only), then
// Finish() streams the header and each tensor's bytes to `path.tmp` and renames it into place.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/gguf/gguf.h"

namespace garnet::gguf {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

constexpr uint64_t kChunkBytes = 8ull << 20;  // producer chunk size (header promises <= 64 MiB)
constexpr size_t kMaxTensorName = 63;         // llama.cpp: GGML_MAX_NAME (64) including the NUL

template <typename T>
void PutPod(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

void PutString(std::vector<uint8_t>& out, std::string_view s) {
  PutPod<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

// Buffered writes to a file descriptor; the first error sticks and is returned by status().
class FdSink {
 public:
  FdSink(int fd, std::string path) : fd_(fd), path_(std::move(path)) { buf_.reserve(1 << 20); }

  void Write(const void* p, size_t n) {
    if (!status_.ok()) return;
    const auto* b = static_cast<const uint8_t*>(p);
    if (buf_.size() + n > buf_.capacity()) Flush();
    if (n >= buf_.capacity()) {
      WriteRaw(b, n);
    } else {
      buf_.insert(buf_.end(), b, b + n);
    }
    written_ += n;
  }
  void Zeros(uint64_t n) {
    static const uint8_t kZero[256] = {};
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(kZero)));
      Write(kZero, k);
      n -= k;
    }
  }
  void Flush() {
    if (!status_.ok() || buf_.empty()) return;
    WriteRaw(buf_.data(), buf_.size());
    buf_.clear();
  }
  uint64_t written() const { return written_; }
  const Status& status() const { return status_; }

 private:
  void WriteRaw(const uint8_t* p, size_t n) {
    while (n > 0 && status_.ok()) {
      const ssize_t r = ::write(fd_, p, n);
      if (r < 0) {
        if (errno == EINTR) continue;
        status_ = PosixError(path_ + ": write", errno);
        return;
      }
      p += r;
      n -= static_cast<size_t>(r);
    }
  }

  int fd_;
  std::string path_;
  std::vector<uint8_t> buf_;
  uint64_t written_ = 0;
  Status status_;
};

}  // namespace

std::string SplitPath(std::string_view prefix, uint32_t part, uint32_t count) {
  char tail[48];
  std::snprintf(tail, sizeof(tail), "-%05u-of-%05u.gguf", part, count);
  return std::string(prefix) + tail;
}

bool ParseSplitPath(std::string_view path, std::string* prefix, uint32_t* part, uint32_t* count) {
  // "-NNNNN-of-MMMMM.gguf": digits may be wider than 5 when the count needs it.
  constexpr std::string_view kExt = ".gguf";
  if (path.size() < kExt.size() || path.substr(path.size() - kExt.size()) != kExt) return false;
  std::string_view s = path.substr(0, path.size() - kExt.size());
  auto take_number = [&s](uint32_t* out) {
    size_t n = 0;
    while (n < s.size() && s[s.size() - 1 - n] >= '0' && s[s.size() - 1 - n] <= '9') ++n;
    if (n < 5 || n > 9) return false;
    uint64_t v = 0;
    for (char c : s.substr(s.size() - n)) v = v * 10 + static_cast<uint64_t>(c - '0');
    *out = static_cast<uint32_t>(v);
    s.remove_suffix(n);
    return true;
  };
  uint32_t c = 0, p = 0;
  if (!take_number(&c)) return false;
  constexpr std::string_view kOf = "-of-";
  if (s.size() < kOf.size() || s.substr(s.size() - kOf.size()) != kOf) return false;
  s.remove_suffix(kOf.size());
  if (!take_number(&p)) return false;
  if (s.empty() || s.back() != '-') return false;
  s.remove_suffix(1);
  if (s.empty() || s.back() == '/') return false;
  if (p < 1 || c < 1 || p > c) return false;
  if (prefix) *prefix = std::string(s);
  if (part) *part = p;
  if (count) *count = c;
  return true;
}

Writer::Writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment) || alignment > (1u << 20)) {
    deferred_ =
        Status::InvalidArgument("gguf writer", "alignment " + std::to_string(alignment) +
                                                   " is not a power of two in [1, 1048576]");
  }
}

void Writer::AddKv(std::string key, ValueType type, std::vector<uint8_t> payload) {
  kvs_.push_back(Kv{std::move(key), type, std::move(payload)});
}

#define GARNET_GGUF_SCALAR_SETTER(Name, CType, VType) \
  void Writer::Name(std::string key, CType v) {       \
    std::vector<uint8_t> p;                           \
    PutPod<CType>(p, v);                              \
    AddKv(std::move(key), VType, std::move(p));       \
  }
GARNET_GGUF_SCALAR_SETTER(SetU8, uint8_t, ValueType::kUint8)
GARNET_GGUF_SCALAR_SETTER(SetI8, int8_t, ValueType::kInt8)
GARNET_GGUF_SCALAR_SETTER(SetU16, uint16_t, ValueType::kUint16)
GARNET_GGUF_SCALAR_SETTER(SetI16, int16_t, ValueType::kInt16)
GARNET_GGUF_SCALAR_SETTER(SetU32, uint32_t, ValueType::kUint32)
GARNET_GGUF_SCALAR_SETTER(SetI32, int32_t, ValueType::kInt32)
GARNET_GGUF_SCALAR_SETTER(SetU64, uint64_t, ValueType::kUint64)
GARNET_GGUF_SCALAR_SETTER(SetI64, int64_t, ValueType::kInt64)
GARNET_GGUF_SCALAR_SETTER(SetF32, float, ValueType::kFloat32)
GARNET_GGUF_SCALAR_SETTER(SetF64, double, ValueType::kFloat64)
#undef GARNET_GGUF_SCALAR_SETTER

void Writer::SetBool(std::string key, bool v) {
  AddKv(std::move(key), ValueType::kBool, {static_cast<uint8_t>(v ? 1 : 0)});
}

void Writer::SetString(std::string key, std::string v) {
  std::vector<uint8_t> p;
  PutString(p, v);
  AddKv(std::move(key), ValueType::kString, std::move(p));
}

namespace {
template <typename T>
std::vector<uint8_t> ArrayPayload(ValueType elem, const std::vector<T>& v) {
  std::vector<uint8_t> p;
  p.reserve(12 + v.size() * sizeof(T));
  PutPod<uint32_t>(p, static_cast<uint32_t>(elem));
  PutPod<uint64_t>(p, v.size());
  for (const T& x : v) PutPod<T>(p, x);
  return p;
}
}  // namespace

void Writer::SetArrayI32(std::string key, std::vector<int32_t> v) {
  AddKv(std::move(key), ValueType::kArray, ArrayPayload(ValueType::kInt32, v));
}
void Writer::SetArrayU32(std::string key, std::vector<uint32_t> v) {
  AddKv(std::move(key), ValueType::kArray, ArrayPayload(ValueType::kUint32, v));
}
void Writer::SetArrayF32(std::string key, std::vector<float> v) {
  AddKv(std::move(key), ValueType::kArray, ArrayPayload(ValueType::kFloat32, v));
}
void Writer::SetArrayBool(std::string key, std::vector<bool> v) {
  std::vector<uint8_t> bytes(v.size());
  for (size_t k = 0; k < v.size(); ++k) bytes[k] = v[k] ? 1 : 0;
  AddKv(std::move(key), ValueType::kArray, ArrayPayload(ValueType::kBool, bytes));
}
void Writer::SetArrayString(std::string key, std::vector<std::string> v) {
  std::vector<uint8_t> p;
  PutPod<uint32_t>(p, static_cast<uint32_t>(ValueType::kString));
  PutPod<uint64_t>(p, v.size());
  for (const auto& s : v) PutString(p, s);
  AddKv(std::move(key), ValueType::kArray, std::move(p));
}

void Writer::SetArrayRaw(std::string key, ValueType elem_type, uint64_t count,
                         std::vector<uint8_t> raw) {
  const size_t es = ValueTypeSize(elem_type);
  if (es == 0 || (count != 0 && raw.size() / es != count) || raw.size() % es != 0 ||
      (count == 0 && !raw.empty())) {
    if (deferred_.ok()) {
      deferred_ = Status::InvalidArgument(
          "gguf writer: key " + key, "raw array of " + std::string(ValueTypeName(elem_type)) +
                                         " x " + std::to_string(count) + " does not match its " +
                                         std::to_string(raw.size()) + " bytes");
    }
    return;
  }
  std::vector<uint8_t> p;
  p.reserve(12 + raw.size());
  PutPod<uint32_t>(p, static_cast<uint32_t>(elem_type));
  PutPod<uint64_t>(p, count);
  p.insert(p.end(), raw.begin(), raw.end());
  AddKv(std::move(key), ValueType::kArray, std::move(p));
}

void Writer::AddTensor(std::string name, GgmlType type, std::vector<uint64_t> ne,
                       Producer producer) {
  tensors_.push_back(Tensor{std::move(name), type, std::move(ne), std::move(producer)});
}

Status Writer::Validate() const {
  GARNET_RETURN_IF_ERROR(deferred_);
  std::set<std::string_view> keys;
  for (const Kv& kv : kvs_) {
    if (kv.key.empty()) return Status::InvalidArgument("gguf writer", "empty metadata key");
    if (!keys.insert(kv.key).second) {
      return Status::InvalidArgument("gguf writer: key " + kv.key, "added more than once");
    }
    if (kv.key == kKeyAlignment) {
      return Status::InvalidArgument("gguf writer: key " + kv.key,
                                     "set the alignment through the Writer constructor");
    }
  }
  std::set<std::string_view> names;
  for (const Tensor& t : tensors_) {
    const std::string ctx = "gguf writer: tensor " + t.name;
    if (t.name.empty()) return Status::InvalidArgument("gguf writer", "empty tensor name");
    if (t.name.size() > kMaxTensorName) {
      return Status::InvalidArgument(ctx, "name longer than 63 bytes");
    }
    if (!names.insert(t.name).second) return Status::InvalidArgument(ctx, "added more than once");
    if (t.ne.empty() || t.ne.size() > 4) {
      return Status::InvalidArgument(ctx,
                                     std::to_string(t.ne.size()) + " dimensions (need 1 to 4)");
    }
    if (!LookupType(static_cast<uint32_t>(t.type))) {
      return Status::InvalidArgument(
          ctx, "unknown ggml type id " + std::to_string(static_cast<uint32_t>(t.type)));
    }
    uint64_t elems = 1;
    for (uint64_t d : t.ne) {
      if (d == 0) return Status::InvalidArgument(ctx, "has a zero dimension");
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / elems) {
        return Status::InvalidArgument(ctx, "element count overflows int64");
      }
      elems *= d;
    }
    auto bytes = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
    if (!bytes.ok()) return bytes.status().WithContext(ctx);
  }
  return Status::OK();
}

Result<uint64_t> Writer::WritePart(const std::string& path, const std::vector<Kv>& kvs,
                                   size_t first, size_t count) const {
  // Header, metadata and tensor infos are small: build them in memory.
  std::vector<uint8_t> head;
  const bool write_alignment = alignment_ != kDefaultAlignment;
  PutPod<uint32_t>(head, kMagic);
  PutPod<uint32_t>(head, kVersion);
  PutPod<uint64_t>(head, count);
  PutPod<uint64_t>(head, kvs.size() + (write_alignment ? 1 : 0));
  for (const Kv& kv : kvs) {
    PutString(head, kv.key);
    PutPod<uint32_t>(head, static_cast<uint32_t>(kv.type));
    head.insert(head.end(), kv.payload.begin(), kv.payload.end());
  }
  if (write_alignment) {
    PutString(head, kKeyAlignment);
    PutPod<uint32_t>(head, static_cast<uint32_t>(ValueType::kUint32));
    PutPod<uint32_t>(head, alignment_);
  }
  std::vector<uint64_t> sizes(count);
  uint64_t offset = 0;
  for (size_t k = 0; k < count; ++k) {
    const Tensor& t = tensors_[first + k];
    auto bytes = TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size()));
    if (!bytes.ok()) return bytes.status();
    sizes[k] = *bytes;
    PutString(head, t.name);
    PutPod<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) PutPod<uint64_t>(head, d);
    PutPod<uint32_t>(head, static_cast<uint32_t>(t.type));
    PutPod<uint64_t>(head, offset);
    offset = AlignUp(offset + sizes[k], alignment_);
  }

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError(tmp + ": open", errno);
  FdSink sink(fd, tmp);
  Status s;
  sink.Write(head.data(), head.size());
  sink.Zeros(AlignUp(sink.written(), alignment_) - sink.written());

  std::vector<uint8_t> chunk;
  for (size_t k = 0; k < count && s.ok() && sink.status().ok(); ++k) {
    const Tensor& t = tensors_[first + k];
    const uint64_t bytes = sizes[k];
    if (!t.producer) {
      sink.Zeros(bytes);
    } else {
      chunk.resize(static_cast<size_t>(std::min(bytes, kChunkBytes)));
      for (uint64_t done = 0; done < bytes && s.ok() && sink.status().ok();) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes - done, chunk.size()));
        std::memset(chunk.data(), 0, n);  // a producer that skips bytes still writes zeros
        s = t.producer(done, std::span<uint8_t>(chunk.data(), n));
        if (!s.ok()) {
          s = s.WithContext("gguf writer: tensor " + t.name);
          break;
        }
        sink.Write(chunk.data(), n);
        done += n;
      }
    }
    // Pad after every tensor, the last included, as llama.cpp and gguf-py write it.
    sink.Zeros(AlignUp(sink.written(), alignment_) - sink.written());
  }
  sink.Flush();
  if (s.ok()) s = sink.status();
  if (s.ok() && ::fsync(fd) != 0) s = PosixError(tmp + ": fsync", errno);
  if (::close(fd) != 0 && s.ok()) s = PosixError(tmp + ": close", errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = PosixError(path + ": rename from " + tmp, errno);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return sink.written();
}

Result<uint64_t> Writer::Finish(const std::string& path) {
  GARNET_RETURN_IF_ERROR(Validate());
  return WritePart(path, kvs_, 0, tensors_.size());
}

Result<std::vector<std::string>> Writer::FinishSplit(const std::string& path_prefix,
                                                     uint32_t n_parts) {
  GARNET_RETURN_IF_ERROR(Validate());
  if (n_parts < 1 || n_parts > 65535) {
    return Status::InvalidArgument(
        "gguf writer", "split part count " + std::to_string(n_parts) + " outside [1, 65535]");
  }
  for (const Kv& kv : kvs_) {
    if (kv.key.rfind("split.", 0) == 0) {
      return Status::InvalidArgument("gguf writer: key " + kv.key,
                                     "split.* keys are written by FinishSplit itself");
    }
  }
  if (tensors_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("gguf writer", "too many tensors for split.tensors.count");
  }
  const size_t per_part = (tensors_.size() + n_parts - 1) / n_parts;
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < n_parts; ++i) {
    std::vector<Kv> kvs;
    auto add = [&kvs](std::string_view key, ValueType type, auto v) {
      std::vector<uint8_t> p;
      PutPod(p, v);
      kvs.push_back(Kv{std::string(key), type, std::move(p)});
    };
    add(kKeySplitNo, ValueType::kUint16, static_cast<uint16_t>(i));
    add(kKeySplitCount, ValueType::kUint16, static_cast<uint16_t>(n_parts));
    add(kKeySplitTensorsCount, ValueType::kInt32, static_cast<int32_t>(tensors_.size()));
    if (i == 0) kvs.insert(kvs.begin(), kvs_.begin(), kvs_.end());
    const size_t first = std::min(tensors_.size(), static_cast<size_t>(i) * per_part);
    const size_t count = std::min(tensors_.size() - first, per_part);
    std::string path = SplitPath(path_prefix, i + 1, n_parts);
    auto r = WritePart(path, kvs, first, count);
    if (!r.ok()) {
      for (const auto& p : paths) ::unlink(p.c_str());
      return r.status();
    }
    paths.push_back(std::move(path));
  }
  return paths;
}

}  // namespace garnet::gguf
