// probe() and the family table:
//  - the tiny fixture models, as folders and single files, and the v2
//    9-channel inpainting models and SDXL refiner;
//  - configs inferred from the full-size key lists of the published SD1.5 /
//    SD2.1 / SDXL single files (fixtures/baselines/single_file_keys_*.tsv);
//  - single files with the published layouts of SSD-1B and BK-SDM-small,
//    written here from their UNet configs: the real header, sparse data behind it;
//  - synthetic files for each rule (variants by input channels, the refiner,
//    v_pred markers, UNet-only files).
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fixtures_v2.h"
#include "models/family_spec.h"
#include "models/probe.h"
#include "models/unet_keys.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;
using KeyList = std::vector<std::pair<std::string, Shape>>;

KeyList read_tsv(const std::string& file) { return testing::read_key_list(file); }

TensorIndex index_of(const KeyList& keys) {
  TensorIndex index;
  for (const auto& [name, shape] : keys) index[name] = {"F16", shape};
  return index;
}

// A .safetensors file whose header lists `keys` (F16) at consecutive offsets;
// the data section is a hole (ftruncate), so a multi-GB layout costs no disk.
std::string write_sparse_safetensors(const KeyList& keys) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, shape] : keys) {
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(shape)) * 2;
    header[name] = {{"dtype", "F16"}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  const std::string path = testing::temp_dir() + "/layout.safetensors";
  {
    std::ofstream f(path, std::ios::binary);
    uint64_t len = text.size();
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((len >> (8 * i)) & 0xff));
    f << text;
  }
  fs::resize_file(path, 8 + text.size() + offset);
  return path;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x + "\n";
  return s;
}

// Per-layer transformer depths of every block with attention, as the network has them.
std::vector<std::vector<int>> depths(const UNetConfig& c) {
  std::vector<std::vector<int>> out;
  const int n = c.num_blocks();
  for (int i = 0; i < n; ++i) {
    std::vector<int> d;
    if (c.down_block_types[i] == "CrossAttnDownBlock2D")
      for (int j = 0; j < c.layers_per_block[i]; ++j) d.push_back(c.down_transformer_layers(i, j));
    out.push_back(d);
  }
  for (int i = 0; i < n; ++i) {
    std::vector<int> d;
    if (c.up_block_types[i] == "CrossAttnUpBlock2D")
      for (int j = 0; j <= c.layers_per_block[n - 1 - i]; ++j) d.push_back(c.up_transformer_layers(i, j));
    out.push_back(d);
  }
  return out;
}

// The shapes a UNet config gives (all but the heads, which shapes do not show).
void expect_same_unet_shapes(const UNetConfig& got, const UNetConfig& want) {
  EXPECT_EQ(got.in_channels, want.in_channels);
  EXPECT_EQ(got.out_channels, want.out_channels);
  EXPECT_EQ(got.block_out_channels, want.block_out_channels);
  EXPECT_EQ(got.layers_per_block, want.layers_per_block);
  EXPECT_EQ(got.down_block_types, want.down_block_types);
  EXPECT_EQ(got.up_block_types, want.up_block_types);
  EXPECT_EQ(got.mid_block_type, want.mid_block_type);
  EXPECT_EQ(got.cross_attention_dim, want.cross_attention_dim);
  EXPECT_EQ(got.use_linear_projection, want.use_linear_projection);
  EXPECT_EQ(got.addition_embed_type, want.addition_embed_type);
  EXPECT_EQ(got.addition_time_embed_dim, want.addition_time_embed_dim);
  EXPECT_EQ(got.projection_class_embeddings_input_dim, want.projection_class_embeddings_input_dim);
  EXPECT_EQ(got.time_embed_dim(), want.time_embed_dim());
  EXPECT_EQ(depths(got), depths(want));
}

void expect_same_text_shapes(const ClipTextConfig& got, const ClipTextConfig& want) {
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.max_position_embeddings, want.max_position_embeddings);
  EXPECT_EQ(got.with_projection, want.with_projection);
  if (want.with_projection) EXPECT_EQ(got.projection_dim, want.projection_dim);
  EXPECT_EQ(got.hidden_act, want.hidden_act);
}

