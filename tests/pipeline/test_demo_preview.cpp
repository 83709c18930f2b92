// Live-preview colours on the built-in demo model (issue 29, part 1): the
// cheap latent -> RGB preview uses factors fitted to the demo model's own VAE
// (model_index.json _diffuse_defaults.preview_factors, made by
// tools/demo_model/fit_preview.py), so the last step's preview shows the
// colours the final image has: the issue's prompt "a large red square in the
// centre, on a blue background", seed 7, 20 Euler steps at 128 x 128. The mean
// colour of the preview over the shape and over the background is within
// 40/255 (every channel) of the final image's over the same pixels. The SD 1.x
// factors the demo model used before are checked to miss (the cyan on
// teal), so the test tells the two apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "pipeline/demo_model.h"
#include "pipeline/live_preview.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

struct Means {
  std::array<double, 3> shape{}, background{};
  int shape_n = 0, background_n = 0;
};

// Mean colours of `rgb` (w x h) over the latent pixels the final image's
// `is_shape` mask (one flag per latent pixel) marks as shape and as background.
Means region_means(const std::vector<uint8_t>& rgb, const std::vector<int>& is_shape) {
  Means m;
  for (size_t i = 0; i < is_shape.size(); ++i) {
    if (is_shape[i] < 0) continue;  // an edge block: partly both
    std::array<double, 3>& acc = is_shape[i] ? m.shape : m.background;
    (is_shape[i] ? m.shape_n : m.background_n)++;
    for (int c = 0; c < 3; ++c) acc[c] += rgb[i * 3 + c];
  }
  for (int c = 0; c < 3; ++c) {
    m.shape[c] /= std::max(1, m.shape_n);
    m.background[c] /= std::max(1, m.background_n);
  }
  return m;
}

double max_channel_diff(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  double d = 0;
  for (int c = 0; c < 3; ++c) d = std::max(d, std::abs(a[c] - b[c]));
  return d;
}

TEST(DemoPreview, LastPreviewHasTheFinalImagesColours) {
  const std::optional<std::string> demo = demo_model_path();
  ASSERT_TRUE(demo) << "models/demo is missing from the source tree";
  std::unique_ptr<Pipeline> pipe = Pipeline::load(*demo);
  const std::vector<float>& factors = pipe->info().preview_factors;
  ASSERT_EQ(factors.size(), 141u)
      << "the demo model ships no preview_factors in its model_index.json";

  GenerationParams p;
  p.prompt = "a large red square in the centre, on a blue background";
  p.seed = 7;
  p.steps = 20;
  p.width = p.height = 128;
  Tensor last;
  GenerationResult r = pipe->generate(p, [&](const StepProgress& s) {
    if (s.step == s.total_steps) last = s.latents.to(Device::kCPU).contiguous();
    return false;
  });
  ASSERT_TRUE(last.defined());
  ASSERT_EQ(r.images.size(), 1u);
  const Image& im = r.images[0];

  // The final image's shape: pixels farther than 60 (RGB distance) from the
  // border's median colour (the demo scorer's rule, read_scene). A latent
  // pixel (8 x 8 block) counts as shape or background when all its pixels agree.
  std::vector<uint8_t> border[3];
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      if (x < 4 || y < 4 || x >= im.width - 4 || y >= im.height - 4)
        for (int c = 0; c < 3; ++c) border[c].push_back(im.rgb[(y * im.width + x) * 3 + c]);
  std::array<double, 3> bg{};
  for (int c = 0; c < 3; ++c) {
    std::nth_element(border[c].begin(), border[c].begin() + border[c].size() / 2, border[c].end());
    bg[c] = border[c][border[c].size() / 2];
  }
  const int lw = im.width / 8, lh = im.height / 8;
  std::vector<int> is_shape(static_cast<size_t>(lw * lh));
  std::vector<uint8_t> final_blocks(static_cast<size_t>(lw * lh * 3));  // the final image averaged per block
  for (int by = 0; by < lh; ++by) {
    for (int bx = 0; bx < lw; ++bx) {
      int fg = 0;
      std::array<double, 3> sum{};
      for (int y = by * 8; y < by * 8 + 8; ++y) {
        for (int x = bx * 8; x < bx * 8 + 8; ++x) {
          const uint8_t* px = &im.rgb[(y * im.width + x) * 3];
          const double d = std::hypot(px[0] - bg[0], px[1] - bg[1], px[2] - bg[2]);
          fg += d > 60;
          for (int c = 0; c < 3; ++c) sum[c] += px[c];
        }
      }
      const size_t i = static_cast<size_t>(by * lw + bx);
      is_shape[i] = fg == 64 ? 1 : fg == 0 ? 0 : -1;
      for (int c = 0; c < 3; ++c) final_blocks[i * 3 + c] = static_cast<uint8_t>(std::lround(sum[c] / 64));
    }
  }
  const Means final_means = region_means(final_blocks, is_shape);
  ASSERT_GE(final_means.shape_n, 4) << "no large shape in the final image";
  ASSERT_GE(final_means.background_n, 40);
  // The prompt was followed: a red shape on blue (the demo palette's red and blue).
  EXPECT_GT(final_means.shape[0], 150);
  EXPECT_LT(final_means.shape[2], 110);
  EXPECT_GT(final_means.background[2], 150);

  int w = 0, h = 0;
  const std::vector<uint8_t> preview = Pipeline::preview_rgb(last, 0, Family::kSD1, &w, &h, factors);
  ASSERT_EQ(w, lw);
  ASSERT_EQ(h, lh);
  const Means got = region_means(preview, is_shape);
  const double shape_err = max_channel_diff(got.shape, final_means.shape);
  const double bg_err = max_channel_diff(got.background, final_means.background);
  std::printf("final: shape (%.0f,%.0f,%.0f) bg (%.0f,%.0f,%.0f); preview: shape (%.0f,%.0f,%.0f) bg (%.0f,%.0f,%.0f); "
              "max channel error shape %.1f, background %.1f (/255)\n",
              final_means.shape[0], final_means.shape[1], final_means.shape[2], final_means.background[0],
              final_means.background[1], final_means.background[2], got.shape[0], got.shape[1], got.shape[2],
              got.background[0], got.background[1], got.background[2], shape_err, bg_err);
  EXPECT_LE(shape_err, 40.0);
  EXPECT_LE(bg_err, 40.0);

  // The session the server uses gives the same preview (the factors reach it).
  LivePreviewer previewer(PreviewOptions{});
  LivePreviewer::Session session = previewer.start(Family::kSD1, Device::kCPU, factors);
  StepProgress s;
  s.step = s.total_steps = 20;
  s.latents = last;
  const LivePreview lp = session.make(s, 0);
  EXPECT_EQ(lp.method, PreviewMethod::kCheap);
  EXPECT_EQ(lp.rgb, preview);

  // SD 1.x's published factors, the demo model's previews before: far off.
  const std::vector<uint8_t> sd = Pipeline::preview_rgb(last, 0, Family::kSD1, &w, &h);
  const Means old = region_means(sd, is_shape);
  const double old_err = std::max(max_channel_diff(old.shape, final_means.shape),
                                  max_channel_diff(old.background, final_means.background));
  std::printf("SD 1.x factors: shape (%.0f,%.0f,%.0f) bg (%.0f,%.0f,%.0f), max channel error %.1f\n", old.shape[0],
              old.shape[1], old.shape[2], old.background[0], old.background[1], old.background[2], old_err);
  EXPECT_GT(old_err, 40.0);
}

