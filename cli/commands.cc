// garnet's model and lifecycle verbs: thin calls over the garnet.v1 stubs.
#include "cli/commands.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "cli/output.h"
#include "engine/base/bytes.h"
#include "garnet/v1/garnet.grpc.pb.h"

#ifndef GARNET_VERSION
#define GARNET_VERSION "0.0.0"
#endif

namespace garnet::cli {

namespace pb = ::garnet::v1;

namespace {

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  std::printf("%s\n", out.c_str());
}

std::string ShortDigest(const std::string& d) {
  const std::string hex = d.rfind("sha256-", 0) == 0 ? d.substr(7) : d;
  return hex.substr(0, 12);
}

std::string Ago(int64_t unix_s) {
  const double d = std::difftime(std::time(nullptr), static_cast<std::time_t>(unix_s));
  if (d < 60) return "just now";
  return Duration(d) + " ago";
}

const char* VerdictText(pb::Verdict v) {
  switch (v) {
    case pb::VERDICT_FITS:
      return "fits";
    case pb::VERDICT_FITS_EXPERT_OFFLOAD:
      return "fits (experts offloaded)";
    case pb::VERDICT_FITS_LAYER_OFFLOAD:
      return "fits (layers offloaded)";
    case pb::VERDICT_DOES_NOT_FIT:
      return "does not fit";
    default:
      return "-";
  }
}

const char* PhaseText(pb::PullPhase p) {
  switch (p) {
    case pb::PULL_PHASE_RESOLVING:
      return "resolving";
    case pb::PULL_PHASE_WAITING:
      return "waiting";
    case pb::PULL_PHASE_DOWNLOADING:
      return "pulling";
    case pb::PULL_PHASE_VERIFYING:
      return "verifying";
    case pb::PULL_PHASE_FILE_DONE:
      return "verified";
    case pb::PULL_PHASE_REGISTERED:
      return "registered";
    default:
      return "?";
  }
}

int NeedModel(const Args& args, const char* verb) {
  if (args.positional.size() != 1) {
    return Usage(std::string("usage: garnet ") + verb + " MODEL");
  }
  return kExitOk;
}

}  // namespace

int Usage(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return kExitUsage;
}

FlagSet VerbFlags(const std::string& verb) {
  FlagSet f;
  f.with_value = {"--host"};
  f.boolean = {"--json"};
  if (verb == "fit") {
    f.with_value.insert(
        {"--ctx", "--vram", "--ram", "--policy", "--gpu-layers", "--kv", "--parallel", "--ubatch"});
    f.boolean.insert("--cpu");
  } else if (verb == "run") {
    f.with_value.insert({"--system", "--max-tokens", "--temp", "--top-k", "--top-p", "--min-p",
                         "--repeat-penalty", "--seed", "--stop", "--ctx", "--parallel",
                         "--keep-alive", "--timeout", "--backend"});
    f.boolean.insert({"--raw", "--think", "--no-pull", "--quiet", "--chat"});
  } else if (verb == "load") {
    f.with_value.insert({"--ctx", "--parallel", "--keep-alive", "--kv", "--backend"});
  } else if (verb == "import") {
    f.with_value.insert("--name");
  } else if (verb == "bench") {
    f.with_value.insert({"--prompt-tokens", "--tokens"});
  } else if (verb == "pull") {
    f.boolean.insert("--quiet");
  }
  return f;
}

int CmdVersion(Ctx& ctx, const Args&) {
  pb::VersionResponse resp;
  auto c = NewContext(ctx.conn, 10);
  grpc::Status s = pb::System::NewStub(ctx.conn.channel)->Version(c.get(), {}, &resp);
  if (ctx.json) {
    if (!s.ok()) return Fail(s, ctx.conn);
    PrintJson(resp);
    return kExitOk;
  }
  std::printf("garnet client %s\n", GARNET_VERSION);
  if (!s.ok()) return Fail(s, ctx.conn);
  std::string backends;
  for (const auto& b : resp.backends()) backends += (backends.empty() ? "" : ",") + b;
  std::printf("garnetd %s (api %s, backends %s, %s) at %s\n", resp.version().c_str(),
              resp.api().c_str(), backends.c_str(), resp.build().c_str(), ctx.conn.target.c_str());
  return kExitOk;
}

