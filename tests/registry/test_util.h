// Helpers shared by the registry tests.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/gguf/gguf.h"
#include "tests/scratch_dir.h"

namespace garnet::registry::testing {

// A fresh empty directory under the test temp dir, named after the running test.
inline std::string FreshTestDir(const std::string& suffix = "") {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string d = ::testing::TempDir() + "/garnet_reg_" + std::to_string(::getpid()) + "_" +
                  info->test_suite_name() + "_" + info->name() + suffix;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  ::garnet::testing::RemoveAtExit(d);
  return d;
}

inline void ClearProxyEnv() {
  for (const char* v :
       {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    unsetenv(v);
  }
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

// A small valid GGUF ("testarch", `n_tensors` f32 tensors of 64x`rows`), deterministic in
// `seed`, written as `n_parts` split parts (1: a plain file). Returns each part's bytes.
inline std::vector<std::string> MakeTestGgufParts(int n_tensors, uint64_t rows, uint32_t seed,
                                                  uint32_t n_parts) {
  gguf::Writer w;
  w.SetString("general.architecture", "testarch");
  w.SetString("general.name", "test model " + std::to_string(seed));
  w.SetU32("testarch.context_length", 4096);
  w.SetU32("testarch.block_count", static_cast<uint32_t>(n_tensors));
  w.SetU32("testarch.embedding_length", 64);
  for (int i = 0; i < n_tensors; ++i) {
    w.AddTensor("blk." + std::to_string(i) + ".weight", GgmlType::kF32, {64, rows},
                [seed, i](uint64_t offset, std::span<uint8_t> chunk) {
                  for (size_t k = 0; k < chunk.size(); ++k) {
                    chunk[k] = static_cast<uint8_t>((offset + k) * 131 + seed * 7 + i);
                  }
                  return Status::OK();
                });
  }
  // Unique per process: ctest runs tests of one binary in parallel processes.
  std::string prefix = ::testing::TempDir() + "/garnet_test_gguf_" + std::to_string(::getpid()) +
                       "_" + std::to_string(seed);
  std::vector<std::string> out;
  if (n_parts <= 1) {
    auto r = w.Finish(prefix + ".gguf");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    out.push_back(ReadFile(prefix + ".gguf"));
    std::filesystem::remove(prefix + ".gguf");
    return out;
  }
  auto parts = w.FinishSplit(prefix, n_parts);
  EXPECT_TRUE(parts.ok()) << parts.status().ToString();
  if (!parts.ok()) return out;
  for (const std::string& p : *parts) {
    out.push_back(ReadFile(p));
    std::filesystem::remove(p);
  }
  return out;
}

inline std::string MakeTestGguf(int n_tensors, uint64_t rows, uint32_t seed) {
  return MakeTestGgufParts(n_tensors, rows, seed, 1)[0];
}

}  // namespace garnet::registry::testing