void expect_same_vae_shapes(const VaeConfig& got, const VaeConfig& want) {
  EXPECT_EQ(got.block_out_channels, want.block_out_channels);
  EXPECT_EQ(got.layers_per_block, want.layers_per_block);
  EXPECT_EQ(got.latent_channels, want.latent_channels);
  EXPECT_EQ(got.in_channels, want.in_channels);
  EXPECT_EQ(got.out_channels, want.out_channels);
  EXPECT_EQ(got.use_quant_conv, want.use_quant_conv);
  EXPECT_EQ(got.mid_block_add_attention, want.mid_block_add_attention);
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::kRuntime;
}

// ---- the family table -------------------------------------------------------

TEST(FamilyTable, NamesAliasesAndPublishedConfigs) {
  EXPECT_STREQ(family_name(Family::kSD1), "sd1");
  EXPECT_STREQ(family_name(Family::kSDXL), "sdxl");
  EXPECT_EQ(family_from_name("sd15"), Family::kSD1);
  EXPECT_EQ(family_from_name("sd21"), Family::kSD2);
  EXPECT_EQ(family_from_name("sdxl-base"), Family::kSDXL);
  EXPECT_EQ(family_spec_named("sdxl-refiner").variant, Variant::kRefiner);
  try {
    family_from_name("sd3");
    FAIL() << "sd3 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("sd1, sd2, sdxl, sdxl-refiner"), std::string::npos) << e.what();
  }
  for (const FamilySpec& f : family_specs()) {
    SCOPED_TRACE(f.name);
    EXPECT_NO_THROW(f.unet.validate());
    EXPECT_NO_THROW(f.vae.validate());
    ASSERT_FALSE(f.text_encoders.empty());
    for (const TextEncoderSpec& te : f.text_encoders) EXPECT_NO_THROW(te.config.validate());
    EXPECT_TRUE(f.scheduler.contains("_class_name"));
    // The published UNet's heads follow the convention inferred configs use.
    for (int i = 0; i < f.unet.num_blocks(); ++i)
      EXPECT_EQ(f.unet_heads.heads(f.unet.block_out_channels[i]), f.unet.heads(i)) << "block " << i;
    for (const TextEncoderSpec& te : f.text_encoders)
      EXPECT_EQ(f.text_heads.heads(te.config.hidden_size), te.config.num_attention_heads);
  }
  EXPECT_EQ(family_spec(Family::kSD2).scheduler.value("prediction_type", ""), "v_prediction");
  EXPECT_EQ(family_spec(Family::kSD2).default_size_for(Prediction::kVPrediction), 768);
  EXPECT_EQ(family_spec(Family::kSD2).default_size_for(Prediction::kEpsilon), 512);
  EXPECT_EQ(family_spec(Family::kSDXL).default_size_for(Prediction::kEpsilon), 1024);
}

TEST(FamilyTable, A1111NamesVaeDtypeAndHeadRules) {
  EXPECT_EQ(family_spec(Family::kSD1).a1111_config(Variant::kBase, Prediction::kEpsilon), "v1-inference.yaml");
  EXPECT_EQ(family_spec(Family::kSD1).a1111_config(Variant::kInpaint, Prediction::kEpsilon),
            "v1-inpainting-inference.yaml");
  EXPECT_EQ(family_spec(Family::kSD2).a1111_config(Variant::kBase, Prediction::kVPrediction), "v2-inference-v.yaml");
  EXPECT_EQ(family_spec(Family::kSD2).a1111_config(Variant::kBase, Prediction::kEpsilon), "v2-inference.yaml");
  EXPECT_EQ(family_spec(Family::kSDXL).a1111_config(Variant::kPix2Pix, Prediction::kEpsilon), "");
  EXPECT_EQ(family_spec_named("sdxl-refiner").a1111_config(Variant::kRefiner, Prediction::kEpsilon),
            "sd_xl_refiner.yaml");
  // diffusers' SDXL pipeline decodes an fp16 model's force_upcast VAE in f32; SD1/SD2 never upcast.
  EXPECT_EQ(family_spec(Family::kSDXL).vae_dtype(DType::kF16, VaeConfig::sdxl()), DType::kF32);
  EXPECT_EQ(family_spec(Family::kSDXL).vae_dtype(DType::kBF16, VaeConfig::sdxl()), DType::kBF16);
  EXPECT_EQ(family_spec(Family::kSD1).vae_dtype(DType::kF16, VaeConfig::sd()), DType::kF16);
  VaeConfig no_upcast = VaeConfig::sdxl();
  no_upcast.force_upcast = false;
  EXPECT_EQ(family_spec(Family::kSDXL).vae_dtype(DType::kF16, no_upcast), DType::kF16);
  EXPECT_EQ(HeadRule({8, 0}).heads(320), 8);
  EXPECT_EQ(HeadRule({8, 0}).heads(36), std::nullopt);
  EXPECT_EQ(HeadRule({0, 64}).heads(1280), 20);
  EXPECT_EQ(HeadRule({0, 64}).heads(32), std::nullopt);
  for (const VariantSpec& v : variant_specs()) EXPECT_EQ(&variant_spec(v.variant), &v);
  EXPECT_EQ(variant_spec(Variant::kBase).txt2img_unsupported, nullptr);
  EXPECT_EQ(variant_spec(Variant::kInpaint).txt2img_unsupported, nullptr);  // runs, repainting everything
  EXPECT_NE(variant_spec(Variant::kRefiner).txt2img_unsupported, nullptr);
}

