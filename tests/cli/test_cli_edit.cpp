// `diffuse generate` editing an image, as a user drives it: the v2 inpaint and
// img2img goldens reproduced end to end through the flags (seed, sampler,
// strength, mask, --no-overlay), and bad input (exit 2 for a bad value, 1 for
// an unreadable file, each with its message).
#include <array>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/png.h"
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

struct CliEditCase {
  std::string family, section, png;  // the golden PNG the repository carries
};

class CliEdit : public ::testing::TestWithParam<CliEditCase> {};

TEST_P(CliEdit, ReproducesTheDiffusersImage) {
  DIFFUSE_REQUIRE_FIXTURES();
  const CliEditCase& c = GetParam();
  const std::string v2 = testing::fixtures_dir() + "/v2";
  const nlohmann::json cases = nlohmann::json::parse(testing::read_file(v2 + "/" + c.family + "/cases.json"));
  const nlohmann::json& section = cases[c.section];
  const nlohmann::json* run_ptr = nullptr;
  for (const auto& r : section["runs"])
    if (r["image_png"] == "png/" + c.png) run_ptr = &r;
  ASSERT_NE(run_ptr, nullptr) << c.png;
  const nlohmann::json& r = *run_ptr;
  const std::string out = testing::temp_dir() + "/edit.png";
  std::string args = "generate --device cpu --model " + quote(testing::fixtures_dir() + "/" + c.family + "/model") +
                     " --prompt " + quote(r["prompt"].get<std::string>()) + " --negative-prompt " +
                     quote(r["negative_prompt"].get<std::string>()) + " --steps " +
                     std::to_string(r["num_inference_steps"].get<int>()) + " --cfg-scale " +
                     std::to_string(r["guidance_scale"].get<double>()) + " --sampler " +
                     r["scheduler"].get<std::string>() + " --seed " + std::to_string(r["generator"]["seed"].get<int64_t>()) +
                     " --rng cpu --strength " + std::to_string(r["strength"].get<double>()) + " --init-image " +
                     quote(v2 + "/" + c.family + "/" + section["init_image"].get<std::string>()) + " --output " +
                     quote(out) + " --json";
  if (section.contains("mask_image")) {
    args += " --mask " + quote(v2 + "/" + c.family + "/" + section["mask_image"].get<std::string>()) +
            " --no-overlay --mask-blur 0";
  }
  const RunResult res = run(args);
  ASSERT_EQ(res.code, 0) << res.out;
  const PngImage got = load(out), want = load(v2 + "/" + c.family + "/png/" + c.png);
  ASSERT_EQ(got.rgb.size(), want.rgb.size());
  int worst = 0;
  double sum = 0;
  for (size_t i = 0; i < got.rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(got.rgb[i]) - static_cast<int>(want.rgb[i]));
    worst = std::max(worst, d);
    sum += d;
  }
  EXPECT_LE(worst, 8);
  EXPECT_LE(sum / got.rgb.size(), 1.0);
  const auto text = read_png_text(out);
  ASSERT_TRUE(text.count("parameters"));
  EXPECT_NE(text.at("parameters").find("Denoising strength: "), std::string::npos);
  const nlohmann::json j = nlohmann::json::parse(res.out.substr(res.out.find('{')));
  EXPECT_EQ(j["steps_run"].get<int>(), r["n_unet_evals"].get<int>());
}

INSTANTIATE_TEST_SUITE_P(Families, CliEdit,
                         ::testing::Values(CliEditCase{"sd1", "img2img", "img2img__euler_s0.75.png"},
                                           CliEditCase{"sd1", "inpaint", "inpaint__euler_s0.8.png"},
                                           CliEditCase{"sdxl", "inpaint", "inpaint__euler_s0.8.png"}),
                         [](const ::testing::TestParamInfo<CliEditCase>& i) {
                           return i.param.family + "_" + i.param.section;
                         });

TEST(CliEdit, BadInputIsAClearError) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string model = quote(testing::fixtures_dir() + "/sd1/model");
  const std::string init = quote(testing::fixtures_dir() + "/v2/inputs/init_128.png");
  RunResult r = run("generate --model " + model + " --prompt x --init-image " + init + " --strength 1.5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("strength"), std::string::npos) << r.out;
  r = run("generate --model " + model + " --prompt x --init-image /nonexistent/in.png");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/in.png"), std::string::npos) << r.out;
  const std::string not_png = testing::temp_dir() + "/not.png";
  std::ofstream(not_png) << "this is not a PNG";
  r = run("generate --model " + model + " --prompt x --init-image " + init + " --mask " + quote(not_png));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--mask"), std::string::npos) << r.out;
  r = run("generate --model " + model + " --prompt x --mask " + init);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("need --init-image"), std::string::npos) << r.out;
  r = run("generate --model " + model + " --prompt x --init-image " + init + " --outpaint left=abc");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run("generate --model " + model + " --prompt x --init-image " + init + " --masked-content blurry");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("masked content"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace diffuse
