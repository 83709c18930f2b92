// img2img and inpainting on the CUDA backend (ctest label "cuda"):
//   fp32: the v2 goldens' final latents within 1e-3 relative of diffusers;
//   fp16 (the CUDA default): every image within a mean of 2/255 of the CPU
//   f32 image of the same run (the bound), for img2img, 4-channel and
//   9-channel inpainting of every family.
// Skips when no CUDA device is usable.
#include <cstdio>

#include "backends/cuda/cuda_api.h"
#include "edit_runs.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& pipeline(const std::string& path, Device device, Precision precision) {
  static std::map<std::tuple<std::string, Device, Precision>, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[{path, device, precision}];
  if (!p) {
    LoadOptions o;
    o.device = device;
    o.precision = precision;
    p = Pipeline::load(path, o);
  }
  return *p;
}

struct Case {
  std::string model;
  GenerationParams params;
  std::string name;
  Tensor golden_latents;  // undefined: none
};

std::vector<Case> cases_of(const std::string& fam) {
  std::vector<Case> out;
  const EditFamily& f = edit_family(fam);
  for (const char* section : {"img2img", "inpaint"}) {
    for (const auto& run : f.cases[section]["runs"]) {
      Case c;
      c.model = fixtures_dir() + "/" + fam + "/model";
      c.params = params_for(f.cases, f.cases[section], run, f.dir);
      c.name = fam + "/" + section + "/" + run["name"].get<std::string>();
      c.golden_latents = f.tensors.at(run["final_latents"].get<std::string>());
      out.push_back(std::move(c));
    }
  }
  const nlohmann::json nine = nlohmann::json::parse(read_file(inpaint9_dir() + "/cases.json"));
  for (const auto& run : nine["families"][fam]["runs"]) {
    Case c;
    c.model = inpaint9_model(fam);
    GenerationParams& p = c.params;
    p.prompt = nine["prompt"].get<std::string>();
    p.negative_prompt = nine["negative_prompt"].get<std::string>();
    p.cfg_scale = nine["guidance_scale"].get<float>();
    p.steps = nine["num_inference_steps"].get<int>();
    p.sampler = run["scheduler"].get<std::string>();
    p.seed = run["seed"].get<int64_t>();
    p.edit.strength = run["strength"].get<double>();
    p.edit.init_image = load_rgb(fixtures_dir() + "/" + nine["init_image"].get<std::string>());
    p.edit.mask = load_mask(fixtures_dir() + "/" + nine["mask_image"].get<std::string>());
    p.edit.mask_blur = 0;
    p.edit.overlay = false;
    c.name = fam + "/inpaint9/" + run["name"].get<std::string>();
    out.push_back(std::move(c));
  }
  return out;
}

class CudaEdit : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(CudaEdit, Fp32MatchesDiffusersAndFp16StaysNearCpu) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const Case& c : cases_of(GetParam())) {
    SCOPED_TRACE(c.name);
    const GenerationResult cpu = pipeline(c.model, Device::kCPU, Precision::kFp32).generate(c.params);
    const GenerationResult half = pipeline(c.model, Device::kCUDA, Precision::kFp16).generate(c.params);
    const PixelDiff d = pixel_diff(half.images[0].rgb, cpu.images[0].rgb);
    std::printf("  %s: fp16 CUDA vs f32 CPU image mean %.3f/255 max %.0f/255", c.name.c_str(), d.mean, d.max);
    EXPECT_LE(d.mean, 2.0) << "fp16 CUDA image vs CPU f32: mean " << d.mean << "/255";
    if (c.golden_latents.defined()) {
      const GenerationResult f32 = pipeline(c.model, Device::kCUDA, Precision::kFp32).generate(c.params);
      const Diff dl = compare(f32.final_latents.to_f32_vector(), c.golden_latents.to_f32_vector());
      std::printf(", fp32 CUDA latents %s", dl.str().c_str());
      EXPECT_LE(dl.max_rel, 1e-3) << "fp32 CUDA final latents vs diffusers: " << dl.str();
    }
    std::printf("\n");
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CudaEdit, ::testing::Values("sd1", "sd2", "sdxl"));

}  // namespace
}  // namespace diffuse
