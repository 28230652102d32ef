#include "engine/vulkan/pipeline.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engine/vulkan/device.h"
#include "engine/vulkan/shaders.h"
#include "engine/vulkan/vk_error.h"

namespace garnet::vk {
namespace {

constexpr uint32_t kMagic = 0x434b5647;  // "GVKC" little-endian
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFileHeaderBytes = 24;
constexpr uint64_t kMaxCacheFileBytes = 512ull << 20;

uint64_t Fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

template <typename T>
T ReadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // the file is written by this (little-endian) host
  return v;
}

// Checks our wrapper and the driver's header; on success `payload` holds the driver's blob.
std::string CheckCacheFile(const std::vector<uint8_t>& file, const DeviceInfo& info,
                           std::vector<uint8_t>* payload) {
  if (file.size() < kFileHeaderBytes) return "shorter than its header";
  if (ReadLe<uint32_t>(file.data()) != kMagic) return "not a garnet pipeline cache (bad magic)";
  if (ReadLe<uint32_t>(file.data() + 4) != kFormatVersion) return "unknown format version";
  const uint64_t n = ReadLe<uint64_t>(file.data() + 8);
  if (n != file.size() - kFileHeaderBytes) return "payload size does not match the file size";
  const uint8_t* data = file.data() + kFileHeaderBytes;
  if (Fnv1a64(data, n) != ReadLe<uint64_t>(file.data() + 16)) return "checksum mismatch";
  // VkPipelineCacheHeaderVersionOne: headerSize, headerVersion, vendorID, deviceID, UUID[16].
  if (n < 32) return "driver header missing";
  if (ReadLe<uint32_t>(data) < 32) return "driver header too small";
  if (ReadLe<uint32_t>(data + 4) != VK_PIPELINE_CACHE_HEADER_VERSION_ONE) {
    return "driver header version unknown";
  }
  if (ReadLe<uint32_t>(data + 8) != info.vendor_id ||
      ReadLe<uint32_t>(data + 12) != info.device_id ||
      std::memcmp(data + 16, info.pipeline_cache_uuid.data(), 16) != 0) {
    return "written for another device or driver version";
  }
  payload->assign(data, data + n);
  return "";
}

}  // namespace

std::string PipelineDesc::Key() const {
  // Everything that shapes the Vulkan objects: the same shader with another binding count or
  // push block is another pipeline.
  std::string k = shader + "/b" + std::to_string(n_bindings) + "/w" + std::to_string(write_mask) +
                  "/p" + std::to_string(push_bytes);
  for (uint32_t v : spec) k += "/" + std::to_string(v);
  return k;
}

Result<std::unique_ptr<PipelineCache>> PipelineCache::Create(Device& device, std::string path) {
  std::unique_ptr<PipelineCache> pc(new PipelineCache(device, std::move(path)));
  std::vector<uint8_t> payload;
  if (pc->path_.empty()) {
    pc->load_note_ = "no file (in-memory cache)";
  } else {
    std::error_code ec;
    const auto size = std::filesystem::file_size(pc->path_, ec);
    if (ec) {
      pc->load_note_ = "no file";
    } else if (size > kMaxCacheFileBytes) {
      pc->load_note_ = "ignored: file larger than 512 MiB";
    } else {
      std::ifstream in(pc->path_, std::ios::binary);
      std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
      const std::string why = CheckCacheFile(file, device.info(), &payload);
      if (why.empty()) {
        pc->load_note_ = "loaded " + std::to_string(payload.size()) + " bytes";
      } else {
        payload.clear();
        pc->load_note_ = "ignored: " + why;
      }
    }
  }
  VkPipelineCacheCreateInfo ci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  ci.initialDataSize = payload.size();
  ci.pInitialData = payload.empty() ? nullptr : payload.data();
  VkResult r = vkCreatePipelineCache(device.handle(), &ci, nullptr, &pc->cache_);
  if (r < 0 && !payload.empty()) {
    // A driver that still dislikes the blob: start empty rather than fail.
    pc->load_note_ = "ignored: driver rejected the data (" + VkResultName(r) + ")";
    ci.initialDataSize = 0;
    ci.pInitialData = nullptr;
    payload.clear();
    r = vkCreatePipelineCache(device.handle(), &ci, nullptr, &pc->cache_);
  }
  GARNET_VK_RETURN_IF_ERROR("vkCreatePipelineCache", r);
  pc->loaded_ = !payload.empty();
  return pc;
}

PipelineCache::~PipelineCache() {
  (void)Save();
  VkDevice dev = device_.handle();
  for (auto& [key, p] : pipelines_) {
    vkDestroyPipeline(dev, p->pipeline, nullptr);
    vkDestroyPipelineLayout(dev, p->layout, nullptr);
    vkDestroyDescriptorSetLayout(dev, p->set_layout, nullptr);
  }
  if (cache_ != VK_NULL_HANDLE) vkDestroyPipelineCache(dev, cache_, nullptr);
}