// ---- the tiny fixture models -----------------------------------------------------

class ProbeFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(ProbeFixture, FolderGivesFamilyPredictionPrecisionAndItsConfigs) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const std::string dir = fixtures_dir() + "/" + fam + "/model";
  const CheckpointInfo info = probe(dir);
  EXPECT_EQ(info.family->name, fam);
  EXPECT_EQ(info.format, CheckpointFormat::kDiffusersFolder);
  EXPECT_EQ(info.variant, Variant::kBase);
  EXPECT_EQ(info.label(), fam);
  EXPECT_EQ(info.unet_in_channels, 4);
  EXPECT_EQ(info.precision, "f16");  // the fixtures store fp16 weights
  EXPECT_EQ(info.prediction, fam == std::string("sd2") ? Prediction::kVPrediction : Prediction::kEpsilon);
  EXPECT_FALSE(info.configs_inferred);
  EXPECT_TRUE(info.unresolved.empty());
  const UNetConfig want = UNetConfig::from_json(nlohmann::json::parse(testing::read_file(dir + "/unet/config.json")));
  EXPECT_TRUE(info.configs.unet.architecture_differences(want).empty());
  ASSERT_EQ(info.configs.text_encoders.size(), info.family->text_encoders.size());
  EXPECT_EQ(info.configs.text_encoders[0].num_attention_heads,
            nlohmann::json::parse(testing::read_file(dir + "/text_encoder/config.json"))["num_attention_heads"].get<int>());
  EXPECT_EQ(&probe_folder_family(dir), info.family);
}

TEST_P(ProbeFixture, SingleFileShapesGiveTheFoldersConfigs) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const CheckpointInfo info = probe(fixtures_dir() + "/" + fam + "/single_file.safetensors");
  EXPECT_EQ(info.family->name, fam);
  EXPECT_EQ(info.format, CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.variant, Variant::kBase);
  EXPECT_EQ(info.precision, "f16");
  EXPECT_TRUE(info.configs_inferred);
  // SD2 single files do not say epsilon or v; SD1 / SDXL files are epsilon unless marked.
  EXPECT_EQ(info.prediction, fam == std::string("sd2") ? std::nullopt : std::optional(Prediction::kEpsilon));

  const ComponentConfigs want = read_folder_configs(fixtures_dir() + "/" + fam + "/model", *info.family);
  expect_same_unet_shapes(info.configs.unet, want.unet);
  ASSERT_EQ(info.configs.text_encoders.size(), want.text_encoders.size());
  for (size_t i = 0; i < want.text_encoders.size(); ++i) {
    SCOPED_TRACE("text encoder " + std::to_string(i));
    expect_same_text_shapes(info.configs.text_encoders[i], want.text_encoders[i]);
    // SD2 runs all but the last OpenCLIP layer of a file (A1111's "penultimate");
    // diffusers' conversion of this 3-layer encoder wrote 3 layers.
    EXPECT_EQ(info.configs.text_encoders[i].num_hidden_layers,
              want.text_encoders[i].num_hidden_layers - info.family->text_encoders[i].unused_final_layers);
  }
  expect_same_vae_shapes(info.configs.vae, want.vae);
  // The tiny models' heads follow no family convention: they need --config, and say why.
  EXPECT_NE(joined(info.unresolved).find("heads"), std::string::npos) << joined(info.unresolved);
}

