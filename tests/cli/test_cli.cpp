// The `diffuse` binary as a user drives it: exit codes, help, devices, and the
// end-to-end fixture images through `diffuse generate`.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/png.h"
#include "pipeline/demo_model.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::RunResult;

RunResult run(const std::string& args) { return testing::run_command(std::string(DIFFUSE_BINARY) + " " + args); }

std::string quote(const std::string& s) { return testing::shell_quote(s); }

TEST(Cli, HelpAndUsageErrors) {
  RunResult help = run("--help");
  EXPECT_EQ(help.code, 0);
  for (const char* cmd : {"generate", "serve", "devices", "monitor", "pull", "models", "bench"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
  }
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("generate").code, 2);  // no prompt
  RunResult bad = run("generate --model /nonexistent --prompt x --width 100");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("multiple of 8"), std::string::npos) << bad.out;
  RunResult missing = run("generate --model /nonexistent/model.safetensors --prompt x");
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_NE(missing.out.find("/nonexistent/model.safetensors"), std::string::npos) << missing.out;
}

// The README's first command: no --model means the built-in demo model, and
// the image it writes shows what the prompt asks for (read back by the
// demo scorer: background and shape colour).
TEST(Cli, ReadmeFirstCommandUsesTheDemoModel) {
  const std::string out = testing::temp_dir() + "/first.png";
  RunResult r = run("generate \"a red circle on a blue background\" --seed 7 -o " + quote(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("built-in demo model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(out), std::string::npos) << "the path is printed: " << r.out;
  // The phases, in order (issue 29): loading, encoding, the denoising bar, decoding, saving.
  size_t at = 0;
  for (const char* phase : {"loading model ", "encoding prompt\n", "denoising: 100%", "decoding\n", "saving\n"}) {
    const size_t found = r.out.find(phase, at);
    EXPECT_NE(found, std::string::npos) << "'" << phase << "' after offset " << at << " in:\n" << r.out;
    if (found != std::string::npos) at = found;
  }
  std::ifstream f(out, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  PngImage im = read_png(bytes.data(), bytes.size());
  EXPECT_EQ(im.width, 128);
  EXPECT_EQ(im.height, 128);
  const std::optional<std::string> demo = demo_model_path();
  ASSERT_TRUE(demo);
  DemoEvalSet set = load_demo_eval_set(*demo + "/eval_captions.json");
  SceneReading got = read_scene(im.rgb.data(), im.width, im.height, set.palette);
  EXPECT_EQ(got.background, "blue");
  EXPECT_EQ(got.colour, "red");
  EXPECT_NE(read_png_text(out).at("parameters").find("Model: demo"), std::string::npos);
  RunResult models = run("models --json");
  ASSERT_EQ(models.code, 0) << models.out;
  nlohmann::json listed = nlohmann::json::parse(models.out);
  ASSERT_FALSE(listed.empty());
  EXPECT_EQ(listed[0]["name"], "demo");
  EXPECT_EQ(listed[0]["source"], "built-in");
  EXPECT_EQ(listed[0]["family"], "sd1");
}

TEST(Cli, Devices) {
  RunResult r = run("devices");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("Platform #0"), std::string::npos) << r.out;
  RunResult j = run("devices --json");
  EXPECT_EQ(j.code, 0);
  EXPECT_NO_THROW((void)nlohmann::json::parse(j.out));
}

// The fixture runs were made with initial latents = torch.randn on a CPU
// generator seeded 1050 (sd1), 1150 (sd2), 1250 (sdxl); so the CLI with that
// seed must reproduce the fixture image end to end.
class CliFixtureImage : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(CliFixtureImage, SeedReproducesDiffusersImage) {
  DIFFUSE_REQUIRE_FIXTURES();
  const auto [family, seed] = GetParam();
  const std::string dir = testing::fixtures_dir() + "/" + family;
  nlohmann::json cases = read_python_json_file(dir + "/cases.json");
  const nlohmann::json* run_ddim = nullptr;
  for (const auto& r : cases["pipeline_runs"]) {
    if (r["name"] == "ddim") run_ddim = &r;
  }
  ASSERT_NE(run_ddim, nullptr);
  const std::string out = testing::temp_dir() + "/img.png";
  std::string args = "generate --model " + quote(dir + "/model") + " --prompt " +
                     quote((*run_ddim)["prompt"].get<std::string>()) + " --negative-prompt " +
                     quote((*run_ddim)["negative_prompt"].get<std::string>()) +
                     " --steps 10 --cfg-scale " + std::to_string((*run_ddim)["guidance_scale"].get<double>()) +
                     " --sampler ddim --width 128 --height 128 --rng cpu --seed " + std::to_string(seed) +
                     " --output " + quote(out) + " --json";
  RunResult r = run(args);
  ASSERT_EQ(r.code, 0) << r.out;
  std::string bytes = testing::read_file(out);
  PngImage png = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ASSERT_EQ(png.width, 128);
  ASSERT_EQ(png.height, 128);
  TensorMap t = load_safetensors(dir + "/tensors.safetensors").tensors;
  std::vector<float> expected = t.at((*run_ddim)["image"].get<std::string>()).to_f32_vector();  // NHWC
  ASSERT_EQ(expected.size(), png.rgb.size());
  int worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    int want = static_cast<int>(std::nearbyint(expected[i] * 255.0f));
    worst = std::max(worst, std::abs(want - static_cast<int>(png.rgb[i])));
  }
  EXPECT_LE(worst, 1) << "max difference in 8-bit levels";
  // The PNG carries A1111 metadata with the seed and the model hash.
  auto text = read_png_text(out);
  ASSERT_TRUE(text.count("parameters"));
  EXPECT_NE(text["parameters"].find("Seed: " + std::to_string(seed)), std::string::npos);
  EXPECT_NE(text["parameters"].find("Model hash: "), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Families, CliFixtureImage,
                         ::testing::Values(std::make_pair(std::string("sd1"), 1050),
                                           std::make_pair(std::string("sd2"), 1150),
                                           std::make_pair(std::string("sdxl"), 1250)));

}  // namespace
}  // namespace diffuse
