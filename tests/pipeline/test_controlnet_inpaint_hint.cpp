// The inpaint hint of ControlNet units with a mask (ControlNetUnit::mask, the
// inpaint / inpaint_only preprocessors): masked pixels reach the ControlNet as
// -1 in every channel (control_v11p_sd15_inpaint's convention, diffusers'
// make_inpaint_condition). Checked through whole generations on the tiny sd1
// model: a mask with nothing above 127 changes nothing; fully masked control
// images give the same result whatever their pixels; a partial mask differs
// from both.
#include <gtest/gtest.h>

#include "pipeline/pipeline.h"
#include "test_controlnet_model.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

image::Rgb pattern(int w, int h, int shift) {
  image::Rgb im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.px[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>((((x + shift) / 8 + y / 8) % 2) * 200 + c * 20);
  return im;
}

image::Gray mask(int w, int h, uint8_t inside, uint8_t outside, int x0) {
  image::Gray m{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h, outside)};
  for (int y = 0; y < h; ++y)
    for (int x = x0; x < w; ++x) m.px[static_cast<size_t>(y * w + x)] = inside;
  return m;
}

TEST(ControlNetInpaintHint, MaskedPixelsAreMinusOne) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::unique_ptr<Pipeline> pipe = Pipeline::load(fixtures_dir() + "/sd1/model");
  GenerationParams p;
  p.prompt = "a red fox";
  p.width = 64;
  p.height = 64;
  p.steps = 3;
  p.sampler = "euler";
  p.seed = 11;
  ControlNetUnit u;
  u.path = make_controlnet_folder("sd1", 9);
  u.image = pattern(64, 64, 0);
  u.module = "inpaint_only";
  auto run = [&](const ControlNetUnit& unit) {
    GenerationParams q = p;
    q.controlnets = {unit};
    return pipe->generate(q).final_latents.to_f32_vector();
  };
  const std::vector<float> unmasked = run(u);
  ControlNetUnit low = u;
  low.mask = mask(64, 64, 127, 0, 0);  // nothing above 127: not masked
  EXPECT_EQ(run(low), unmasked);
  ControlNetUnit full_a = u, full_b = u;
  full_a.mask = mask(64, 64, 255, 255, 0);
  full_b.image = pattern(64, 64, 5);
  full_b.mask = mask(32, 32, 200, 200, 0);  // resized with the image to the output size
  const std::vector<float> all_masked = run(full_a);
  EXPECT_EQ(run(full_b), all_masked);  // every pixel -1: the image's content no longer matters
  EXPECT_NE(all_masked, unmasked);
  ControlNetUnit half = u;
  half.mask = mask(64, 64, 255, 0, 32);
  const std::vector<float> half_masked = run(half);
  EXPECT_NE(half_masked, unmasked);
  EXPECT_NE(half_masked, all_masked);
  // The infotext names the preprocessor.
  GenerationParams q = p;
  q.controlnets = {half};
  const GenerationResult r = pipe->generate(q);
  ASSERT_FALSE(r.images.empty());
  EXPECT_NE(r.images[0].parameters.find("ControlNet 0: \"Module: inpaint_only, Model: "), std::string::npos)
      << r.images[0].parameters;
}

}  // namespace
}  // namespace diffuse
