#include "tools/mkmodel/generator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "engine/quant/quant.h"
#include "tools/mkmodel/prng.h"
#include "tools/mkmodel/vocab.h"

namespace garnet::mkmodel {
namespace {

constexpr float kRopeOff = 1e30f;  // freq factor that makes an angle ~0 (§2.3)

// Fills chunk = bytes [offset, offset + chunk.size()) of the tensor's data. Rows overlapping the
// chunk are generated whole (rows are independent streams) and the overlapping bytes copied.
Status Produce(const PlannedTensor& t, uint64_t seed, uint32_t threads, uint64_t row_bytes,
               uint64_t offset, std::span<uint8_t> chunk) {
  if (chunk.empty()) return Status::OK();
  const uint64_t ne0 = t.ne[0];
  const uint64_t first = offset / row_bytes;
  const uint64_t last = (offset + chunk.size() + row_bytes - 1) / row_bytes;  // exclusive
  const uint64_t n_rows = last - first;
  // About 256k elements per thread at least, so small tensors stay single-threaded.
  const uint64_t by_work = std::max<uint64_t>(1, n_rows * ne0 / (1u << 18));
  const uint32_t n_threads = static_cast<uint32_t>(std::min<uint64_t>({threads, by_work, n_rows}));
  std::vector<Status> status(n_threads);
  auto work = [&](uint32_t k) {
    std::vector<float> values(ne0);
    std::vector<uint8_t> tmp;
    const uint64_t r0 = first + n_rows * k / n_threads, r1 = first + n_rows * (k + 1) / n_threads;
    for (uint64_t r = r0; r < r1; ++r) {
      GenerateRow(t, seed, r, values.data());
      const uint64_t row_off = r * row_bytes;
      const uint64_t begin = std::max(row_off, offset);
      const uint64_t end = std::min(row_off + row_bytes, offset + chunk.size());
      Status s;
      if (begin == row_off && end == row_off + row_bytes) {
        s = QuantizeRow(t.type, values.data(), chunk.data() + (row_off - offset),
                        static_cast<int64_t>(ne0));
      } else {
        tmp.resize(row_bytes);
        s = QuantizeRow(t.type, values.data(), tmp.data(), static_cast<int64_t>(ne0));
        if (s.ok())
          std::memcpy(chunk.data() + (begin - offset), tmp.data() + (begin - row_off), end - begin);
      }
      if (!s.ok()) {
        status[k] = s.WithContext("tensor " + t.name + " row " + std::to_string(r));
        return;
      }
    }
  };
  if (n_threads <= 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (uint32_t k = 0; k < n_threads; ++k) pool.emplace_back(work, k);
    for (auto& th : pool) th.join();
  }
  for (auto& s : status) GARNET_RETURN_IF_ERROR(s);
  return Status::OK();
}

std::vector<int32_t> PerLayer(const ModelSpec& s, uint32_t (ModelSpec::*fn)(uint32_t) const) {
  std::vector<int32_t> v(s.n_layer);
  for (uint32_t i = 0; i < s.n_layer; ++i) v[i] = static_cast<int32_t>((s.*fn)(i));
  return v;
}

bool AllEqual(const std::vector<int32_t>& v) {
  return std::all_of(v.begin(), v.end(), [&](int32_t x) { return x == v.front(); });
}

}  // namespace

void GenerateRow(const PlannedTensor& t, uint64_t seed, uint64_t row, float* out) {
  const uint64_t n = t.ne[0];
  if (t.init == Init::kRopeFreqs) {
    for (uint64_t j = 0; j < n; ++j) out[j] = j < t.rope_pairs ? 1.0f : kRopeOff;
    return;
  }
  Xoshiro256 rng(MixSeed(seed, HashName(t.name), row));
  for (uint64_t j = 0; j < n; ++j) out[j] = t.mean + t.std * rng.Normal();
}

Status AddModel(const ModelPlan& plan, const GenOptions& opts, gguf::Writer& w) {
  const ModelSpec& s = plan.spec;
  GARNET_ASSIGN_OR_RETURN(Vocab vocab, BuildVocab(s.n_vocab));
  const std::string arch = "gemma4";
  auto key = [&](const char* k) { return arch + "." + k; };

  w.SetString("general.architecture", arch);
  w.SetString("general.name", s.name);
  w.SetString("general.description",
              "synthetic random-weight Gemma 4 model (garnet-mkmodel preset " + s.preset +
                  ", type " + plan.type_name + ", seed " + std::to_string(opts.seed) + ")");
  w.SetU32("general.file_type", plan.file_type);
  w.SetU32("general.quantization_version", 2);

  w.SetU32(key("context_length"), s.context_length);
  w.SetU32(key("embedding_length"), s.n_embd);
  w.SetU32(key("block_count"), s.n_layer);
  const auto ffn = PerLayer(s, &ModelSpec::FfnDim);
  if (AllEqual(ffn)) {
    w.SetU32(key("feed_forward_length"), static_cast<uint32_t>(ffn.front()));
  } else {
    w.SetArrayI32(key("feed_forward_length"), ffn);
  }
  w.SetU32(key("attention.head_count"), s.n_head);
  const auto kv = PerLayer(s, &ModelSpec::NHeadKv);
  if (AllEqual(kv)) {
    w.SetU32(key("attention.head_count_kv"), static_cast<uint32_t>(kv.front()));
  } else {
    w.SetArrayI32(key("attention.head_count_kv"), kv);
  }
  w.SetU32(key("attention.key_length"), s.head_dim_full);
  w.SetU32(key("attention.value_length"), s.head_dim_full);
  w.SetU32(key("attention.key_length_swa"), s.head_dim_swa);
  w.SetU32(key("attention.value_length_swa"), s.head_dim_swa);
  w.SetF32(key("attention.layer_norm_rms_epsilon"), s.rms_eps);
  w.SetU32(key("attention.sliding_window"), s.sliding_window);
  std::vector<bool> pattern(s.n_layer);
  for (uint32_t i = 0; i < s.n_layer; ++i) pattern[i] = !s.IsFull(i);
  w.SetArrayBool(key("attention.sliding_window_pattern"), pattern);
  w.SetU32(key("attention.shared_kv_layers"), s.n_kv_shared);
  w.SetU32(key("embedding_length_per_layer_input"), s.n_embd_per_layer);
  w.SetF32(key("rope.freq_base"), s.rope_base_full);
  w.SetF32(key("rope.freq_base_swa"), s.rope_base_swa);
  w.SetU32(key("rope.dimension_count"), s.head_dim_full);
  w.SetU32(key("rope.dimension_count_swa"), s.head_dim_swa);
  w.SetF32(key("final_logit_softcapping"), s.final_logit_softcap);
  if (s.is_moe()) {
    w.SetU32(key("expert_count"), s.n_expert);
    w.SetU32(key("expert_used_count"), s.n_expert_used);
    w.SetU32(key("expert_feed_forward_length"), s.expert_ffn_dim);
  }

  w.SetString("tokenizer.ggml.model", "gemma4");
  w.SetString("tokenizer.ggml.pre", "gemma4");
  w.SetArrayString("tokenizer.ggml.tokens", std::move(vocab.tokens));
  w.SetArrayF32("tokenizer.ggml.scores", std::move(vocab.scores));
  w.SetArrayI32("tokenizer.ggml.token_type", std::move(vocab.types));
  w.SetArrayString("tokenizer.ggml.merges", std::move(vocab.merges));
  w.SetU32("tokenizer.ggml.bos_token_id", 2);
  w.SetU32("tokenizer.ggml.eos_token_id", 1);
  w.SetU32("tokenizer.ggml.unknown_token_id", 3);
  w.SetU32("tokenizer.ggml.padding_token_id", 0);
  w.SetU32("tokenizer.ggml.eot_token_id", 106);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  w.SetBool("tokenizer.ggml.add_eos_token", false);
  w.SetBool("tokenizer.ggml.add_space_prefix", false);
  w.SetString("tokenizer.chat_template", ChatTemplate());

  const uint32_t threads =
      opts.threads > 0 ? opts.threads : std::max(1u, std::thread::hardware_concurrency());
  struct Progress {
    std::function<void(uint64_t, uint64_t)> fn;
    uint64_t done = 0;
    uint64_t total = 0;
  };
  auto progress = std::make_shared<Progress>(Progress{opts.progress, 0, plan.data_bytes()});
  for (const PlannedTensor& t : plan.tensors) {
    GARNET_ASSIGN_OR_RETURN(const uint64_t row_bytes, RowBytes(t.type, t.ne[0]));
    auto shared = std::make_shared<const PlannedTensor>(t);
    const uint64_t seed = opts.seed;
    w.AddTensor(
        t.name, t.type, t.ne,
        [shared, seed, threads, row_bytes, progress](uint64_t offset, std::span<uint8_t> chunk) {
          GARNET_RETURN_IF_ERROR(Produce(*shared, seed, threads, row_bytes, offset, chunk));
          progress->done += chunk.size();
          if (progress->fn) progress->fn(progress->done, progress->total);
          return Status::OK();
        });
  }
  return Status::OK();
}

Result<uint64_t> WriteModel(const ModelPlan& plan, const GenOptions& opts,
                            const std::string& path) {
  gguf::Writer writer;
  GARNET_RETURN_IF_ERROR(AddModel(plan, opts, writer));
  return writer.Finish(path);
}

Result<std::vector<std::string>> WriteModelSplit(const ModelPlan& plan, const GenOptions& opts,
                                                 const std::string& prefix, uint32_t n_parts) {
  gguf::Writer writer;
  GARNET_RETURN_IF_ERROR(AddModel(plan, opts, writer));
  return writer.FinishSplit(prefix, n_parts);
}

Result<uint64_t> WritePreset(std::string_view preset, std::string_view type,
                             const std::string& path, uint64_t seed) {
  GARNET_ASSIGN_OR_RETURN(ModelSpec spec, PresetSpec(preset));
  TypeOptions types;
  types.base = std::string(type);
  GARNET_ASSIGN_OR_RETURN(ModelPlan plan, MakePlan(spec, types));
  GenOptions opts;
  opts.seed = seed;
  return WriteModel(plan, opts, path);
}

}  // namespace garnet::mkmodel
