// The hires fix (pipeline/hires.cpp, docs/hires-fix.md) on the tiny fixture
// models: generate() with hires equals, bit for bit, the composition a user
// could write by hand (text-to-image with latents out -> the upscale ->
// img2img, one generator), for a latent mode and a pixel upscaler, SD1 and
// SDXL; A1111's target-size rules; the infotext; progress over both passes;
// bad fields as clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "adapters/upscalers.h"

#include "image/image_ops.h"
#include "image/latent_resize.h"
#include "io/infotext.h"
#include "pipeline/hires.h"
#include "pipeline/pipeline.h"
#include "sampling/rng.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& model(const std::string& family) {
  static std::map<std::string, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[family];
  if (!p) p = Pipeline::load(fixtures_dir() + "/" + family + "/model");
  return *p;
}

GenerationParams base_params(const std::string& sampler) {
  GenerationParams p;
  p.prompt = "a lighthouse on a cliff at dusk";
  p.negative_prompt = "blurry";
  p.width = 64;
  p.height = 64;
  p.steps = 4;
  p.cfg_scale = 6.0f;
  p.sampler = sampler;
  p.seed = 4242;
  return p;
}

struct Case {
  std::string family, sampler, upscaler;
};

class HiresComposition : public ::testing::TestWithParam<Case> {};

TEST_P(HiresComposition, EqualsTheHandComposition) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Case c = GetParam();
  Pipeline& pipe = model(c.family);
  const GenerationParams base = base_params(c.sampler);
  const double strength = 0.5;

  GenerationParams hp = base;
  hp.hires.enabled = true;
  hp.hires.scale = 2.0;
  hp.hires.upscaler = c.upscaler;
  hp.hires.second_pass_steps = 6;
  hp.hires.denoising_strength = strength;
  const GenerationResult got = pipe.generate(hp);

  // By hand: one generator for both passes.
  std::shared_ptr<Generator> gen = make_generator(RngKind::kCpu, 4242);
  GenerationParams p1 = base;
  p1.generator = gen;
  GenerationParams p2 = base;
  p2.width = p2.height = 0;
  p2.steps = 6;
  p2.edit.strength = strength;
  p2.generator = gen;
  const image::LatentMode* mode = image::find_latent_mode(c.upscaler);
  if (mode) {
    p1.output_latents = true;
    const GenerationResult r1 = pipe.generate(p1);
    p2.init_latents = image::resize_latents(r1.final_latents, 16, 16, mode->interp, mode->antialias);
  } else {
    ASSERT_EQ(c.upscaler, "Lanczos");
    const GenerationResult r1 = pipe.generate(p1);
    p2.edit.init_image = image::resize(image::Rgb{64, 64, r1.images[0].rgb}, 128, 128);
  }
  const GenerationResult want = pipe.generate(p2);

  ASSERT_EQ(got.images.size(), 1u);
  EXPECT_EQ(got.images[0].width, 128);
  EXPECT_EQ(got.images[0].height, 128);
  EXPECT_EQ(got.final_latents.shape(), want.final_latents.shape());
  EXPECT_EQ(got.final_latents.to_f32_vector(), want.final_latents.to_f32_vector());
  EXPECT_EQ(got.images[0].rgb, want.images[0].rgb);
  EXPECT_EQ(got.steps_run, 4 + 3);  // 4 steps, then int(6 x 0.5)

  // A1111's infotext: the first pass's size, steps and sampler, then the hires fields.
  const std::string& text = got.images[0].parameters;
  const InfotextFields f = parse_infotext(text);
  EXPECT_EQ(f.width, 64);
  EXPECT_EQ(f.steps, 4);
  EXPECT_EQ(f.prompt, base.prompt);
  ASSERT_TRUE(f.denoising_strength.has_value());
  EXPECT_EQ(*f.denoising_strength, 0.5);
  EXPECT_NE(text.find("Hires upscale: 2, Hires steps: 6, Hires upscaler: " + c.upscaler), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Families, HiresComposition,
                         ::testing::Values(Case{"sd1", "euler", "Latent"}, Case{"sd1", "euler_a", "Lanczos"},
                                           Case{"sdxl", "ddim", "Latent (bicubic antialiased)"},
                                           Case{"sdxl", "euler", "Lanczos"}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           std::string n = i.param.family + "_" + i.param.sampler + "_" + i.param.upscaler;
                           for (char& ch : n) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// An ESRGAN model of an upscaler library (the tiny RRDBNet of tests/models/data) as the pixel upscaler.
TEST(Hires, EsrganModelEqualsTheHandComposition) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = temp_dir();
  std::filesystem::copy_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet/x4_new.safetensors",
                             dir + "/4x-Tiny.safetensors");
  auto lib = std::make_shared<UpscalerLibrary>(std::vector<std::string>{dir});
  Pipeline& pipe = model("sd1");
  const GenerationParams base = base_params("euler");
  GenerationParams hp = base;
  hp.hires.enabled = true;
  hp.hires.upscaler = "4x-tiny";  // names match case-insensitively, as A1111's
  hp.hires.denoising_strength = 0.5;
  hp.hires.models = hires_models_from(lib);
  const GenerationResult got = pipe.generate(hp);

  std::shared_ptr<Generator> gen = make_generator(RngKind::kCpu, 4242);
  GenerationParams p1 = base;
  p1.generator = gen;
  const GenerationResult r1 = pipe.generate(p1);
  GenerationParams p2 = base;
  p2.width = p2.height = 0;
  p2.edit.strength = 0.5;
  p2.generator = gen;
  p2.edit.init_image = lib->upscale("4x-Tiny", image::Rgb{64, 64, r1.images[0].rgb}, 128, 128, Device::kCPU);
  const GenerationResult want = pipe.generate(p2);
  ASSERT_EQ(got.images.size(), 1u);
  EXPECT_EQ(got.images[0].width, 128);
  EXPECT_EQ(got.images[0].rgb, want.images[0].rgb);
  EXPECT_NE(got.images[0].parameters.find("Hires upscaler: 4x-Tiny"), std::string::npos) << got.images[0].parameters;
  // Without the library the name is unknown, and the message lists what there is.
  hp.hires.models = {};
  const Error e = error_of([&] { pipe.generate(hp); });
  EXPECT_NE(std::string(e.what()).find("unknown hires upscaler '4x-tiny'"), std::string::npos) << e.what();
}

