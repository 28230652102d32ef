// GGUF container: a bounds-checked reader over mmap, and a streaming writer.
//
// Format facts: ../shared/docs/gemma4.md §3.1 (magic "GGUF", version 3, little-endian; metadata
// key/values, tensor infos, padding to general.alignment, then tensor data).
//
// Reader contract: every count, length, offset and size is checked against the file size before
// it is used. A malformed file makes Open() fail with InvalidArgument (or DataLoss for data that
// runs past the end) whose message names the field and its byte offset, e.g.
//   "x.gguf: metadata key #3 at offset 412: string length 9999999999 runs past end of file".
// Nothing is ever read outside the mapping. Tensor data pointers stay valid while the File (or
// Model) that returned them is alive. Sanity limits (far above real models): at most 2^20 keys,
// 2^20 tensors, 2^26 strings per array, general.alignment at most 1 MiB. Versions 2 and 3 are
// read (same layout); tensors may appear in any order and with gaps, but never overlap. Keys and
// tensor names must be non-empty and unique; bool values must be 0 or 1; tensor dims must be 1..4
// with a block-aligned ne[0] and an element count that fits int64 (zero-sized tensors are fine).
//
// A file that is truncated by another process while mapped can still raise SIGBUS on access;
// garnet's model files are written once (Writer renames them into place) and never modified.
//
// Thread-safety: a File/Model is immutable after Open(); any number of threads may read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"
#include "engine/quant/types.h"

namespace garnet::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint32_t kVersion = 3;
inline constexpr uint32_t kDefaultAlignment = 32;

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType t);
// Bytes of one scalar of type t (bool 1, ...); 0 for strings and arrays.
size_t ValueTypeSize(ValueType t);

// One metadata value. Scalars and arrays of scalars are decoded eagerly; arrays of strings keep
// string_views into the mapping (no copies of a 262144-entry vocabulary). Nested arrays
// (array of array) are rejected by the reader.
struct Value {
  ValueType type = ValueType::kUint8;
  ValueType elem_type = ValueType::kUint8;  // for kArray
  // Scalar storage (the one that matches `type`; integers widened, floats as double).
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string_view str;
  // Array storage: count plus a pointer to the raw little-endian elements (numeric/bool), or the
  // decoded string views (string arrays).
  uint64_t count = 0;
  const uint8_t* raw = nullptr;
  std::vector<std::string_view> strings;

  bool is_array() const { return type == ValueType::kArray; }
  // Integer of any width/sign; nullopt if not an integer or out of int64 range.
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsFloat() const;  // any float or integer type
  // Element k of a numeric/bool array as int64/double; nullopt on type mismatch. k < count.
  std::optional<int64_t> IntAt(uint64_t k) const;
  std::optional<double> FloatAt(uint64_t k) const;
};

struct TensorInfo {
  std::string_view name;
  GgmlType type = GgmlType::kF32;
  uint32_t n_dims = 0;
  uint64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (innermost) dimension
  uint64_t offset = 0;            // relative to the data section (as stored)
  uint64_t bytes = 0;             // exact size from type and shape
  const uint8_t* data = nullptr;  // into the mapping; valid while the File lives
  uint32_t file_index = 0;        // which part of a split model holds it

  uint64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t rows() const { return ne[1] * ne[2] * ne[3]; }
};

// One .gguf file, memory-mapped read-only.
class File {
 public:
  // Opens and validates `path`. Failure: NotFound / PermissionDenied from the OS, or
  // InvalidArgument/DataLoss naming the bad field and offset.
  static Result<std::unique_ptr<File>> Open(const std::string& path);
  // Parses an in-memory image (fuzzing and tests). `bytes` must outlive the File.
  static Result<std::unique_ptr<File>> FromMemory(std::span<const uint8_t> bytes,
                                                  std::string display_name = "<memory>");
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t size() const { return size_; }
  uint32_t alignment() const { return alignment_; }
  // Absolute offset of the data section (aligned). May lie past size() in a file without tensors.
  uint64_t data_offset() const { return data_offset_; }
  // The whole image (the mapping, or the FromMemory bytes); valid while the File lives.
  std::span<const uint8_t> bytes() const { return {base_, static_cast<size_t>(size_)}; }

