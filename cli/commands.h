// The verbs of `garnet`. Each takes the parsed arguments and the connection and returns an exit
// code (client.h). Internal to cli/.
#pragma once

#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/client.h"

namespace garnet::cli {

struct Ctx {
  Connection conn;
  bool json = false;
};

// The flags each verb accepts (besides --host and --json, which every verb takes).
FlagSet VerbFlags(const std::string& verb);

int CmdVersion(Ctx& ctx, const Args& args);
int CmdPull(Ctx& ctx, const Args& args);
int CmdList(Ctx& ctx, const Args& args);
int CmdShow(Ctx& ctx, const Args& args);
int CmdRm(Ctx& ctx, const Args& args);
int CmdCatalog(Ctx& ctx, const Args& args);
int CmdFit(Ctx& ctx, const Args& args);
int CmdPs(Ctx& ctx, const Args& args);
int CmdLoad(Ctx& ctx, const Args& args);
int CmdUnload(Ctx& ctx, const Args& args);
int CmdVerify(Ctx& ctx, const Args& args);
int CmdPrune(Ctx& ctx, const Args& args);
int CmdImport(Ctx& ctx, const Args& args);
int CmdRun(Ctx& ctx, const Args& args);
int CmdBench(Ctx& ctx, const Args& args);

// Pulls `model` with a progress display on stderr (used by pull and by run). Returns the
// final status.
grpc::Status PullWithProgress(Ctx& ctx, const std::string& model, bool quiet);

// Prints a usage error and returns kExitUsage.
int Usage(const std::string& message);

}  // namespace garnet::cli
