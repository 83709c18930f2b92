// What editing promises beyond the diffusers goldens (test_edit_goldens.cpp):
// the overlay keeps unmasked pixels exactly, strength 0 and empty masks return
// the input, sizes and masks are fitted with a warning, "only masked" and
// outpainting put the result back in place, every sampler runs from a begin
// index, A1111 per-image seeds, masked content, metadata and bad input.
// On the tiny SD 1.x fixture model (128x128).
#include <gtest/gtest.h>

#include <algorithm>

#include "edit_runs.h"
#include "sampling/sampler_catalog.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& sd1() {
  static std::unique_ptr<Pipeline> p = Pipeline::load(fixtures_dir() + "/sd1/model");
  return *p;
}

image::Rgb init_image() { return load_rgb(fixtures_dir() + "/v2/inputs/init_128.png"); }
image::Gray init_mask() { return load_mask(fixtures_dir() + "/v2/inputs/mask_128.png"); }

GenerationParams base_params() {
  GenerationParams p;
  p.prompt = "a red fox sitting in a snowy forest, detailed oil painting";
  p.negative_prompt = "blurry, low quality";
  p.steps = 6;
  p.sampler = "euler";
  p.seed = 7;
  p.edit.init_image = init_image();
  p.edit.strength = 0.75;
  return p;
}

bool has_warning(const GenerationResult& r, const std::string& part) {
  return std::any_of(r.warnings.begin(), r.warnings.end(),
                     [&](const std::string& w) { return w.find(part) != std::string::npos; });
}

size_t differing_pixels(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i + 2 < std::min(a.size(), b.size()); i += 3) n += a[i] != b[i] || a[i + 1] != b[i + 1] || a[i + 2] != b[i + 2];
  return n;
}

TEST(EditBehaviour, OverlayKeepsEveryUnmaskedPixelExactly) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.mask = init_mask();
  p.edit.mask_blur = 0;
  const GenerationResult r = sd1().generate(p);
  const image::Rgb& in = p.edit.init_image;
  ASSERT_EQ(r.images[0].rgb.size(), in.px.size());
  size_t kept = 0, changed_inside = 0;
  for (size_t i = 0; i < p.edit.mask.px.size(); ++i) {
    const bool same = std::equal(in.px.begin() + 3 * i, in.px.begin() + 3 * i + 3, r.images[0].rgb.begin() + 3 * i);
    if (p.edit.mask.px[i] < 128) {
      EXPECT_TRUE(same) << "unmasked pixel " << i << " changed";
      ++kept;
    } else {
      changed_inside += !same;
    }
  }
  EXPECT_GT(kept, 1000u);
  EXPECT_GT(changed_inside, 100u);  // the masked area was repainted

  // Without the overlay: diffusers' raw output, which changes pixels outside too.
  p.edit.overlay = false;
  const GenerationResult raw = sd1().generate(p);
  EXPECT_GT(differing_pixels(raw.images[0].rgb, in.px), differing_pixels(r.images[0].rgb, in.px));
}

TEST(EditBehaviour, MaskBlurFeathersOnlyNearTheMask) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.mask = init_mask();
  p.edit.mask_blur = 4;
  const GenerationResult r = sd1().generate(p);
  // Pixels more than 3 sigma (12 px) from any masked pixel are the original's.
  const image::Gray grown = image::blur(p.edit.mask, 12);
  const image::Rgb& in = p.edit.init_image;
  size_t far = 0;
  for (size_t i = 0; i < grown.px.size(); ++i) {
    if (grown.px[i] != 0) continue;
    ++far;
    EXPECT_TRUE(std::equal(in.px.begin() + 3 * i, in.px.begin() + 3 * i + 3, r.images[0].rgb.begin() + 3 * i));
  }
  EXPECT_GT(far, 100u);
}

TEST(EditBehaviour, StrengthZeroAndEmptyMasksReturnTheInput) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.strength = 0.0;
  GenerationResult r = sd1().generate(p);
  EXPECT_EQ(r.images[0].rgb, p.edit.init_image.px);
  EXPECT_EQ(r.timings.unet_evals, 0);
  EXPECT_TRUE(has_warning(r, "strength 0"));

  p = base_params();
  p.edit.mask = init_mask();
  std::fill(p.edit.mask.px.begin(), p.edit.mask.px.end(), 0);
  r = sd1().generate(p);
  EXPECT_EQ(r.images[0].rgb, p.edit.init_image.px);
  EXPECT_TRUE(has_warning(r, "all black"));
}