  // Metadata in file order; lookup by key.
  const std::vector<std::pair<std::string_view, Value>>& metadata() const { return kv_; }
  const Value* Find(std::string_view key) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

 private:
  File() = default;
  Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string_view, Value>> kv_;
  std::map<std::string_view, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string_view, size_t> tensor_index_;
};

// A model: one file, or every part of a split set ("name-00001-of-00003.gguf"), opened as one.
// Metadata comes from the first part; tensors from all parts. Opening any part of a set (or the
// first) opens all of them; the parts must agree on split.count, each must carry its own split.no,
// tensor names must be unique across parts and their total must equal split.tensors.count.
class Model {
 public:
  static Result<std::unique_ptr<Model>> Open(const std::string& path);
  // Opens an explicit list of parts (in order).
  static Result<std::unique_ptr<Model>> OpenParts(const std::vector<std::string>& paths);
  // Assembles a model from files already open (e.g. File::FromMemory images; parts in order),
  // with the same split-key and tensor-name checks as OpenParts. Takes ownership.
  static Result<std::unique_ptr<Model>> FromFiles(std::vector<std::unique_ptr<File>> files);

  const File& file(size_t i = 0) const { return *files_[i]; }
  size_t file_count() const { return files_.size(); }
  const Value* Find(std::string_view key) const { return files_[0]->Find(key); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;
  uint64_t total_bytes() const;  // sum of the parts' file sizes

  // Typed metadata accessors. Each returns NotFound naming the key when absent and
  // InvalidArgument naming the key and the found type when the type does not fit. Integer
  // accessors accept every integer width and signedness (llama.cpp writers vary them) and check
  // the range.
  Result<std::string_view> GetString(std::string_view key) const;
  Result<uint32_t> GetU32(std::string_view key) const;
  Result<uint64_t> GetU64(std::string_view key) const;
  Result<float> GetF32(std::string_view key) const;
  Result<bool> GetBool(std::string_view key) const;
  // A per-layer value stored either as a scalar (same for every layer) or as an array of
  // exactly n_layers integers (feed_forward_length, attention.head_count_kv).
  Result<std::vector<uint32_t>> GetPerLayerU32(std::string_view key, uint32_t n_layers) const;
  Result<std::vector<bool>> GetBoolArray(std::string_view key) const;
  Result<std::vector<int32_t>> GetI32Array(std::string_view key) const;
  Result<std::vector<float>> GetF32Array(std::string_view key) const;
  Result<std::vector<std::string_view>> GetStringArray(std::string_view key) const;

 private:
  Model() = default;
  Result<const Value*> Lookup(std::string_view key) const;
  std::string KeyContext(std::string_view key) const;
  Status TypeError(std::string_view key, const Value& v, std::string_view want) const;

  std::vector<std::unique_ptr<File>> files_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string_view, size_t> tensor_index_;
};

// Streaming writer. Metadata and tensor infos are declared first; Finish() writes the header and
// then streams each tensor's bytes from its producer callback, so a 17 GB file never needs 17 GB
// of RAM. Output is deterministic: same calls -> same bytes. The layout is what llama.cpp's
// reader requires: GGUF v3, keys in the order added (general.alignment, as u32, appended only when
// not 32), tensor infos in the order added, data offsets contiguous in that order, every tensor
// (the last included) padded with zeros to the alignment; tensor names at most 63 bytes.
//
// Thread-safety: a Writer is used from one thread; producers run on the thread calling Finish(),
// one after another, and may parallelise internally.
class Writer {
 public:
  explicit Writer(uint32_t alignment = kDefaultAlignment);

