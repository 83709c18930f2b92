// IP-Adapter through Pipeline::generate on the tiny fixtures: what the
// pipeline promises besides matching diffusers (test_ip_adapter_goldens.cpp):
// scale 0 is the plain model, two copies of one image attend like that image,
// the infotext carries the unit, and bad input (no image encoder, the wrong
// family, a wrong encoder, bad scales) fails with a clear error and leaves the
// model as it was.
#include <filesystem>

#include "../pipeline/edit_runs.h"
#include "io/file_io.h"
#include "ip_adapter_test_util.h"

namespace diffuse {
namespace {

using namespace testing;
using namespace ipa_test;
namespace fs = std::filesystem;

GenerationParams base_params() {
  GenerationParams p;
  p.prompt = "a red fox";
  p.negative_prompt = "blurry";
  p.cfg_scale = 7.5f;
  p.steps = 3;
  p.sampler = "euler";
  p.width = 64;
  p.height = 64;
  p.seed = 1234;
  return p;
}

Pipeline& sd1() { return cached_pipeline(fixtures_dir() + "/sd1/model"); }

TEST(IpAdapterPipeline, ScaleZeroIsThePlainModelAndDuplicateImagesActLikeOne) {
  DIFFUSE_REQUIRE_FIXTURES();
  const GenerationResult plain = sd1().generate(base_params());
  for (const std::string kind : {"base", "plus"}) {
    SCOPED_TRACE(kind);
    GenerationParams p = base_params();
    p.ip_adapter.model = adapter_file("sd1", kind);
    const image::Rgb a = read_rgb(data_dir() + "/ref_a.png");
    p.ip_adapter.images = {a};
    p.ip_adapter.scale = 0.0f;
    EXPECT_EQ(sd1().generate(p).final_latents.to_f32_vector(), plain.final_latents.to_f32_vector());
    p.ip_adapter.scale = 0.8f;
    const GenerationResult one = sd1().generate(p);
    const Diff effect = compare(one.final_latents.to_f32_vector(), plain.final_latents.to_f32_vector());
    p.ip_adapter.images = {a, a};  // the same tokens twice: attention over repeated keys is unchanged
    const Diff d = compare(sd1().generate(p).final_latents.to_f32_vector(), one.final_latents.to_f32_vector());
    std::printf("  %s: the adapter moves the latents by %s; two copies of the image vs one: %s\n", kind.c_str(),
                effect.str().c_str(), d.str().c_str());
    // f32 rounding of softmax over 2T instead of T keys, through 3 CFG steps of the
    // sensitive tiny SD1 UNet: 2e-4 of the effect with g++, 2e-3 with clang (its
    // evaluation order; test_ip_adapter.cpp measures this rounding floor per build).
    // Concatenating anything else, or averaging differently, moves them on the scale
    // of the effect.
    EXPECT_GT(effect.max_rel, 1e-2);
    EXPECT_LE(d.max_abs, effect.max_abs / 100) << d.str();
    const std::string& info = one.images[0].parameters;
    const std::string unit = std::string("ControlNet 0: \"Module: ip-adapter_clip, Model: sd1_") + kind;
    EXPECT_NE(info.find(unit), std::string::npos) << info;
    EXPECT_NE(info.find("Weight: 0.8"), std::string::npos) << info;
  }
}

TEST(IpAdapterPipeline, BadInputFailsClearlyAndLeavesTheModelAlone) {
  DIFFUSE_REQUIRE_FIXTURES();
  const GenerationResult plain = sd1().generate(base_params());
  const image::Rgb a = read_rgb(data_dir() + "/ref_a.png");
  auto with = [&](const std::string& model) {
    GenerationParams p = base_params();
    p.ip_adapter.model = model;
    p.ip_adapter.images = {a};
    return p;
  };
  // No image encoder beside the adapter: the error names the file to get.
  const std::string lonely = temp_dir();
  fs::copy_file(data_dir() + "/sd1_base.bin", lonely + "/ip-adapter_sd15.bin");
  Error e = error_of([&] { sd1().generate(with(lonely + "/ip-adapter_sd15.bin")); });
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_NE(std::string(e.what()).find(lonely + "/image_encoder/model.safetensors"), std::string::npos) << e.what();
  // An adapter of another family.
  e = error_of([&] { sd1().generate(with(adapter_file("sdxl", "plus"))); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("token width 48, 17 cross-attention layers), but sd1 model"), std::string::npos)
      << e.what();
  // An encoder of the wrong width, given explicitly.
  const std::string enc = temp_dir() + "/enc";
  fs::create_directories(enc);
  nlohmann::json cfg = read_python_json_file(data_dir() + "/image_encoder/config.json");
  cfg["projection_dim"] = 24;
  save_safetensors(enc + "/model.safetensors", ClipVisionModel::random_weights(ClipVisionConfig::from_json(cfg), 3));
  const std::string text = cfg.dump();
  write_file_atomic(enc + "/config.json", text.data(), text.size());
  GenerationParams p = with(adapter_file("sd1", "base"));
  p.ip_adapter.image_encoder = enc;
  e = error_of([&] { sd1().generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("image_embeds 16"), std::string::npos) << e.what();
  // Scales.
  p = with(adapter_file("sd1", "base"));
  p.ip_adapter.scale = 2.5f;
  e = error_of([&] { sd1().generate(p); });
  EXPECT_NE(std::string(e.what()).find("between 0 and 2"), std::string::npos) << e.what();
  p.ip_adapter.scale = 1.0f;
  p.ip_adapter.block_scales = "{\"up\": {\"block_0\": 1}}";  // sd1's up block 0 has no attention
  e = error_of([&] { sd1().generate(p); });
  EXPECT_NE(std::string(e.what()).find("up.block_0"), std::string::npos) << e.what();
  p.ip_adapter.block_scales = "{not json";
  EXPECT_EQ(error_of([&] { sd1().generate(p); }).code(), ErrorCode::kInvalidArgument);
  p.ip_adapter.block_scales.clear();
  p.ip_adapter.images.clear();
  EXPECT_EQ(error_of([&] { sd1().generate(p); }).code(), ErrorCode::kInvalidArgument);
  // The model is as it was.
  EXPECT_EQ(sd1().generate(base_params()).final_latents.to_f32_vector(), plain.final_latents.to_f32_vector());
}

}  // namespace
}  // namespace diffuse