TEST(DemoPreview, MalformedFactorsAreRefused) {
  Tensor z = Tensor::zeros({1, 4, 2, 2}, DType::kF32);
  int w = 0, h = 0;
  EXPECT_THROW(Pipeline::preview_rgb(z, 0, Family::kSD1, &w, &h, std::vector<float>(14, 0.f)), Error);
  // Bias only: every pixel is the bias colour ((b + 1) * 127.5).
  std::vector<float> f(15, 0.f);
  f[12] = 1.f;
  f[13] = -1.f;
  f[14] = 0.f;
  const std::vector<uint8_t> rgb = Pipeline::preview_rgb(z, 0, Family::kSD1, &w, &h, f);
  ASSERT_EQ(rgb.size(), 12u);
  EXPECT_EQ(rgb[0], 255);
  EXPECT_EQ(rgb[1], 0);
  EXPECT_EQ(rgb[2], 127);
}

// The 47-row layout: row k*9 + (dy+1)*3 + (dx+1) weighs channel k at (y+dy, x+dx),
// edges repeated; rows 36..45 the products z_a z_b (a <= b); row 46 the bias.
TEST(DemoPreview, NeighbourhoodFactorsLayout) {
  // Channel 1 of a 3x3 latent: 0.1 * (y * 3 + x); channel 2: 0.5 everywhere.
  Tensor z = Tensor::zeros({1, 4, 3, 3}, DType::kF32);
  float* d = z.data<float>();
  for (int i = 0; i < 9; ++i) {
    d[9 + i] = 0.1f * i;
    d[18 + i] = 0.5f;
  }
  std::vector<float> f(141, 0.f);
  f[(1 * 9 + 0 * 3 + 1) * 3 + 0] = 1.f;  // R: channel 1 of the pixel above
  f[(1 * 9 + 1 * 3 + 2) * 3 + 1] = 1.f;  // G: channel 1 of the pixel to the right
  f[(36 + 7) * 3 + 2] = 1.f;             // B: z_2 * z_2 (pairs 00 01 02 03 11 12 13 22: the 8th)
  f[46 * 3 + 2] = -1.f;                  // B bias
  int w = 0, h = 0;
  const std::vector<uint8_t> rgb = Pipeline::preview_rgb(z, 0, Family::kSD1, &w, &h, f);
  ASSERT_EQ(rgb.size(), 27u);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 3; ++x) {
      const int i = y * 3 + x;
      const float above = 0.1f * (std::max(y - 1, 0) * 3 + x), right = 0.1f * (y * 3 + std::min(x + 1, 2));
      EXPECT_EQ(rgb[i * 3 + 0], static_cast<uint8_t>((above + 1.f) * 127.5f)) << i;
      EXPECT_EQ(rgb[i * 3 + 1], static_cast<uint8_t>((right + 1.f) * 127.5f)) << i;
      EXPECT_EQ(rgb[i * 3 + 2], static_cast<uint8_t>((0.25f - 1.f + 1.f) * 127.5f)) << i;
    }
  }
}

}  // namespace
}  // namespace diffuse
