// ControlNet model: its encoder against the UNet's own (whose goldens are
// diffusers'), the conditioning scale and guess-mode factors, the A1111 key
// table, file and folder reading, and bad input. The numbers against diffusers
// are in test_controlnet_goldens.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "io/checkpoint.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "models/unet_keys.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using namespace testing;

struct Base {
  UNetConfig config;
  TensorMap weights;
};

Base base_unet(const std::string& fam) {
  const std::string dir = fixtures_dir() + "/" + fam + "/model/unet";
  Base b;
  b.config = UNetConfig::from_json(nlohmann::json::parse(read_file(dir + "/config.json")));
  b.weights = load_safetensors(dir + "/diffusion_pytorch_model.safetensors").tensors;
  for (auto& [k, t] : b.weights) t = t.to(DType::kF32);
  return b;
}

// A ControlNet whose extra parts are chosen so that its residuals are the
// UNet's skip connections: identity zero convs, and a conditioning embedding
// whose conv_out is zero (the control image then adds nothing).
TensorMap identity_controlnet(const ControlNetConfig& cc, const TensorMap& unet_weights, uint32_t seed) {
  TensorMap w;
  uint32_t s = seed;
  for (const auto& [name, shape] : ControlNet::expected_tensors(cc)) {
    auto it = unet_weights.find(name);
    if (it != unet_weights.end()) {
      w[name] = it->second;
      continue;
    }
    const int64_t numel = shape_numel(shape);
    std::vector<float> v(static_cast<size_t>(numel), 0.0f);
    const bool zero_conv = name.rfind("controlnet_down_blocks.", 0) == 0 || name.rfind("controlnet_mid_block.", 0) == 0;
    if (zero_conv && shape.size() == 4) {
      for (int64_t c = 0; c < shape[0]; ++c) v[static_cast<size_t>(c * shape[1] + c)] = 1.0f;  // identity 1x1
    } else if (!zero_conv && name.find("conv_out") == std::string::npos) {
      v = noise(static_cast<size_t>(numel), s++, 0.2f);
    }
    w[name] = Tensor::from_vector(v, shape);
  }
  return w;
}

class EncoderMatchesUNet : public ::testing::TestWithParam<std::string> {};

TEST_P(EncoderMatchesUNet, ResidualsAreTheSkips) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Base b = base_unet(GetParam());
  const ControlNetConfig cc = ControlNetConfig::from_unet(b.config);
  const UNet unet(b.config, b.weights);
  const ControlNet cn(cc, identity_controlnet(cc, b.weights, 11));
  const int64_t B = 2, h = 8, w = 16;
  const Tensor x = Tensor::from_vector(noise(B * 4 * h * w, 1, 1.0f), {B, 4, h, w});
  const int D = b.config.cross_attention_dim[0];
  const Tensor ctx = Tensor::from_vector(noise(B * 7 * D, 2, 1.0f), {B, 7, D});
  const Tensor t = Tensor::from_vector({421.0f, 17.5f}, {2});
  const Tensor cond = Tensor::from_vector(noise(3 * h * 8 * w * 8, 3, 0.5f), {1, 3, h * 8, w * 8});
  Tensor pooled, ids;
  if (b.config.has_text_time()) {
    const int P = b.config.projection_class_embeddings_input_dim - 6 * b.config.addition_time_embed_dim;
    pooled = Tensor::from_vector(noise(B * P, 4, 1.0f), {B, P});
    ids = Tensor::from_vector({64, 128, 0, 0, 64, 128, 64, 128, 0, 0, 64, 128}, {B, 6});
  }
  UNetIntermediates im;
  unet.forward(x, t, ctx, pooled, ids, &im);
  const UNetResiduals r = cn.forward(x, t, ctx, cond, pooled, ids);
  ASSERT_EQ(static_cast<int>(r.down.size()), cc.num_down_residuals());
  // The first skip is conv_in's output; the last skip of each block is the block's output.
  auto expect_same = [](const Tensor& a, const Tensor& want, const std::string& what) {
    ASSERT_EQ(a.shape(), want.shape()) << what;
    const Diff d = compare(a.to(DType::kF32).to_f32_vector(), want.to(DType::kF32).to_f32_vector());
    EXPECT_LE(d.max_rel, 1e-5) << what << ": " << d.str();
  };
  expect_same(r.down[0], im.conv_in, "conv_in skip");
  size_t k = 0;
  for (int i = 0; i < b.config.num_blocks(); ++i) {
    k += b.config.layers_per_block[i] + (i + 1 < b.config.num_blocks() ? 1 : 0);
    expect_same(r.down[k], im.down[static_cast<size_t>(i)], "down block " + std::to_string(i));
  }
  expect_same(r.mid, im.mid, "mid block");

  // The conditioning scale multiplies every residual; guess mode scales residual k
  // of K by scale * 10^(-1 + k / K) (torch.logspace(-1, 0, K + 1)), the mid one by scale.
  const UNetResiduals half = cn.forward(x, t, ctx, cond, pooled, ids, 0.5f);
  const UNetResiduals guess = cn.forward(x, t, ctx, cond, pooled, ids, 0.8f, true);
  const size_t K = r.down.size();
  for (size_t j = 0; j < K; ++j) {
    const std::vector<float> a = r.down[j].to_f32_vector(), hv = half.down[j].to_f32_vector(),
                             g = guess.down[j].to_f32_vector();
    const float f = 0.8f * static_cast<float>(std::pow(10.0, -1.0 + static_cast<double>(j) / K));
    for (size_t e = 0; e < a.size(); e += 7) {
      EXPECT_NEAR(hv[e], 0.5f * a[e], 1e-6f * (1 + std::fabs(a[e])));
      EXPECT_NEAR(g[e], f * a[e], 1e-6f * (1 + std::fabs(a[e])));
    }
  }
  const std::vector<float> m = r.mid.to_f32_vector(), gm = guess.mid.to_f32_vector();
  for (size_t e = 0; e < m.size(); ++e) EXPECT_NEAR(gm[e], 0.8f * m[e], 1e-6f * (1 + std::fabs(m[e])));
}

