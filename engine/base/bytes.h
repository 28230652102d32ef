// Byte sizes as people write and read them: "16GiB", "1.5GB", "24GiB,8GiB" in; "21.3 GiB" out.
// One parser for every flag and config value that takes a size (planner overrides, the CLI).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/base/status.h"

namespace garnet {

// Parses "16GiB", "512MiB", "1.5GB", "12000000000" (bytes); binary units with or without "iB"
// (k, m, g, t), decimal ones as kB/MB/GB/TB; case-insensitive. InvalidArgument names the text.
Result<uint64_t> ParseByteSize(std::string_view text);
// A comma-separated list of sizes, one per GPU: "24GiB,8GiB". "0" and "none" mean no GPU (an
// empty list). InvalidArgument names the bad item; an empty item ("8GiB,") is an error.
Result<std::vector<uint64_t>> ParseByteSizeList(std::string_view text);
// "21.3 GiB" / "512.0 MiB" / "12.0 KiB" / "17 B".
std::string FormatBytes(uint64_t bytes);

}  // namespace garnet
