// Helpers shared by all test executables: where the fixtures are, and
// float comparisons that report the worst element.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>

#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace diffuse::testing {

// The golden fixtures: $DIFFUSE_FIXTURES, else the tree the build makes from
// tests/data (<build>/test-data/fixtures, CMake target test_data).
std::string fixtures_dir();
// Empty when every file of tests/data/manifest.json is in fixtures_dir();
// otherwise a message naming the missing file(s) and how to get them.
std::string missing_fixtures();
// Fails the calling test (never skips it) when a fixture file is missing.
#define DIFFUSE_REQUIRE_FIXTURES()                                               \
  do {                                                                           \
    const std::string diffuse_missing_ = ::diffuse::testing::missing_fixtures(); \
    if (!diffuse_missing_.empty()) FAIL() << diffuse_missing_;                   \
  } while (0)

std::string read_file(const std::string& path);

// Runs a shell command line; its exit status (-1 if it did not exit) and its
// stdout + stderr.
struct RunResult {
  int code = -1;
  std::string out;
};
RunResult run_command(const std::string& command_line);
// `s` as one single-quoted POSIX shell word.
std::string shell_quote(const std::string& s);

// A baselines key list ("name\t[320, 4, 3, 3]\tF16" lines) as (name, shape) pairs.
std::vector<std::pair<std::string, std::vector<int64_t>>> read_key_list(const std::string& file);
// The entries whose name starts with `prefix`, by name with the prefix stripped.
std::map<std::string, std::vector<int64_t>> read_key_map(const std::string& file, const std::string& prefix);
// n deterministic values in [-amp, amp] (a 32-bit LCG from `seed`).
std::vector<float> noise(size_t n, uint32_t seed, float amp);

// Runs `f` and returns the Error it throws (fails the test when it throws none).
template <class F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no diffuse::Error was thrown";
  return Error(ErrorCode::kRuntime, "");
}

std::string temp_dir();  // a fresh empty directory under /tmp, per call

struct Diff {
  double max_abs = 0;   // max |a - b|
  double max_rel = 0;   // max |a - b| / max(|b|_inf, tiny): relative to the reference's scale
  size_t worst = 0;     // index of the worst element
  std::string str() const;
};
Diff compare(const std::vector<float>& actual, const std::vector<float>& expected);

}  // namespace diffuse::testing