INSTANTIATE_TEST_SUITE_P(Families, EncoderMatchesUNet, ::testing::Values("sd1", "sd2", "sdxl"));

// The control image enters through the conditioning embedding: with a non-zero
// conv_out the first residual moves, and a control image of the wrong size is refused.
TEST(ControlNet, ControlImageChangesResidualsAndIsChecked) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Base b = base_unet("sd1");
  const ControlNetConfig cc = ControlNetConfig::from_unet(b.config);
  TensorMap w = identity_controlnet(cc, b.weights, 5);
  const Shape s = w.at("controlnet_cond_embedding.conv_out.weight").shape();
  w["controlnet_cond_embedding.conv_out.weight"] = Tensor::from_vector(noise(shape_numel(s), 9, 0.1f), s);
  const ControlNet cn(cc, w);
  const Tensor x = Tensor::from_vector(noise(4 * 8 * 8, 1, 1.0f), {1, 4, 8, 8});
  const Tensor ctx = Tensor::from_vector(noise(5 * 16, 2, 1.0f), {1, 5, 16});
  const Tensor t = Tensor::from_vector({500.0f}, {1});
  const Tensor c1 = Tensor::from_vector(noise(3 * 64 * 64, 3, 0.5f), {1, 3, 64, 64});
  const Tensor c2 = Tensor::from_vector(noise(3 * 64 * 64, 4, 0.5f), {1, 3, 64, 64});
  const Diff d = compare(cn.forward(x, t, ctx, c1).down[0].to_f32_vector(), cn.forward(x, t, ctx, c2).down[0].to_f32_vector());
  EXPECT_GT(d.max_abs, 1e-3) << "the control image did not change the residual";
  const Error e = error_of([&] { cn.forward(x, t, ctx, Tensor::zeros({1, 3, 32, 64}, DType::kF32)); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("control image must be [1 or 1, 3, 64, 64]"), std::string::npos) << e.what();
}

TEST(ControlNetKeys, A1111Names) {
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.0.weight", 4), "controlnet_cond_embedding.conv_in.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.2.bias", 4), "controlnet_cond_embedding.blocks.0.bias");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.4.weight", 4), "controlnet_cond_embedding.blocks.1.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.12.weight", 4), "controlnet_cond_embedding.blocks.5.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.14.weight", 4), "controlnet_cond_embedding.conv_out.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.3.weight", 4), "");  // a SiLU has no weights
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_hint_block.6.weight", 2), "controlnet_cond_embedding.conv_out.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("zero_convs.11.0.bias", 4), "controlnet_down_blocks.11.bias");
  EXPECT_EQ(controlnet_a1111_to_diffusers("middle_block_out.0.weight", 4), "controlnet_mid_block.weight");
  EXPECT_EQ(controlnet_a1111_to_diffusers("input_blocks.1.0.in_layers.0.weight", 4), "");
  EXPECT_EQ(controlnet_family_of_width(768), "sd1");
  EXPECT_EQ(controlnet_family_of_width(1024), "sd2");
  EXPECT_EQ(controlnet_family_of_width(2048), "sdxl");
}

