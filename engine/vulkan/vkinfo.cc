// garnet-vkinfo: lists the Vulkan devices garnet sees and which one it would pick.
//   garnet-vkinfo [selector]   (selector: index or name substring, as --device takes)
// Exit status: 0 when a usable device was selected, 1 otherwise (the reason on stderr).
#include <cstdio>
#include <string>

#include "engine/vulkan/device.h"

int main(int argc, char** argv) {
  using namespace garnet::vk;
  const std::string selector = argc > 1 ? argv[1] : "";
  auto instance = Instance::Create();
  if (!instance.ok()) {
    std::fprintf(stderr, "garnet-vkinfo: %s\n", instance.status().ToString().c_str());
    return 1;
  }
  for (const DeviceInfo& d : (*instance)->devices()) std::printf("%s", FormatDeviceInfo(d).c_str());
  auto pick = SelectDevice((*instance)->devices(), selector);
  if (!pick.ok()) {
    std::fprintf(stderr, "garnet-vkinfo: %s\n", pick.status().ToString().c_str());
    return 1;
  }
  std::printf("selected: device %u (%s)\n", *pick, (*instance)->devices()[*pick].name.c_str());
  return 0;
}
