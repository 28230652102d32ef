#include "engine/vulkan/shaders.h"

#include <algorithm>

namespace garnet::vk {

const SpirvShader* FindShader(std::string_view name) {
  const std::span<const SpirvShader> all = AllShaders();
  const auto it =
      std::lower_bound(all.begin(), all.end(), name,
                       [](const SpirvShader& s, std::string_view n) { return s.name < n; });
  if (it == all.end() || it->name != name) return nullptr;
  return &*it;
}

}  // namespace garnet::vk
