// `diffuse --version`, where the binary finds its data, and --device, as a
// user drives them. (The installed program itself is tested by
// tests/install/run.sh, ctest install_and_run.)
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

using testing::RunResult;

RunResult run_binary(const std::string& binary, const std::string& args) {
  return testing::run_command("'" + binary + "' " + args);
}
RunResult run(const std::string& args) { return run_binary(DIFFUSE_BINARY, args); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// How many CUDA devices `diffuse devices --json` sees (0 on the CI machine).
size_t gpu_count() {
  RunResult r = run("devices --json");
  EXPECT_EQ(r.code, 0) << r.out;
  return nlohmann::json::parse(r.out).at("cuda").at("devices").size();
}

TEST(CliVersion, PrintsVersionCommitBackendsAndDataDir) {
  RunResult r = run("--version");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(^diffuse \d+\.\d+\.\d+\n)"))) << r.out;
  std::smatch commit;
  ASSERT_TRUE(std::regex_search(r.out, commit, std::regex(R"(\ncommit: (\S+)\n)"))) << r.out;
  if (fs::exists(fs::path(DIFFUSE_SOURCE_DIR) / ".git")) {  // built from a checkout: the commit is known
    EXPECT_TRUE(std::regex_match(commit[1].str(), std::regex(R"([0-9a-f]{7,40}(-dirty)?)"))) << commit[1];
  } else {
    EXPECT_EQ(commit[1], "unknown");
  }
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\nbackends: cpu \(oneDNN \d+\.\d+\.\d+\))"))) << r.out;
#if defined(DIFFUSE_HAVE_CUDA)
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(, cuda \(CUDA runtime \d+\.\d+, cuBLASLt [\d.]+, cuDNN [\d.]+; kernels for sm_\d+)")))
      << r.out;
#else
  EXPECT_FALSE(contains(r.out, "cuda")) << r.out;
#endif
  // The build-tree binary reads the source tree's models/.
  std::smatch data;
  ASSERT_TRUE(std::regex_search(r.out, data, std::regex(R"(\ndata: (.*)\n?$)"))) << r.out;
  EXPECT_EQ(fs::canonical(data[1].str()), fs::canonical(DIFFUSE_SOURCE_DIR));
}

// A copy of the binary outside the build tree does not fall back to the source
// tree; it reads <its dir>/../share/diffuse, as an installed copy does.
TEST(CliVersion, ACopyOutsideTheBuildTreeReadsOnlyItsOwnShareDir) {
  const fs::path root = testing::temp_dir();
  fs::create_directories(root / "bin");
  const fs::path copy = root / "bin" / "diffuse";
  fs::copy_file(DIFFUSE_BINARY, copy);
  RunResult bare = run_binary(copy, "--version");
  ASSERT_EQ(bare.code, 0) << bare.out;
  EXPECT_TRUE(contains(bare.out, "data: not found (looked in " + (root / "share/diffuse").string() + ")")) << bare.out;
  RunResult no_demo = run_binary(copy, "generate \"a red circle\"");
  EXPECT_EQ(no_demo.code, 2) << no_demo.out;
  EXPECT_TRUE(contains(no_demo.out, "the built-in demo model was not found")) << no_demo.out;

  fs::create_directories(root / "share/diffuse");
  fs::create_directory_symlink(fs::path(DIFFUSE_SOURCE_DIR) / "models", root / "share/diffuse/models");
  RunResult installed = run_binary(copy, "--version");
  ASSERT_EQ(installed.code, 0) << installed.out;
  EXPECT_TRUE(contains(installed.out, "\ndata: " + (root / "share/diffuse").string())) << installed.out;
}

TEST(CliDevice, AutoIsTheDefaultAndSaysWhatItChose) {
  const std::string out = testing::temp_dir() + "/auto.png";
  RunResult r = run("generate \"a red circle\" --steps 2 --seed 1 -o '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(out));
#if defined(DIFFUSE_HAVE_CUDA)
  if (gpu_count() == 0) {
    EXPECT_TRUE(contains(r.out, "\ndevice: auto -> cpu (no CUDA device: ")) << r.out;
  } else {
    EXPECT_TRUE(contains(r.out, "\ndevice: auto -> cuda:0 (")) << r.out;
  }
#else
  EXPECT_TRUE(contains(r.out, "\ndevice: auto -> cpu (this diffuse was built without the CUDA backend)")) << r.out;
#endif
  RunResult cpu = run("generate \"a red circle\" --steps 1 --seed 1 --device cpu -o '" + out + "'");
  ASSERT_EQ(cpu.code, 0) << cpu.out;
  EXPECT_TRUE(contains(cpu.out, "\ndevice: cpu\n")) << cpu.out;
}

TEST(CliDevice, AMissingGpuIsAClearError) {
  const size_t gpus = gpu_count();
  for (const char* cmd : {"generate \"a red circle\" --steps 1", "bench --steps 1 --no-batch", "serve --port 0"}) {
    RunResult beyond = run(std::string(cmd) + " --device cuda:99");
    EXPECT_EQ(beyond.code, 1) << cmd << ": " << beyond.out;
#if defined(DIFFUSE_HAVE_CUDA)
    EXPECT_TRUE(contains(beyond.out, gpus == 0 ? "error: --device cuda:99: no CUDA device ("
                                               : "error: --device cuda:99: no such device, there ")) << beyond.out;
#else
    EXPECT_TRUE(contains(beyond.out, "error: --device cuda:99: this diffuse was built without the CUDA backend"))
        << beyond.out;
#endif
    if (gpus == 0) {
      RunResult cuda = run(std::string(cmd) + " --device cuda");
      EXPECT_EQ(cuda.code, 1) << cmd << ": " << cuda.out;
      EXPECT_TRUE(contains(cuda.out, "error: --device cuda: ")) << cuda.out;
      EXPECT_FALSE(contains(cuda.out, "diffuse serve: http")) << "serve must not start: " << cuda.out;
    }
  }
}

TEST(CliDevice, GarbageIsAUsageError) {
  for (const char* cmd : {"generate \"a red circle\"", "bench", "serve --port 0", "demo-eval"}) {
    for (const char* bad : {"tpu", "cuda:", "cuda:x"}) {
      RunResult r = run(std::string(cmd) + " --device " + bad);
      EXPECT_EQ(r.code, 2) << cmd << " --device " << bad << ": " << r.out;
      EXPECT_TRUE(contains(r.out, "--device must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), got '" +
                                      std::string(bad) + "'"))
          << r.out;
    }
  }
}

TEST(CliDevice, HelpNamesTheChoices) {
  for (const char* cmd : {"generate", "serve", "bench"}) {
    RunResult r = run(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_TRUE(contains(r.out, "cuda:N (default: auto)")) << cmd << ": " << r.out;
  }
}

}  // namespace
}  // namespace diffuse
