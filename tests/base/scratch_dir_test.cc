// The test helpers that keep a test run from leaving files in the temp directory.
#include "tests/scratch_dir.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace garnet::testing {
namespace {

namespace fs = std::filesystem;

TEST(ScratchDir, GoesWithItsOwnerEvenWhenReadOnly) {
  std::string path;
  {
    ScratchDir dir("garnet-scratch-test");
    path = dir.path();
    ASSERT_FALSE(path.empty());
    ASSERT_TRUE(fs::is_directory(path));
    fs::create_directories(dir.Path("blobs/sub"));
    std::ofstream(dir.Path("blobs/sub/blob")) << "bytes";
    // As the registry leaves its blobs: read-only files in a directory made read-only.
    fs::permissions(dir.Path("blobs/sub/blob"), fs::perms::owner_read);
    fs::permissions(dir.Path("blobs/sub"), fs::perms::owner_read | fs::perms::owner_exec);
    ScratchDir other("garnet-scratch-test");
    EXPECT_NE(other.path(), path);
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(ScratchDir, PathsRegisteredForExitGoWhenTheProcessExits) {
  ScratchDir outer("garnet-scratch-test");
  const std::string tree = outer.Path("tree"), file = outer.Path("file");
  fs::create_directories(tree + "/a/b");
  std::ofstream(tree + "/a/b/c") << "x";
  std::ofstream(file) << "y";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    RemoveAtExit(tree);
    RemoveAtExit(file);
    RemoveAtExit(file);                                       // twice is once
    std::exit(fs::exists(tree) && fs::exists(file) ? 0 : 3);  // runs the static destructors
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(fs::exists(tree));
  EXPECT_FALSE(fs::exists(file));
}

}  // namespace
}  // namespace garnet::testing
