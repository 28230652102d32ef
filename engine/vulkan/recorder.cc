#include "engine/vulkan/recorder.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>

#include "engine/vulkan/device.h"
#include "engine/vulkan/vk_error.h"

namespace garnet::vk {
namespace {

constexpr uint32_t kSetsPerPool = 256;
constexpr uint32_t kDescriptorsPerPool = kSetsPerPool * 8;

VkAccessFlags WriteAccess(VkPipelineStageFlags stage) {
  return stage == VK_PIPELINE_STAGE_TRANSFER_BIT ? VK_ACCESS_TRANSFER_WRITE_BIT
                                                 : VK_ACCESS_SHADER_WRITE_BIT;
}
VkAccessFlags ReadWriteAccess(VkPipelineStageFlags stage) {
  return stage == VK_PIPELINE_STAGE_TRANSFER_BIT
             ? VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT
             : VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
}

}  // namespace

struct Recorder::Profile {
  static constexpr uint32_t kCapacity = 16384;  // timestamps per submission; later ones dropped
  VkQueryPool pool = VK_NULL_HANDLE;
  double period_ns = 1.0;
  uint64_t mask = ~uint64_t{0};
  uint32_t used = 0;                // timestamps recorded since the last collection
  std::vector<std::string> names;   // the command behind each timestamp (index 0: the start)
  std::vector<bool> after_barrier;  // per timestamp: a barrier preceded its command
  bool barrier = false;             // a barrier was recorded since the last timestamp
  std::vector<uint64_t> stamps;
  std::string tag = "pass";
  struct Sum {
    uint64_t calls = 0;
    double ns = 0;
  };
  std::map<std::pair<std::string, std::string>, Sum> by_shader;  // (tag, shader [grid])
  std::map<std::string, std::pair<uint64_t, double>> by_tag;     // passes, ns
  bool trace = false;  // GARNET_VULKAN_PROFILE=trace: also every command of each tag's last pass
  // GARNET_VULKAN_PROFILE=intervals: a timestamp only where a barrier ends a barrier interval
  // (and at the end), named after the interval's commands, so the pass runs as it does
  // unprofiled and each delta is one interval's time; implies trace.
  bool intervals = false;
  std::string interval;  // the commands of the current interval, " + " between them
  std::map<std::string, std::vector<std::pair<std::string, double>>> last_pass;
};

Recorder::Recorder(Device& device) : device_(device) {}

void Recorder::EnableProfile() {
  if (profile_) return;
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(device_.physical(), &props);
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(device_.physical(), &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  vkGetPhysicalDeviceQueueFamilyProperties(device_.physical(), &n, families.data());
  const uint32_t qf = device_.queue_family();
  if (qf >= n || families[qf].timestampValidBits == 0 || props.limits.timestampPeriod <= 0) {
    std::fprintf(stderr, "vulkan profile: the queue has no timestamps; not profiling\n");
    return;
  }
  auto prof = std::make_unique<Profile>();
  const uint32_t bits = families[qf].timestampValidBits;
  prof->mask = bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
  prof->period_ns = props.limits.timestampPeriod;
  VkQueryPoolCreateInfo qci{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qci.queryCount = Profile::kCapacity;
  if (vkCreateQueryPool(device_.handle(), &qci, nullptr, &prof->pool) != VK_SUCCESS) {
    std::fprintf(stderr, "vulkan profile: vkCreateQueryPool failed; not profiling\n");
    return;
  }
  prof->names.reserve(Profile::kCapacity);
  prof->stamps.resize(Profile::kCapacity);
  profile_ = std::move(prof);
}

void Recorder::set_profile_tag(std::string tag) {
  if (profile_) profile_->tag = std::move(tag);
}

void Recorder::ProfileMark(const std::string* name) {
  Profile& p = *profile_;
  if (p.intervals) {
    if (!p.interval.empty()) p.interval += " + ";
    p.interval += *name;
    return;
  }
  if (p.used == 0 || p.used >= Profile::kCapacity) return;
  vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p.pool, p.used++);
  p.names.push_back(*name);
  p.after_barrier.push_back(p.barrier);
  p.barrier = false;
}

void Recorder::ProfileIntervalEnd() {
  Profile& p = *profile_;
  if (!p.intervals || p.interval.empty() || p.used == 0 || p.used >= Profile::kCapacity) return;
  vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p.pool, p.used++);
  p.names.push_back(std::move(p.interval));
  p.after_barrier.push_back(true);
  p.interval.clear();
}

void Recorder::ProfileCollect() {
  Profile& p = *profile_;
  const uint32_t used = p.used;
  p.used = 0;
  if (used >= 2 &&
      vkGetQueryPoolResults(device_.handle(), p.pool, 0, used, used * 8ull, p.stamps.data(), 8,
                            VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
    for (uint32_t i = 1; i < used; ++i) {
      const double ns = static_cast<double>((p.stamps[i] - p.stamps[i - 1]) & p.mask) * p.period_ns;
      Profile::Sum& sum = p.by_shader[{p.tag, p.names[i]}];
      ++sum.calls;
      sum.ns += ns;
    }
    if (p.trace) {
      auto& last = p.last_pass[p.tag];
      last.clear();
      for (uint32_t i = 1; i < used; ++i) {
        last.emplace_back(
            (p.after_barrier[i] ? "| " : "  ") + p.names[i],
            static_cast<double>((p.stamps[i] - p.stamps[i - 1]) & p.mask) * p.period_ns);
      }
    }
    auto& t = p.by_tag[p.tag];
    ++t.first;
    t.second += static_cast<double>((p.stamps[used - 1] - p.stamps[0]) & p.mask) * p.period_ns;
  }
  p.names.clear();
  p.after_barrier.clear();
}

std::string Recorder::ProfileReport() const {
  if (!profile_) return {};
  std::string out;
  char line[256];
  for (const auto& [tag, tt] : profile_->by_tag) {
    const double passes = static_cast<double>(tt.first);
    std::snprintf(line, sizeof line, "vulkan profile [%s]: %llu passes, %.1f us GPU per pass\n",
                  tag.c_str(), static_cast<unsigned long long>(tt.first), tt.second / passes / 1e3);
    out += line;
    std::vector<std::pair<
        double, const std::pair<const std::pair<std::string, std::string>, Profile::Sum>*>>
        rows;
    for (const auto& e : profile_->by_shader) {
      if (e.first.first == tag) rows.emplace_back(e.second.ns, &e);
    }
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    for (const auto& [ns, e] : rows) {  // figures first: interval names can be long
      std::snprintf(line, sizeof line, "  %7.2f calls %9.1f us/pass %7.2f us/call %5.1f%%  ",
                    static_cast<double>(e->second.calls) / passes, ns / passes / 1e3,
                    ns / static_cast<double>(e->second.calls) / 1e3, 100.0 * ns / tt.second);
      out += line + e->first.second + "\n";
    }
    const auto last = profile_->last_pass.find(tag);
    if (last == profile_->last_pass.end()) continue;
    out += "  the last pass, command by command (us; | = after a barrier):\n";
    for (const auto& [name, ns] : last->second) {
      std::snprintf(line, sizeof line, "    %8.2f  ", ns / 1e3);
      out += line + name + "\n";
    }
  }
  return out;
}

Result<std::unique_ptr<Recorder>> Recorder::Create(Device& device) {
  std::unique_ptr<Recorder> r(new Recorder(device));
  VkDevice dev = device.handle();
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = device.queue_family();
  GARNET_VK_RETURN_IF_ERROR("vkCreateCommandPool",
                            vkCreateCommandPool(dev, &pci, nullptr, &r->pool_));
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = r->pool_;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  GARNET_VK_RETURN_IF_ERROR("vkAllocateCommandBuffers",
                            vkAllocateCommandBuffers(dev, &cai, &r->cmd_));
  r->cmds_.push_back(r->cmd_);
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  GARNET_VK_RETURN_IF_ERROR("vkCreateFence", vkCreateFence(dev, &fci, nullptr, &r->fence_));
  if (const char* e = std::getenv("GARNET_VULKAN_PROFILE");
      e != nullptr && *e != '\0' && std::string(e) != "0") {
    r->EnableProfile();
    if (r->profile_ && std::string(e) == "trace") r->profile_->trace = true;
    if (r->profile_ && std::string(e) == "intervals") {
      r->profile_->trace = true;
      r->profile_->intervals = true;
    }
  }
  return r;
}

Recorder::~Recorder() {
  VkDevice dev = device_.handle();
  if (in_flight_) vkWaitForFences(dev, 1, &fence_, VK_TRUE, UINT64_MAX);
  if (!in_flight_ && flushed_ > 0) DrainFlushed();
  for (VkDescriptorPool p : descriptor_pools_) vkDestroyDescriptorPool(dev, p, nullptr);
  if (fence_ != VK_NULL_HANDLE) vkDestroyFence(dev, fence_, nullptr);
  if (pool_ != VK_NULL_HANDLE) vkDestroyCommandPool(dev, pool_, nullptr);
  if (profile_) {
    if (!profile_->by_tag.empty()) std::fputs(ProfileReport().c_str(), stderr);
    vkDestroyQueryPool(dev, profile_->pool, nullptr);
  }
}

Status Recorder::Fail(Status s) {
  if (error_.ok()) error_ = s;
  return s;
}

Status Recorder::Begin() {
  if (recording_) return Status::OK();
  if (in_flight_) GARNET_RETURN_IF_ERROR(Wait());
  if (kept_) Discard();
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = keep_ ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  GARNET_VK_RETURN_IF_ERROR("vkBeginCommandBuffer", vkBeginCommandBuffer(cmd_, &bi));
  recording_ = true;
  if (profile_ && profile_->used == 0) {  // a new submission: reset the pool, stamp the start
    vkCmdResetQueryPool(cmd_, profile_->pool, 0, Profile::kCapacity);
    vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, profile_->pool, 0);
    profile_->names.emplace_back("start");
    profile_->after_barrier.push_back(false);
    profile_->used = 1;
  }
  bound_pipeline_ = VK_NULL_HANDLE;
  return Status::OK();
}

void Recorder::DrainFlushed() {
  if (flushed_ == 0) return;
  // An empty batch with the fence: its signal covers every earlier submission on the queue.
  VkDevice dev = device_.handle();
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  if (vkResetFences(dev, 1, &fence_) == VK_SUCCESS && device_.Submit(si, fence_).ok()) {
    vkWaitForFences(dev, 1, &fence_, VK_TRUE, UINT64_MAX);
  } else {
    (void)device_.WaitIdle();
  }
}

void Recorder::ResetForReuse() {
  for (size_t i = 0; i <= flushed_ && i < cmds_.size(); ++i) vkResetCommandBuffer(cmds_[i], 0);
  flushed_ = 0;
  cmd_ = cmds_[0];
  for (VkDescriptorPool p : descriptor_pools_) vkResetDescriptorPool(device_.handle(), p, 0);
  descriptor_pool_next_ = 0;
  pending_.clear();
  bound_pipeline_ = VK_NULL_HANDLE;
  recording_ = false;
  if (profile_) {
    profile_->used = 0;
    profile_->names.clear();
    profile_->after_barrier.clear();
    profile_->interval.clear();
  }
  error_ = Status::OK();
  const uint32_t submits = stats_.submits;
  stats_ = Stats{};
  stats_.submits = submits;
}

Status Recorder::CheckRange(const BufferRange& r, const char* what, uint64_t* begin,
                            uint64_t* end) const {
  const Buffer* b = r.buffer;
  if (!b || b->empty()) return Status::InvalidArgument(what, "empty buffer");
  const uint64_t size =
      r.size == VK_WHOLE_SIZE ? (r.offset <= b->size() ? b->size() - r.offset : 0) : r.size;
  if (r.offset > b->size() || size > b->size() - r.offset || size == 0) {
    return Status::InvalidArgument(what, "range [" + std::to_string(r.offset) + ", +" +
                                             std::to_string(size) + ") is outside buffer \"" +
                                             b->label() + "\" of " + std::to_string(b->size()) +
                                             " bytes");
  }
  *begin = r.offset;
  *end = r.offset + size;
  return Status::OK();
}

void Recorder::Track(std::span<const Access> accesses, VkPipelineStageFlags stage) {
  bool hazard = false;
  for (const Access& a : accesses) {
    for (const Access& p : pending_) {
      if (p.buffer == a.buffer && p.begin < a.end && a.begin < p.end && (p.write || a.write)) {
        hazard = true;
        break;
      }
    }
    if (hazard) break;
  }
  if (hazard) {
    std::vector<VkBufferMemoryBarrier>& barriers = barrier_scratch_;  // reused: no allocation
    barriers.clear();
    VkPipelineStageFlags src = 0;
    for (const Access& p : pending_) {
      src |= p.stage;
      if (!p.write) continue;
      VkBufferMemoryBarrier b{VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER};
      b.srcAccessMask = WriteAccess(p.stage);
      b.dstAccessMask = ReadWriteAccess(stage);
      b.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
      b.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
      b.buffer = p.buffer;
      b.offset = p.begin;
      b.size = p.end - p.begin;
      barriers.push_back(b);
    }
    if (profile_) ProfileIntervalEnd();
    vkCmdPipelineBarrier(cmd_, src, stage, 0, 0, nullptr, static_cast<uint32_t>(barriers.size()),
                         barriers.data(), 0, nullptr);
    ++stats_.barriers;
    if (profile_) profile_->barrier = true;
    pending_.clear();
  }
  for (const Access& a : accesses) pending_.push_back(a);
}

Result<VkDescriptorSet> Recorder::AllocateSet(VkDescriptorSetLayout layout) {
  VkDevice dev = device_.handle();
  while (true) {
    if (descriptor_pool_next_ == descriptor_pools_.size()) {
      VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kDescriptorsPerPool};
      VkDescriptorPoolCreateInfo ci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      ci.maxSets = kSetsPerPool;
      ci.poolSizeCount = 1;
      ci.pPoolSizes = &size;
      VkDescriptorPool pool = VK_NULL_HANDLE;
      GARNET_VK_RETURN_IF_ERROR("vkCreateDescriptorPool",
                                vkCreateDescriptorPool(dev, &ci, nullptr, &pool));
      descriptor_pools_.push_back(pool);
    }
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = descriptor_pools_[descriptor_pool_next_];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    const VkResult r = vkAllocateDescriptorSets(dev, &ai, &set);
    if (r == VK_SUCCESS) return set;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) {
      return VkError("vkAllocateDescriptorSets", r);
    }
    ++descriptor_pool_next_;  // this pool is full until the next reset; try (or make) the next
  }
}