TEST(Hires, TargetSizesFollowA1111) {
  HiresParams h;
  h.scale = 1.5;
  HiresPlan p = plan_hires(h, 512, 512);
  EXPECT_EQ(p.width, 768);
  EXPECT_EQ(p.height, 768);
  EXPECT_EQ(p.upscaler, "Latent");
  // int(520 * 1.3) = 676 -> 672 (whole latent cells, as A1111's target // 8).
  h.scale = 1.3;
  p = plan_hires(h, 520, 512);
  EXPECT_EQ(p.width, 672);
  EXPECT_EQ(p.height, 664);
  // One resize side: the other keeps the aspect ratio (floor division).
  h.resize_x = 1000;
  p = plan_hires(h, 512, 768);
  EXPECT_EQ(p.upscale_width, 1000);
  EXPECT_EQ(p.upscale_height, 1496);  // 1000 * 768 // 512 = 1500 -> 1496
  EXPECT_EQ(p.width, 1000);
  // Both: cover, then a centred crop of whole latent cells.
  h.resize_x = 1024;
  h.resize_y = 1024;
  p = plan_hires(h, 512, 768);
  EXPECT_EQ(p.upscale_width, 1024);
  EXPECT_EQ(p.upscale_height, 1536);
  EXPECT_EQ(p.width, 1024);
  EXPECT_EQ(p.height, 1024);
  EXPECT_EQ(p.crop_top, 256);
  EXPECT_EQ(p.crop_left, 0);
  // An odd number of cells to cut: the extra one comes off the bottom (A1111's slice).
  h.resize_x = 1024;
  h.resize_y = 1000;
  p = plan_hires(h, 512, 768);
  EXPECT_EQ(p.upscale_height, 1536);
  EXPECT_EQ(p.height, 1536 - 67 * 8);  // truncate_y = (1536 - 1000) // 8 = 67
  EXPECT_EQ(p.crop_top, 33 * 8);
}

TEST(Hires, CroppedLatentUpscaleIsA1111Slice) {
  HiresParams h;
  h.resize_x = 128;
  h.resize_y = 64;
  h.upscaler = "Latent (nearest-exact)";
  const HiresPlan p = plan_hires(h, 64, 64);  // to 128x128, 8 cells cut: 4 top, 4 bottom
  ASSERT_EQ(p.height, 64);
  const Tensor x = Tensor::from_vector(noise(2 * 8 * 8, 7, 1.0f), {1, 2, 8, 8});
  const Tensor full = image::resize_latents(x, 16, 16, image::LatentInterp::kNearestExact, false);
  const Tensor got = hires_upscale_latents(x, p);
  ASSERT_EQ(got.shape(), (Shape{1, 2, 8, 16}));
  EXPECT_EQ(got.to_f32_vector(), full.slice(2, 4, 12).contiguous().to_f32_vector());
}

