// Pipeline cache on disk, pipeline lookup errors, and the Recorder's barriers and errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "engine/vulkan/pipeline.h"
#include "engine/vulkan/recorder.h"
#include "engine/vulkan/shaders.h"
#include "tests/scratch_dir.h"
#include "tests/vulkan/vk_test_env.h"
#include "tests/vulkan/vk_test_util.h"

namespace garnet::vk {
namespace {

namespace fs = std::filesystem;
using testing::VkTestEnv;

using TempDir = garnet::testing::ScratchDir;

std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteFile(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// Creates a device with its cache at `path`, builds one small pipeline, and returns the
// cache's load note; the file is written when the device is destroyed.
std::string RunWithCache(const fs::path& path, bool* loaded) {
  DeviceOptions opts;
  opts.selector = std::to_string(VkTestEnv::Get()->main().device->info().index);
  opts.pipeline_cache_path = path.string();
  auto dev = Device::Create(VkTestEnv::Get()->instance(), opts);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  if (!dev.ok()) return "";
  PipelineDesc desc{"softcap", 2, 0b10, 8, {64}, {64, 1, 1}};
  auto p = (*dev)->pipelines().Get(desc);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  *loaded = (*dev)->pipelines().loaded_from_disk();
  return (*dev)->pipelines().load_note();
}

TEST(PipelineCache, WrittenThenReusedByTheNextDevice) {
  GARNET_REQUIRE_VULKAN();
  TempDir dir;
  const fs::path file = fs::path(dir.path()) / "sub" / "vk-test.bin";
  bool loaded = true;
  EXPECT_EQ(RunWithCache(file, &loaded), "no file");
  EXPECT_FALSE(loaded);
  ASSERT_TRUE(fs::exists(file));
  const std::vector<uint8_t> first = ReadFile(file);
  ASSERT_GE(first.size(), 24u + 32u);
  EXPECT_EQ(std::memcmp(first.data(), "GVKC", 4), 0);
  const std::string note = RunWithCache(file, &loaded);
  EXPECT_TRUE(loaded) << note;
  EXPECT_EQ(note.rfind("loaded ", 0), 0u) << note;
  // No temp files are left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(file.parent_path())) entries += !e.is_directory();
  EXPECT_EQ(entries, 1);
}

TEST(PipelineCache, CorruptTruncatedOrForeignFilesAreIgnored) {
  GARNET_REQUIRE_VULKAN();
  TempDir dir;
  const fs::path file = fs::path(dir.path()) / "vk.bin";
  bool loaded = false;
  RunWithCache(file, &loaded);
  const std::vector<uint8_t> good = ReadFile(file);
  ASSERT_GE(good.size(), 56u);

  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
    const char* note;
  };
  std::vector<Case> cases;
  cases.push_back({"garbage", testing::RandomBytes(1000, 3), "ignored: not a garnet"});
  cases.push_back({"empty", {}, "ignored: shorter"});
  cases.push_back(
      {"truncated", std::vector<uint8_t>(good.begin(), good.end() - 5), "ignored: payload size"});
  std::vector<uint8_t> flipped = good;
  flipped.back() ^= 0x5a;
  cases.push_back({"bit flip", flipped, "ignored: checksum"});
  // A well-formed file for another device: patch the driver header's vendor id and fix the
  // checksum, as a file copied from another machine would look.
  std::vector<uint8_t> foreign = good;
  foreign[24 + 8] ^= 0xff;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 24; i < foreign.size(); ++i) {
    h ^= foreign[i];
    h *= 0x100000001b3ull;
  }
  std::memcpy(foreign.data() + 16, &h, 8);
  cases.push_back({"foreign device", foreign, "ignored: written for another device"});