Status Recorder::Dispatch(const Pipeline& pipeline, std::span<const BufferRange> bindings,
                          std::span<const uint8_t> push, uint32_t gx, uint32_t gy, uint32_t gz) {
  // Hot path (hundreds of calls per decoded token): no heap work unless something is wrong;
  // error messages are built only on failure.
  const PipelineDesc& d = pipeline.desc;
  auto what = [&d] { return "dispatch " + d.Key(); };
  if (bindings.size() != d.n_bindings || bindings.size() > kMaxBindings) {
    return Fail(Status::InvalidArgument(what(), std::to_string(bindings.size()) +
                                                    " bindings given, shader has " +
                                                    std::to_string(d.n_bindings)));
  }
  if (push.size() != d.push_bytes) {
    return Fail(Status::InvalidArgument(what(), std::to_string(push.size()) +
                                                    " push-constant bytes given, shader takes " +
                                                    std::to_string(d.push_bytes)));
  }
  const DeviceInfo& info = device_.info();
  if (gx == 0 || gy == 0 || gz == 0) return Status::OK();  // nothing to do
  if (gx > info.max_workgroup_count[0] || gy > info.max_workgroup_count[1] ||
      gz > info.max_workgroup_count[2]) {
    return Fail(Status::InvalidArgument(
        what(), "grid " + std::to_string(gx) + "x" + std::to_string(gy) + "x" + std::to_string(gz) +
                    " exceeds the device's workgroup count limits"));
  }
  const size_t n = bindings.size();
  std::array<Access, kMaxBindings> accesses;
  std::array<VkDescriptorBufferInfo, kMaxBindings> infos;
  for (size_t i = 0; i < n; ++i) {
    auto bwhat = [&] { return what() + " binding " + std::to_string(i); };
    uint64_t begin = 0, end = 0;
    if (!CheckRange(bindings[i], "dispatch", &begin, &end).ok()) {
      return Fail(CheckRange(bindings[i], bwhat().c_str(), &begin, &end));  // named message
    }
    if (end - begin > info.max_storage_buffer_range) {
      return Fail(Status::InvalidArgument(
          bwhat(), std::to_string(end - begin) + " bytes exceed maxStorageBufferRange " +
                       std::to_string(info.max_storage_buffer_range)));
    }
    if (info.min_storage_buffer_offset_alignment > 1 &&
        begin % info.min_storage_buffer_offset_alignment != 0) {
      return Fail(Status::InvalidArgument(
          bwhat(), "offset " + std::to_string(begin) + " is not a multiple of " +
                       std::to_string(info.min_storage_buffer_offset_alignment)));
    }
    const VkBuffer vb = bindings[i].buffer->handle();
    accesses[i] = {vb, begin, end, ((d.write_mask >> i) & 1u) != 0,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT};
    // Descriptor ranges extend to the next multiple of 4 inside the padded VkBuffer, so a
    // shader's 32-bit load of a range's last partial word stays in bounds.
    const uint64_t desc_end = std::min((end + 3) & ~uint64_t{3}, bindings[i].buffer->padded_size());
    infos[i] = {vb, begin, desc_end - begin};
  }
  if (Status s = Begin(); !s.ok()) return Fail(s);
  Track({accesses.data(), n}, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);

  if (pipeline.pipeline != bound_pipeline_) {
    vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.pipeline);
    bound_pipeline_ = pipeline.pipeline;
  }
  std::array<VkWriteDescriptorSet, kMaxBindings> writes;
  for (size_t i = 0; i < n; ++i) {
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstBinding = static_cast<uint32_t>(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
  }
  if (pipeline.push_descriptors) {
    device_.push_descriptor_fn()(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout, 0,
                                 static_cast<uint32_t>(n), writes.data());
  } else {
    Result<VkDescriptorSet> set = AllocateSet(pipeline.set_layout);
    if (!set.ok()) return Fail(set.status());
    for (size_t i = 0; i < n; ++i) writes[i].dstSet = *set;
    vkUpdateDescriptorSets(device_.handle(), static_cast<uint32_t>(n), writes.data(), 0, nullptr);
    vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout, 0, 1, &*set, 0,
                            nullptr);
  }
  if (!push.empty()) {
    vkCmdPushConstants(cmd_, pipeline.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                       static_cast<uint32_t>(push.size()), push.data());
  }
  vkCmdDispatch(cmd_, gx, gy, gz);
  ++stats_.dispatches;
  if (profile_) {
    const std::string name = pipeline.desc.shader + " [" + std::to_string(gx * gy * gz) + "]";
    ProfileMark(&name);
  }
  return Status::OK();
}