INSTANTIATE_TEST_SUITE_P(Families, ProbeFixture, ::testing::Values("sd1", "sd2", "sdxl"));

// ---- the v2 inpainting models and the SDXL refiner -----------------------------------

TEST(ProbeV2, NineChannelInpaintingModels) {
  DIFFUSE_REQUIRE_FIXTURES_V2();
  for (const char* fam : {"sd1", "sd2", "sdxl"}) {
    SCOPED_TRACE(fam);
    const CheckpointInfo info = probe(testing::v2_model_folder(std::string(fam) + "_inpaint"));
    EXPECT_EQ(info.family->name, fam);
    EXPECT_EQ(info.variant, Variant::kInpaint);
    EXPECT_EQ(info.unet_in_channels, 9);
    EXPECT_EQ(info.configs.unet.in_channels, 9);
    EXPECT_EQ(info.label(), std::string(fam) + " inpaint (9-channel)");
  }
  // The same model as a single file (LDM keys): conv_in is [32, 9, 3, 3].
  const CheckpointInfo single = probe(testing::fixtures_v2_dir() + "/sd1_inpaint/single_file.safetensors");
  EXPECT_EQ(single.family->name, "sd1");
  EXPECT_EQ(single.variant, Variant::kInpaint);
  EXPECT_EQ(single.unet_in_channels, 9);
  EXPECT_EQ(single.configs.unet.in_channels, 9);
  EXPECT_EQ(single.configs.unet.out_channels, 4);
  EXPECT_EQ(single.label(), "sd1 inpaint (9-channel)");
}

TEST(ProbeV2, SdxlRefinerIsRecognised) {
  DIFFUSE_REQUIRE_FIXTURES_V2();
  const CheckpointInfo info = probe(testing::v2_model_folder("sdxl_refiner"));
  EXPECT_EQ(info.family->name, "sdxl-refiner");
  EXPECT_EQ(info.family->family, Family::kSDXL);
  EXPECT_EQ(info.variant, Variant::kRefiner);
  ASSERT_EQ(info.configs.text_encoders.size(), 1u);
  EXPECT_TRUE(info.configs.text_encoders[0].with_projection);
  EXPECT_EQ(info.configs.unet.projection_class_embeddings_input_dim, 72);  // pooled 32 + 5 time ids * 8
  EXPECT_NE(info.variant_spec().txt2img_unsupported, nullptr);
}

// ---- configs inferred from the published full-size layouts ----------------------------

TEST(ProbeInference, PublishedFullSizeSingleFiles) {
  DIFFUSE_REQUIRE_FIXTURES();
  struct Case {
    const char* file;
    const char* family;
  };
  for (const Case& c : {Case{"single_file_keys_sd15.tsv", "sd1"}, Case{"single_file_keys_sd21.tsv", "sd2"},
                        Case{"single_file_keys_sdxl.tsv", "sdxl"}}) {
    SCOPED_TRACE(c.file);
    const CheckpointInfo info = probe_single_file(index_of(read_tsv(c.file)), CheckpointFormat::kSafetensors);
    const FamilySpec& spec = *info.family;
    EXPECT_EQ(spec.name, c.family);
    EXPECT_TRUE(info.unresolved.empty()) << joined(info.unresolved);
    EXPECT_TRUE(info.configs.unet.architecture_differences(spec.unet).empty())
        << joined(info.configs.unet.architecture_differences(spec.unet));
    expect_same_unet_shapes(info.configs.unet, spec.unet);
    for (int i = 0; i < spec.unet.num_blocks(); ++i) EXPECT_EQ(info.configs.unet.heads(i), spec.unet.heads(i));
    ASSERT_EQ(info.configs.text_encoders.size(), spec.text_encoders.size());
    for (size_t i = 0; i < spec.text_encoders.size(); ++i) {
      const ClipTextConfig& got = info.configs.text_encoders[i];
      const ClipTextConfig& want = spec.text_encoders[i].config;
      expect_same_text_shapes(got, want);
      EXPECT_EQ(got.num_attention_heads, want.num_attention_heads);
      // This SD2.1 key list is diffusers' conversion of its 23-layer encoder;
      // the released SD2.1 files hold all 24 OpenCLIP layers and run 23.
      EXPECT_EQ(got.num_hidden_layers, want.num_hidden_layers - (spec.family == Family::kSD2 ? 1 : 0));
    }
    expect_same_vae_shapes(info.configs.vae, spec.vae);
  }
}