TEST(EditBehaviour, SizesAndMasksAreFittedWithAWarning) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.init_image = image::resize(init_image(), 130, 100);  // not multiples of 8
  p.edit.mask = image::resize(init_mask(), 64, 64);           // another size
  p.edit.overlay = false;
  const GenerationResult r = sd1().generate(p);
  EXPECT_EQ(r.images[0].width, 128);
  EXPECT_EQ(r.images[0].height, 96);
  EXPECT_TRUE(has_warning(r, "not a multiple of 8")) << (r.warnings.empty() ? "" : r.warnings[0]);
  EXPECT_TRUE(has_warning(r, "mask (64x64) was resized"));

  // An explicit size resizes the image with the resize mode.
  for (image::ResizeMode mode :
       {image::ResizeMode::kJustResize, image::ResizeMode::kCropAndResize, image::ResizeMode::kResizeAndFill}) {
    GenerationParams q = base_params();
    q.width = 96;
    q.height = 64;
    q.edit.resize_mode = mode;
    const GenerationResult rq = sd1().generate(q);
    EXPECT_EQ(rq.images[0].width, 96);
    EXPECT_EQ(rq.images[0].height, 64);
    EXPECT_TRUE(has_warning(rq, std::string("(") + image::resize_mode_name(mode) + ")"));
  }
}

TEST(EditBehaviour, StrengthPicksTheLastStepsAsDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.steps = 10;
  p.edit.strength = 0.7;  // 10 x 0.7 = 7.000000000000001 in double: 7 steps (float would give 6)
  GenerationResult r = sd1().generate(p);
  EXPECT_EQ(r.steps_run, 7);
  EXPECT_EQ(r.timings.unet_evals, 7);
  p.sampler = "heun";  // two evaluations per step: 7 steps, 13 evaluations from index 6 of 19
  r = sd1().generate(p);
  EXPECT_EQ(r.steps_run, 7);
  EXPECT_EQ(r.timings.unet_evals, 13);
  p.sampler = "euler";
  p.edit.strength = 0.05;  // int(10 x 0.05) = 0: nothing would run
  try {
    sd1().generate(p);
    ADD_FAILURE() << "strength 0.05 with 10 steps was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("runs no step"), std::string::npos) << e.what();
  }
}

TEST(EditBehaviour, EverySamplerRunsFromABeginIndex) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const SamplerSpec& s : sampler_catalog()) {
    SCOPED_TRACE(s.name);
    GenerationParams p = base_params();
    p.sampler = s.name;
    p.steps = 8;
    p.edit.strength = 0.5;
    p.edit.mask = init_mask();
    const GenerationResult r = sd1().generate(p);
    EXPECT_EQ(r.steps_run, 4);
    for (float v : r.final_latents.to_f32_vector()) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(EditBehaviour, PerImageSeedsAsA1111) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.mask = init_mask();
  p.images = 2;
  p.seed_per_image = true;
  const GenerationResult batch = sd1().generate(p);
  ASSERT_EQ(batch.images.size(), 2u);
  p.images = 1;
  p.seed = 8;  // image 1 of the batch is seed 7 + 1 alone
  const GenerationResult alone = sd1().generate(p);
  EXPECT_EQ(batch.images[1].seed, 8);
  const PixelDiff d = pixel_diff(batch.images[1].rgb, alone.images[0].rgb);
  EXPECT_LE(d.max, 1.0) << "batched image 1 vs seed 8 alone: max " << d.max;
}

