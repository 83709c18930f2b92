// The hires fix's latent upscale modes against torch 1.13's
// torch.nn.functional.interpolate (tests/image/data/latent_upscale.safetensors,
// made by tools/reference/latent_upscale_goldens.py): every A1111 mode at 2x,
// 1.5x (non-integer), a downscale, the same size and mixed per-axis factors.
// Within 2e-6 absolute of values of order 1 (a few f32 ulps: only the
// compiler's FMA contraction of torch's kernels may differ).
#include <gtest/gtest.h>

#include <cstdio>

#include "image/latent_resize.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

std::string goldens() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/image/data/latent_upscale.safetensors"; }

TEST(LatentResize, ModesAreA1111s) {
  const auto& modes = image::latent_modes();
  ASSERT_EQ(modes.size(), 6u);
  EXPECT_EQ(modes[0].name, "Latent");
  EXPECT_EQ(modes[3].name, "Latent (bicubic antialiased)");
  EXPECT_TRUE(modes[3].antialias);
  EXPECT_EQ(modes[5].interp, image::LatentInterp::kNearestExact);
  ASSERT_NE(image::find_latent_mode("latent (BICUBIC)"), nullptr);
  EXPECT_EQ(image::find_latent_mode("latent (BICUBIC)")->interp, image::LatentInterp::kBicubic);
  EXPECT_EQ(image::find_latent_mode("Lanczos"), nullptr);
}

TEST(LatentResize, MatchesTorchInterpolate) {
  const Checkpoint ck = load_safetensors(goldens());
  const Tensor x = ck.tensors.at("input");
  const auto& modes = image::latent_modes();
  int cases = 0;
  double worst = 0;
  for (size_t mi = 0; mi < modes.size(); ++mi) {
    for (const auto& [name, want] : ck.tensors) {
      const std::string prefix = "mode" + std::to_string(mi) + "_";
      if (name.rfind(prefix, 0) != 0) continue;
      const int h = static_cast<int>(want.dim(2)), w = static_cast<int>(want.dim(3));
      const Tensor got = image::resize_latents(x, h, w, modes[mi].interp, modes[mi].antialias);
      ASSERT_EQ(got.shape(), want.shape()) << modes[mi].name << " " << name;
      const Diff d = compare(got.to_f32_vector(), want.to_f32_vector());
      EXPECT_LE(d.max_abs, 2e-6) << modes[mi].name << " to " << h << "x" << w << ": " << d.str();
      worst = std::max(worst, d.max_abs);
      ++cases;
    }
  }
  std::printf("  latent resize: %d cases, worst max |diff| %.3g\n", cases, worst);
  EXPECT_EQ(cases, 36);
}

TEST(LatentResize, KeepsBatchAndChannels) {
  // Each [n, c] plane is resized on its own: a batch of two different planes
  // gives each plane's own result.
  const Checkpoint ck = load_safetensors(goldens());
  const Tensor x = ck.tensors.at("input");  // [1, 2, 8, 6]
  const Tensor two = x.reshape({2, 1, 8, 6});
  const Tensor got = image::resize_latents(two, 12, 9, image::LatentInterp::kBicubic, true);
  const Tensor want = ck.tensors.at("mode3_12x9");
  EXPECT_EQ(got.to_f32_vector(), image::resize_latents(x, 12, 9, image::LatentInterp::kBicubic, true).to_f32_vector());
  EXPECT_LE(compare(got.to_f32_vector(), want.to_f32_vector()).max_abs, 2e-6);
}

TEST(LatentResize, BadInput) {
  const Tensor x = Tensor::zeros({1, 4, 8, 8}, DType::kF32);
  EXPECT_NE(std::string(error_of([&] { image::resize_latents(x, 0, 8, image::LatentInterp::kBilinear, false); }).what())
                .find("outside 1-16384"),
            std::string::npos);
  EXPECT_NE(std::string(error_of([&] { image::resize_latents(Tensor::zeros({4, 8, 8}, DType::kF32), 8, 8,
                                                             image::LatentInterp::kBilinear, false); })
                            .what())
                .find("[N, C, h, w]"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { image::resize_latents(x, 8, 8, image::LatentInterp::kNearest, true); }).code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace diffuse
