// Command-line parsing for `garnet`: positional arguments plus --flag VALUE / --flag=VALUE /
// boolean --flag, with the flags each verb accepts declared up front so typos are usage errors.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace garnet::cli {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;  // flag -> every value given
  std::set<std::string> bools;

  bool Has(const std::string& flag) const { return values.count(flag) || bools.count(flag); }
  std::optional<std::string> Get(const std::string& flag) const {
    auto it = values.find(flag);
    if (it == values.end() || it->second.empty()) return std::nullopt;
    return it->second.back();
  }
  std::vector<std::string> All(const std::string& flag) const {
    auto it = values.find(flag);
    return it == values.end() ? std::vector<std::string>{} : it->second;
  }
};

struct FlagSet {
  std::set<std::string> with_value;  // "--ctx"
  std::set<std::string> boolean;     // "--json"
};

// Parses `argv` (after the verb). On a usage error returns nullopt and sets `error`.
std::optional<Args> ParseArgs(const std::vector<std::string>& argv, const FlagSet& flags,
                              std::string* error);

// Integer flag in [lo, hi]; nullopt + `error` set when malformed.
std::optional<int64_t> ParseIntFlag(const std::string& flag, const std::string& text, int64_t lo,
                                    int64_t hi, std::string* error);
// "16GiB", "512MiB", "1.5GB", "1000" (bytes).
std::optional<uint64_t> ParseSize(const std::string& text);

}  // namespace garnet::cli
