// Tokenizer::FromGguf: the tokenizer.ggml.* keys of a GGUF (../shared/docs/gemma4.md §3.4).
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"

namespace garnet::tok {

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::Model& model) {
  GARNET_ASSIGN_OR_RETURN(std::string_view kind, model.GetString("tokenizer.ggml.model"));
  if (kind != "gemma4") {
    return Status::FailedPrecondition(
        "tokenizer.ggml.model",
        "tokenizer '" + std::string(kind) + "' is not supported (only gemma4)");
  }
  Vocab v;
  GARNET_ASSIGN_OR_RETURN(auto tokens, model.GetStringArray("tokenizer.ggml.tokens"));
  v.tokens.assign(tokens.begin(), tokens.end());
  if (model.Find("tokenizer.ggml.scores") != nullptr) {
    GARNET_ASSIGN_OR_RETURN(v.scores, model.GetF32Array("tokenizer.ggml.scores"));
  }
  if (model.Find("tokenizer.ggml.token_type") != nullptr) {
    GARNET_ASSIGN_OR_RETURN(v.token_types, model.GetI32Array("tokenizer.ggml.token_type"));
  }
  if (model.Find("tokenizer.ggml.merges") != nullptr) {
    GARNET_ASSIGN_OR_RETURN(auto merges, model.GetStringArray("tokenizer.ggml.merges"));
    v.merges.assign(merges.begin(), merges.end());
  }
  auto read_id = [&](const char* key, int32_t* dst) -> Status {
    if (model.Find(key) == nullptr) return Status::OK();
    GARNET_ASSIGN_OR_RETURN(uint32_t id, model.GetU32(key));
    *dst = static_cast<int32_t>(id);
    return Status::OK();
  };
  GARNET_RETURN_IF_ERROR(read_id("tokenizer.ggml.bos_token_id", &v.bos_id));
  GARNET_RETURN_IF_ERROR(read_id("tokenizer.ggml.eos_token_id", &v.eos_id));
  GARNET_RETURN_IF_ERROR(read_id("tokenizer.ggml.unknown_token_id", &v.unk_id));
  GARNET_RETURN_IF_ERROR(read_id("tokenizer.ggml.padding_token_id", &v.pad_id));
  if (model.Find("tokenizer.ggml.add_bos_token") != nullptr) {
    GARNET_ASSIGN_OR_RETURN(v.add_bos, model.GetBool("tokenizer.ggml.add_bos_token"));
  }
  auto r = Create(std::move(v));
  if (!r.ok()) return r.status().WithContext(model.file().path());
  return r;
}

}  // namespace garnet::tok
