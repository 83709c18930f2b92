// img2img and inpainting against diffusers' StableDiffusion(XL)Img2Img /
// InpaintPipeline goldens (fixture set v2: tests/data/README.md says which
// runs the repository carries; $DIFFUSE_FIXTURES_V2 points at a full set).
// Every run of a section is replayed from its cases.json entry: the same
// prompt, seed (one CPU generator for the whole call, diffusers' draw order),
// sampler, strength, image and mask, with the raw pipeline output (no
// overlay). Final latents must agree within 1e-3 relative, images within a
// mean of 1/255 and a max of 8/255 (the bounds).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "image/image_ops.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "pipeline/pipeline.h"
#include "edit_runs.h"
#include "fixtures_v2.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& model(const std::string& path) { return cached_pipeline(path); }

// Returns whether the run's image was compared (the repository keeps one
// image per section, a full set every one).
bool check_run(const std::string& fam, const std::string& section_name, const std::string& model_path,
               const nlohmann::json& run) {
  const EditFamily& f = edit_family(fam);
  const nlohmann::json& section = f.cases[section_name];
  SCOPED_TRACE(fam + " " + section_name + " " + run["name"].get<std::string>());
  GenerationParams p = params_for(f.cases, section, run, f.dir);
  GenerationResult r = model(model_path).generate(p);
  EXPECT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.timings.unet_evals, run["n_unet_evals"].get<int>());

  const Tensor& want_latents = f.tensors.at(run["final_latents"].get<std::string>());
  const testing::Diff dl = compare(r.final_latents.to_f32_vector(), want_latents.to(DType::kF32).to_f32_vector());
  EXPECT_LE(dl.max_rel, 1e-3) << "final latents: " << dl.str();

  // Image: the f32 golden where the set has it, else its 8-bit PNG.
  std::vector<float> want;
  const std::string key = run["image"].get<std::string>();
  const std::string png_path = f.dir + "/" + run["image_png"].get<std::string>();
  if (f.tensors.count(key)) {
    want = f.tensors.at(key).to(DType::kF32).to_f32_vector();
  } else if (std::filesystem::exists(png_path)) {
    const image::Rgb png = load_rgb(png_path);
    for (uint8_t v : png.px) want.push_back(v / 255.0f);
  } else {
    return false;
  }
  const std::vector<float> got = to_nhwc(r.decoded);
  EXPECT_EQ(got.size(), want.size());
  if (got.size() != want.size()) return true;
  double sum = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(got[i] - want[i]);
    sum += d;
    worst = std::max(worst, d);
  }
  std::printf("  %s/%s/%s: latents %s, image mean %.3f/255 max %.2f/255\n", fam.c_str(), section_name.c_str(),
              run["name"].get<std::string>().c_str(), dl.str().c_str(), sum / got.size() * 255, worst * 255);
  EXPECT_LE(sum / got.size(), 1.0 / 255) << "image mean abs diff " << sum / got.size() * 255 << "/255";
  EXPECT_LE(worst, 8.0 / 255) << "image max abs diff " << worst * 255 << "/255";
  return true;
}

struct SectionCase {
  std::string family, section, model;  // model: relative to the goldens dir ("" = the family's base model)
};

class EditGoldens : public ::testing::TestWithParam<SectionCase> {};

TEST_P(EditGoldens, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const SectionCase& c = GetParam();
  const EditFamily& f = edit_family(c.family);
  ASSERT_TRUE(f.cases.contains(c.section)) << c.family << "/cases.json has no section " << c.section;
  const std::string model_path =
      c.model.empty() ? fixtures_dir() + "/" + c.family + "/model" : testing::v2_model_folder(c.model);
  const nlohmann::json& runs = f.cases[c.section]["runs"];
  ASSERT_FALSE(runs.empty());
  int images = 0;
  for (const auto& run : runs) images += check_run(c.family, c.section, model_path, run) ? 1 : 0;
  EXPECT_GE(images, 1) << "no image golden of " << c.family << "/" << c.section << " in " << goldens_dir();
}

// The sections the repository carries goldens for, and with a full v2 set
// ($DIFFUSE_FIXTURES_V2) also its 9-channel inpainting models' runs (their
// UNets are too big for the repository; Inpaint9 below covers 9-channel
// models with goldens of its own).
std::vector<SectionCase> sections() {
  std::vector<SectionCase> out;
  for (const char* fam : {"sd1", "sd2", "sdxl"}) {
    out.push_back({fam, "img2img", ""});
    out.push_back({fam, "inpaint", ""});
    if (std::getenv("DIFFUSE_FIXTURES_V2")) out.push_back({fam, "inpaint9", std::string(fam) + "_inpaint"});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(V2, EditGoldens, ::testing::ValuesIn(sections()),
                         [](const ::testing::TestParamInfo<SectionCase>& i) {
                           return i.param.family + "_" + i.param.section;
                         });


}  // namespace
}  // namespace diffuse
