// Helpers shared by the GGUF tests: a scratch directory, file I/O, and a raw GGUF byte builder
// for crafting malformed files the Writer refuses to produce.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "tests/scratch_dir.h"

namespace garnet::gguf::testing {

using ::garnet::testing::ScratchDir;

inline std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void WriteAll(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Appends little-endian GGUF fields; no validation at all.
class RawBuilder {
 public:
  template <typename T>
  RawBuilder& Pod(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    bytes_.insert(bytes_.end(), b, b + sizeof(T));
    return *this;
  }
  RawBuilder& U8(uint8_t v) { return Pod(v); }
  RawBuilder& U32(uint32_t v) { return Pod(v); }
  RawBuilder& U64(uint64_t v) { return Pod(v); }
  RawBuilder& Str(std::string_view s) {
    U64(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  RawBuilder& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return U32(0x46554747).U32(version).U64(tensors).U64(kvs);
  }
  RawBuilder& KvU32(std::string_view key, uint32_t v) { return Str(key).U32(4).U32(v); }
  RawBuilder& TensorInfo(std::string_view name, std::vector<uint64_t> ne, uint32_t type,
                         uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) U64(d);
    return U32(type).U64(offset);
  }
  RawBuilder& PadTo(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  RawBuilder& Zeros(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace garnet::gguf::testing
