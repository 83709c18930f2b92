// `diffuse generate --refiner`, as a user drives it: diffusers' SDXL base ->
// refiner hand-off at 0.8 (fixture set v2, sdxl/cases.json "refiner") and the
// refiner alone as img2img at 0.3, each within 1/255 of the golden PNG per
// pixel, with A1111's "Refiner" metadata; `diffuse models` naming the
// refiner; bad flags exiting 2 with their message.
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/png.h"
#include "pipeline/refiner_runs.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::RunResult;

RunResult run(const std::string& args) { return testing::run_command(std::string(DIFFUSE_BINARY) + " " + args); }
std::string quote(const std::string& s) { return testing::shell_quote(s); }

PngImage load(const std::string& path) {
  const std::string bytes = testing::read_file(path);
  return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Largest per-pixel difference of two PNGs of one size, in 1/255 (1000 when the sizes differ).
int worst_diff(const PngImage& a, const PngImage& b) {
  if (a.rgb.size() != b.rgb.size() || a.rgb.empty()) return 1000;
  int worst = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<int>(a.rgb[i]) - static_cast<int>(b.rgb[i])));
  return worst;
}

std::string common_flags(const nlohmann::json& c) {
  return " --device cpu --prompt " + quote(c["prompt"].get<std::string>()) + " --negative-prompt " +
         quote(c["negative_prompt"].get<std::string>()) + " --steps " +
         std::to_string(c["num_inference_steps"].get<int>()) + " --cfg-scale " +
         std::to_string(c["guidance_scale"].get<double>()) + " --sampler " + c["scheduler"].get<std::string>() +
         " --rng cpu";
}

TEST(CliRefiner, BaseThenRefinerReproducesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& r = testing::refiner_run("base_to_refiner");
  const nlohmann::json& base = r["base_call"];
  const std::string out = testing::temp_dir() + "/refined.png";
  const RunResult res =
      run("generate --model " + quote(testing::sdxl_base_dir()) + " --refiner " + quote(testing::refiner_dir()) +
          " --refiner-switch-at " + std::to_string(base["denoising_end"].get<double>()) + common_flags(base) +
          " --width 128 --height 128 --seed " + std::to_string(base["generator"]["seed"].get<int64_t>()) +
          " --output " + quote(out) + " --json");
  ASSERT_EQ(res.code, 0) << res.out;
  EXPECT_NE(res.out.find("refiner: sdxl_refiner"), std::string::npos) << res.out;  // the user is told
  const PngImage got = load(out);
  const PngImage want = load(testing::goldens_dir() + "/sdxl/" + r["refiner_call"]["image_png"].get<std::string>());
  const int worst = worst_diff(got, want);
  std::printf("  base -> refiner PNG vs diffusers': max %d/255\n", worst);
  EXPECT_LE(worst, 1);
  const auto text = read_png_text(out);
  ASSERT_TRUE(text.count("parameters"));
  EXPECT_NE(text.at("parameters").find("Refiner: sdxl_refiner ["), std::string::npos) << text.at("parameters");
  EXPECT_NE(text.at("parameters").find("Refiner switch at: 0.8"), std::string::npos) << text.at("parameters");
  EXPECT_NE(text.at("parameters").find("Model: model"), std::string::npos) << text.at("parameters");  // the base
  const nlohmann::json j = nlohmann::json::parse(res.out.substr(res.out.find("\n{") + 1));
  EXPECT_EQ(j["steps_run"].get<int>(), 10);
  EXPECT_EQ(j["refiner"]["name"], "sdxl_refiner");
  EXPECT_EQ(j["refiner"]["switch_at"].get<double>(), 0.8);
}

TEST(CliRefiner, RefinerAloneIsImg2Img) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& r = testing::refiner_run("refiner_img2img_s0.3");
  const testing::EditFamily& f = testing::edit_family("sdxl");
  const std::string out = testing::temp_dir() + "/img2img.png";
  const RunResult res = run("generate --model " + quote(testing::refiner_dir()) + common_flags(r) + " --seed " +
                            std::to_string(r["generator"]["seed"].get<int64_t>()) + " --strength " +
                            std::to_string(r["strength"].get<double>()) + " --init-image " +
                            quote(f.dir + "/" + f.cases["img2img"]["init_image"].get<std::string>()) +
                            " --aesthetic-score 6 --negative-aesthetic-score 2.5 --output " + quote(out));
  ASSERT_EQ(res.code, 0) << res.out;
  const int worst = worst_diff(load(out), load(f.dir + "/" + r["image_png"].get<std::string>()));
  std::printf("  refiner img2img PNG vs diffusers': max %d/255\n", worst);
  EXPECT_LE(worst, 1);
  // Other aesthetic scores condition it differently.
  const std::string other = testing::temp_dir() + "/other.png";
  const RunResult res2 = run("generate --model " + quote(testing::refiner_dir()) + common_flags(r) + " --seed " +
                             std::to_string(r["generator"]["seed"].get<int64_t>()) + " --strength " +
                             std::to_string(r["strength"].get<double>()) + " --init-image " +
                             quote(f.dir + "/" + f.cases["img2img"]["init_image"].get<std::string>()) +
                             " --aesthetic-score 9 --negative-aesthetic-score 1 --output " + quote(other));
  ASSERT_EQ(res2.code, 0) << res2.out;
  EXPECT_GT(worst_diff(load(out), load(other)), 0);
}

TEST(CliRefiner, ModelsListNamesTheRefiner) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = testing::temp_dir();
  std::filesystem::create_directory_symlink(testing::refiner_dir(), dir + "/my-refiner");
  const RunResult res = run("models --models " + quote(dir) + " --json");
  ASSERT_EQ(res.code, 0) << res.out;
  const nlohmann::json j = nlohmann::json::parse(res.out.substr(res.out.find('[')));
  bool found = false;
  for (const auto& m : j) {
    if (m["name"] != "my-refiner") continue;
    found = true;
    EXPECT_EQ(m["family"], "sdxl-refiner") << m.dump();
  }
  EXPECT_TRUE(found) << res.out;
}

TEST(CliRefiner, BadFlagsAreUsageErrors) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string model = " --device cpu --model " + quote(testing::sdxl_base_dir()) + " --prompt x --steps 2";
  RunResult res = run("generate" + model + " --refiner-switch-at 0.5");
  EXPECT_EQ(res.code, 2) << res.out;
  EXPECT_NE(res.out.find("--refiner-switch-at needs --refiner"), std::string::npos) << res.out;
  res = run("generate" + model + " --refiner " + quote(testing::refiner_dir()) + " --refiner-switch-at 1.5");
  EXPECT_EQ(res.code, 2) << res.out;
  res = run("generate" + model + " --refiner /nonexistent/refiner.safetensors");
  EXPECT_NE(res.code, 0);
  EXPECT_NE(res.out.find("/nonexistent/refiner.safetensors"), std::string::npos) << res.out;
  // The refiner alone starts from nothing: told to give an init image.
  res = run("generate --device cpu --model " + quote(testing::refiner_dir()) + " --prompt x --steps 2");
  EXPECT_EQ(res.code, 2) << res.out;
  EXPECT_NE(res.out.find("init image"), std::string::npos) << res.out;
  res = run("generate --help");
  EXPECT_EQ(res.code, 0);
  for (const char* flag : {"--refiner", "--refiner-switch-at", "--aesthetic-score", "--negative-aesthetic-score"})
    EXPECT_NE(res.out.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace diffuse
