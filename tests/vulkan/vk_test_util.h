// Small helpers shared by the Vulkan tests: random data and host <-> device copies.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "engine/vulkan/buffer.h"
#include "tests/vulkan/vk_test_env.h"

namespace garnet::vk::testing {

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng() & 0xff);
  return v;
}

// A device buffer holding `bytes` (padded to at least 4 bytes).
inline Result<Buffer> UploadBytes(VkTestDevice& d, const void* data, size_t bytes,
                                  MemoryKind kind = MemoryKind::kOther) {
  GARNET_ASSIGN_OR_RETURN(Buffer b, Buffer::Create(*d.device, std::max<size_t>(bytes, 4), kind,
                                                   Residency::kDevice, "test input"));
  GARNET_RETURN_IF_ERROR(d.transfer->Upload(b, 0, data, bytes));
  return b;
}

inline Result<Buffer> UploadFloats(VkTestDevice& d, std::span<const float> v) {
  return UploadBytes(d, v.data(), v.size_bytes());
}

inline Result<std::vector<float>> DownloadFloats(VkTestDevice& d, const Buffer& b, size_t n) {
  std::vector<float> out(n);
  GARNET_RETURN_IF_ERROR(d.transfer->Download(b, 0, out.data(), n * sizeof(float)));
  return out;
}

}  // namespace garnet::vk::testing

#define GARNET_ASSERT_OK(expr)                           \
  do {                                                   \
    const ::garnet::Status garnet_s_ = (expr);           \
    ASSERT_TRUE(garnet_s_.ok()) << garnet_s_.ToString(); \
  } while (0)

#define GARNET_ASSERT_OK_AND_ASSIGN(lhs, expr)                    \
  auto GARNET_CONCAT_(garnet_r_, __LINE__) = (expr);              \
  ASSERT_TRUE(GARNET_CONCAT_(garnet_r_, __LINE__).ok())           \
      << GARNET_CONCAT_(garnet_r_, __LINE__).status().ToString(); \
  lhs = std::move(GARNET_CONCAT_(garnet_r_, __LINE__)).value()