TEST(Hires, NearestIsPilsRule) {
  HiresParams h;
  h.upscaler = "nearest";
  h.scale = 1.5;
  const HiresPlan p = plan_hires(h, 64, 64);
  EXPECT_EQ(p.upscaler, "Nearest");
  image::Rgb in{64, 64, {}};
  in.px.resize(64 * 64 * 3);
  for (size_t i = 0; i < in.px.size(); ++i) in.px[i] = static_cast<uint8_t>(i * 37 % 251);
  const image::Rgb out = hires_upscale_image(in, p, h, Device::kCPU);
  ASSERT_EQ(out.width, 96);
  for (int y : {0, 1, 2, 50, 95}) {
    for (int x : {0, 1, 2, 61, 95}) {
      const int sx = (2 * x + 1) * 64 / (2 * 96), sy = (2 * y + 1) * 64 / (2 * 96);  // floor((x + 0.5) * 64 / 96)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(out.px[(y * 96 + x) * 3 + c], in.px[(sy * 64 + sx) * 3 + c]);
    }
  }
}

TEST(Hires, ProgressCoversBothPasses) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params("euler");
  p.hires.enabled = true;
  p.hires.second_pass_steps = 6;
  p.hires.denoising_strength = 0.5;
  std::vector<std::pair<int, int>> seen;
  const GenerationResult r = model("sd1").generate(p, [&](const StepProgress& sp) {
    seen.emplace_back(sp.step, sp.total_steps);
    return false;
  });
  ASSERT_EQ(seen.size(), 7u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].first, static_cast<int>(i) + 1);
    EXPECT_EQ(seen[i].second, 7);
  }
  EXPECT_EQ(r.seed, 4242);
}

TEST(Hires, BatchAndPromptsOfTheSecondPass) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params("euler");
  p.images = 2;
  p.hires.enabled = true;
  p.hires.upscaler = "Nearest";
  p.hires.denoising_strength = 0.5;
  p.hires.prompt = "a lighthouse, sharp details";
  p.hires.sampler = "ddim";
  const GenerationResult r = model("sd1").generate(p);
  ASSERT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.final_latents.shape(), (Shape{2, 4, 16, 16}));
  EXPECT_NE(r.images[0].rgb, r.images[1].rgb);
  const InfotextFields f = parse_infotext(r.images[1].parameters);
  EXPECT_EQ(f.prompt, p.prompt);
  EXPECT_EQ(f.sampler, "Euler");
  const std::string& text = r.images[1].parameters;
  EXPECT_NE(text.find("Batch pos: 1"), std::string::npos) << text;
  EXPECT_NE(text.find("Hires sampler: DDIM"), std::string::npos) << text;
  EXPECT_NE(text.find("Hires prompt: \"a lighthouse, sharp details\""), std::string::npos) << text;
}

TEST(Hires, BadFieldsAreClearErrors) {
  DIFFUSE_REQUIRE_FIXTURES();
  Pipeline& pipe = model("sd1");
  auto fails = [&](const std::function<void(GenerationParams&)>& edit, const std::string& needle) {
    GenerationParams p = base_params("euler");
    p.hires.enabled = true;
    edit(p);
    const Error e = error_of([&] { pipe.generate(p); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  };
  fails([](GenerationParams& p) { p.hires.scale = 1.0; }, "hires scale must be above 1");
  fails([](GenerationParams& p) { p.hires.scale = -2; }, "hires scale must be above 1");
  fails([](GenerationParams& p) { p.hires.upscaler = "SuperScaler9000"; }, "unknown hires upscaler 'SuperScaler9000' (available: None, Lanczos, Nearest, Latent,");
  fails([](GenerationParams& p) { p.hires.scale = 80; }, "larger than 4096 pixels a side");
  fails([](GenerationParams& p) { p.hires.resize_x = 8192; }, "hires resize must be between 0 and 4096");
  fails([](GenerationParams& p) { p.hires.resize_x = 64; p.hires.resize_y = 64; }, "nothing to upscale");
  fails([](GenerationParams& p) { p.hires.denoising_strength = 0; }, "hires denoising strength");
  fails([](GenerationParams& p) { p.hires.sampler = "warp"; }, "unknown hires sampler 'warp'");
  fails([](GenerationParams& p) { p.hires.second_pass_steps = -1; }, "hires steps");
  fails([](GenerationParams& p) { p.edit.init_image = image::Rgb{64, 64, std::vector<uint8_t>(64 * 64 * 3, 9)}; },
        "the hires fix is for text-to-image");
}

}  // namespace
}  // namespace diffuse