Status Recorder::Copy(const Buffer& src, uint64_t src_offset, const Buffer& dst,
                      uint64_t dst_offset, uint64_t size) {
  if (size == 0) return Status::OK();
  uint64_t sb = 0, se = 0, db = 0, de = 0;
  if (Status s = CheckRange(BufferRange(src, src_offset, size), "copy source", &sb, &se); !s.ok()) {
    return Fail(s);
  }
  if (Status s = CheckRange(BufferRange(dst, dst_offset, size), "copy destination", &db, &de);
      !s.ok()) {
    return Fail(s);
  }
  if (Status s = Begin(); !s.ok()) return Fail(s);
  const Access acc[2] = {{src.handle(), sb, se, false, VK_PIPELINE_STAGE_TRANSFER_BIT},
                         {dst.handle(), db, de, true, VK_PIPELINE_STAGE_TRANSFER_BIT}};
  Track(acc, VK_PIPELINE_STAGE_TRANSFER_BIT);
  const VkBufferCopy region{src_offset, dst_offset, size};
  vkCmdCopyBuffer(cmd_, src.handle(), dst.handle(), 1, &region);
  ++stats_.transfers;
  if (profile_) {
    static const std::string kName = "copy";
    ProfileMark(&kName);
  }
  return Status::OK();
}