  for (const Case& c : cases) {
    WriteFile(file, c.bytes);
    bool l = true;
    const std::string note = RunWithCache(file, &l);
    EXPECT_FALSE(l) << c.name;
    EXPECT_EQ(note.rfind(c.note, 0), 0u) << c.name << ": " << note;
    // The bad file was replaced by a good one on the way out.
    bool again = false;
    RunWithCache(file, &again);
    EXPECT_TRUE(again) << c.name;
  }
}

TEST(Pipelines, CreatedOnceAndBadDescsAreErrors) {
  GARNET_REQUIRE_VULKAN();
  Device& dev = *VkTestEnv::Get()->main().device;
  PipelineDesc desc{"softcap", 2, 0b10, 8, {128}, {128, 1, 1}};
  GARNET_ASSERT_OK_AND_ASSIGN(const Pipeline* a, dev.pipelines().Get(desc));
  const size_t n = dev.pipelines().size();
  GARNET_ASSERT_OK_AND_ASSIGN(const Pipeline* b, dev.pipelines().Get(desc));
  EXPECT_EQ(a, b);
  EXPECT_EQ(dev.pipelines().size(), n);

  PipelineDesc unknown = desc;
  unknown.shader = "no_such_shader";
  EXPECT_TRUE(dev.pipelines().Get(unknown).status().IsNotFound());
  PipelineDesc big_push = desc;
  big_push.push_bytes = 4096;
  EXPECT_TRUE(dev.pipelines().Get(big_push).status().IsInvalidArgument());
  EXPECT_EQ(dev.pipelines().size(), n);
}

// The compile statistics, where the device reports them (NVIDIA does; lavapipe 22.3 does not), are
// captured only when asked for; the pipeline is the same either way.
TEST(Pipelines, StatisticsOnlyWhenAskedAndWhereAvailable) {
  GARNET_REQUIRE_VULKAN();
  const DeviceInfo& info = VkTestEnv::Get()->main().device->info();
  for (const bool want : {false, true}) {
    DeviceOptions opts;
    opts.selector = std::to_string(info.index);
    opts.pipeline_cache_path = "-";
    opts.pipeline_statistics = want;
    GARNET_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Device> dev,
                                Device::Create(VkTestEnv::Get()->instance(), opts));
    EXPECT_EQ(dev->caps().pipeline_statistics, want && info.pipeline_executable_info);
    PipelineDesc desc{"softcap", 2, 0b10, 8, {64}, {64, 1, 1}};
    GARNET_ASSERT_OK_AND_ASSIGN(const Pipeline* p, dev->pipelines().Get(desc));
    EXPECT_NE(p->pipeline, VK_NULL_HANDLE);
    if (!dev->caps().pipeline_statistics) {
      EXPECT_EQ(p->statistics, "");
      continue;
    }
    // "name=value" pairs from the driver, not one of ReadStatistics' notes.
    EXPECT_NE(p->statistics.find('='), std::string::npos) << p->statistics;
    EXPECT_NE(p->statistics.front(), '(') << p->statistics;
  }
}

TEST(Shaders, TableIsSortedAndHoldsSpirv) {
  const auto all = AllShaders();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].words[0], 0x07230203u) << all[i].name;  // SPIR-V magic
    if (i > 0) EXPECT_LT(all[i - 1].name, all[i].name);
    EXPECT_EQ(FindShader(all[i].name), &all[i]);
  }
  EXPECT_EQ(FindShader("matvec_nope"), nullptr);
  EXPECT_NE(FindShader("matvec_q8_0_s16_sg"), nullptr);
}

// A chain of dependent steps in ONE command buffer: fill A, copy A->B, softcap B->C in place
// steps, copy C->D. Correct results need every barrier the Recorder inserts.
void DependentChain(testing::VkTestDevice& d) {
  Recorder& rec = *d.recorder;
  const uint32_t n = 1000;
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer a, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer b, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer c, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(rec.Fill(a, 0, n * 4, 0x42c80000u));  // 100.0f
  GARNET_ASSERT_OK(rec.Copy(a, 0, b, 0, n * 4));
  EXPECT_EQ(rec.stats().barriers, 1u);  // RAW on a
  // softcap(100, 30) then four more times, in place on b, then into c.
  for (int i = 0; i < 5; ++i) GARNET_ASSERT_OK(d.kernels->Softcap(rec, n, 30.0f, b, b));
  GARNET_ASSERT_OK(d.kernels->Softcap(rec, n, 30.0f, b, c));
  EXPECT_EQ(rec.stats().barriers, 7u);
  EXPECT_EQ(rec.stats().dispatches, 6u);
  GARNET_ASSERT_OK(rec.SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> out, testing::DownloadFloats(d, c, n));
  double want = 100.0;
  for (int i = 0; i < 6; ++i) want = 30.0 * std::tanh(want / 30.0);
  for (uint32_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], want, 1e-4 * want) << i;
}

