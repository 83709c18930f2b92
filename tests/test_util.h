// Helpers shared by all test executables: where the fixtures are, and
// float comparisons that report the worst element.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace diffuse::testing {

// ../shared/fixtures beside the checkout, or $DIFFUSE_FIXTURES.
std::string fixtures_dir();
bool fixtures_available();
// Skips the calling test (GTEST_SKIP) when the fixtures are absent; CI always has them.
#define DIFFUSE_REQUIRE_FIXTURES()                                              \
  do {                                                                          \
    if (!::diffuse::testing::fixtures_available()) GTEST_SKIP() << "no fixtures"; \
  } while (0)

std::string read_file(const std::string& path);
std::string temp_dir();  // a fresh empty directory under /tmp, per call

struct Diff {
  double max_abs = 0;   // max |a - b|
  double max_rel = 0;   // max |a - b| / max(|b|_inf, tiny): relative to the reference's scale
  size_t worst = 0;     // index of the worst element
  std::string str() const;
};
Diff compare(const std::vector<float>& actual, const std::vector<float>& expected);

}  // namespace diffuse::testing