Status Recorder::Fill(const Buffer& dst, uint64_t offset, uint64_t size, uint32_t value) {
  if (size == 0) return Status::OK();
  if (offset % 4 != 0 || size % 4 != 0) {
    return Fail(Status::InvalidArgument("fill", "offset and size must be multiples of 4"));
  }
  uint64_t b = 0, e = 0;
  if (Status s = CheckRange(BufferRange(dst, offset, size), "fill", &b, &e); !s.ok())
    return Fail(s);
  if (Status s = Begin(); !s.ok()) return Fail(s);
  const Access acc{dst.handle(), b, e, true, VK_PIPELINE_STAGE_TRANSFER_BIT};
  Track({&acc, 1}, VK_PIPELINE_STAGE_TRANSFER_BIT);
  vkCmdFillBuffer(cmd_, dst.handle(), offset, size, value);
  ++stats_.transfers;
  if (profile_) {
    static const std::string kName = "fill";
    ProfileMark(&kName);
  }
  return Status::OK();
}

Status Recorder::Submit() {
  if (in_flight_) GARNET_RETURN_IF_ERROR(Wait());
  if (!error_.ok()) {
    Status first = error_;
    if (recording_) vkEndCommandBuffer(cmd_);
    DrainFlushed();
    ResetForReuse();
    return first;
  }
  if (!recording_) return Status::OK();
  if (profile_) ProfileIntervalEnd();
  // Make every device write visible to host reads of mapped memory.
  VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  to_host.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0, nullptr, 0, nullptr);
  const VkResult end = vkEndCommandBuffer(cmd_);
  if (end != VK_SUCCESS) {
    DrainFlushed();
    ResetForReuse();
    return VkError("vkEndCommandBuffer", end);
  }
  if (Status s = SubmitWithFence(); !s.ok()) {
    DrainFlushed();
    ResetForReuse();
    return s;
  }
  in_flight_ = true;
  recording_ = false;
  ++stats_.submits;
  return Status::OK();
}

