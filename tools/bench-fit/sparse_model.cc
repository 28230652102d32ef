#include "tools/bench-fit/sparse_model.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "engine/gguf/gguf.h"
#include "tools/mkmodel/generator.h"

namespace garnet::benchfit {
namespace {

// Bounds-checked little-endian cursor over the metadata file.
class Cursor {
 public:
  explicit Cursor(const std::vector<uint8_t>& b) : b_(b) {}
  Result<uint64_t> U64() { return Take(8); }
  Result<uint32_t> U32() {
    GARNET_ASSIGN_OR_RETURN(uint64_t v, Take(4));
    return static_cast<uint32_t>(v);
  }
  Status Skip(uint64_t n) {
    if (n > b_.size() - pos_) return Status::DataLoss("metadata file", "value runs past the end");
    pos_ += n;
    return Status::OK();
  }
  Status SkipString() {
    GARNET_ASSIGN_OR_RETURN(uint64_t n, U64());
    return Skip(n);
  }
  size_t pos() const { return pos_; }

 private:
  Result<uint64_t> Take(size_t n) {
    if (n > b_.size() - pos_) return Status::DataLoss("metadata file", "field runs past the end");
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(b_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  const std::vector<uint8_t>& b_;
  size_t pos_ = 0;
};

// Offset just past the last metadata key/value of a GGUF image with no tensors.
Result<size_t> MetadataEnd(const std::vector<uint8_t>& bytes, uint64_t* n_kv) {
  Cursor c(bytes);
  GARNET_RETURN_IF_ERROR(c.Skip(8));  // magic, version
  GARNET_ASSIGN_OR_RETURN(uint64_t n_tensors, c.U64());
  if (n_tensors != 0) return Status::Internal("metadata file", "has tensors");
  GARNET_ASSIGN_OR_RETURN(*n_kv, c.U64());
  for (uint64_t k = 0; k < *n_kv; ++k) {
    GARNET_RETURN_IF_ERROR(c.SkipString());
    GARNET_ASSIGN_OR_RETURN(uint32_t type, c.U32());
    auto t = static_cast<gguf::ValueType>(type);
    uint64_t count = 1;
    if (t == gguf::ValueType::kArray) {
      GARNET_ASSIGN_OR_RETURN(uint32_t elem, c.U32());
      t = static_cast<gguf::ValueType>(elem);
      GARNET_ASSIGN_OR_RETURN(count, c.U64());
    }
    if (t == gguf::ValueType::kString) {
      for (uint64_t i = 0; i < count; ++i) GARNET_RETURN_IF_ERROR(c.SkipString());
    } else {
      const size_t size = gguf::ValueTypeSize(t);
      if (size == 0 || count > (bytes.size() / size)) {
        return Status::Internal("metadata file", "unexpected value type " + std::to_string(type));
      }
      GARNET_RETURN_IF_ERROR(c.Skip(count * size));
    }
  }
  return c.pos();
}

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
  }
}

uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

Status WriteAll(int fd, const std::string& path, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return PosixError(path + ": write", errno);
    }
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

Result<uint64_t> Compose(const mkmodel::ModelPlan& plan, const std::string& meta_path,
                         const std::string& path) {
  mkmodel::ModelPlan meta = plan;
  meta.tensors.clear();
  mkmodel::GenOptions opts;
  opts.threads = 1;
  GARNET_RETURN_IF_ERROR(mkmodel::WriteModel(meta, opts, meta_path).status());
  std::vector<uint8_t> bytes;
  {
    std::ifstream in(meta_path, std::ios::binary);
    if (!in) return Status::NotFound(meta_path, "cannot reopen the metadata file");
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  uint32_t alignment = gguf::kDefaultAlignment;
  {
    GARNET_ASSIGN_OR_RETURN(auto file, gguf::File::Open(meta_path));
    alignment = file->alignment();
  }
  uint64_t n_kv = 0;
  GARNET_ASSIGN_OR_RETURN(size_t kv_end, MetadataEnd(bytes, &n_kv));

  std::vector<uint8_t> head(bytes.begin(), bytes.begin() + 8);  // magic, version
  Put<uint64_t>(head, plan.tensors.size());
  Put<uint64_t>(head, n_kv);
  head.insert(head.end(), bytes.begin() + 24, bytes.begin() + static_cast<ptrdiff_t>(kv_end));
  uint64_t offset = 0;
  for (const auto& t : plan.tensors) {
    GARNET_ASSIGN_OR_RETURN(uint64_t size,
                            TensorBytes(t.type, t.ne.data(), static_cast<uint32_t>(t.ne.size())));
    Put<uint64_t>(head, t.name.size());
    head.insert(head.end(), t.name.begin(), t.name.end());
    Put<uint32_t>(head, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) Put<uint64_t>(head, d);
    Put<uint32_t>(head, static_cast<uint32_t>(t.type));
    Put<uint64_t>(head, offset);
    offset = AlignUp(offset + size, alignment);
  }
  head.resize(AlignUp(head.size(), alignment), 0);
  const uint64_t total = head.size() + offset;

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError(tmp + ": open", errno);
  Status s = WriteAll(fd, tmp, head);
  if (s.ok() && ::ftruncate(fd, static_cast<off_t>(total)) != 0) {
    s = PosixError(tmp + ": ftruncate", errno);
  }
  if (::close(fd) != 0 && s.ok()) s = PosixError(tmp + ": close", errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = PosixError(path + ": rename", errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return total;
}

}  // namespace

Result<uint64_t> WriteSparseModel(const mkmodel::ModelPlan& plan, const std::string& path) {
  const std::string meta_path = path + ".meta";
  auto r = Compose(plan, meta_path, path);
  ::unlink(meta_path.c_str());
  return r;
}

}  // namespace garnet::benchfit
