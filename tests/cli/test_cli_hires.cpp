// `diffuse generate --hires`: 2x and WxH targets with the A1111 infotext of a
// hires image, the --hires-* flags, --help text; bad values are usage errors
// (exit 2) before any model loads.
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::RunResult;

class CliHires : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::temp_dir(); }
  // The built-in demo model at 128x128.
  RunResult generate(const std::string& args, const std::string& out) {
    return testing::run_command(std::string(DIFFUSE_BINARY) + " generate --device cpu --steps 4 -W 128 -H 128 " +
                                "--seed 5 --sampler euler --json 'a red circle on a blue background' --output " +
                                testing::shell_quote(dir_ + "/" + out) + " " + args);
  }
  static nlohmann::json json_of(const RunResult& r) { return nlohmann::json::parse(r.out.substr(r.out.find("{\n"))); }
  std::string dir_;
};

TEST_F(CliHires, ScaleAndSizeTargets) {
  RunResult r = generate("--hires 2x --hires-steps 4 --hires-denoise 0.5 --hires-upscaler 'Latent (bicubic)'", "a.png");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = json_of(r);
  EXPECT_EQ(j["images"][0]["width"], 256);
  EXPECT_EQ(j["steps_run"], 4 + 2);
  const std::string text = j["images"][0]["parameters"];
  EXPECT_NE(text.find("Steps: 4, Sampler: Euler"), std::string::npos) << text;
  EXPECT_NE(text.find("Size: 128x128"), std::string::npos) << text;
  EXPECT_NE(text.find("Denoising strength: 0.5"), std::string::npos) << text;
  EXPECT_NE(text.find("Hires upscale: 2, Hires steps: 4, Hires upscaler: Latent (bicubic)"), std::string::npos) << text;
  const std::string bytes = testing::read_file(dir_ + "/a.png");
  EXPECT_EQ(read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).width, 256);

  r = generate("--hires 192x0 --hires-upscaler Nearest --hires-sampler ddim --hires-prompt 'sharp details'", "b.png");
  ASSERT_EQ(r.code, 0) << r.out;
  j = json_of(r);
  EXPECT_EQ(j["images"][0]["width"], 192);
  EXPECT_EQ(j["images"][0]["height"], 192);
  const std::string t2 = j["images"][0]["parameters"];
  EXPECT_NE(t2.find("Hires resize: 192x0, Hires upscaler: Nearest, Hires sampler: DDIM, Hires prompt: sharp details"),
            std::string::npos)
      << t2;
}

TEST_F(CliHires, BadValuesAreUsageErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--hires sideways", "--hires expects a scale (2x, 1.5x) or a size (1024x768), got 'sideways'"},
      {"--hires 1x", "hires scale must be above 1"},
      {"--hires 2x --hires-upscaler Bogus", "unknown hires upscaler 'Bogus'"},
      {"--hires 64x", "larger than 4096 pixels a side"},
      {"--hires-steps 3", "need --hires"},
      {"--hires 2x --init-image " + dir_ + "/init.png", "--hires is for text-to-image"},
  };
  const std::vector<uint8_t> grey(64 * 64 * 3, 128);
  write_png(dir_ + "/init.png", 64, 64, grey.data());
  for (const auto& [args, needle] : cases) {
    RunResult r = generate(args, "bad.png");
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": " << r.out;
  }
}

TEST_F(CliHires, HelpNamesTheFlags) {
  RunResult r = testing::run_command(std::string(DIFFUSE_BINARY) + " generate --help");
  ASSERT_EQ(r.code, 0);
  for (const char* flag : {"--hires ", "--hires-steps", "--hires-denoise", "--hires-upscaler", "--hires-prompt",
                           "--hires-negative-prompt", "--hires-sampler", "Latent (nearest-exact)"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  r = testing::run_command(std::string(DIFFUSE_BINARY) + " bench --help");
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--hires-denoise"), std::string::npos);
}

}  // namespace
}  // namespace diffuse
