// One Vulkan instance and device per test binary (lavapipe compiles pipelines slowly, so each
// binary creates them once), registered as a GoogleTest global environment.
//
// When the machine has no Vulkan device at all, every test that needs one skips with a loud
// message (GARNET_REQUIRE_VULKAN) instead of failing.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "engine/vulkan/device.h"
#include "engine/vulkan/kernels.h"
#include "engine/vulkan/recorder.h"
#include "engine/vulkan/transfer.h"

namespace garnet::vk::testing {

struct VkTestDevice {
  std::unique_ptr<Device> device;
  std::unique_ptr<Kernels> kernels;
  std::unique_ptr<Recorder> recorder;
  std::unique_ptr<Transfer> transfer;
};

class VkTestEnv : public ::testing::Environment {
 public:
  // The environment, or nullptr before main() registered it.
  static VkTestEnv* Get();

  void SetUp() override;
  void TearDown() override;

  bool available() const { return main_.device != nullptr; }
  const Status& unavailable_reason() const { return reason_; }
  std::shared_ptr<Instance> instance() const { return instance_; }
  // The device with every feature it has.
  VkTestDevice& main() { return main_; }
  // A second device on the same GPU with subgroup arithmetic, 16-bit (and 8-bit) storage,
  // float16, integer dot products and push descriptors turned off: the fallback paths. Created on
  // first use.
  Result<VkTestDevice*> fallback();

 private:
  std::shared_ptr<Instance> instance_;
  Status reason_;
  VkTestDevice main_;
  VkTestDevice fallback_;
  Status fallback_status_;
  bool fallback_tried_ = false;
};

Result<VkTestDevice> MakeTestDevice(std::shared_ptr<Instance> instance, const DeviceOptions& opts);

}  // namespace garnet::vk::testing

#define GARNET_REQUIRE_VULKAN()                                                               \
  do {                                                                                        \
    auto* garnet_env_ = ::garnet::vk::testing::VkTestEnv::Get();                              \
    if (!garnet_env_ || !garnet_env_->available()) {                                          \
      GTEST_SKIP() << "\n*** NO VULKAN DEVICE: Vulkan tests SKIPPED ("                        \
                   << (garnet_env_ ? garnet_env_->unavailable_reason().ToString() : "no env") \
                   << "). Install mesa-vulkan-drivers (lavapipe) to run them. ***";           \
    }                                                                                         \
  } while (0)

namespace garnet::vk::testing {

// Kernel tests parameterised by device: false runs on the main device, true on the fallback
// device (features off). Skips loudly without Vulkan.
class DeviceParamTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    GARNET_REQUIRE_VULKAN();
    if (GetParam()) {
      auto fb = VkTestEnv::Get()->fallback();
      ASSERT_TRUE(fb.ok()) << fb.status().ToString();
      d_ = *fb;
    } else {
      d_ = &VkTestEnv::Get()->main();
    }
  }
  Kernels& k() { return *d_->kernels; }
  Recorder& rec() { return *d_->recorder; }
  VkTestDevice* d_ = nullptr;
};

}  // namespace garnet::vk::testing
