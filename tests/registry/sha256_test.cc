#include "registry/sha256.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <string>

#include "tests/scratch_dir.h"

namespace garnet::registry {
namespace {

class Sha256Test : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { Sha256::TEST_AllowAcceleration(GetParam()); }
  void TearDown() override { Sha256::TEST_AllowAcceleration(true); }
};

// FIPS 180-2 appendix B examples.
TEST_P(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256::HexOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::HexOf("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256::HexOf("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_P(Sha256Test, OneMillionA) {
  Sha256 h;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(chunk);
  EXPECT_EQ(h.FinishHex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_P(Sha256Test, AnySplitGivesSameDigest) {
  std::mt19937 rng(7);
  std::string data(10000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const std::string whole = Sha256::HexOf(data);
  for (int trial = 0; trial < 50; ++trial) {
    Sha256 h;
    size_t pos = 0;
    while (pos < data.size()) {
      size_t n = std::min<size_t>(rng() % 200, data.size() - pos);
      h.Update(data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(h.FinishHex(), whole);
  }
}

// Large input fed in chunks of random size (0 to ~70 KB, so multi-block runs start and end at
// arbitrary offsets, including unaligned addresses), as the pull's hasher and the curl callbacks
// do; compared with one Update and with the other code path.
TEST_P(Sha256Test, LargeInputAnyChunkingMatchesOneShot) {
  std::mt19937 rng(23);
  std::string data((1 << 20) + 333, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const std::string whole = Sha256::HexOf(data);
  Sha256::TEST_AllowAcceleration(!GetParam());
  const std::string other_path = Sha256::HexOf(data);
  Sha256::TEST_AllowAcceleration(GetParam());
  EXPECT_EQ(whole, other_path);
  for (int trial = 0; trial < 8; ++trial) {
    Sha256 h;
    size_t pos = 0;
    while (pos < data.size()) {
      size_t n = std::min<size_t>(rng() % 70000, data.size() - pos);
      h.Update(data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(h.FinishHex(), whole) << "trial " << trial;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, Sha256Test, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Auto" : "Portable"; });

TEST(Sha256, AcceleratedMatchesPortableOnEveryLength) {
  std::mt19937 rng(11);
  std::string data(300, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t n = 0; n <= data.size(); ++n) {
    Sha256::TEST_AllowAcceleration(false);
    std::string a = Sha256::HexOf(std::string_view(data).substr(0, n));
    Sha256::TEST_AllowAcceleration(true);
    std::string b = Sha256::HexOf(std::string_view(data).substr(0, n));
    ASSERT_EQ(a, b) << "length " << n;
  }
}

TEST(Sha256, FileHash) {
  std::string path =
      ::testing::TempDir() + "/sha256_file_test_" + std::to_string(::getpid()) + ".bin";
  garnet::testing::RemoveAtExit(path);
  {
    std::ofstream f(path, std::ios::binary);
    f << "abc";
  }
  uint64_t size = 0;
  auto r = Sha256File(path, nullptr, &size);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(size, 3u);
  EXPECT_TRUE(Sha256File(path + ".missing").status().IsNotFound());
  std::atomic<bool> cancel{true};
  EXPECT_TRUE(Sha256File(path, &cancel).status().IsCancelled());
}

}  // namespace
}  // namespace garnet::registry
