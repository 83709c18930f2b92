// Loading what probe() recognises (models/probe.h):
//  - variants text-to-image cannot run stop with a clear error, never a crash
//    or a mis-load (the SDXL refiner loads, and refuses to start from noise);
//  - a distilled single file (BK-SDM's layout: no mid block, one layer per
//    block) loads without --config from the configs its shapes give, and
//    renders exactly as with a --config folder that states them;
//  - a single file whose heads follow no convention asks for --config;
//  - describe_model() (the server's model list) reports what Pipeline::load does.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fixtures_v2.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/unet_keys.h"
#include "models/weights.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;

Error load_error(const std::string& path, const LoadOptions& options = {}) {
  try {
    Pipeline::load(path, options);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "Pipeline::load accepted " << path;
  return Error(ErrorCode::kRuntime, "");
}

// 9-channel inpainting models load (folders and single files) and are listed
// without a warning. Their skeletons here have all-zero weights: text-to-image
// still runs (everything masked, as A1111 does) and gives an image of the size asked.
TEST(ModelVariants, InpaintingModelsLoadAndRunTextToImage) {
  DIFFUSE_REQUIRE_FIXTURES();
  DIFFUSE_REQUIRE_FIXTURES_V2();
  LoadOptions with_config;
  with_config.config_dir = testing::v2_model_folder("sd1_inpaint");
  const std::string single = testing::fixtures_v2_dir() + "/sd1_inpaint/single_file.safetensors";
  EXPECT_NO_THROW(Pipeline::load(single, with_config));
  for (const char* name : {"sd1_inpaint", "sd2_inpaint", "sdxl_inpaint"}) {
    SCOPED_TRACE(name);
    const std::string folder = testing::v2_model_folder(name);
    const ModelInfo info = describe_model(folder);
    EXPECT_TRUE(info.warnings.empty()) << info.warnings[0];
    std::unique_ptr<Pipeline> pipe = Pipeline::load(folder);
    GenerationParams p;
    p.prompt = "a red fox";
    p.width = p.height = 64;
    p.steps = 2;
    p.seed = 1;
    const GenerationResult r = pipe->generate(p);
    ASSERT_EQ(r.images.size(), 1u);
    EXPECT_EQ(r.images[0].width, 64);
    EXPECT_EQ(r.images[0].rgb.size(), 64u * 64u * 3u);
  }
}

TEST(ModelVariants, SdxlRefinerLoadsButRefusesTextToImage) {
  DIFFUSE_REQUIRE_FIXTURES();
  DIFFUSE_REQUIRE_FIXTURES_V2();
  // It refines images and latents (tests/pipeline/test_refiner.cpp): loading works, starting from noise does not.
  std::unique_ptr<Pipeline> refiner = Pipeline::load(testing::v2_model_folder("sdxl_refiner"));
  EXPECT_TRUE(refiner->info().refiner);
  GenerationParams p;
  p.prompt = "a fox";
  p.steps = 2;
  p.width = p.height = 64;
  const Error e = testing::error_of([&] { refiner->generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("SDXL refiner"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("init image"), std::string::npos) << e.what();
}

TEST(ModelVariants, UnconventionalHeadsNeedConfig) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string single = fixtures_dir() + "/sd1/single_file.safetensors";
  const Error e = load_error(single);
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("text_encoder"), std::string::npos) << msg;
  EXPECT_NE(msg.find("heads"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--config"), std::string::npos) << msg;
  LoadOptions o;
  o.config_dir = fixtures_dir() + "/sd2/model";  // a config folder of another family
  EXPECT_EQ(load_error(single, o).code(), ErrorCode::kInvalidArgument);
}

// A distilled SD1 layout with conventional heads (8 per UNet block, 64-wide in
// the text encoder): the UNet has no mid block and one layer per down block.
constexpr const char* kDistilledUNet = R"({
  "_class_name": "UNet2DConditionModel", "attention_head_dim": 8, "block_out_channels": [32, 64],
  "cross_attention_dim": 64, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "in_channels": 4,
  "layers_per_block": 1, "mid_block_type": null, "norm_num_groups": 32, "out_channels": 4, "sample_size": 8,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "use_linear_projection": false})";
constexpr const char* kDistilledTextEncoder = R"({
  "architectures": ["CLIPTextModel"], "hidden_act": "quick_gelu", "hidden_size": 64, "intermediate_size": 128,
  "max_position_embeddings": 77, "num_attention_heads": 1, "num_hidden_layers": 2, "projection_dim": 64,
  "vocab_size": 49408})";

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