// UNet configs as segmind/SSD-1B and nota-ai/bk-sdm-small publish them (their
// unet/config.json; the fields that shape the network). SSD-1B (diffusers'
// asymmetric UNet, huggingface/diffusers#5400): one-resnet mid block, 2 and 4
// transformer blocks in the down blocks, per-layer depths in the up blocks.
// BK-SDM-small: one layer per down block (two per up block), no mid block.
constexpr const char* kSsd1bUNet = R"({
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
  "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
  "center_input_sample": false, "cross_attention_dim": 2048,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2D", "norm_eps": 1e-05, "norm_num_groups": 32,
  "num_attention_heads": null, "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
  "resnet_time_scale_shift": "default", "reverse_transformer_layers_per_block": [[4, 4, 10], [2, 1, 1], 1],
  "sample_size": 128, "transformer_layers_per_block": [1, 2, 4],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": null,
  "use_linear_projection": true})";
constexpr const char* kBkSdmSmallUNet = R"({
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "class_embed_type": null,
  "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
  "in_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1, "mid_block_type": null, "norm_eps": 1e-05,
  "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4,
  "resnet_time_scale_shift": "default", "sample_size": 64, "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": false, "use_linear_projection": false})";

// A single file of `base_keys`' text encoders and VAE around the UNet of `unet`.
KeyList distilled_layout(const std::string& base_keys, const UNetConfig& unet) {
  KeyList keys;
  for (const auto& [name, shape] : read_tsv(base_keys))
    if (name.rfind("model.diffusion_model.", 0) != 0) keys.emplace_back(name, shape);
  for (const auto& [name, shape] : unet_ldm_tensors(unet)) keys.emplace_back("model.diffusion_model." + name, shape);
  return keys;
}

bool has_key(const TensorIndex& index, const std::string& key) { return index.count("model.diffusion_model." + key) > 0; }

TEST(ProbeInference, Ssd1bSingleFile) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig published = UNetConfig::from_json(nlohmann::json::parse(kSsd1bUNet));
  const std::string path = write_sparse_safetensors(distilled_layout("single_file_keys_sdxl.tsv", published));
  EXPECT_GT(fs::file_size(path), 4000000000ull);  // the real SSD-1B's size: ~4.5 GB of fp16, a hole on disk

  // The layout is the one stable-diffusion.cpp builds for SSD-1B (unet.hpp): only
  // middle_block.0; 2 / 4 blocks in input_blocks 4-5 / 7-8; 4, 4, 10 in output
  // blocks 0-2 and 2, 1, 1 in 3-5.
  const TensorIndex index = read_safetensors_index(path);
  EXPECT_TRUE(has_key(index, "middle_block.0.in_layers.0.weight"));
  EXPECT_FALSE(has_key(index, "middle_block.1.proj_in.weight"));
  EXPECT_FALSE(has_key(index, "middle_block.2.in_layers.0.weight"));
  EXPECT_TRUE(has_key(index, "input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight"));
  EXPECT_FALSE(has_key(index, "input_blocks.5.1.transformer_blocks.2.attn2.to_k.weight"));
  EXPECT_TRUE(has_key(index, "input_blocks.8.1.transformer_blocks.3.attn1.to_q.weight"));
  EXPECT_FALSE(has_key(index, "input_blocks.8.1.transformer_blocks.4.attn1.to_q.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.1.1.transformer_blocks.3.norm1.weight"));
  EXPECT_FALSE(has_key(index, "output_blocks.1.1.transformer_blocks.4.norm1.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.2.1.transformer_blocks.9.norm1.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.2.2.conv.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.3.1.transformer_blocks.1.norm1.weight"));
  EXPECT_FALSE(has_key(index, "output_blocks.4.1.transformer_blocks.1.norm1.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.5.2.conv.weight"));
  EXPECT_FALSE(has_key(index, "output_blocks.6.1.proj_in.weight"));
  EXPECT_FALSE(has_key(index, "output_blocks.9.0.in_layers.0.weight"));

  const CheckpointInfo info = probe(path);
  EXPECT_EQ(info.family->name, "sdxl");
  EXPECT_EQ(info.variant, Variant::kBase);
  EXPECT_TRUE(info.unresolved.empty()) << joined(info.unresolved);
  const UNetConfig& got = info.configs.unet;
  EXPECT_TRUE(got.architecture_differences(published).empty()) << joined(got.architecture_differences(published));
  EXPECT_EQ(got.block_out_channels, (std::vector<int>{320, 640, 1280}));
  EXPECT_EQ(got.layers_per_block, (std::vector<int>{2, 2, 2}));
  EXPECT_EQ(got.down_block_types, published.down_block_types);
  EXPECT_EQ(got.up_block_types, published.up_block_types);
  EXPECT_EQ(got.mid_block_type, "UNetMidBlock2D");
  EXPECT_EQ(got.transformer_layers_per_block, (std::vector<std::vector<int>>{{1}, {2}, {4}}));
  EXPECT_EQ(got.reverse_transformer_layers_per_block, (std::vector<std::vector<int>>{{4, 4, 10}, {2, 1, 1}, {1}}));
  EXPECT_EQ(got.cross_attention_dim, std::vector<int>(3, 2048));
  EXPECT_TRUE(got.use_linear_projection);
  EXPECT_EQ(got.addition_time_embed_dim, 256);
  EXPECT_EQ(got.projection_class_embeddings_input_dim, 2816);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got.heads(i), published.heads(i));  // SDXL's 64-wide heads
  // The text encoders and VAE are SDXL's.
  EXPECT_EQ(info.configs.text_encoders[1].num_hidden_layers, 32);
  EXPECT_EQ(info.configs.vae.scaling_factor, VaeConfig::sdxl().scaling_factor);
  fs::remove(path);
}

