// The golden fixture set itself (tests/data, written into the build by the
// test_data target, or $DIFFUSE_FIXTURES): every file the tests read is there
// with the bytes tests/data/manifest.json names, and a missing file fails the
// tests that need it with a message naming it (it never skips them).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "io/sha256.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;

nlohmann::json manifest_files() {
  return nlohmann::json::parse(testing::read_file(DIFFUSE_SOURCE_DIR "/tests/data/manifest.json")).at("files");
}

// Byte-exact: the file materialize.py makes (sha256), or for files stored in a
// derived form, the shared fixture file they were packed from (original_sha256).
TEST(Fixtures, MatchTheManifest) {
  DIFFUSE_REQUIRE_FIXTURES();
  int checked = 0;
  const nlohmann::json files = manifest_files();
  for (const auto& [name, entry] : files.items()) {
    const std::string got = sha256_file(testing::fixtures_dir() + "/" + name);
    const std::string want = entry.at("sha256");
    const std::string original = entry.value("original_sha256", want);
    EXPECT_TRUE(got == want || got == original) << name << ": sha256 " << got << ", the manifest says " << want;
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

struct ChildRun {
  int code = -1;
  std::string output;
};

// This test binary again, on one test, with DIFFUSE_FIXTURES=fixtures.
ChildRun run_self(const std::string& filter, const std::string& fixtures) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string cmd = "DIFFUSE_FIXTURES='" + fixtures + "' '" + self + "' --gtest_filter=" + filter + " 2>&1";
  ChildRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.output.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(Fixtures, MissingFileFailsAndNamesIt) {
  DIFFUSE_REQUIRE_FIXTURES();
  // A copy of the set (symbolic links) without one file.
  const std::string removed = "sdxl/model/vae/diffusion_pytorch_model.safetensors";
  const fs::path copy = testing::temp_dir();
  int linked = 0;
  const nlohmann::json files = manifest_files();
  for (const auto& [name, entry] : files.items()) {
    if (name == removed) continue;
    fs::create_directories((copy / name).parent_path());
    fs::create_symlink(fs::absolute(fs::path(testing::fixtures_dir()) / name), copy / name);
    ++linked;
  }
  ASSERT_GE(linked, 60);

  const ChildRun broken = run_self("Fixtures.MatchTheManifest", copy.string());
  EXPECT_NE(broken.code, 0) << broken.output;
  EXPECT_NE(broken.output.find("missing fixture file " + (copy / removed).string()), std::string::npos)
      << broken.output;
  EXPECT_NE(broken.output.find("[  FAILED  ] Fixtures.MatchTheManifest"), std::string::npos) << broken.output;
  EXPECT_EQ(broken.output.find("SKIPPED"), std::string::npos) << broken.output;

  // With the file back, the same run passes: it was that file, not the copy.
  fs::create_symlink(fs::absolute(fs::path(testing::fixtures_dir()) / removed), copy / removed);
  const ChildRun whole = run_self("Fixtures.MatchTheManifest", copy.string());
  EXPECT_EQ(whole.code, 0) << whole.output;
  fs::remove_all(copy);
}

}  // namespace
}  // namespace diffuse
