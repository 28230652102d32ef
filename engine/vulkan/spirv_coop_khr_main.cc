// garnet-spirv-coop-khr: the build-time step that makes the KHR cooperative-matrix variants of a
// shader from its NV-form SPIR-V (spirv_coop_khr.h; run by shaders.cmake).
//   garnet-spirv-coop-khr <in.spv> <out.spv>
// Exit status 0 on success; 1 with the reason on stderr (and no output file) otherwise.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/vulkan/spirv_coop_khr.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: garnet-spirv-coop-khr <in.spv> <out.spv>\n");
    return 1;
  }
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    std::fprintf(stderr, "garnet-spirv-coop-khr: cannot read %s\n", argv[1]);
    return 1;
  }
  if (bytes.empty() || bytes.size() % 4 != 0) {
    std::fprintf(stderr, "garnet-spirv-coop-khr: %s: %zu bytes, not a whole number of words\n",
                 argv[1], bytes.size());
    return 1;
  }
  // glslc writes the words in host (little-endian) order, which is what the rewriter reads.
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  auto khr = garnet::vk::RewriteCoopmatNvToKhr(words);
  if (!khr.ok()) {
    std::fprintf(stderr, "garnet-spirv-coop-khr: %s: %s\n", argv[1],
                 khr.status().ToString().c_str());
    return 1;
  }
  const std::string tmp = std::string(argv[2]) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(khr->data()),
              static_cast<std::streamsize>(khr->size() * 4));
    if (!out.good()) {
      std::fprintf(stderr, "garnet-spirv-coop-khr: cannot write %s\n", tmp.c_str());
      return 1;
    }
  }
  if (std::rename(tmp.c_str(), argv[2]) != 0) {
    std::fprintf(stderr, "garnet-spirv-coop-khr: cannot rename %s to %s\n", tmp.c_str(), argv[2]);
    return 1;
  }
  return 0;
}
