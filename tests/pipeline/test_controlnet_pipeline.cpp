// ControlNet units in Pipeline::generate: what a unit may and may not change
// (weight 0, a window that covers no step, two units against one with the sum
// of their weights), the family check, the infotext and bad units. The
// numbers against diffusers' pipelines are in test_controlnet_goldens.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "models/controlnet.h"
#include "pipeline/pipeline.h"
#include "test_controlnet_model.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using namespace testing;

std::string controlnet_folder(const std::string& fam, uint32_t seed) {
  static std::map<std::string, std::string> built;
  const std::string key = fam + "/" + std::to_string(seed);
  auto it = built.find(key);
  if (it != built.end()) return it->second;
  return built.emplace(key, make_controlnet_folder(fam, seed)).first->second;
}

Pipeline& model(const std::string& fam) {
  static std::map<std::string, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[fam];
  if (!p) p = Pipeline::load(fixtures_dir() + "/" + fam + "/model");
  return *p;
}

image::Rgb pattern(int w, int h) {
  image::Rgb im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.px[static_cast<size_t>((y * w + x) * 3 + c)] = static_cast<uint8_t>(((x / 8 + y / 8) % 2) * 200 + c * 20);
  return im;
}

GenerationParams base_params() {
  GenerationParams p;
  p.prompt = "a red fox";
  p.negative_prompt = "blurry";
  p.width = 128;
  p.height = 64;
  p.steps = 6;
  p.cfg_scale = 7.5f;
  p.sampler = "euler";
  p.seed = 33;
  return p;
}

ControlNetUnit unit(const std::string& fam, float weight, uint32_t seed = 1) {
  ControlNetUnit u;
  u.path = controlnet_folder(fam, seed);
  u.image = pattern(96, 48);  // resized to 128x64
  u.weight = weight;
  return u;
}

std::vector<float> latents(const GenerationResult& r) { return r.final_latents.to_f32_vector(); }

class ControlNetPipeline : public ::testing::TestWithParam<std::string> {};

TEST_P(ControlNetPipeline, UnitsActAsDiffusersDescribes) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  Pipeline& pipe = model(fam);
  GenerationParams p = base_params();
  p.output_latents = true;
  const std::vector<float> plain = latents(pipe.generate(p));

  // Weight 0, or a window no step falls in (6 steps: step i acts when i/6 >= 0.9 and (i+1)/6 <= 1, none does):
  // the same latents as without a ControlNet, to the bit.
  GenerationParams zero = p;
  zero.controlnets = {unit(fam, 0.0f)};
  EXPECT_EQ(latents(pipe.generate(zero)), plain);
  GenerationParams late = p;
  late.controlnets = {unit(fam, 1.0f)};
  late.controlnets[0].guidance_start = 0.9;
  EXPECT_EQ(latents(pipe.generate(late)), plain);

  // A unit acting changes the result.
  GenerationParams one = p;
  one.controlnets = {unit(fam, 1.0f)};
  const GenerationResult r1 = pipe.generate(one);
  const Diff moved = compare(latents(r1), plain);
  EXPECT_GT(moved.max_abs, 1e-3) << "the ControlNet changed nothing";
  EXPECT_EQ(r1.timings.unet_evals, 6);

  // Two units add up: weights 0.3 + 0.7 of one ControlNet and image = weight 1 (the residuals are linear in it).
  GenerationParams two = p;
  two.controlnets = {unit(fam, 0.3f), unit(fam, 0.7f)};
  const Diff sum = compare(latents(pipe.generate(two)), latents(r1));
  EXPECT_LE(sum.max_rel, 1e-4) << sum.str();

  // A window: half the schedule differs from both the full one and none.
  GenerationParams half = one;
  half.controlnets[0].guidance_end = 0.5;
  const std::vector<float> h = latents(pipe.generate(half));
  EXPECT_GT(compare(h, plain).max_abs, 1e-4);
  EXPECT_GT(compare(h, latents(r1)).max_abs, 1e-4);

  // The other modes run and differ from balanced.
  for (ControlMode mode : {ControlMode::kPrompt, ControlMode::kControlNet}) {
    GenerationParams m = one;
    m.controlnets[0].control_mode = mode;
    EXPECT_GT(compare(latents(pipe.generate(m)), latents(r1)).max_abs, 1e-5) << control_mode_name(mode);
  }
  GenerationParams guess = one;
  guess.controlnets[0].guess_mode = true;
  EXPECT_GT(compare(latents(pipe.generate(guess)), latents(r1)).max_abs, 1e-5) << "guess mode";
}

