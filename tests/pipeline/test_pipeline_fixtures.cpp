// End-to-end golden tests: the diffusers pipeline runs of every family
// (fixtures/<family>/cases.json "pipeline_runs": 10 steps, 128x128,
// fixed initial latents) must be reproduced by Pipeline::generate in fp32 on
// the CPU: final latents within 1e-3 relative, images within 1/255.
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/json_util.h"
#include "pipeline/pipeline.h"
#include "fixture_runs.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::compare;
using testing::fixtures_dir;

struct Fixture {
  nlohmann::json cases;
  TensorMap tensors;
};

const Fixture& fixture(const std::string& family) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(family);
  if (it != cache.end()) return it->second;
  Fixture f;
  f.cases = read_python_json_file(fixtures_dir() + "/" + family + "/cases.json");
  f.tensors = load_safetensors(fixtures_dir() + "/" + family + "/tensors.safetensors").tensors;
  return cache.emplace(family, std::move(f)).first->second;
}

Pipeline& pipeline(const std::string& family) {
  static std::map<std::string, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[family];
  if (!p) p = Pipeline::load(fixtures_dir() + "/" + family + "/model");
  return *p;
}


class PipelineRuns : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineRuns, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string family = GetParam();
  const Fixture& f = fixture(family);
  Pipeline& pipe = pipeline(family);
  int checked = 0, images = 0;
  for (const auto& run : f.cases["pipeline_runs"]) {
    const std::string name = run["name"].get<std::string>();
    SCOPED_TRACE(family + "/" + name);
    GenerationParams p = testing::params_for_run(run, f.tensors);
    GenerationResult r = pipe.generate(p);
    EXPECT_EQ(r.timings.unet_evals, run["n_unet_evals"].get<int>());
    auto lat = compare(r.final_latents.to_f32_vector(), f.tensors.at(run["final_latents"].get<std::string>()).to_f32_vector());
    EXPECT_LT(lat.max_rel, 1e-3) << "final latents " << lat.str();
    // The repository keeps the f32 images of three runs per family (tests/data/README.md), a full set every one.
    if (run.contains("image") && f.tensors.count(run["image"].get<std::string>())) {
      // Fixture image is NHWC [1, H, W, 3]; ours is NCHW [1, 3, H, W].
      Tensor expected = f.tensors.at(run["image"].get<std::string>()).permute({0, 3, 1, 2}).contiguous();
      auto img = compare(r.decoded.to_f32_vector(), expected.to_f32_vector());
      EXPECT_LT(img.max_abs, 1.0 / 255) << "image " << img.str();
      ++images;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 11);
  EXPECT_GE(images, 3);
}

INSTANTIATE_TEST_SUITE_P(Families, PipelineRuns, ::testing::Values("sd1", "sd2", "sdxl"));

TEST(Pipeline, SingleFileMatchesFolder) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (std::string family : {"sd1", "sd2", "sdxl"}) {
    SCOPED_TRACE(family);
    const Fixture& f = fixture(family);
    LoadOptions opts;
    opts.config_dir = fixtures_dir() + "/" + family + "/model";
    auto single = Pipeline::load(fixtures_dir() + "/" + family + "/single_file.safetensors", opts);
    EXPECT_TRUE(single->info().single_file);
    EXPECT_EQ(single->info().family, pipeline(family).info().family);
    const auto& run = f.cases["pipeline_runs"][0];
    GenerationParams p = testing::params_for_run(run, f.tensors);
    GenerationResult a = single->generate(p);
    GenerationResult b = pipeline(family).generate(p);
    auto d = compare(a.final_latents.to_f32_vector(), b.final_latents.to_f32_vector());
    EXPECT_EQ(d.max_abs, 0.0) << d.str();
  }
}

TEST(Pipeline, ProgressCallbackStopsTheRun) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Fixture& f = fixture("sd1");
  GenerationParams p = testing::params_for_run(f.cases["pipeline_runs"][0], f.tensors);
  int calls = 0;
  try {
    pipeline("sd1").generate(p, [&](const StepProgress& s) {
      ++calls;
      EXPECT_EQ(s.total_steps, 10);
      EXPECT_EQ(s.latents.shape(), (Shape{1, 4, 16, 16}));
      return s.step == 3;
    });
    FAIL() << "expected kCancelled";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCancelled);
  }
  EXPECT_EQ(calls, 3);
  // The pipeline stays usable after a cancelled run.
  GenerationResult r = pipeline("sd1").generate(p);
  EXPECT_EQ(r.images.size(), 1u);
}

TEST(Pipeline, WarnsAboutNonFiniteWeights) {
  DIFFUSE_REQUIRE_FIXTURES();
  TensorMap all = load_safetensors(fixtures_dir() + "/sd1/single_file.safetensors").tensors;
  const std::string bad = "model.diffusion_model.input_blocks.0.0.bias";
  Tensor t = all.at(bad).to(DType::kF32).clone();
  t.data<float>()[1] = NAN;
  all[bad] = t;
  const std::string path = testing::temp_dir() + "/nan.safetensors";
  save_safetensors(path, all);
  LoadOptions opts;
  opts.config_dir = fixtures_dir() + "/sd1/model";
  auto pipe = Pipeline::load(path, opts);
  ASSERT_EQ(pipe->info().warnings.size(), 1u);
  EXPECT_NE(pipe->info().warnings[0].find("input_blocks.0.0.bias"), std::string::npos) << pipe->info().warnings[0];
  EXPECT_TRUE(pipeline("sd1").info().warnings.empty());
}

TEST(Pipeline, RejectsBadParams) {
  GenerationParams p;
  p.prompt = "x";
  p.width = 100;  // not a multiple of 8
  EXPECT_THROW(p.validate(), Error);
  p.width = 0;
  p.images = 0;
  EXPECT_THROW(p.validate(), Error);
  p.images = 1;
  p.sampler = "nonexistent";
  try {
    p.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("nonexistent"), std::string::npos);
  }
}

TEST(Pipeline, BatchUsesOneGeneratorAndRecordsSeed) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p;
  p.prompt = "a red cube";
  p.width = p.height = 64;
  p.steps = 2;
  p.seed = 77;
  p.images = 2;
  GenerationResult r = pipeline("sd1").generate(p);
  ASSERT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.seed, 77);
  EXPECT_NE(r.images[0].rgb, r.images[1].rgb);  // different noise per image
  EXPECT_NE(r.images[0].parameters.find("Seed: 77"), std::string::npos);
  // Same seed, same images.
  GenerationResult again = pipeline("sd1").generate(p);
  EXPECT_EQ(again.images[1].rgb, r.images[1].rgb);
}

}  // namespace
}  // namespace diffuse
