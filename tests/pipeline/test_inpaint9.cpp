// 9-channel inpainting models against the repository's own diffusers
// goldens (tests/pipeline/data/inpaint9, made by
// tools/reference/inpaint9_goldens.py): each family's tiny base model with a
// 9-channel conv_in, at strength 1 (generator draws: noise, masked image) and
// 0.8 (image, noise, masked image). Final latents within 1e-3 relative,
// images within a mean of 1/255 and a max of 8/255.
#include <cstdio>

#include "edit_runs.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& model(const std::string& path) { return cached_pipeline(path); }

class Inpaint9 : public ::testing::TestWithParam<std::string> {};

TEST_P(Inpaint9, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const nlohmann::json cases = nlohmann::json::parse(read_file(inpaint9_dir() + "/cases.json"));
  const TensorMap tensors = load_safetensors(inpaint9_dir() + "/tensors.safetensors").tensors;
  Pipeline& pipe = model(inpaint9_model(fam));
  int images = 0;
  for (const auto& run : cases["families"][fam]["runs"]) {
    SCOPED_TRACE(fam + " " + run["name"].get<std::string>());
    GenerationParams p;
    p.prompt = cases["prompt"].get<std::string>();
    p.negative_prompt = cases["negative_prompt"].get<std::string>();
    p.cfg_scale = cases["guidance_scale"].get<float>();
    p.steps = cases["num_inference_steps"].get<int>();
    p.sampler = run["scheduler"].get<std::string>();
    p.seed = run["seed"].get<int64_t>();
    p.edit.strength = run["strength"].get<double>();
    p.edit.init_image = load_rgb(fixtures_dir() + "/" + cases["init_image"].get<std::string>());
    p.edit.mask = load_mask(fixtures_dir() + "/" + cases["mask_image"].get<std::string>());
    p.edit.mask_blur = 0;
    p.edit.overlay = false;
    const GenerationResult r = pipe.generate(p);
    const Diff dl = compare(r.final_latents.to_f32_vector(),
                            tensors.at(run["final_latents"].get<std::string>()).to_f32_vector());
    std::printf("  inpaint9 %s/%s: latents %s\n", fam.c_str(), run["name"].get<std::string>().c_str(),
                dl.str().c_str());
    EXPECT_LE(dl.max_rel, 1e-3) << "final latents: " << dl.str();
    if (run.contains("image_png")) {
      ++images;
      const image::Rgb want = load_rgb(inpaint9_dir() + "/" + run["image_png"].get<std::string>());
      const PixelDiff d = pixel_diff(r.images[0].rgb, want.px);
      EXPECT_LE(d.mean, 1.0) << "image mean diff " << d.mean << "/255";
      EXPECT_LE(d.max, 8.0) << "image max diff " << d.max << "/255";
    }
  }
  EXPECT_EQ(images, 1);
}

INSTANTIATE_TEST_SUITE_P(Families, Inpaint9, ::testing::Values("sd1", "sd2", "sdxl"));

// Text-to-image at sizes that are multiples of 8 but not of 64 (odd latent
// sizes: the UNet's upsamplers meet odd skips), against diffusers' pipelines
// run by the same script.
TEST(OddSizes, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json cases = nlohmann::json::parse(read_file(inpaint9_dir() + "/cases.json"));
  const TensorMap tensors = load_safetensors(inpaint9_dir() + "/tensors.safetensors").tensors;
  ASSERT_EQ(cases["odd_size_txt2img"].size(), 2u);
  for (const auto& run : cases["odd_size_txt2img"]) {
    const std::string fam = run["family"].get<std::string>();
    SCOPED_TRACE(fam);
    GenerationParams p;
    p.prompt = cases["prompt"].get<std::string>();
    p.negative_prompt = cases["negative_prompt"].get<std::string>();
    p.cfg_scale = cases["guidance_scale"].get<float>();
    p.steps = cases["num_inference_steps"].get<int>();
    p.width = run["width"].get<int>();
    p.height = run["height"].get<int>();
    p.sampler = run["scheduler"].get<std::string>();
    p.seed = run["seed"].get<int64_t>();
    const GenerationResult r = model(fixtures_dir() + "/" + fam + "/model").generate(p);
    const Tensor& want = tensors.at(run["final_latents"].get<std::string>());
    ASSERT_EQ(r.final_latents.shape(), want.shape());
    const Diff d = compare(r.final_latents.to_f32_vector(), want.to_f32_vector());
    std::printf("  odd size %s %dx%d: latents %s\n", fam.c_str(), p.width, p.height, d.str().c_str());
    EXPECT_LE(d.max_rel, 1e-3) << d.str();
  }
}

}  // namespace
}  // namespace diffuse
