// Internal to daemon/: registry / planner structs -> garnet.v1 messages. Includes the generated
// protobuf header: include only from service .cc files.
#pragma once

#include "daemon/fit.h"
#include "daemon/model_manager.h"
#include "garnet/v1/garnet.pb.h"
#include "registry/catalog.h"
#include "registry/db.h"

namespace garnet::daemon {

inline void ToPb(const registry::ManifestRow& m, ::garnet::v1::ModelInfo* out) {
  out->set_name(m.name);
  out->set_catalog_id(m.catalog_id);
  out->set_kind(m.kind);
  out->set_created_at(m.created_at);
  out->set_size(m.total_size());
  for (const registry::ManifestFile& f : m.files) {
    auto* pf = out->add_files();
    pf->set_digest(f.digest);
    pf->set_size(f.size);
    pf->set_filename(f.filename);
    pf->set_source(f.source);
  }
  auto* s = out->mutable_summary();
  s->set_architecture(m.summary.architecture);
  s->set_name(m.summary.name);
  s->set_file_type(m.summary.file_type);
  s->set_parameters(m.summary.parameters);
  s->set_tensor_count(m.summary.tensor_count);
  s->set_context_length(m.summary.context_length);
  s->set_n_layer(m.summary.n_layer);
  s->set_n_embd(m.summary.n_embd);
  s->set_n_expert(m.summary.n_expert);
  s->set_n_expert_used(m.summary.n_expert_used);
}

inline void ToPb(const registry::CatalogEntry& e, ::garnet::v1::CatalogModel* out) {
  out->set_id(e.id);
  for (const auto& a : e.aliases) out->add_aliases(a);
  out->set_family(e.family);
  out->set_variant(e.variant);
  out->set_moe(e.moe);
  out->set_total_params(e.total_params);
  out->set_active_params(e.active_params);
  out->set_quant(e.quant);
  uint64_t size = 0;
  for (const auto& f : e.files) size += f.size.value_or(0);
  out->set_size(size);
  out->set_default_context(e.default_context);
  out->set_max_context(e.max_context);
  out->set_license(e.license);
  out->set_note(e.note);
}

inline ::garnet::v1::Verdict ToPb(plan::Verdict v) {
  switch (v) {
    case plan::Verdict::kFits:
      return ::garnet::v1::VERDICT_FITS;
    case plan::Verdict::kFitsExpertOffload:
      return ::garnet::v1::VERDICT_FITS_EXPERT_OFFLOAD;
    case plan::Verdict::kFitsLayerOffload:
      return ::garnet::v1::VERDICT_FITS_LAYER_OFFLOAD;
    case plan::Verdict::kDoesNotFit:
      return ::garnet::v1::VERDICT_DOES_NOT_FIT;
  }
  return ::garnet::v1::VERDICT_UNSPECIFIED;
}

inline void ToPb(const plan::DeviceUse& d, ::garnet::v1::DeviceMemory* out) {
  out->set_name(d.name);
  out->set_is_host(d.is_host);
  out->set_budget(d.budget);
  out->set_weights(d.use.weights);
  out->set_kv(d.use.kv);
  out->set_scratch(d.use.scratch);
  out->set_overhead(d.use.overhead);
  out->set_total(d.use.total());
  out->set_fits(d.fits());
}

inline void ToPb(const LoadedInfo& i, ::garnet::v1::LoadedModel* out) {
  out->set_name(i.name);
  out->set_digest(i.digest);
  out->set_backend(i.backend);
  out->set_ctx(i.ctx);
  out->set_parallel(i.parallel);
  out->set_active(i.active);
  out->set_queued(i.queued);
  for (const auto& d : i.memory) ToPb(d, out->add_memory());
  out->set_placement(i.placement);
  out->set_expires_at(i.expires_at_ms);
  out->set_loaded_at(i.loaded_at_ms);
  out->set_size(i.size);
  out->set_decode_steps(i.decode_steps);
  out->set_decode_sequence_steps(i.decode_sequence_steps);
  out->set_decode_max_batch(static_cast<uint32_t>(i.decode_max_batch));
}

}  // namespace garnet::daemon
