#include "test_util.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

namespace diffuse::testing {

std::string fixtures_dir() {
  if (const char* env = std::getenv("DIFFUSE_FIXTURES")) return env;
  return DIFFUSE_DEFAULT_FIXTURES;
}

bool fixtures_available() { return std::filesystem::exists(fixtures_dir() + "/sd1/cases.json"); }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string temp_dir() {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("diffuse-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string Diff::str() const {
  std::ostringstream ss;
  ss << "max_abs=" << max_abs << " max_rel=" << max_rel << " at " << worst;
  return ss.str();
}

Diff compare(const std::vector<float>& actual, const std::vector<float>& expected) {
  Diff d;
  if (actual.size() != expected.size()) {
    d.max_abs = d.max_rel = INFINITY;
    return d;
  }
  double scale = 0;
  for (float e : expected) scale = std::max(scale, std::fabs(static_cast<double>(e)));
  scale = std::max(scale, 1e-12);
  for (size_t i = 0; i < actual.size(); ++i) {
    double diff = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (std::isnan(actual[i]) != std::isnan(expected[i])) diff = INFINITY;
    if (diff > d.max_abs) {
      d.max_abs = diff;
      d.worst = i;
    }
  }
  d.max_rel = d.max_abs / scale;
  return d;
}

}  // namespace diffuse::testing
