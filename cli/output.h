// Terminal output for `garnet`: sizes, durations, aligned tables, and a pull progress display
// that draws a bar on a TTY and prints plain lines otherwise.
//
// Thread-safety: single-threaded use (the CLI's main thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace garnet::cli {

std::string Bytes(uint64_t bytes);     // "12.7 MiB"
std::string Duration(double seconds);  // "3s", "2m05s", "1h02m"
std::string Count(uint64_t n);         // "3.3M", "26B"

// Prints rows as left-aligned columns separated by two spaces; the first row is the header.
void PrintTable(const std::vector<std::vector<std::string>>& rows, FILE* out = stdout);

// One progress line per file: "pulling gemma4-tiny-f32.gguf  45% [=====>    ] 6.0/13.3 MiB
// 12.1 MiB/s ETA 1s". On a TTY it redraws in place (at most 10 times a second); otherwise it
// prints a line when the phase changes and at most every 2 seconds.
class Progress {
 public:
  explicit Progress(FILE* out);
  void Update(const std::string& phase, const std::string& file, uint64_t completed, uint64_t total,
              double rate);
  // Ends the current line (TTY) so later output starts on a fresh line.
  void Done();

 private:
  FILE* out_;
  bool tty_;
  std::string last_phase_;
  std::string last_file_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool drawn_ = false;
};

}  // namespace garnet::cli