// The A1111 names of every tensor of a ControlNet, written independently of
// the loader's table: the encoder by the LDM UNet table, its own parts by hand.
TensorMap to_a1111(const ControlNetConfig& cc, const TensorMap& diffusers) {
  std::map<std::string, std::string> own;
  const int n = static_cast<int>(cc.conditioning_embedding_out_channels.size());
  own["controlnet_cond_embedding.conv_in"] = "input_hint_block.0";
  for (int i = 0; i < 2 * (n - 1); ++i)
    own["controlnet_cond_embedding.blocks." + std::to_string(i)] = "input_hint_block." + std::to_string(2 * i + 2);
  own["controlnet_cond_embedding.conv_out"] = "input_hint_block." + std::to_string(4 * n - 2);
  for (int k = 0; k < cc.num_down_residuals(); ++k)
    own["controlnet_down_blocks." + std::to_string(k)] = "zero_convs." + std::to_string(k) + ".0";
  own["controlnet_mid_block"] = "middle_block_out.0";
  std::vector<std::string> ldm_keys;
  for (const auto& [k, s] : unet_ldm_tensors(cc.unet)) ldm_keys.push_back(k);
  std::map<std::string, std::string> d2l;
  for (const auto& [l, d] : unet_ldm_to_diffusers(ldm_keys, cc.unet)) d2l[d] = l;
  TensorMap out;
  for (const auto& [name, t] : diffusers) {
    const size_t dot = name.rfind('.');
    const std::string module = name.substr(0, dot), param = name.substr(dot);
    auto o = own.find(module);
    if (o != own.end()) {
      out["control_model." + o->second + param] = t;
    } else {
      out["control_model." + d2l.at(name)] = t;
    }
  }
  return out;
}

TEST(ControlNetFile, A1111SingleFileAndDiffusersFolderReadTheSameWeights) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const std::string fam : {"sd1", "sdxl"}) {
    SCOPED_TRACE(fam);
    const Base b = base_unet(fam);
    ControlNetConfig cc = ControlNetConfig::from_unet(b.config);
    cc.conditioning_embedding_out_channels = {4, 8, 8, 16};
    const TensorMap w = identity_controlnet(cc, b.weights, 21);
    const fs::path dir = fs::path(temp_dir());
    // Folder: config.json (diffusers' keys) + weights.
    nlohmann::json cfg = nlohmann::json::parse(read_file(fixtures_dir() + "/" + fam + "/model/unet/config.json"));
    cfg["_class_name"] = "ControlNetModel";
    cfg["conditioning_embedding_out_channels"] = {4, 8, 8, 16};
    cfg.erase("up_block_types");
    fs::create_directories(dir / "cn_folder");
    std::ofstream((dir / "cn_folder/config.json").string()) << cfg.dump(1);
    save_safetensors((dir / "cn_folder/diffusion_pytorch_model.safetensors").string(), w);
    const ControlNetFile folder = read_controlnet_file((dir / "cn_folder").string());
    EXPECT_EQ(folder.layout, "diffusers");
    EXPECT_TRUE(folder.config_from_file);
    EXPECT_EQ(folder.config.conditioning_embedding_out_channels, cc.conditioning_embedding_out_channels);
    EXPECT_EQ(folder.config.unet.block_out_channels, b.config.block_out_channels);
    EXPECT_EQ(folder.config.unet.has_text_time(), b.config.has_text_time());
    // A1111 single file, with its config beside it (a tiny model names no family).
    fs::create_directories(dir / "a1111");
    std::ofstream((dir / "a1111/config.json").string()) << cfg.dump(1);
    save_safetensors((dir / "a1111/control_tiny_canny.safetensors").string(), to_a1111(cc, w));
    const ControlNetFile single = read_controlnet_file((dir / "a1111/control_tiny_canny.safetensors").string());
    EXPECT_EQ(single.layout, "a1111");
    EXPECT_EQ(single.control_type, "canny");
    EXPECT_EQ(single.name, "control_tiny_canny");
    ASSERT_EQ(single.weights.size(), w.size());
    for (const auto& [k, t] : w) {
      ASSERT_TRUE(single.weights.count(k)) << "missing " << k;
      EXPECT_EQ(single.weights.at(k).shape(), t.shape()) << k;
      EXPECT_EQ(single.weights.at(k).to_f32_vector(), t.to_f32_vector()) << k;
    }
    const ControlNet model(single.config, single.weights);  // every tensor where the architecture wants it
    const ControlNetProbe p = probe_controlnet((dir / "a1111/control_tiny_canny.safetensors").string());
    EXPECT_EQ(p.layout, "a1111");
    EXPECT_EQ(p.control_type, "canny");
    EXPECT_FALSE(p.is_union);
    EXPECT_EQ(p.cross_attention_dim, b.config.cross_attention_dim[0]);
  }
}

