#include "cli/output.h"

#include <unistd.h>

#include <algorithm>

namespace garnet::cli {

std::string Bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

std::string Duration(double s) {
  if (s < 0) s = 0;
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t < 60) {
    std::snprintf(buf, sizeof buf, "%lds", t);
  } else if (t < 3600) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  }
  return buf;
}

std::string Count(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull) {
    std::snprintf(buf, sizeof buf, "%.1fB", n / 1e9);
  } else if (n >= 1000000ull) {
    std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  } else if (n >= 1000ull) {
    std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(n));
  }
  return buf;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows, FILE* out) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::fprintf(out, "%s\n", line.c_str());
  }
}

Progress::Progress(FILE* out) : out_(out), tty_(isatty(fileno(out)) != 0) {}

void Progress::Update(const std::string& phase, const std::string& file, uint64_t completed,
                      uint64_t total, double rate) {
  const auto now = std::chrono::steady_clock::now();
  const bool changed = phase != last_phase_ || file != last_file_;
  const auto min_gap = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(2000);
  if (!changed && drawn_ && now - last_draw_ < min_gap) return;
  last_draw_ = now;
  std::string line = phase + " " + file;
  if (total > 0) {
    const double frac = std::min(1.0, static_cast<double>(completed) / static_cast<double>(total));
    char pct[16];
    std::snprintf(pct, sizeof pct, " %3d%% ", static_cast<int>(frac * 100));
    line += pct;
    if (tty_) {
      const int width = 24;
      const int fill = static_cast<int>(frac * width);
      line += "[" + std::string(fill, '=') + (fill < width ? ">" : "") +
              std::string(std::max(0, width - fill - 1), ' ') + "] ";
    }
    line += Bytes(completed) + "/" + Bytes(total);
    if (rate > 0) {
      line += "  " + Bytes(static_cast<uint64_t>(rate)) + "/s";
      if (completed < total) line += "  ETA " + Duration((total - completed) / rate);
    }
  } else if (completed > 0) {
    line += " " + Bytes(completed);
  }
  if (tty_) {
    if (changed && drawn_ && file != last_file_) std::fputc('\n', out_);
    std::fprintf(out_, "\r\033[K%s", line.c_str());
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
  drawn_ = true;
  last_phase_ = phase;
  last_file_ = file;
}

void Progress::Done() {
  if (tty_ && drawn_) std::fputc('\n', out_);
  drawn_ = false;
  std::fflush(out_);
}

}  // namespace garnet::cli
