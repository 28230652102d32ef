// Synthetic Gemma 4 models for engine tests, written once per process into a temp directory with
// the garnet_mkmodel library (same bytes as `garnet-mkmodel --preset P --type T --seed 0`).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>

#include "tests/scratch_dir.h"
#include "tools/mkmodel/generator.h"
#include "tools/mkmodel/plan.h"
#include "tools/mkmodel/spec.h"

namespace garnet::testing {

// n_vocab != 0 replaces the preset's vocabulary size (e.g. a tiny model whose logits rows span
// several of a kernel's chunks).
inline std::string TestModelPath(const std::string& preset, const std::string& type,
                                 uint32_t n_vocab = 0) {
  static std::mutex mu;
  static std::map<std::string, std::string> made;
  std::lock_guard<std::mutex> lock(mu);
  const std::string key =
      preset + "-" + type + (n_vocab ? "-v" + std::to_string(n_vocab) : std::string());
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  static const std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "garnet-engine-XXXXXX").string();
    char* d = mkdtemp(tmpl.data());
    if (d == nullptr) return std::filesystem::temp_directory_path().string();
    RemoveAtExit(d);  // the models go with the process
    return std::string(d);
  }();
  const std::string path = dir + "/" + key + ".gguf";
  auto spec = mkmodel::PresetSpec(preset);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  if (!spec.ok()) return "";
  if (n_vocab) spec->n_vocab = n_vocab;
  mkmodel::TypeOptions types;
  types.base = type;
  auto plan = mkmodel::MakePlan(*spec, types);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return "";
  mkmodel::GenOptions gen;
  gen.seed = 0;
  gen.threads = 2;
  auto w = mkmodel::WriteModel(*plan, gen, path);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  if (!w.ok()) return "";
  made[key] = path;
  return path;
}

}  // namespace garnet::testing
