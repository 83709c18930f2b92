// bf16 on the CPU must not visibly change an image: for the first diffusers
// pipeline run of each fixture family (../shared/fixtures/<family>/cases.json),
// the image decoded with LoadOptions.precision = kBf16 stays within 3/255 of
// the fp32 one (max abs over all pixels and channels). Both are also checked
// against the diffusers image, fp32 tightly (1/255, as test_pipeline_fixtures)
// so that a broken fp32 path cannot make the comparison vacuous.
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/json_util.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::compare;
using testing::fixtures_dir;

GenerationParams params_for(const nlohmann::json& run, const TensorMap& tensors) {
  GenerationParams p;
  if (run["prompt"].is_array()) {
    for (const auto& s : run["prompt"]) p.prompts.push_back(s.get<std::string>());
    for (const auto& s : run["negative_prompt"]) p.negative_prompts.push_back(s.get<std::string>());
  } else {
    p.prompt = run["prompt"].get<std::string>();
    if (!run["negative_prompt"].is_null()) p.negative_prompt = run["negative_prompt"].get<std::string>();
    p.images = 1;
  }
  p.cfg_scale = run["guidance_scale"].get<float>();
  p.steps = run["num_inference_steps"].get<int>();
  p.width = run["width"].get<int>();
  p.height = run["height"].get<int>();
  std::string sched = run["scheduler"].get<std::string>();
  if (sched.size() > 7 && sched.substr(sched.size() - 7) == "_karras") {
    p.sampler = sched.substr(0, sched.size() - 7);
    p.schedule = "karras";
  } else {
    p.sampler = sched;
  }
  p.initial_latents = tensors.at(run["initial_latents"].get<std::string>()).to(DType::kF32);
  p.seed = run["generator"].is_null() ? 0 : run["generator"]["seed"].get<int64_t>();
  return p;
}

class CpuBf16 : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuBf16, ImageWithin3Of255OfFp32) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string family = GetParam();
  const std::string dir = fixtures_dir() + "/" + family;
  nlohmann::json cases = read_python_json_file(dir + "/cases.json");
  TensorMap tensors = load_safetensors(dir + "/tensors.safetensors").tensors;
  const nlohmann::json* run = nullptr;
  for (const auto& r : cases["pipeline_runs"]) {
    if (r.contains("image")) {
      run = &r;
      break;
    }
  }
  ASSERT_NE(run, nullptr) << family << ": no pipeline run with a decoded image";
  SCOPED_TRACE(family + "/" + (*run)["name"].get<std::string>());
  GenerationParams p = params_for(*run, tensors);

  LoadOptions fp32, bf16;
  fp32.precision = Precision::kFp32;
  bf16.precision = Precision::kBf16;
  GenerationResult a = Pipeline::load(dir + "/model", fp32)->generate(p);
  GenerationResult b = Pipeline::load(dir + "/model", bf16)->generate(p);
  ASSERT_EQ(a.decoded.shape(), b.decoded.shape());

  auto d = compare(b.decoded.to_f32_vector(), a.decoded.to_f32_vector());
  EXPECT_LT(d.max_abs, 3.0 / 255) << "bf16 vs fp32 image " << d.str();
  EXPECT_GT(d.max_abs, 0.0) << "bf16 produced the fp32 image bit for bit: is precision ignored?";

  Tensor expected = tensors.at((*run)["image"].get<std::string>()).permute({0, 3, 1, 2}).contiguous();
  auto ref = compare(a.decoded.to_f32_vector(), expected.to_f32_vector());
  EXPECT_LT(ref.max_abs, 1.0 / 255) << "fp32 vs diffusers " << ref.str();
}

INSTANTIATE_TEST_SUITE_P(Families, CpuBf16, ::testing::Values("sd1", "sd2", "sdxl"));

}  // namespace
}  // namespace diffuse
