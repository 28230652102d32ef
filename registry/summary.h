// A model's GGUF summary (architecture, size, quantisation, context) read from its header(s).
//
// Reads metadata and tensor infos only (the GGUF reader maps the file; no tensor data is
// touched). Never fails: a file that is not a readable GGUF yields a summary whose `error` says
// why, so a registered model is always listable.
//
// Thread-safety: pure function.
#pragma once

#include <string>
#include <vector>

#include "registry/db.h"

namespace garnet::registry {

GgufSummary SummarizeGguf(const std::vector<std::string>& paths);

}  // namespace garnet::registry