Status Recorder::SubmitWithFence() {
  if (const VkResult r = vkResetFences(device_.handle(), 1, &fence_); r != VK_SUCCESS) {
    return VkError("vkResetFences", r);
  }
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  return device_.Submit(si, fence_);
}

Status Recorder::Flush() {
  if (!recording_ || !error_.ok()) return Status::OK();  // a latched error surfaces at Submit
  // Profiling: the pass stays one command buffer, so consecutive timestamps measure the GPU
  // only (with parts, a delta across a part boundary included the host's recording time). A
  // kept pass is one command buffer too, so that Replay() resubmits all of it.
  if (profile_ || keep_) return Status::OK();
  if (const VkResult end = vkEndCommandBuffer(cmd_); end != VK_SUCCESS) {
    recording_ = false;  // cmd_ is in an undefined state; Submit drains and resets
    return Fail(VkError("vkEndCommandBuffer", end));
  }
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  if (Status s = device_.Submit(si, VK_NULL_HANDLE); !s.ok()) {
    recording_ = false;
    return Fail(s);
  }
  ++flushed_;
  ++stats_.submits;
  if (flushed_ == cmds_.size()) {
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = pool_;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer next = VK_NULL_HANDLE;
    if (const VkResult r = vkAllocateCommandBuffers(device_.handle(), &cai, &next);
        r != VK_SUCCESS) {
      recording_ = false;
      return Fail(VkError("vkAllocateCommandBuffers", r));
    }
    cmds_.push_back(next);
  }
  cmd_ = cmds_[flushed_];
  // pending_ is kept: the next conflicting command still gets its barrier, and a barrier orders
  // everything earlier in submission order, including the batches already submitted.
  recording_ = false;
  if (Status s = Begin(); !s.ok()) return Fail(s);
  return Status::OK();
}

