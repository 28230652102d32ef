// Records many dispatches, copies and fills into ONE command buffer and submits it once, with a
// fence, waiting for completion. The caller never writes a barrier: the Recorder remembers which
// buffer ranges earlier commands (since the last barrier) read and wrote, and before a command
// that would race with them (read-after-write, write-after-write, write-after-read on
// overlapping ranges of the same VkBuffer) it inserts one pipeline barrier that makes every
// pending write available and visible. Commands on disjoint ranges run without barriers between
// them. SubmitAndWait also makes all device writes visible to the host.
//
// Errors while recording (a bad binding range, a grid larger than the device allows, ...) are
// returned by the call and also latched: SubmitAndWait then returns the first one, submits
// nothing, and leaves the Recorder empty and reusable.
//
// Thread-safety: one thread at a time per Recorder; several Recorders on one Device may submit
// from different threads.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/base/status.h"
#include "engine/vulkan/buffer.h"
#include "engine/vulkan/pipeline.h"

namespace garnet::vk {

class Device;

// A range of a buffer bound to a shader. size == VK_WHOLE_SIZE means "to the end".
struct BufferRange {
  BufferRange(const Buffer& b) : buffer(&b) {}  // NOLINT(google-explicit-constructor)
  BufferRange(const Buffer& b, uint64_t off, uint64_t sz) : buffer(&b), offset(off), size(sz) {}
  const Buffer* buffer;
  uint64_t offset = 0;
  uint64_t size = VK_WHOLE_SIZE;
};

class Recorder {
 public:
  struct Stats {
    uint32_t dispatches = 0;
    uint32_t transfers = 0;  // copies and fills
    uint32_t barriers = 0;   // pipeline barriers inserted between commands
    uint32_t submits = 0;    // total over the Recorder's life (Flush() parts included)
  };