size_t PipelineCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pipelines_.size();
}

Status PipelineCache::Save() {
  if (path_.empty() || cache_ == VK_NULL_HANDLE) return Status::OK();
  size_t n = 0;
  GARNET_VK_RETURN_IF_ERROR("vkGetPipelineCacheData",
                            vkGetPipelineCacheData(device_.handle(), cache_, &n, nullptr));
  std::vector<uint8_t> file(kFileHeaderBytes + n);
  if (n > 0) {
    GARNET_VK_RETURN_IF_ERROR(
        "vkGetPipelineCacheData",
        vkGetPipelineCacheData(device_.handle(), cache_, &n, file.data() + kFileHeaderBytes));
  }
  file.resize(kFileHeaderBytes + n);
  const uint64_t n64 = n;
  const uint64_t sum = Fnv1a64(file.data() + kFileHeaderBytes, n);
  std::memcpy(file.data(), &kMagic, 4);
  std::memcpy(file.data() + 4, &kFormatVersion, 4);
  std::memcpy(file.data() + 8, &n64, 8);
  std::memcpy(file.data() + 16, &sum, 8);

  const std::filesystem::path target(path_);
  std::error_code ec;
  std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) return PosixError("creating " + target.parent_path().string(), ec.value());
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError("writing pipeline cache " + tmp, errno);
  size_t done = 0;
  while (done < file.size()) {
    const ssize_t w = ::write(fd, file.data() + done, file.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return PosixError("writing pipeline cache " + tmp, err);
    }
    done += static_cast<size_t>(w);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return PosixError("closing pipeline cache " + tmp, err);
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return PosixError("renaming pipeline cache to " + path_, err);
  }
  return Status::OK();
}

namespace {
// Hash of every field Key() covers, computed without building the key string: the lookup runs
// once per recorded dispatch.
uint64_t DescHash(const PipelineDesc& d) {
  uint64_t h = Fnv1a64(reinterpret_cast<const uint8_t*>(d.shader.data()), d.shader.size());
  auto mix = [&h](uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      h ^= (v >> (8 * i)) & 0xffu;
      h *= 1099511628211ull;
    }
  };
  mix(d.n_bindings);
  mix(d.write_mask);
  mix(d.push_bytes);
  mix(static_cast<uint32_t>(d.spec.size()));
  for (uint32_t v : d.spec) mix(v);
  return h;
}
// The statistics of every executable of `pipeline` as text (VK_KHR_pipeline_executable_properties;
// the device has it enabled). A query that fails leaves a note in the text, not an error: the
// statistics are a diagnostic.
std::string ReadStatistics(VkDevice dev, VkPipeline pipeline) {
  auto props_fn = reinterpret_cast<PFN_vkGetPipelineExecutablePropertiesKHR>(
      vkGetDeviceProcAddr(dev, "vkGetPipelineExecutablePropertiesKHR"));
  auto stats_fn = reinterpret_cast<PFN_vkGetPipelineExecutableStatisticsKHR>(
      vkGetDeviceProcAddr(dev, "vkGetPipelineExecutableStatisticsKHR"));
  if (!props_fn || !stats_fn) return "(no statistics entry points)";
  VkPipelineInfoKHR pi{VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR};
  pi.pipeline = pipeline;
  uint32_t n_exec = 0;
  if (props_fn(dev, &pi, &n_exec, nullptr) != VK_SUCCESS) return "(executable query failed)";
  std::string out;
  for (uint32_t e = 0; e < n_exec; ++e) {
    VkPipelineExecutableInfoKHR ei{VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR};
    ei.pipeline = pipeline;
    ei.executableIndex = e;
    uint32_t n = 0;
    if (stats_fn(dev, &ei, &n, nullptr) != VK_SUCCESS) continue;
    std::vector<VkPipelineExecutableStatisticKHR> st(
        n, VkPipelineExecutableStatisticKHR{VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR});
    if (stats_fn(dev, &ei, &n, st.data()) < 0) continue;
    for (uint32_t i = 0; i < n; ++i) {
      if (!out.empty()) out += ", ";
      out += st[i].name;
      out += '=';
      switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          out += st[i].value.b32 ? "true" : "false";
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          out += std::to_string(st[i].value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          out += std::to_string(st[i].value.u64);
          break;
        default:
          out += std::to_string(st[i].value.f64);
      }
    }
  }
  return out.empty() ? "(no statistics reported)" : out;
}

bool SameKey(const PipelineDesc& a, const PipelineDesc& b) {
  return a.n_bindings == b.n_bindings && a.write_mask == b.write_mask &&
         a.push_bytes == b.push_bytes && a.spec == b.spec && a.shader == b.shader;
}
}  // namespace

