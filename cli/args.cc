#include "cli/args.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "engine/base/bytes.h"

namespace garnet::cli {

std::optional<Args> ParseArgs(const std::vector<std::string>& argv, const FlagSet& flags,
                              std::string* error) {
  Args a;
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string s = argv[i];
    if (only_positional || s.size() < 2 || s[0] != '-' || s == "-") {
      a.positional.push_back(s);
      continue;
    }
    if (s == "--") {
      only_positional = true;
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (auto eq = s.find('='); eq != std::string::npos) {
      value = s.substr(eq + 1);
      s = s.substr(0, eq);
      inline_value = true;
    }
    if (flags.boolean.count(s)) {
      if (inline_value) {
        *error = s + " takes no value";
        return std::nullopt;
      }
      a.bools.insert(s);
    } else if (flags.with_value.count(s)) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) {
          *error = s + " needs a value";
          return std::nullopt;
        }
        value = argv[++i];
      }
      a.values[s].push_back(value);
    } else {
      *error = "unknown flag " + s;
      return std::nullopt;
    }
  }
  return a;
}

std::optional<int64_t> ParseIntFlag(const std::string& flag, const std::string& text, int64_t lo,
                                    int64_t hi, std::string* error) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end) {
    *error = flag + ": \"" + text + "\" is not an integer";
    return std::nullopt;
  }
  if (v < lo || v > hi) {
    *error = flag + ": " + text + " is out of range [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "]";
    return std::nullopt;
  }
  return v;
}

std::optional<uint64_t> ParseSize(const std::string& text) {
  auto bytes = ParseByteSize(text);
  if (!bytes.ok()) return std::nullopt;
  return *bytes;
}

}  // namespace garnet::cli