grpc::Status PullWithProgress(Ctx& ctx, const std::string& model, bool quiet) {
  pb::PullRequest req;
  req.set_model(model);
  auto c = NewContext(ctx.conn);
  auto reader = pb::Models::NewStub(ctx.conn.channel)->Pull(c.get(), req);
  Progress bar(stderr);
  pb::PullProgress p;
  while (reader->Read(&p)) {
    if (ctx.json) {
      PrintJson(p);
      std::fflush(stdout);
      continue;
    }
    if (quiet) continue;
    if (p.phase() == pb::PULL_PHASE_REGISTERED) {
      bar.Done();
      std::fprintf(stderr, "pulled %s (%s)\n", p.model().c_str(), Bytes(p.total()).c_str());
      continue;
    }
    std::string file = p.file();
    if (p.file_count() > 1) {
      file +=
          " (" + std::to_string(p.file_index() + 1) + "/" + std::to_string(p.file_count()) + ")";
    }
    bar.Update(PhaseText(p.phase()), file, p.completed(), p.total(), p.bytes_per_second());
  }
  bar.Done();
  return reader->Finish();
}

int CmdPull(Ctx& ctx, const Args& args) {
  if (args.positional.empty()) return Usage("usage: garnet pull MODEL...");
  for (const std::string& m : args.positional) {
    grpc::Status s = PullWithProgress(ctx, m, args.Has("--quiet"));
    if (!s.ok()) return Fail(s, ctx.conn);
  }
  return kExitOk;
}

