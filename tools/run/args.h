// Tiny command-line helpers shared by garnet-run and garnet-bench-engine (flag parsing with
// errors that name the flag).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace garnet::tools {

// Parses the value of `flag` as a number; false (and a message on stderr) when it is not one.
inline bool ParseInt(std::string_view flag, const char* s, int64_t* out) {
  char* end = nullptr;
  long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0') {
    std::fprintf(stderr, "error: %.*s wants an integer, got '%s'\n", static_cast<int>(flag.size()),
                 flag.data(), s);
    return false;
  }
  *out = v;
  return true;
}

inline bool ParseFloat(std::string_view flag, const char* s, float* out) {
  char* end = nullptr;
  float v = std::strtof(s, &end);
  if (end == s || *end != '\0') {
    std::fprintf(stderr, "error: %.*s wants a number, got '%s'\n", static_cast<int>(flag.size()),
                 flag.data(), s);
    return false;
  }
  *out = v;
  return true;
}

}  // namespace garnet::tools
