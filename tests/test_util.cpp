#include "test_util.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace diffuse::testing {

std::string fixtures_dir() {
  if (const char* env = std::getenv("DIFFUSE_FIXTURES")) return env;
  return DIFFUSE_DEFAULT_FIXTURES;
}

std::string missing_fixtures() {
  // The files the tests read: the keys of "files" in tests/data/manifest.json.
  static const std::vector<std::string> files = [] {
    std::vector<std::string> out;
    const auto manifest = nlohmann::json::parse(read_file(DIFFUSE_SOURCE_DIR "/tests/data/manifest.json"));
    for (const auto& [name, entry] : manifest.at("files").items()) out.push_back(name);
    return out;
  }();
  const std::string dir = fixtures_dir();
  std::vector<std::string> missing;
  for (const auto& f : files)
    if (!std::filesystem::exists(dir + "/" + f)) missing.push_back(f);
  if (missing.empty()) return "";
  std::ostringstream ss;
  ss << "missing fixture file " << dir << "/" << missing[0];
  if (missing.size() > 1) ss << " (and " << missing.size() - 1 << " more of the " << files.size() << ")";
  ss << ".\n";
  if (std::getenv("DIFFUSE_FIXTURES"))
    ss << "DIFFUSE_FIXTURES names a fixture set without it: unset it to use the build's copy, or point it at a "
          "complete set (e.g. ../shared/fixtures).";
  else  // DIFFUSE_DEFAULT_FIXTURES is <build>/test-data/fixtures
    ss << "The build writes the fixtures from tests/data: `cmake --build "
       << std::filesystem::path(DIFFUSE_DEFAULT_FIXTURES).parent_path().parent_path().string()
       << " --target test_data` writes them again; or set DIFFUSE_FIXTURES to a complete fixture set (e.g. "
          "../shared/fixtures).";
  return ss.str();
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<float> noise(size_t n, uint32_t seed, float amp) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = amp * (static_cast<float>(x >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

RunResult run_command(const std::string& command_line) {
  const std::string cmd = command_line + " 2>&1";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> read_key_list(const std::string& file) {
  std::ifstream f(fixtures_dir() + "/baselines/" + file);
  EXPECT_TRUE(f.good()) << file;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string name, shape_txt;
    std::getline(ss, name, '\t');
    std::getline(ss, shape_txt, '\t');
    for (char& ch : shape_txt)
      if (ch == '[' || ch == ']' || ch == ',') ch = ' ';
    std::istringstream dims(shape_txt);
    std::vector<int64_t> shape;
    int64_t d;
    while (dims >> d) shape.push_back(d);
    out.emplace_back(name, shape);
  }
  return out;
}

std::map<std::string, std::vector<int64_t>> read_key_map(const std::string& file, const std::string& prefix) {
  std::map<std::string, std::vector<int64_t>> out;
  for (auto& [name, shape] : read_key_list(file))
    if (name.compare(0, prefix.size(), prefix) == 0) out[name.substr(prefix.size())] = shape;
  return out;
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