TEST(ModelVariants, DistilledSingleFileLoadsWithoutConfig) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig unet = UNetConfig::from_json(nlohmann::json::parse(kDistilledUNet));
  const ClipTextConfig te = ClipTextConfig::from_json(nlohmann::json::parse(kDistilledTextEncoder), false);
  TensorMap file;
  const TensorMap unet_w = random_weights(UNet::expected_tensors(unet), 21, DType::kF32);
  const auto ldm = unet_ldm_tensors(unet);
  const auto names = UNet::expected_tensors(unet);
  for (size_t i = 0; i < names.size(); ++i) file["model.diffusion_model." + ldm[i].first] = unet_w.at(names[i].first);
  for (const auto& [name, t] : random_weights(ClipTextModel::expected_tensors(te), 22, DType::kF32))
    file["cond_stage_model.transformer." + name] = t;
  for (const auto& [name, t] : load_safetensors(fixtures_dir() + "/sd1/single_file.safetensors").tensors)
    if (name.rfind("first_stage_model.", 0) == 0) file[name] = t;  // the fixture's VAE
  const std::string dir = testing::temp_dir();
  const std::string path = dir + "/distilled.safetensors";
  save_safetensors(path, file);

  // The same model's configs as a --config folder.
  const fs::path config = fs::path(dir) / "config";
  const std::string sd1 = fixtures_dir() + "/sd1/model";
  write_text(config / "model_index.json", testing::read_file(sd1 + "/model_index.json"));
  write_text(config / "unet" / "config.json", kDistilledUNet);
  write_text(config / "text_encoder" / "config.json", kDistilledTextEncoder);
  write_text(config / "vae" / "config.json", testing::read_file(sd1 + "/vae/config.json"));
  write_text(config / "scheduler" / "scheduler_config.json", testing::read_file(sd1 + "/scheduler/scheduler_config.json"));

  auto inferred = Pipeline::load(path);
  EXPECT_EQ(inferred->info().family, Family::kSD1);
  EXPECT_TRUE(inferred->info().single_file);
  LoadOptions o;
  o.config_dir = config.string();
  auto configured = Pipeline::load(path, o);

  GenerationParams p;
  p.prompt = "a red square";
  p.width = p.height = 64;
  p.steps = 2;
  p.sampler = "euler";
  p.seed = 5;
  const GenerationResult a = inferred->generate(p), b = configured->generate(p);
  ASSERT_EQ(a.images.size(), 1u);
  EXPECT_EQ(a.images[0].rgb, b.images[0].rgb);
  EXPECT_EQ(a.final_latents.to_f32_vector(), b.final_latents.to_f32_vector());
}

// The server lists models with describe_model(): the same family, prediction
// and defaults as a load.
TEST(ModelVariants, DescribeReportsWhatLoadDoes) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const char* fam : {"sd1", "sd2", "sdxl"}) {
    SCOPED_TRACE(fam);
    const std::string dir = fixtures_dir() + "/" + fam + "/model";
    const ModelInfo d = describe_model(dir);
    const ModelInfo l = Pipeline::load(dir)->info();
    EXPECT_EQ(d.family, l.family);
    EXPECT_EQ(d.prediction, l.prediction);
    EXPECT_EQ(d.default_width, l.default_width);
    EXPECT_EQ(d.default_height, l.default_height);
    EXPECT_EQ(d.default_steps, l.default_steps);
    EXPECT_EQ(d.default_cfg, l.default_cfg);
    EXPECT_EQ(d.default_sampler, l.default_sampler);
    EXPECT_EQ(d.license, l.license);
    EXPECT_EQ(d.name, l.name);
    EXPECT_TRUE(d.warnings.empty());
  }
  const ModelInfo single = describe_model(fixtures_dir() + "/sdxl/single_file.safetensors");
  EXPECT_EQ(single.family, Family::kSDXL);
  EXPECT_TRUE(single.single_file);
  EXPECT_EQ(single.default_width, 1024);
  EXPECT_EQ(single.default_cfg, 5.0f);
  EXPECT_EQ(single.default_sampler, "euler");
  EXPECT_EQ(single.license, "CreativeML Open RAIL++-M");
}

}  // namespace
}  // namespace diffuse