TEST(ProbeInference, BkSdmSmallSingleFile) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig published = UNetConfig::from_json(nlohmann::json::parse(kBkSdmSmallUNet));
  const std::string path = write_sparse_safetensors(distilled_layout("single_file_keys_sd15.tsv", published));
  // LDM numbering with one resnet per level: a downsampler after input blocks
  // 1, 3, 5; no middle_block; two output blocks per level.
  const TensorIndex index = read_safetensors_index(path);
  EXPECT_TRUE(has_key(index, "input_blocks.2.0.op.weight"));
  EXPECT_TRUE(has_key(index, "input_blocks.5.1.proj_in.weight"));
  EXPECT_TRUE(has_key(index, "input_blocks.7.0.in_layers.0.weight"));
  EXPECT_FALSE(has_key(index, "input_blocks.8.0.in_layers.0.weight"));
  EXPECT_FALSE(has_key(index, "middle_block.0.in_layers.0.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.1.1.conv.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.3.2.conv.weight"));
  EXPECT_TRUE(has_key(index, "output_blocks.7.1.proj_in.weight"));
  EXPECT_FALSE(has_key(index, "output_blocks.8.0.in_layers.0.weight"));

  const CheckpointInfo info = probe(path);
  EXPECT_EQ(info.family->name, "sd1");
  EXPECT_TRUE(info.unresolved.empty()) << joined(info.unresolved);
  const UNetConfig& got = info.configs.unet;
  EXPECT_TRUE(got.architecture_differences(published).empty()) << joined(got.architecture_differences(published));
  EXPECT_EQ(got.block_out_channels, (std::vector<int>{320, 640, 1280, 1280}));
  EXPECT_EQ(got.layers_per_block, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(got.mid_block_type, "");
  EXPECT_EQ(got.down_block_types, published.down_block_types);
  EXPECT_EQ(got.up_block_types, published.up_block_types);
  EXPECT_EQ(got.transformer_layers_per_block, (std::vector<std::vector<int>>{{1}, {1}, {1}, {1}}));
  EXPECT_TRUE(got.reverse_transformer_layers_per_block.empty());
  EXPECT_EQ(got.cross_attention_dim, std::vector<int>(4, 768));
  EXPECT_FALSE(got.use_linear_projection);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got.heads(i), 8);  // SD1's eight heads
  fs::remove(path);
}

// ---- the rules, on synthetic files ----------------------------------------------