TEST(Recorder, InsertsBarriersOnlyForHazards) {
  GARNET_REQUIRE_VULKAN();
  auto& d = VkTestEnv::Get()->main();
  DependentChain(d);

  // Independent work on disjoint buffers, and on disjoint ranges of one buffer: no barriers.
  Recorder& rec = *d.recorder;
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer x, Buffer::Create(*d.device, 4096, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer y, Buffer::Create(*d.device, 4096, MemoryKind::kScratch));
  GARNET_ASSERT_OK(rec.Fill(x, 0, 2048, 0));
  GARNET_ASSERT_OK(rec.Fill(x, 2048, 2048, 0));
  GARNET_ASSERT_OK(rec.Fill(y, 0, 4096, 0));
  EXPECT_EQ(rec.stats().barriers, 0u);
  // Write-after-read also needs one.
  GARNET_ASSERT_OK(rec.Copy(x, 0, y, 0, 16));  // RAW on x and WAW on y
  GARNET_ASSERT_OK(rec.Fill(x, 0, 16, 1));     // WAR on x
  EXPECT_EQ(rec.stats().barriers, 2u);
  GARNET_ASSERT_OK(rec.SubmitAndWait());
}

TEST(Recorder, DescriptorPoolFallbackAndManyDispatches) {
  GARNET_REQUIRE_VULKAN();
  GARNET_ASSERT_OK_AND_ASSIGN(testing::VkTestDevice * fb, VkTestEnv::Get()->fallback());
  ASSERT_FALSE(fb->device->caps().push_descriptors);
  DependentChain(*fb);
  // More dispatches than one descriptor pool holds (256 sets): pools are added and reset.
  const uint32_t n = 64;
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer a, Buffer::Create(*fb->device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK(fb->recorder->Fill(a, 0, n * 4, 0x3f800000u));  // 1.0
  for (int i = 0; i < 600; ++i)
    GARNET_ASSERT_OK(fb->kernels->Softcap(*fb->recorder, n, 1e6f, a, a));
  GARNET_ASSERT_OK(fb->recorder->SubmitAndWait());
  GARNET_ASSERT_OK_AND_ASSIGN(std::vector<float> out, testing::DownloadFloats(*fb, a, n));
  for (float v : out) EXPECT_NEAR(v, 1.0f, 1e-5f);
}

TEST(Recorder, RecordingErrorsAreReturnedAndLatched) {
  GARNET_REQUIRE_VULKAN();
  auto& d = VkTestEnv::Get()->main();
  Recorder& rec = *d.recorder;
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer a, Buffer::Create(*d.device, 64, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(
      const Pipeline* p, d.device->pipelines().Get({"softcap", 2, 0b10, 8, {256}, {256, 1, 1}}));
  struct {
    uint32_t n;
    float cap;
  } push{16, 1.0f};
  const BufferRange one[] = {a};
  EXPECT_TRUE(rec.Dispatch(*p, one, push, 1).IsInvalidArgument());  // wrong binding count
  const BufferRange outside[] = {BufferRange(a, 32, 64), a};
  EXPECT_TRUE(rec.Dispatch(*p, outside, push, 1).IsInvalidArgument());
  const BufferRange ok[] = {a, a};
  GARNET_ASSERT_OK(rec.Fill(a, 0, 64, 0));
  const Status s = rec.SubmitAndWait();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();  // the first error, nothing submitted
  EXPECT_TRUE(rec.empty());
  GARNET_ASSERT_OK(rec.Dispatch(*p, ok, push, 1));  // reusable afterwards
  GARNET_ASSERT_OK(rec.SubmitAndWait());
  // Kernel-level shape checks happen before recording.
  EXPECT_TRUE(d.kernels->Softcap(rec, 17, 1.0f, a, a).IsInvalidArgument());
  EXPECT_TRUE(rec.empty());
}

// Kept mode: a pass recorded once (softcap of a host-written input into a host-read output)
// is replayed after the host rewrites the input, and reads the new values each time; Flush()
// does not cut it; Discard() drops it. On both descriptor paths (push descriptors and pools,
// whose sets must survive until the pass is dropped).
void KeptPassReplays(testing::VkTestDevice& d) {
  GARNET_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Recorder> rec, Recorder::Create(*d.device));
  const uint32_t n = 256;
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer in, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch,
                                                        Residency::kHostUpload, "in"));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer mid, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch));
  GARNET_ASSERT_OK_AND_ASSIGN(Buffer out, Buffer::Create(*d.device, n * 4, MemoryKind::kScratch,
                                                         Residency::kHostReadback, "out"));
  auto write_in = [&](float v) {
    auto* f = reinterpret_cast<float*>(in.mapped());
    for (uint32_t i = 0; i < n; ++i) f[i] = v + static_cast<float>(i);
    return in.FlushHostWrites(0, n * 4);
  };
  auto check_out = [&](float v) {
    GARNET_ASSERT_OK(out.InvalidateForHostReads(0, n * 4));
    const auto* f = reinterpret_cast<const float*>(out.mapped());
    for (uint32_t i = 0; i < n; ++i) {
      const double want = 50.0 * std::tanh((v + i) / 50.0);
      ASSERT_NEAR(f[i], want, 1e-4 * std::fabs(want) + 1e-5) << "value " << v << " at " << i;
    }
  };
  EXPECT_EQ(rec->Replay().code(), Code::kFailedPrecondition);  // nothing kept yet
  rec->set_keep(true);
  GARNET_ASSERT_OK(write_in(1.0f));
  GARNET_ASSERT_OK(d.kernels->Softcap(*rec, n, 1e6f, in, mid));
  GARNET_ASSERT_OK(rec->Flush());  // kept passes stay one command buffer
  GARNET_ASSERT_OK(d.kernels->Softcap(*rec, n, 50.0f, mid, out));
  EXPECT_EQ(rec->stats().barriers, 1u);
  GARNET_ASSERT_OK(rec->SubmitAndWait());
  EXPECT_TRUE(rec->kept());
  check_out(1.0f);
  for (float v : {-40.0f, 7.5f, 100.0f}) {
    rec->set_spin_wait(v > 0 ? 10'000'000 : 0);  // polling the fence first, or not
    GARNET_ASSERT_OK(write_in(v));
    GARNET_ASSERT_OK(rec->Replay());
    check_out(v);
  }
  rec->set_spin_wait(0);
  EXPECT_EQ(rec->stats().dispatches, 2u);  // the kept pass's counters
  rec->Discard();
  EXPECT_FALSE(rec->kept());
  EXPECT_TRUE(rec->empty());
  EXPECT_EQ(rec->Replay().code(), Code::kFailedPrecondition);
  // Recording again (still in kept mode) makes a new pass; a new command drops a kept one too.
  GARNET_ASSERT_OK(write_in(3.0f));
  GARNET_ASSERT_OK(d.kernels->Softcap(*rec, n, 50.0f, in, out));
  GARNET_ASSERT_OK(rec->SubmitAndWait());
  check_out(3.0f);
  GARNET_ASSERT_OK(d.kernels->Softcap(*rec, n, 50.0f, in, out));
  EXPECT_FALSE(rec->kept());
  GARNET_ASSERT_OK(write_in(-2.0f));
  GARNET_ASSERT_OK(rec->SubmitAndWait());
  check_out(-2.0f);
}

TEST(Recorder, KeptPassReplaysWithNewInputs) {
  GARNET_REQUIRE_VULKAN();
  KeptPassReplays(VkTestEnv::Get()->main());
  GARNET_ASSERT_OK_AND_ASSIGN(testing::VkTestDevice * fb, VkTestEnv::Get()->fallback());
  KeptPassReplays(*fb);
}

}  // namespace
}  // namespace garnet::vk
