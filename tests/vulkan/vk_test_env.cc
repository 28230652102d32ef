#include "tests/vulkan/vk_test_env.h"

#include <cstdio>

namespace garnet::vk::testing {
namespace {

VkTestEnv* g_env = static_cast<VkTestEnv*>(::testing::AddGlobalTestEnvironment(new VkTestEnv));

}  // namespace

VkTestEnv* VkTestEnv::Get() {
  return g_env;
}

Result<VkTestDevice> MakeTestDevice(std::shared_ptr<Instance> instance, const DeviceOptions& opts) {
  VkTestDevice d;
  GARNET_ASSIGN_OR_RETURN(d.device, Device::Create(std::move(instance), opts));
  GARNET_ASSIGN_OR_RETURN(d.kernels, Kernels::Create(*d.device));
  GARNET_ASSIGN_OR_RETURN(d.recorder, Recorder::Create(*d.device));
  GARNET_ASSIGN_OR_RETURN(d.transfer, Transfer::Create(*d.device));
  return d;
}

void VkTestEnv::SetUp() {
  auto inst = Instance::Create();
  if (!inst.ok()) {
    reason_ = inst.status();
    std::fprintf(stderr, "\n*** NO VULKAN: %s -- Vulkan tests will be SKIPPED ***\n\n",
                 reason_.ToString().c_str());
    return;
  }
  instance_ = *inst;
  DeviceOptions opts;
  opts.pipeline_cache_path = "-";  // tests that need a file make their own device
  // The integer-dot matvecs wherever the feature is, so lavapipe (which emulates the packed dot
  // products and so would not get them by default) tests them too.
  opts.integer_dot_product = true;
  auto dev = MakeTestDevice(instance_, opts);
  if (!dev.ok()) {
    reason_ = dev.status();
    std::fprintf(stderr,
                 "\n*** NO USABLE VULKAN DEVICE: %s -- Vulkan tests will be SKIPPED ***\n\n",
                 reason_.ToString().c_str());
    return;
  }
  main_ = std::move(*dev);
  std::fprintf(stderr, "vulkan tests on: %s\n", main_.device->info().name.c_str());
}

Result<VkTestDevice*> VkTestEnv::fallback() {
  if (!available()) return reason_;
  if (!fallback_tried_) {
    fallback_tried_ = true;
    DeviceOptions opts;
    opts.selector = std::to_string(main_.device->info().index);
    opts.pipeline_cache_path = "-";
    opts.disable_push_descriptors = true;
    opts.disable_subgroup_arithmetic = true;
    opts.disable_16bit_storage = true;
    opts.disable_8bit_storage = true;
    opts.disable_float16 = true;
    opts.integer_dot_product = false;
    auto dev = MakeTestDevice(instance_, opts);
    if (dev.ok()) {
      fallback_ = std::move(*dev);
    } else {
      fallback_status_ = dev.status();
    }
  }
  if (!fallback_status_.ok()) return fallback_status_;
  return &fallback_;
}

void VkTestEnv::TearDown() {
  // Destroy in dependency order: users of a device before the device, devices before the
  // instance.
  for (VkTestDevice* d : {&fallback_, &main_}) {
    d->transfer.reset();
    d->recorder.reset();
    d->kernels.reset();
    d->device.reset();
  }
  instance_.reset();
}

}  // namespace garnet::vk::testing
