// Replays the fuzz target over the committed seed corpus and over deterministic mutations of it
// (truncations, bit flips, 32/64-bit field overwrites with huge values). Runs with any compiler;
// a crash or an invariant violation in the target aborts the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "tests/gguf/test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace garnet::gguf {
namespace {

std::filesystem::path CorpusDir() {
  const char* src = std::getenv("GARNET_SOURCE_DIR");
  return std::filesystem::path(src && *src ? src : GARNET_GGUF_SOURCE_DIR) / "tests/gguf/corpus";
}

std::vector<std::vector<uint8_t>> Seeds() {
  std::vector<std::filesystem::path> paths;
  for (const auto& e : std::filesystem::directory_iterator(CorpusDir())) {
    if (e.is_regular_file()) paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::vector<uint8_t>> seeds;
  for (const auto& p : paths) seeds.push_back(testing::ReadAll(p.string()));
  return seeds;
}

// Runs the target on an exact-size heap copy, so over-reads are caught by ASan builds.
size_t g_runs = 0;
void Feed(const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> copy(bytes);
  LLVMFuzzerTestOneInput(copy.data(), copy.size());
  ++g_runs;
}

uint64_t Next(uint64_t& state) {  // splitmix64: deterministic, no global RNG state
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TEST(GgufFuzzReplay, CorpusSeedsAreSmallAndMixed) {
  const auto seeds = Seeds();
  ASSERT_GE(seeds.size(), 8u) << "corpus missing at " << CorpusDir();
  size_t valid = 0;
  for (const auto& s : seeds) {
    EXPECT_LT(s.size(), 4096u);
    if (File::FromMemory(s).ok()) ++valid;
  }
  EXPECT_GE(valid, 3u);
  EXPECT_LT(valid, seeds.size());
}

TEST(GgufFuzzReplay, SeedsAndMutations) {
  const auto seeds = Seeds();
  ASSERT_FALSE(seeds.empty());
  g_runs = 0;
  uint64_t rng = 12345;
  const uint64_t kHuge[] = {~uint64_t{0},      uint64_t{1} << 63,
                            uint64_t{1} << 32, (uint64_t{1} << 60) + 7,
                            0xffffffffull,     0x80000000ull};
  for (const auto& seed : seeds) {
    Feed(seed);
    // Every truncation.
    for (size_t n = 0; n < seed.size(); ++n) {
      Feed(std::vector<uint8_t>(seed.begin(), seed.begin() + static_cast<ptrdiff_t>(n)));
    }
    // Random single and multi-bit flips.
    for (int k = 0; k < 300 && !seed.empty(); ++k) {
      std::vector<uint8_t> m(seed);
      const int flips = 1 + static_cast<int>(Next(rng) % 3);
      for (int j = 0; j < flips; ++j) {
        m[Next(rng) % m.size()] ^= static_cast<uint8_t>(1u << (Next(rng) % 8));
      }
      Feed(m);
    }
    // Counts, lengths, dims, types and offsets overwritten with huge values, at every 4-byte
    // position of the header region (fields are not always 8-byte aligned).
    const size_t region = std::min<size_t>(seed.size(), 640);
    for (size_t at = 0; at + 4 <= region; at += 4) {
      for (uint64_t h : kHuge) {
        std::vector<uint8_t> m(seed);
        const size_t width = at + 8 <= m.size() ? 8 : 4;
        std::memcpy(m.data() + at, &h, width);
        Feed(m);
      }
    }
  }
  EXPECT_GT(g_runs, 2000u);
}

}  // namespace
}  // namespace garnet::gguf
