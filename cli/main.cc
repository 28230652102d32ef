// garnet: the command-line client of garnetd. See `garnet help`.
//
// Exit codes: 0 ok, 1 error (the daemon answered with an error or is not running), 2 usage.
#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

using namespace garnet::cli;

const char kHelp[] = R"(usage: garnet [--host unix:/path|host:port] [--json] VERB [args]

  serve [garnetd flags]   run the daemon in the foreground (garnetd --help for its flags)
  pull MODEL...           download, verify and register a model (progress bar on a terminal)
  list | ls               pulled models
  show MODEL              manifest, GGUF summary and tensor types
  rm MODEL...             delete models (blobs no other model uses are freed)
  catalog                 the managed model ids, whether pulled, whether they fit
  fit MODEL               memory plan: [--ctx N] [--vram 16GiB[,8GiB]|none] [--ram SIZE] [--cpu]
                          [--policy auto|cpu|experts-cpu] [--gpu-layers N] [--kv f16|q8_0|f32]
                          [--parallel N]
  run MODEL [PROMPT]      generate (streams tokens; timing on stderr); no PROMPT on a terminal:
                          interactive chat. [--system S] [--max-tokens N] [--temp T] [--top-k K]
                          [--top-p P] [--seed N] [--stop S]... [--ctx N] [--raw] [--think]
                          [--keep-alive SECONDS] [--timeout SECONDS] [--no-pull] [--quiet]
                          [--backend auto|cpu|vulkan]
  bench MODEL             fixed prompt lengths then N tokens: TTFT, prompt and decode tok/s,
                          memory shape. [--prompt-tokens 512,2048] [--tokens 64]
  ps                      loaded models
  load MODEL              load now: [--ctx N] [--parallel N] [--keep-alive SECONDS]
                          [--backend auto|cpu|vulkan]
  unload | stop MODEL     unload a model
  verify [MODEL]          re-hash blobs and report corruption
  prune                   delete unreferenced blobs and stale partial downloads
  import FILE [--name N]  register a local GGUF file
  version                 client and daemon versions

Environment: GARNET_HOST (daemon address), GARNET_TOKEN (sent as a bearer token).
)";

// garnetd next to this binary (installed layout), or in the build tree's daemon/ folder.
std::string FindGarnetd() {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir = dir.substr(0, dir.rfind('/'));
    for (const std::string& cand : {dir + "/garnetd", dir + "/../daemon/garnetd"}) {
      if (access(cand.c_str(), X_OK) == 0) return cand;
    }
  }
  return "garnetd";  // from PATH
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> all(argv + 1, argv + argc);
  // Global flags may come before the verb.
  std::string host;
  bool json = false;
  size_t i = 0;
  for (; i < all.size(); ++i) {
    const std::string& a = all[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--host" && i + 1 < all.size()) {
      host = all[++i];
    } else if (a.rfind("--host=", 0) == 0) {
      host = a.substr(7);
    } else if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      return kExitOk;
    } else {
      break;
    }
  }
  if (i >= all.size()) {
    std::fputs(kHelp, stderr);
    return kExitUsage;
  }
  std::string verb = all[i];
  std::vector<std::string> rest(all.begin() + static_cast<long>(i) + 1, all.end());

  if (verb == "help") {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (verb == "serve") {
    const std::string garnetd = FindGarnetd();
    std::vector<char*> av;
    av.push_back(const_cast<char*>(garnetd.c_str()));
    for (auto& r : rest) av.push_back(r.data());
    av.push_back(nullptr);
    execvp(garnetd.c_str(), av.data());
    std::fprintf(stderr, "error: cannot run %s: %s\n", garnetd.c_str(), std::strerror(errno));
    return kExitError;
  }
  if (verb == "ls") verb = "list";
  if (verb == "stop") verb = "unload";

  static const std::map<std::string, std::function<int(Ctx&, const Args&)>> kVerbs = {
      {"version", CmdVersion}, {"pull", CmdPull},       {"list", CmdList},     {"show", CmdShow},
      {"rm", CmdRm},           {"catalog", CmdCatalog}, {"fit", CmdFit},       {"ps", CmdPs},
      {"load", CmdLoad},       {"unload", CmdUnload},   {"verify", CmdVerify}, {"prune", CmdPrune},
      {"import", CmdImport},   {"run", CmdRun},         {"bench", CmdBench},
  };
  auto it = kVerbs.find(verb);
  if (it == kVerbs.end()) {
    std::fprintf(stderr, "unknown verb \"%s\"\n\n%s", verb.c_str(), kHelp);
    return kExitUsage;
  }
  std::string err;
  auto args = ParseArgs(rest, VerbFlags(verb), &err);
  if (!args) return Usage("garnet " + verb + ": " + err);
  if (auto h = args->Get("--host")) host = *h;
  json = json || args->Has("--json");

  Ctx ctx{Connect(host), json};
  return it->second(ctx, *args);
}
