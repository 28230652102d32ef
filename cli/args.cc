#include "cli/args.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

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
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) return std::nullopt;
  char* end = nullptr;
  const std::string num = text.substr(0, i);
  const double v = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !std::isfinite(v) || v < 0) return std::nullopt;
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kib") {
    mult = 1024.0;
  } else if (unit == "m" || unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "t" || unit == "tib") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else if (unit == "kb") {
    mult = 1e3;
  } else if (unit == "mb") {
    mult = 1e6;
  } else if (unit == "gb") {
    mult = 1e9;
  } else if (unit == "tb") {
    mult = 1e12;
  } else {
    return std::nullopt;
  }
  const double bytes = v * mult;
  if (bytes > 1.8e19) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

}  // namespace garnet::cli