TEST(ControlNetFile, BadInput) {
  const fs::path dir = fs::path(temp_dir());
  EXPECT_EQ(error_of([&] { read_controlnet_file((dir / "missing.safetensors").string()); }).code(), ErrorCode::kNotFound);
  // A file of some other model.
  save_safetensors((dir / "other.safetensors").string(), {{"conv_in.weight", Tensor::zeros({4, 4, 3, 3}, DType::kF32)}});
  const Error e = error_of([&] { read_controlnet_file((dir / "other.safetensors").string()); });
  EXPECT_EQ(e.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e.what()).find("no ControlNet tensors"), std::string::npos) << e.what();
  // A union model.
  save_safetensors((dir / "union.safetensors").string(),
                   {{"controlnet_cond_embedding.conv_in.weight", Tensor::zeros({16, 3, 3, 3}, DType::kF32)},
                    {"task_embedding", Tensor::zeros({8, 320}, DType::kF32)}});
  EXPECT_EQ(error_of([&] { read_controlnet_file((dir / "union.safetensors").string()); }).code(),
            ErrorCode::kUnsupported);
  EXPECT_TRUE(probe_controlnet((dir / "union.safetensors").string()).is_union);
  // A1111 keys with a cross-attention width of no family and no config beside.
  save_safetensors((dir / "odd.safetensors").string(),
                   {{"control_model.input_hint_block.0.weight", Tensor::zeros({16, 3, 3, 3}, DType::kF32)},
                    {"control_model.input_hint_block.14.weight", Tensor::zeros({32, 256, 3, 3}, DType::kF32)},
                    {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                     Tensor::zeros({32, 40}, DType::kF32)}});
  const Error odd = error_of([&] { read_controlnet_file((dir / "odd.safetensors").string()); });
  EXPECT_EQ(odd.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(odd.what()).find("config.json beside"), std::string::npos) << odd.what();
  // Config fields this port does not build.
  EXPECT_EQ(error_of([] { ControlNetConfig::from_json({{"global_pool_conditions", true}}); }).code(),
            ErrorCode::kUnsupported);
  EXPECT_EQ(error_of([] { ControlNetConfig::from_json({{"_class_name", "ControlNetUnionModel"}}); }).code(),
            ErrorCode::kUnsupported);
}

// The published SD1.5 ControlNet (lllyasviel/sd-controlnet-*): its tensor list has
// 12 zero convs (the A1111 file's zero_convs.0-11) and the 16-32-96-256 hint block.
TEST(ControlNetConfig, PublishedSd15Shape) {
  const ControlNetConfig c = ControlNetConfig::from_unet(UNetConfig::sd15());
  EXPECT_EQ(c.num_down_residuals(), 12);
  EXPECT_EQ(c.cond_downscale(), 8);
  const WeightSpecs specs = ControlNet::expected_tensors(c);
  std::map<std::string, Shape> by_name(specs.begin(), specs.end());
  EXPECT_EQ(by_name.at("controlnet_cond_embedding.conv_in.weight"), (Shape{16, 3, 3, 3}));
  EXPECT_EQ(by_name.at("controlnet_cond_embedding.blocks.5.weight"), (Shape{256, 96, 3, 3}));
  EXPECT_EQ(by_name.at("controlnet_cond_embedding.conv_out.weight"), (Shape{320, 256, 3, 3}));
  EXPECT_EQ(by_name.at("controlnet_down_blocks.11.weight"), (Shape{1280, 1280, 1, 1}));
  EXPECT_EQ(by_name.at("controlnet_mid_block.weight"), (Shape{1280, 1280, 1, 1}));
  EXPECT_EQ(by_name.count("controlnet_down_blocks.12.weight"), 0u);
  EXPECT_EQ(by_name.count("up_blocks.0.resnets.0.conv1.weight"), 0u);
  const ControlNetConfig xl = ControlNetConfig::from_unet(UNetConfig::sdxl_base());
  EXPECT_EQ(xl.num_down_residuals(), 9);
}

}  // namespace
}  // namespace diffuse