  // Metadata, in the order added. Adding a key twice is an error reported by Finish().
  void SetU8(std::string key, uint8_t v);
  void SetI8(std::string key, int8_t v);
  void SetU16(std::string key, uint16_t v);
  void SetI16(std::string key, int16_t v);
  void SetU32(std::string key, uint32_t v);
  void SetI32(std::string key, int32_t v);
  void SetU64(std::string key, uint64_t v);
  void SetI64(std::string key, int64_t v);
  void SetF32(std::string key, float v);
  void SetF64(std::string key, double v);
  void SetBool(std::string key, bool v);
  void SetString(std::string key, std::string v);
  void SetArrayI32(std::string key, std::vector<int32_t> v);
  void SetArrayU32(std::string key, std::vector<uint32_t> v);
  void SetArrayF32(std::string key, std::vector<float> v);
  void SetArrayBool(std::string key, std::vector<bool> v);
  void SetArrayString(std::string key, std::vector<std::string> v);
  // Any array of a numeric type given as raw little-endian element bytes (count elements).
  void SetArrayRaw(std::string key, ValueType elem_type, uint64_t count, std::vector<uint8_t> raw);

  // Producer: called once with a buffer of exactly `bytes` bytes to fill with the tensor's data.
  // It may fill in pieces: it is called repeatedly with (offset, chunk) until all bytes are done;
  // chunks are at most 64 MiB. Return a non-OK Status to abort.
  using Producer = std::function<Status(uint64_t offset, std::span<uint8_t> chunk)>;
  // Declares a tensor (ne[0] innermost). InvalidArgument on bad shape (block-unaligned ne[0],
  // zero dims, more than 4 dims) is reported by Finish().
  void AddTensor(std::string name, GgmlType type, std::vector<uint64_t> ne, Producer producer);

  // Writes the file to `path` (via `path.tmp` and an atomic rename). Returns the bytes written.
  // Failure (bad declarations, a producer error, an OS error) leaves no file at `path` (an older
  // file there is untouched) and removes `path.tmp`. A null producer writes zeros.
  Result<uint64_t> Finish(const std::string& path);

  // Writes the model as `n_parts` files in llama.cpp's gguf-split layout, named
  // SplitPath(path_prefix, i, n_parts) for i = 1..n_parts. Tensors are dealt out in declaration
  // order, ceil(n_tensors / n_parts) per part (later parts may hold none). Every part carries
  // split.no (u16, 0-based), split.count (u16) and split.tensors.count (i32); the first part also
  // carries all metadata, later parts only the split keys (and general.alignment when
  // non-default). Each part is written atomically as Finish() does; on failure, parts already
  // written are removed. Returns the part paths in order.
  Result<std::vector<std::string>> FinishSplit(const std::string& path_prefix, uint32_t n_parts);

 private:
  struct Kv {
    std::string key;
    ValueType type;
    std::vector<uint8_t> payload;  // encoded value bytes that follow the type id
  };
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<uint64_t> ne;
    Producer producer;
  };
  void AddKv(std::string key, ValueType type, std::vector<uint8_t> payload);
  Status Validate() const;
  Result<uint64_t> WritePart(const std::string& path, const std::vector<Kv>& kvs, size_t first,
                             size_t count) const;

  uint32_t alignment_;
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  Status deferred_;
};

// "<prefix>-00002-of-00003.gguf" for part 2 (1-based) of 3: llama.cpp's split file naming.
std::string SplitPath(std::string_view prefix, uint32_t part, uint32_t count);
// The inverse: if `path` names part `part` of `count` ("...-NNNNN-of-MMMMM.gguf", 1 <= part <=
// count), returns true and fills the outputs; otherwise returns false.
bool ParseSplitPath(std::string_view path, std::string* prefix, uint32_t* part, uint32_t* count);

// Split-set keys (llama.cpp LLM_KV_SPLIT_*).
inline constexpr std::string_view kKeySplitNo = "split.no";
inline constexpr std::string_view kKeySplitCount = "split.count";
inline constexpr std::string_view kKeySplitTensorsCount = "split.tensors.count";
inline constexpr std::string_view kKeyAlignment = "general.alignment";

}  // namespace garnet::gguf