Status Recorder::Wait(uint64_t timeout_ns) {
  if (!in_flight_) return Status::OK();
  if (spin_ns_ > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
    while (vkGetFenceStatus(device_.handle(), fence_) == VK_NOT_READY &&
           std::chrono::steady_clock::now() < until) {
    }
  }
  const VkResult w = vkWaitForFences(device_.handle(), 1, &fence_, VK_TRUE, timeout_ns);
  if (w == VK_TIMEOUT) {
    return Status::DeadlineExceeded(
        "vulkan submission", "not finished after " + std::to_string(timeout_ns / 1000000) + " ms");
  }
  GARNET_VK_RETURN_IF_ERROR("vkWaitForFences", w);
  in_flight_ = false;
  if (profile_) ProfileCollect();
  if (keep_ && flushed_ == 0) {
    kept_ = true;  // the command buffer and its descriptor sets stay for Replay()
    return Status::OK();
  }
  ResetForReuse();
  return Status::OK();
}

Status Recorder::Replay(uint64_t timeout_ns) {
  if (in_flight_) GARNET_RETURN_IF_ERROR(Wait(timeout_ns));
  if (!kept_) return Status::FailedPrecondition("vulkan replay", "no recorded pass is kept");
  if (Status s = SubmitWithFence(); !s.ok()) {
    Discard();
    return s;
  }
  in_flight_ = true;
  ++stats_.submits;
  return Wait(timeout_ns);
}

void Recorder::Discard() {
  if (in_flight_) {
    if (vkWaitForFences(device_.handle(), 1, &fence_, VK_TRUE, UINT64_MAX) != VK_SUCCESS) {
      (void)device_.WaitIdle();
    }
    in_flight_ = false;
  }
  if (recording_) vkEndCommandBuffer(cmd_);
  kept_ = false;
  ResetForReuse();
}

Status Recorder::SubmitAndWait(uint64_t timeout_ns) {
  GARNET_RETURN_IF_ERROR(Submit());
  return Wait(timeout_ns);
}

}  // namespace garnet::vk