INSTANTIATE_TEST_SUITE_P(Families, ControlNetPipeline, ::testing::Values("sd1", "sdxl"));

TEST(ControlNetPipeline, InfotextNamesTheUnits) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.steps = 2;
  p.controlnets = {unit("sd1", 0.8f)};
  p.controlnets[0].guidance_end = 0.75;
  p.controlnets[0].control_mode = ControlMode::kPrompt;
  const GenerationResult r = model("sd1").generate(p);
  ASSERT_EQ(r.images.size(), 1u);
  const std::string& text = r.images[0].parameters;
  EXPECT_NE(text.find("ControlNet 0: \"Module: none, Model: controlnet_sd1 ["), std::string::npos) << text;
  EXPECT_NE(text.find("Weight: 0.8, Resize Mode: Just Resize, Low Vram: False, Guidance Start: 0, "
                      "Guidance End: 0.75, Pixel Perfect: False, Control Mode: My prompt is more important\""),
            std::string::npos)
      << text;
}

TEST(ControlNetPipeline, BadUnits) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.steps = 2;
  auto message = [&](const GenerationParams& q, const std::string& fam = "sd1") {
    const Error e = error_of([&] { model(fam).generate(q); });
    return std::to_string(static_cast<int>(e.code())) + ":" + e.what();
  };
  const std::string bad_arg = std::to_string(static_cast<int>(ErrorCode::kInvalidArgument)) + ":";
  // A ControlNet of another family: the message names both.
  GenerationParams wrong = p;
  wrong.controlnets = {unit("sdxl", 1.0f)};
  const std::string w = message(wrong, "sd1");
  EXPECT_EQ(w.rfind(bad_arg, 0), 0u) << w;
  EXPECT_NE(w.find("cross-attention width 48"), std::string::npos) << w;
  EXPECT_NE(w.find("the model 'model' is sd1"), std::string::npos) << w;

  GenerationParams heavy = p;
  heavy.controlnets = {unit("sd1", 2.5f)};
  EXPECT_NE(message(heavy).find("ControlNet unit 0: weight must be between 0 and 2, got 2.5"), std::string::npos);
  GenerationParams window = p;
  window.controlnets = {unit("sd1", 1.0f)};
  window.controlnets[0].guidance_start = 0.6;
  window.controlnets[0].guidance_end = 0.4;
  EXPECT_NE(message(window).find("guidance_start (0.6) must be below guidance_end (0.4)"), std::string::npos);
  GenerationParams no_image = p;
  no_image.controlnets = {unit("sd1", 1.0f)};
  no_image.controlnets[0].image = image::Rgb{};
  EXPECT_NE(message(no_image).find("ControlNet unit 0: no control image given"), std::string::npos);
  GenerationParams missing = p;
  missing.controlnets = {unit("sd1", 1.0f)};
  missing.controlnets[0].path = "/nonexistent/controlnet.safetensors";
  const std::string m = message(missing);
  EXPECT_EQ(m.rfind(std::to_string(static_cast<int>(ErrorCode::kNotFound)) + ":", 0), 0u) << m;
  // The pipeline still works afterwards.
  EXPECT_EQ(model("sd1").generate(p).images.size(), 1u);
}

}  // namespace
}  // namespace diffuse