TensorIndex sd1_file(int in_channels) {
  TensorIndex t;
  t["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = {"F16", {10, 4}};
  t["model.diffusion_model.input_blocks.0.0.weight"] = {"F16", {8, in_channels, 3, 3}};
  return t;
}

TEST(ProbeRules, VariantsByInputChannels) {
  CheckpointInfo info = probe_single_file(sd1_file(9), CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.family->name, "sd1");
  EXPECT_EQ(info.variant, Variant::kInpaint);
  EXPECT_EQ(info.unet_in_channels, 9);
  info = probe_single_file(sd1_file(8), CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.variant, Variant::kPix2Pix);
  EXPECT_EQ(info.label(), "sd1 InstructPix2Pix (8-channel)");
  info = probe_single_file(sd1_file(4), CheckpointFormat::kCkpt);
  EXPECT_EQ(info.variant, Variant::kBase);
  EXPECT_EQ(info.format, CheckpointFormat::kCkpt);
  EXPECT_FALSE(info.unresolved.empty());  // a conv_in and a token table are not a model
  EXPECT_EQ(code_of([] { probe_single_file(sd1_file(5), CheckpointFormat::kSafetensors); }), ErrorCode::kUnsupported);
}

TEST(ProbeRules, FamiliesByTextEncodersAndContextWidth) {
  TensorIndex xl;
  xl["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = {"F16", {4}};
  xl["conditioner.embedders.1.model.ln_final.weight"] = {"F16", {4}};
  CheckpointInfo info = probe_single_file(xl, CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.family->name, "sdxl");
  EXPECT_EQ(info.prediction, Prediction::kEpsilon);
  xl["v_pred"] = {"F32", {1}};  // SGM's marker
  EXPECT_EQ(probe_single_file(xl, CheckpointFormat::kSafetensors).prediction, Prediction::kVPrediction);

  TensorIndex refiner;  // OpenCLIP-bigG alone, as embedders.0: recognised, not rejected
  refiner["conditioner.embedders.0.model.ln_final.weight"] = {"F16", {4}};
  info = probe_single_file(refiner, CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.family->name, "sdxl-refiner");
  EXPECT_EQ(info.variant, Variant::kRefiner);

  TensorIndex sd2;
  sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = {"F16", {12, 4}};
  info = probe_single_file(sd2, CheckpointFormat::kSafetensors);
  EXPECT_EQ(info.family->name, "sd2");
  EXPECT_EQ(info.prediction, std::nullopt);  // 512-epsilon and 768-v files look alike
  sd2["edm_vpred.sigma_max"] = {"F32", {}};  // CosXL-style marker
  EXPECT_EQ(probe_single_file(sd2, CheckpointFormat::kSafetensors).prediction, Prediction::kVPrediction);

  // UNet-only files: the cross-attention width decides.
  for (const auto& [width, name] : std::vector<std::pair<int64_t, std::string>>{
           {768, "sd1"}, {1024, "sd2"}, {2048, "sdxl"}, {1280, "sdxl-refiner"}}) {
    TensorIndex unet_only;
    unet_only["model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"] = {"F16", {1280, width}};
    EXPECT_EQ(probe_single_file(unet_only, CheckpointFormat::kSafetensors).family->name, name);
  }
  EXPECT_EQ(code_of([] { probe_single_file(TensorIndex{}, CheckpointFormat::kSafetensors); }),
            ErrorCode::kInvalidArgument);
}

TEST(ProbeRules, ReadsHeadersOnly) {
  // A header whose data section is absent: probe reads it, a full load would not.
  const std::string path = testing::temp_dir() + "/header_only.safetensors";
  const std::string text = R"({"model.diffusion_model.input_blocks.0.0.weight":{"dtype":"BF16","shape":[8,9,3,3],"data_offsets":[0,1296]},)"
                           R"("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":{"dtype":"BF16","shape":[10,4],"data_offsets":[1296,1376]}})";
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((text.size() >> (8 * i)) & 0xff));
    f << text;
  }
  const CheckpointInfo info = probe(path);
  EXPECT_EQ(info.variant, Variant::kInpaint);
  EXPECT_EQ(info.precision, "bf16");
  EXPECT_EQ(code_of([&] { load_checkpoint(path); }), ErrorCode::kIo);
  EXPECT_EQ(code_of([] { probe("/nonexistent/model.safetensors"); }), ErrorCode::kNotFound);
  const std::string garbage = testing::temp_dir() + "/garbage.safetensors";
  std::ofstream(garbage) << "not a checkpoint at all";
  EXPECT_EQ(code_of([&] { probe(garbage); }), ErrorCode::kIo);
}

}  // namespace
}  // namespace diffuse