int CmdList(Ctx& ctx, const Args& args) {
  if (!args.positional.empty()) return Usage("usage: garnet list");
  pb::ListResponse resp;
  auto c = NewContext(ctx.conn, 30);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->List(c.get(), {}, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ID", "SIZE", "TYPE", "PARAMS", "MODIFIED"}};
  for (const auto& m : resp.models()) {
    rows.push_back({m.name(), m.files_size() ? ShortDigest(m.files(0).digest()) : "-",
                    Bytes(m.size()), m.summary().file_type(), Count(m.summary().parameters()),
                    Ago(m.created_at())});
  }
  PrintTable(rows);
  return kExitOk;
}

int CmdShow(Ctx& ctx, const Args& args) {
  if (int rc = NeedModel(args, "show")) return rc;
  pb::ShowRequest req;
  req.set_model(args.positional[0]);
  pb::ShowResponse resp;
  auto c = NewContext(ctx.conn, 30);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->Show(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  const auto& m = resp.model();
  const auto& sm = m.summary();
  std::printf("  name          %s\n", m.name().c_str());
  std::printf("  kind          %s\n", m.kind().c_str());
  std::printf("  architecture  %s\n", sm.architecture().c_str());
  if (!sm.name().empty()) std::printf("  model name    %s\n", sm.name().c_str());
  std::printf("  parameters    %s\n", Count(sm.parameters()).c_str());
  std::printf("  type          %s\n", sm.file_type().c_str());
  std::printf("  layers        %u\n", sm.n_layer());
  std::printf("  embedding     %u\n", sm.n_embd());
  std::printf("  context       %u\n", sm.context_length());
  if (sm.n_expert() > 0)
    std::printf("  experts       %u (%u used)\n", sm.n_expert(), sm.n_expert_used());
  std::printf("  tensors       %llu\n", static_cast<unsigned long long>(sm.tensor_count()));
  std::printf("  size          %s\n", Bytes(m.size()).c_str());
  for (const auto& f : m.files()) {
    std::printf("  file          %s  %s  %s\n", f.filename().c_str(), f.digest().c_str(),
                Bytes(f.size()).c_str());
  }
  if (resp.has_catalog() && !resp.catalog().license().empty()) {
    std::printf("  license       %s\n", resp.catalog().license().c_str());
  }
  std::printf("\n");
  std::vector<std::vector<std::string>> rows = {{"  TYPE", "TENSORS", "BYTES"}};
  for (const auto& t : resp.tensor_types()) {
    rows.push_back({"  " + t.type(), std::to_string(t.count()), Bytes(t.bytes())});
  }
  PrintTable(rows);
  return kExitOk;
}

int CmdRm(Ctx& ctx, const Args& args) {
  if (args.positional.empty()) return Usage("usage: garnet rm MODEL...");
  auto stub = pb::Models::NewStub(ctx.conn.channel);
  for (const std::string& m : args.positional) {
    pb::DeleteRequest req;
    req.set_model(m);
    pb::DeleteResponse resp;
    auto c = NewContext(ctx.conn, 60);
    grpc::Status s = stub->Delete(c.get(), req, &resp);
    if (!s.ok()) return Fail(s, ctx.conn);
    if (ctx.json) {
      PrintJson(resp);
    } else {
      std::printf("deleted %s (freed %s)\n", m.c_str(), Bytes(resp.freed_bytes()).c_str());
    }
  }
  return kExitOk;
}

int CmdCatalog(Ctx& ctx, const Args& args) {
  if (!args.positional.empty()) return Usage("usage: garnet catalog");
  pb::CatalogResponse resp;
  auto c = NewContext(ctx.conn, 60);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->Catalog(c.get(), {}, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "PARAMS", "ACTIVE", "QUANT", "SIZE", "CONTEXT", "PULLED", "FIT"}};
  for (const auto& m : resp.models()) {
    rows.push_back({m.id(), Count(m.total_params()), Count(m.active_params()), m.quant(),
                    m.size() ? Bytes(m.size()) : "?", std::to_string(m.max_context()),
                    m.pulled() ? "yes" : "no", m.pulled() ? VerdictText(m.fit()) : "-"});
  }
  PrintTable(rows);
  return kExitOk;
}

int CmdFit(Ctx& ctx, const Args& args) {
  if (int rc = NeedModel(args,
                         "fit [--ctx N] [--vram SIZE[,SIZE]] [--ram SIZE] [--policy "
                         "auto|cpu|experts-cpu] [--gpu-layers N] [--kv f16|q8_0|f32] "
                         "[--parallel N]")) {
    return rc;
  }
  pb::FitRequest req;
  req.set_model(args.positional[0]);
  std::string err;
  if (auto v = args.Get("--ctx")) {
    auto n = ParseIntFlag("--ctx", *v, 1, 1 << 24, &err);
    if (!n) return Usage(err);
    req.set_ctx(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--parallel")) {
    auto n = ParseIntFlag("--parallel", *v, 1, 256, &err);
    if (!n) return Usage(err);
    req.set_parallel(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--ubatch")) {
    auto n = ParseIntFlag("--ubatch", *v, 1, 65536, &err);
    if (!n) return Usage(err);
    req.set_ubatch(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--gpu-layers")) {
    auto n = ParseIntFlag("--gpu-layers", *v, 0, 4096, &err);
    if (!n) return Usage(err);
    req.set_gpu_layers(static_cast<uint32_t>(*n));
    req.set_policy(pb::PLACEMENT_POLICY_GPU_LAYERS);
  }
  if (auto v = args.Get("--kv")) req.set_kv_type(*v);
  if (auto v = args.Get("--policy")) {
    if (*v == "auto") {
      req.set_policy(pb::PLACEMENT_POLICY_AUTO);
    } else if (*v == "cpu") {
      req.set_policy(pb::PLACEMENT_POLICY_CPU);
    } else if (*v == "experts-cpu") {
      req.set_policy(pb::PLACEMENT_POLICY_EXPERTS_CPU);
    } else {
      return Usage("--policy: \"" + *v + "\" is not one of auto, cpu, experts-cpu");
    }
  }
  if (args.Has("--cpu")) req.set_cpu_only(true);
  if (auto v = args.Get("--vram")) {
    // "0" or "none": plan for a machine without a GPU (as --cpu).
    auto sizes = ParseByteSizeList(*v);
    if (!sizes.ok()) return Usage("--vram: " + sizes.status().message() + " (e.g. 16GiB,8GiB)");
    if (sizes->empty()) req.set_cpu_only(true);
    for (uint64_t b : *sizes) req.add_vram_bytes(b);
  }
  if (auto v = args.Get("--ram")) {
    auto bytes = ParseSize(*v);
    if (!bytes) return Usage("--ram: \"" + *v + "\" is not a size (e.g. 32GiB)");
    req.set_ram_bytes(*bytes);
  }
  pb::FitResponse resp;
  auto c = NewContext(ctx.conn, 60);
  grpc::Status s = pb::Inference::NewStub(ctx.conn.channel)->Fit(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  std::printf("%s at context %u: %s\n", resp.model().c_str(), resp.ctx(),
              VerdictText(resp.verdict()));
  std::printf("%s", resp.report().c_str());
  return kExitOk;
}

int CmdPs(Ctx& ctx, const Args& args) {
  if (!args.positional.empty()) return Usage("usage: garnet ps");
  pb::PsResponse resp;
  auto c = NewContext(ctx.conn, 10);
  grpc::Status s = pb::Inference::NewStub(ctx.conn.channel)->Ps(c.get(), {}, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ID", "BACKEND", "MEMORY", "PROCESSOR", "CONTEXT", "PARALLEL", "ACTIVE", "UNTIL"}};
  const int64_t now_ms = static_cast<int64_t>(std::time(nullptr)) * 1000;
  for (const auto& m : resp.models()) {
    std::string mem;
    for (const auto& d : m.memory()) {
      mem += (mem.empty() ? "" : ", ") + d.name() + " " + Bytes(d.total());
    }
    std::string until = m.expires_at() == 0
                            ? (m.active() > 0 ? "busy" : "forever")
                            : Duration((m.expires_at() - now_ms) / 1000.0) + " from now";
    rows.push_back(
        {m.name(), ShortDigest(m.digest()), m.backend(), mem, m.placement(),
         std::to_string(m.ctx()), std::to_string(m.parallel()),
         std::to_string(m.active()) + (m.queued() ? "+" + std::to_string(m.queued()) : ""), until});
  }
  PrintTable(rows);
  return kExitOk;
}

int CmdLoad(Ctx& ctx, const Args& args) {
  if (int rc = NeedModel(args, "load")) return rc;
  pb::LoadRequest req;
  req.set_model(args.positional[0]);
  std::string err;
  if (auto v = args.Get("--ctx")) {
    auto n = ParseIntFlag("--ctx", *v, 16, 1 << 24, &err);
    if (!n) return Usage(err);
    req.mutable_options()->set_ctx(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--parallel")) {
    auto n = ParseIntFlag("--parallel", *v, 1, 256, &err);
    if (!n) return Usage(err);
    req.mutable_options()->set_parallel(static_cast<uint32_t>(*n));
  }
  if (auto v = args.Get("--kv")) req.mutable_options()->set_kv_type(*v);
  if (auto v = args.Get("--backend")) req.mutable_options()->set_backend(*v);
  if (auto v = args.Get("--keep-alive")) {
    auto n = ParseIntFlag("--keep-alive", *v, -1, int64_t{365} * 86400, &err);
    if (!n) return Usage(err);
    req.set_keep_alive_seconds(*n);
  }
  pb::LoadResponse resp;
  auto c = NewContext(ctx.conn);
  grpc::Status s = pb::Inference::NewStub(ctx.conn.channel)->Load(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
    return kExitOk;
  }
  if (resp.already_loaded()) {
    std::printf("%s is loaded (%s)\n", resp.model().name().c_str(),
                resp.model().placement().c_str());
  } else {
    std::printf("loaded %s in %.2fs (%s, ctx %u)\n", resp.model().name().c_str(),
                resp.load_seconds(), resp.model().placement().c_str(), resp.model().ctx());
  }
  return kExitOk;
}

int CmdUnload(Ctx& ctx, const Args& args) {
  if (int rc = NeedModel(args, "unload")) return rc;
  pb::UnloadRequest req;
  req.set_model(args.positional[0]);
  pb::UnloadResponse resp;
  auto c = NewContext(ctx.conn, 30);
  grpc::Status s = pb::Inference::NewStub(ctx.conn.channel)->Unload(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
  } else {
    std::printf("unloaded %s\n", req.model().c_str());
  }
  return kExitOk;
}

int CmdVerify(Ctx& ctx, const Args& args) {
  if (args.positional.size() > 1) return Usage("usage: garnet verify [MODEL]");
  pb::VerifyRequest req;
  if (!args.positional.empty()) req.set_model(args.positional[0]);
  pb::VerifyResponse resp;
  auto c = NewContext(ctx.conn);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->Verify(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
  } else {
    for (const auto& b : resp.blobs()) {
      std::printf("%s  %s%s%s\n", b.ok() ? "ok     " : "CORRUPT", b.digest().c_str(),
                  b.ok() ? "" : "  ", b.error().c_str());
    }
    std::printf("%d blob(s) checked, %s\n", resp.blobs_size(),
                resp.ok() ? "all ok" : "corruption found");
  }
  return resp.ok() ? kExitOk : kExitError;
}

int CmdPrune(Ctx& ctx, const Args& args) {
  if (!args.positional.empty()) return Usage("usage: garnet prune");
  pb::PruneResponse resp;
  auto c = NewContext(ctx.conn);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->Prune(c.get(), {}, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
  } else {
    std::printf("removed %u blob(s) and %u partial download(s), freed %s\n", resp.blobs_removed(),
                resp.partials_removed(), Bytes(resp.freed_bytes()).c_str());
  }
  return kExitOk;
}

int CmdImport(Ctx& ctx, const Args& args) {
  if (args.positional.size() != 1) return Usage("usage: garnet import FILE.gguf [--name NAME:TAG]");
  std::string path = args.positional[0];
  if (path.empty() || path[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == nullptr) return Usage("import: cannot resolve a relative path");
    path = std::string(cwd) + "/" + path;
  }
  pb::ImportRequest req;
  req.set_path(path);
  if (auto v = args.Get("--name")) req.set_name(*v);
  pb::ImportResponse resp;
  auto c = NewContext(ctx.conn);
  grpc::Status s = pb::Models::NewStub(ctx.conn.channel)->Import(c.get(), req, &resp);
  if (!s.ok()) return Fail(s, ctx.conn);
  if (ctx.json) {
    PrintJson(resp);
  } else {
    std::printf("imported %s (%s)\n", resp.model().name().c_str(),
                Bytes(resp.model().size()).c_str());
  }
  return kExitOk;
}

}  // namespace garnet::cli
