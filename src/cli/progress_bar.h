// A tqdm-style progress bar on stderr:
//   100%|██████████| 20/20 [00:02<00:00,  8.12it/s]
// redrawn with \r on a TTY; plain lines (every 10% and the last step) otherwise.
#pragma once
#include <chrono>
#include <string>

namespace diffuse::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label = "");
  void update(int n, int total);
  void finish();
  // A phase line of its own ("loading model ...", "encoding prompt",
  // "decoding", "saving"): ends an open bar line first.
  void phase(const std::string& text);
  // A new label for the same bar (rate and times keep counting); the next
  // update() prints a line even where only every 10% is printed.
  void set_label(std::string label) {
    label_ = std::move(label);
    last_decile_ = -1;
  }

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = -1;
  bool open_ = false;
  std::chrono::steady_clock::time_point start_;
};

std::string format_duration(double seconds);  // "01:05" or "1:01:05"

}  // namespace diffuse::cli