TEST(EditBehaviour, OnlyMaskedWorksOnTheRegionAndPastesItBack) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  image::Gray mask = init_mask();
  std::fill(mask.px.begin(), mask.px.end(), 0);
  for (int y = 40; y < 60; ++y)
    for (int x = 30; x < 50; ++x) mask.px[static_cast<size_t>(y) * 128 + x] = 255;
  p.edit.mask = mask;
  p.edit.mask_blur = 0;
  p.edit.only_masked = true;
  p.edit.only_masked_padding = 8;
  p.width = p.height = 64;
  const GenerationResult r = sd1().generate(p);
  EXPECT_EQ(r.images[0].width, 128);  // the picture's size, not the work size
  EXPECT_EQ(r.images[0].height, 128);
  const image::Rgb& in = p.edit.init_image;
  size_t inside_changed = 0;
  for (int y = 0; y < 128; ++y) {
    for (int x = 0; x < 128; ++x) {
      const size_t i = static_cast<size_t>(y) * 128 + x;
      const bool same = std::equal(in.px.begin() + 3 * i, in.px.begin() + 3 * i + 3, r.images[0].rgb.begin() + 3 * i);
      if (mask.px[i] == 0) {
        EXPECT_TRUE(same) << "pixel " << x << "," << y << " outside the mask changed";
      } else {
        inside_changed += !same;
      }
    }
  }
  EXPECT_GT(inside_changed, 100u);
  EXPECT_NE(r.images[0].parameters.find("Inpaint area: Only masked"), std::string::npos);
}

TEST(EditBehaviour, OutpaintGrowsTheCanvasAndKeepsTheOriginal) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.outpaint.left = 32;
  p.edit.outpaint.bottom = 16;
  p.edit.strength = 1.0;
  const GenerationResult r = sd1().generate(p);
  ASSERT_EQ(r.images[0].width, 160);
  ASSERT_EQ(r.images[0].height, 144);
  const image::Rgb& in = p.edit.init_image;
  // Far from the new border (beyond the seam band and its feathering) the original is kept exactly.
  const int margin = p.edit.outpaint.seam + 3 * p.edit.outpaint.feather;
  size_t checked = 0;
  for (int y = 0; y < 128 - margin; ++y) {
    for (int x = margin; x < 128; ++x) {
      const size_t src = (static_cast<size_t>(y) * 128 + x) * 3, dst = (static_cast<size_t>(y) * 160 + x + 32) * 3;
      ASSERT_TRUE(std::equal(in.px.begin() + src, in.px.begin() + src + 3, r.images[0].rgb.begin() + dst))
          << "original pixel " << x << "," << y << " changed";
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000u);
  EXPECT_NE(r.images[0].parameters.find("Outpaint: "), std::string::npos);
}

TEST(EditBehaviour, MaskedContentChangesTheStartAndIsDeterministic) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::vector<std::vector<uint8_t>> out;
  for (MaskedContent mc :
       {MaskedContent::kOriginal, MaskedContent::kFill, MaskedContent::kLatentNoise, MaskedContent::kLatentNothing}) {
    GenerationParams p = base_params();
    p.edit.mask = init_mask();
    p.edit.strength = 0.6;
    p.edit.masked_content = mc;
    const GenerationResult a = sd1().generate(p), b = sd1().generate(p);
    EXPECT_EQ(a.images[0].rgb, b.images[0].rgb) << masked_content_name(mc);
    out.push_back(a.images[0].rgb);
  }
  for (size_t i = 1; i < out.size(); ++i) EXPECT_NE(out[i], out[0]) << "content " << i << " equals original";
}

TEST(EditBehaviour, MetadataRecordsTheEdit) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = base_params();
  p.edit.strength = 0.6;
  p.edit.mask = init_mask();
  p.edit.mask_blur = 4;
  const GenerationResult r = sd1().generate(p);
  const std::string& s = r.images[0].parameters;
  EXPECT_NE(s.find("Denoising strength: 0.6"), std::string::npos) << s;
  EXPECT_NE(s.find("Mask blur: 4"), std::string::npos) << s;
  EXPECT_NE(s.find("Steps: 6"), std::string::npos) << s;
}

TEST(EditBehaviour, BadInputIsAClearError) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto code_of = [](GenerationParams p) {
    try {
      sd1().generate(p);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kRuntime;  // not thrown
  };
  GenerationParams p = base_params();
  p.edit.strength = 1.5;
  EXPECT_EQ(code_of(p), ErrorCode::kInvalidArgument);
  p.edit.strength = -0.1;
  EXPECT_EQ(code_of(p), ErrorCode::kInvalidArgument);
  p = base_params();
  p.edit.init_image.px.resize(10);  // buffer and size disagree
  EXPECT_EQ(code_of(p), ErrorCode::kInvalidArgument);
  p = base_params();
  p.edit.init_image = image::resize(init_image(), 40, 40);  // below 64x64
  EXPECT_EQ(code_of(p), ErrorCode::kInvalidArgument);
  p = base_params();
  p.edit.mask_blur = -1;
  EXPECT_EQ(code_of(p), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace diffuse