  // Errors: VkError of command pool / buffer / fence creation.
  static Result<std::unique_ptr<Recorder>> Create(Device& device);
  // Waits for a submission still in flight, then destroys everything.
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Records `pipeline` over a gx*gy*gz grid of workgroups. bindings.size() must equal the
  // pipeline's n_bindings and push.size() its push_bytes. Every range must lie inside its buffer,
  // start at a multiple of minStorageBufferOffsetAlignment, and be no larger than
  // maxStorageBufferRange. InvalidArgument otherwise (naming the binding and the buffer).
  Status Dispatch(const Pipeline& pipeline, std::span<const BufferRange> bindings,
                  std::span<const uint8_t> push, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1);
  template <typename Push>
  Status Dispatch(const Pipeline& pipeline, std::span<const BufferRange> bindings, const Push& push,
                  uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
    return Dispatch(pipeline, bindings,
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&push), sizeof push),
                    gx, gy, gz);
  }

  // vkCmdCopyBuffer of `size` bytes. InvalidArgument when a range is outside its buffer.
  Status Copy(const Buffer& src, uint64_t src_offset, const Buffer& dst, uint64_t dst_offset,
              uint64_t size);
  // vkCmdFillBuffer with a 32-bit pattern; offset and size multiples of 4.
  Status Fill(const Buffer& dst, uint64_t offset, uint64_t size, uint32_t value);

  // Submits what was recorded so far without waiting and goes on recording into another command
  // buffer, so the device starts on the first part while the host records the rest. Barriers
  // stay complete across the cut (the next conflicting command gets one, and a barrier orders
  // every earlier submission on the queue). Wait() waits for all parts. OK and nothing done when
  // nothing is recorded or an error is latched (Submit reports it, after the parts already
  // submitted have finished). Errors: VkError of ending, submitting or allocating.
  Status Flush();
  // Ends the command buffer and submits it without waiting. OK with nothing recorded. The
  // Recorder accepts no new commands until Wait() (a new command waits implicitly).
  Status Submit();
  // Waits up to `timeout_ns` for the last Submit. OK when nothing is in flight. Afterwards the
  // Recorder is empty and reusable (stats() reset except `submits`). On DeadlineExceeded the
  // work is still in flight; the next call (or the destructor) waits again.
  Status Wait(uint64_t timeout_ns = kDefaultTimeoutNs);
  // Submit() then Wait(). Returns the first latched recording error instead, submitting nothing.
  Status SubmitAndWait(uint64_t timeout_ns = kDefaultTimeoutNs);

  // Kept mode (a replayable pass, e.g. one decoded token): Flush() records on without submitting
  // (the pass stays one command buffer), and a successful Wait() keeps the command buffer and its
  // descriptor sets instead of resetting, so Replay() can submit the same commands again. Every
  // value the commands use must then live in buffers the caller rewrites between replays (push
  // constants and bindings are frozen). Recording a new command drops the kept pass first. Set
  // only while nothing is recorded.
  void set_keep(bool keep) { keep_ = keep; }
  // Whether a completed pass is kept for Replay().
  bool kept() const { return kept_; }
  // Submits the kept pass again and waits for it. FailedPrecondition when nothing is kept;
  // errors as Submit and Wait (the pass is dropped after a Vulkan error).
  Status Replay(uint64_t timeout_ns = kDefaultTimeoutNs);
  // Drops the kept pass (waiting for it if in flight); the Recorder is empty afterwards.
  void Discard();
  // Wait() polls the fence for up to `ns` before it blocks (default 0: blocks at once). A blocked
  // wait can return well after the fence signals (the driver's wake-up); for short passes that
  // someone waits on back to back (decoded tokens) polling takes that off every pass, at the
  // price of a busy host thread while the pass runs.
  void set_spin_wait(uint64_t ns) { spin_ns_ = ns; }

  static constexpr uint64_t kDefaultTimeoutNs = 120'000'000'000ull;  // 2 minutes (lavapipe)

  // in_flight: the final Submit is pending (parts sent by Flush() alone do not count). empty:
  // nothing is being recorded (after a Flush() the Recorder records on, so it is not empty).
  bool in_flight() const { return in_flight_; }

  // GPU time per shader (GARNET_VULKAN_PROFILE=1 in the environment at Create, or
  // EnableProfile): a timestamp after every dispatch and transfer, read back after each Wait and
  // summed per (tag, shader variant). With barriers between dispatches the delta of two
  // timestamps is the later command's own time; dispatches in one barrier interval overlap, so
  // there each delta is its increment over the previous one. Timestamps serialise a little:
  // a profiled pass runs somewhat slower than a plain one. No-op where the queue has no
  // timestamps. GARNET_VULKAN_PROFILE=trace also lists every command of each tag's last pass.
  // GARNET_VULKAN_PROFILE=intervals instead stamps only the end of each barrier interval (before
  // the barrier that ends it, and at the end), named after its commands joined by " + ": the
  // pass keeps its concurrency, and each line is one interval's own time (listed as trace does).
  // While profiling, Flush() submits nothing: the whole pass is one command buffer.
  void EnableProfile();
  bool profiling() const { return profile_ != nullptr; }
  // Label for the passes that follow ("decode", "prefill"): the report groups by it.
  void set_profile_tag(std::string tag);
  // One line per (tag, shader): calls, total and mean GPU microseconds, share of the tag's time.
  std::string ProfileReport() const;
  const Stats& stats() const { return stats_; }
  bool empty() const { return !recording_; }

 private:
  struct Access {
    VkBuffer buffer;
    uint64_t begin, end;
    bool write;
    VkPipelineStageFlags stage;
  };
  explicit Recorder(Device& device);
  Status Begin();
  Status Fail(Status s);
  Status CheckRange(const BufferRange& r, const char* what, uint64_t* begin, uint64_t* end) const;
  // Inserts a barrier if any of `accesses` conflicts with pending ones, then records them.
  void Track(std::span<const Access> accesses, VkPipelineStageFlags stage);
  Result<VkDescriptorSet> AllocateSet(VkDescriptorSetLayout layout);
  void ResetForReuse();
  void DrainFlushed();       // waits for batches submitted by Flush() (error and teardown paths)
  Status SubmitWithFence();  // resets the fence and submits cmd_ with it (no cleanup on error)

  Device& device_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;  // the one being recorded: cmds_[flushed_]
  std::vector<VkCommandBuffer> cmds_;     // grown by Flush(), reset after each Wait
  size_t flushed_ = 0;                    // parts submitted by Flush() since the last Wait
  VkFence fence_ = VK_NULL_HANDLE;
  std::vector<VkDescriptorPool> descriptor_pools_;  // only without push descriptors
  size_t descriptor_pool_next_ = 0;                 // first pool that may still have room
  bool recording_ = false;
  bool in_flight_ = false;
  bool keep_ = false;     // set_keep
  uint64_t spin_ns_ = 0;  // set_spin_wait
  bool kept_ = false;     // a completed pass is kept for Replay()
  Status error_;
  static constexpr size_t kMaxBindings = 16;            // PipelineCache refuses more
  std::vector<Access> pending_;                         // accesses since the last barrier
  std::vector<VkBufferMemoryBarrier> barrier_scratch_;  // Track's, kept to avoid reallocation
  VkPipeline bound_pipeline_ = VK_NULL_HANDLE;          // last vkCmdBindPipeline in cmd_
  Stats stats_;
  struct Profile;
  std::unique_ptr<Profile> profile_;
  void ProfileMark(const std::string* name);  // timestamp after the command just recorded
  void ProfileCollect();                      // after a completed Wait
  void ProfileIntervalEnd();                  // intervals mode: before a barrier / the end
};

}  // namespace garnet::vk
