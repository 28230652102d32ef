// With no Vulkan driver reachable, opening an Engine with backend "vulkan" is a clean
// Unavailable error naming the problem (the caller may then open it with "cpu"), not a crash.
// Its own binary: the loader reads the driver list from the environment at the first instance.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/model/engine.h"
#include "tests/engine/model_fixture.h"

namespace garnet::engine {
namespace {

TEST(VulkanEngineNoDriver, OpenIsUnavailableAndCpuStillWorks) {
  ::setenv("VK_ICD_FILENAMES", "/nonexistent/garnet-no-such-icd.json", 1);
  ::setenv("VK_DRIVER_FILES", "/nonexistent/garnet-no-such-icd.json", 1);
  const std::string path = garnet::testing::TestModelPath("tiny", "f32");
  EngineOptions o;
  o.n_ctx = 64;
  o.n_ubatch = 8;
  o.n_threads = 2;
  o.backend = "vulkan";
  auto e = Engine::Open(path, o);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().IsUnavailable()) << e.status().ToString();
  o.backend = "cpu";
  auto c = Engine::Open(path, o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->backend_name(), "cpu");
  o.backend = "metal";
  EXPECT_EQ(Engine::Open(path, o).status().code(), Code::kUnimplemented);
}

}  // namespace
}  // namespace garnet::engine
