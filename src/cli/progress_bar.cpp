#include "cli/progress_bar.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace diffuse::cli {

std::string format_duration(double seconds) {
  long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), tty_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(int n, int total) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? n / elapsed : 0;
  double remaining = rate > 0 ? (total - n) / rate : 0;
  int pct = total > 0 ? n * 100 / total : 100;
  char rate_buf[32];
  // tqdm switches to s/it when an iteration takes more than a second.
  if (rate >= 1.0 || rate == 0) {
    std::snprintf(rate_buf, sizeof rate_buf, "%5.2fit/s", rate);
  } else {
    std::snprintf(rate_buf, sizeof rate_buf, "%5.2fs/it", 1.0 / rate);
  }
  std::string bar;
  const int width = 10;
  int filled = total > 0 ? n * width / total : width;
  for (int i = 0; i < width; ++i) bar += i < filled ? "\u2588" : " ";
  std::string line = label_ + (label_.empty() ? "" : ": ") + std::to_string(pct) + "%|" + bar + "| " +
                     std::to_string(n) + "/" + std::to_string(total) + " [" + format_duration(elapsed) + "<" +
                     format_duration(remaining) + ", " + rate_buf + "]";
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    open_ = true;
  } else {
    int decile = total > 0 ? n * 10 / total : 10;
    if (decile != last_decile_ || n == total) {
      std::fprintf(stderr, "%s\n", line.c_str());
      last_decile_ = decile;
    }
  }
  std::fflush(stderr);
}

void ProgressBar::phase(const std::string& text) {
  finish();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && open_) std::fprintf(stderr, "\n");
  open_ = false;
}

}  // namespace diffuse::cli
