// LoRA through Pipeline::generate against diffusers / PEFT goldens (fixture set
// v2, section "lora": tests/data/README.md says what the repository carries;
// $DIFFUSE_FIXTURES_V2 points at a full set). Every run is replayed from its
// cases.json entry: prompt, seed (one CPU generator), Euler, 10 steps,
// 128x128, the file at the run's adapter weight on the UNet and the text
// encoder(s). Final latents must agree within 1e-3 relative, images within a
// mean of 1/255 and a max of 8/255 (issue 20's bounds).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "pipeline/edit_runs.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

Pipeline& model(const std::string& fam) { return cached_pipeline(fixtures_dir() + "/" + fam + "/model"); }

GenerationParams params_of(const nlohmann::json& run, const std::string& dir) {
  GenerationParams p = run_params(run);
  if (run.contains("lora_file")) {
    const float w = run["adapter_weight"].get<float>();
    p.loras.push_back({dir + "/" + run["lora_file"].get<std::string>(), w, w});
  }
  return p;
}

struct Measured {
  testing::Diff latents;
  double image_mean = -1, image_max = -1;  // 1/255 units; -1: no image golden
};

Measured check_run(const std::string& fam, const nlohmann::json& run, GenerationResult* out = nullptr) {
  const EditFamily& f = edit_family(fam);
  const std::string name = run["name"].get<std::string>();
  SCOPED_TRACE(fam + " lora " + name);
  GenerationResult r = model(fam).generate(params_of(run, f.dir));
  Measured m;
  EXPECT_EQ(r.timings.unet_evals, run["n_unet_evals"].get<int>());
  const std::string key = run["final_latents"].get<std::string>();
  EXPECT_TRUE(f.tensors.count(key)) << "missing golden " << key;
  if (!f.tensors.count(key)) return m;
  m.latents = compare(r.final_latents.to_f32_vector(), f.tensors.at(key).to(DType::kF32).to_f32_vector());
  EXPECT_LE(m.latents.max_rel, 1e-3) << "final latents: " << m.latents.str();

  std::vector<float> want;
  const std::string png = run.contains("image_png") ? f.dir + "/" + run["image_png"].get<std::string>() : "";
  if (run.contains("image") && f.tensors.count(run["image"].get<std::string>())) {
    want = f.tensors.at(run["image"].get<std::string>()).to(DType::kF32).to_f32_vector();
  } else if (!png.empty() && std::filesystem::exists(png)) {
    for (uint8_t v : load_rgb(png).px) want.push_back(v / 255.0f);
  }
  if (!want.empty()) {
    const std::vector<float> got = to_nhwc(r.decoded);
    EXPECT_EQ(got.size(), want.size());
    double sum = 0, worst = 0;
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
      const double d = std::fabs(got[i] - want[i]);
      sum += d;
      worst = std::max(worst, d);
    }
    m.image_mean = sum / static_cast<double>(want.size()) * 255;
    m.image_max = worst * 255;
    EXPECT_LE(m.image_mean, 1.0) << "image mean abs diff (1/255)";
    EXPECT_LE(m.image_max, 8.0) << "image max abs diff (1/255)";
  }
  std::printf("  %s/lora/%s: latents %s", fam.c_str(), name.c_str(), m.latents.str().c_str());
  if (m.image_mean >= 0) std::printf(", image mean %.3g/255 max %.3g/255", m.image_mean, m.image_max);
  std::printf("\n");
  if (out) *out = std::move(r);
  return m;
}

class LoraGoldens : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraGoldens, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const EditFamily& f = edit_family(fam);
  ASSERT_TRUE(f.cases.contains("lora")) << fam << "/cases.json has no lora section";
  const nlohmann::json& runs = f.cases["lora"]["runs"];
  ASSERT_GE(runs.size(), 3u);
  int images = 0, with_lora = 0;
  for (const auto& run : runs) {
    const Measured m = check_run(fam, run);
    images += m.image_mean >= 0;
    with_lora += run.contains("lora_file");
  }
  EXPECT_GE(images, 1) << "no image golden of " << fam << "/lora in " << goldens_dir();
  EXPECT_GE(with_lora, 2);
}

INSTANTIATE_TEST_SUITE_P(V2, LoraGoldens, ::testing::Values("sd1", "sd2", "sdxl"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

const nlohmann::json& run_named(const std::string& fam, const std::string& name) {
  for (const auto& run : edit_family(fam).cases["lora"]["runs"])
    if (run["name"] == name) return run;
  static const nlohmann::json none;
  ADD_FAILURE() << fam << " has no lora run " << name;
  return none;
}

// SDXL: the kohya file with LDM module names and the one with diffusers names
// patch the same weights with the same factors: the same latents, bit for bit.
TEST(LoraGoldens, SdxlLdmAndDiffusersNamesAgree) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& ldm = run_named("sdxl", "kohya_w1.0");
  const nlohmann::json& diffusers = run_named("sdxl", "kohya_diffusers_names_w1.0");
  ASSERT_FALSE(ldm.is_null());
  ASSERT_FALSE(diffusers.is_null());
  GenerationResult a, b;
  check_run("sdxl", ldm, &a);
  check_run("sdxl", diffusers, &b);
  ASSERT_TRUE(a.final_latents.defined() && b.final_latents.defined());
  const testing::Diff d = compare(b.final_latents.to_f32_vector(), a.final_latents.to_f32_vector());
  EXPECT_EQ(d.max_abs, 0.0) << d.str();
}

// The text-encoder part of the goldens matters: without it (te weight 0) the
// latents leave the 1e-3 band, so MatchDiffusers checks the encoder patches too.
TEST(LoraGoldens, TextEncoderPartIsNeeded) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const char* fam : {"sd1", "sdxl"}) {
    SCOPED_TRACE(fam);
    const nlohmann::json& run = run_named(fam, "kohya_w1.0");
    ASSERT_FALSE(run.is_null());
    GenerationParams p = params_of(run, edit_family(fam).dir);
    p.loras[0].te_weight = 0.0f;
    const GenerationResult r = model(fam).generate(p);
    const Tensor& want = edit_family(fam).tensors.at(run["final_latents"].get<std::string>());
    const testing::Diff d = compare(r.final_latents.to_f32_vector(), want.to(DType::kF32).to_f32_vector());
    EXPECT_GT(d.max_rel, 1e-2) << "unet-only LoRA came out within " << d.str();
  }
}

// The images' metadata names each file with A1111's AddNet hash (sha256 of
// the bytes after the safetensors header, 12 hex digits; computed with Python's
// hashlib from the fixture files).
TEST(LoraGoldens, InfotextHasLoraHashes) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& run = run_named("sd1", "kohya_w0.6");
  ASSERT_FALSE(run.is_null());
  GenerationParams p = params_of(run, edit_family("sd1").dir);
  p.loras.push_back({edit_family("sd1").dir + "/lora/lora_peft.safetensors", 0.0f, 0.0f});
  const GenerationResult r = model("sd1").generate(p);
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_NE(r.images[0].parameters.find("Lora hashes: \"lora_kohya: 0d8e9819fd33, lora_peft: d0e80698b0e6\""),
            std::string::npos)
      << r.images[0].parameters;
}

}  // namespace
}  // namespace diffuse