Result<const Pipeline*> PipelineCache::Get(const PipelineDesc& desc) {
  const uint64_t hash = DescHash(desc);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto [it, end] = by_hash_.equal_range(hash); it != end; ++it) {
    if (SameKey(it->second->desc, desc)) return it->second;
  }
  const std::string key = desc.Key();
  if (auto it = pipelines_.find(key); it != pipelines_.end()) {
    by_hash_.emplace(hash, it->second.get());
    return it->second.get();
  }

  const SpirvShader* spirv = FindShader(desc.shader);
  if (!spirv) return Status::NotFound("vulkan shader " + desc.shader, "not built into garnet");
  if (desc.n_bindings == 0 || desc.n_bindings > 16) {
    return Status::InvalidArgument("pipeline " + key, "needs 1..16 bindings");
  }
  if (desc.push_bytes % 4 != 0 || desc.push_bytes > device_.info().max_push_constants) {
    return Status::InvalidArgument("pipeline " + key,
                                   "push constant block of " + std::to_string(desc.push_bytes) +
                                       " bytes is not a multiple of 4 or exceeds the device's " +
                                       std::to_string(device_.info().max_push_constants));
  }
  VkDevice dev = device_.handle();
  auto p = std::make_unique<Pipeline>();
  p->desc = desc;
  p->push_descriptors = device_.caps().push_descriptors;

  // Partially built pipelines are destroyed by this guard on any error path.
  struct Guard {
    VkDevice dev;
    Pipeline* p;
    VkShaderModule module = VK_NULL_HANDLE;
    ~Guard() {
      if (module != VK_NULL_HANDLE) vkDestroyShaderModule(dev, module, nullptr);
      if (!p) return;
      if (p->pipeline != VK_NULL_HANDLE) vkDestroyPipeline(dev, p->pipeline, nullptr);
      if (p->layout != VK_NULL_HANDLE) vkDestroyPipelineLayout(dev, p->layout, nullptr);
      if (p->set_layout != VK_NULL_HANDLE)
        vkDestroyDescriptorSetLayout(dev, p->set_layout, nullptr);
    }
  } guard{dev, p.get()};

  std::vector<VkDescriptorSetLayoutBinding> bindings(desc.n_bindings);
  for (uint32_t i = 0; i < desc.n_bindings; ++i) {
    bindings[i].binding = i;
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo dsl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  if (p->push_descriptors) dsl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
  dsl.bindingCount = desc.n_bindings;
  dsl.pBindings = bindings.data();
  GARNET_VK_RETURN_IF_ERROR("vkCreateDescriptorSetLayout for " + key,
                            vkCreateDescriptorSetLayout(dev, &dsl, nullptr, &p->set_layout));

  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, desc.push_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p->set_layout;
  pl.pushConstantRangeCount = desc.push_bytes > 0 ? 1 : 0;
  pl.pPushConstantRanges = &range;
  GARNET_VK_RETURN_IF_ERROR("vkCreatePipelineLayout for " + key,
                            vkCreatePipelineLayout(dev, &pl, nullptr, &p->layout));

  VkShaderModuleCreateInfo smi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smi.codeSize = spirv->word_count * 4;
  smi.pCode = spirv->words;
  GARNET_VK_RETURN_IF_ERROR("vkCreateShaderModule for " + key,
                            vkCreateShaderModule(dev, &smi, nullptr, &guard.module));

  std::vector<VkSpecializationMapEntry> entries(desc.spec.size());
  for (uint32_t i = 0; i < desc.spec.size(); ++i) entries[i] = {i, i * 4, 4};
  VkSpecializationInfo si{};
  si.mapEntryCount = static_cast<uint32_t>(entries.size());
  si.pMapEntries = entries.data();
  si.dataSize = desc.spec.size() * 4;
  si.pData = desc.spec.data();

  VkComputePipelineCreateInfo cpi{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpi.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpi.stage.module = guard.module;
  cpi.stage.pName = "main";
  cpi.stage.pSpecializationInfo = desc.spec.empty() ? nullptr : &si;
  cpi.layout = p->layout;
  const bool stats = device_.caps().pipeline_statistics;
  if (stats) cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  GARNET_VK_RETURN_IF_ERROR("vkCreateComputePipelines for " + key,
                            vkCreateComputePipelines(dev, cache_, 1, &cpi, nullptr, &p->pipeline));
  if (stats) {
    p->statistics = ReadStatistics(dev, p->pipeline);
    std::fprintf(stderr, "garnet vulkan pipeline %s: %s\n", key.c_str(), p->statistics.c_str());
  }
  guard.p = nullptr;  // success: the cache owns it now
  const Pipeline* out = p.get();
  pipelines_.emplace(key, std::move(p));
  by_hash_.emplace(hash, out);
  return out;
}

}  // namespace garnet::vk
