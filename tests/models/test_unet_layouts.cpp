// UNet layouts of distilled models (diffusers' asymmetric UNets): a mid block
// of one resnet (UNetMidBlock2D: SSD-1B, Vega) or none (BK-SDM), and
// transformer depths per layer. Tiny configs with random weights: the tensor
// list, forward(), and the single-file (LDM) key table round trip.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/unet.h"
#include "models/unet_keys.h"
#include "models/weights.h"
#include "test_util.h"

namespace diffuse {
namespace {

UNetConfig asymmetric(const std::string& mid) {
  UNetConfig c;
  c.block_out_channels = {32, 64};
  c.layers_per_block = {1, 2};
  c.down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  c.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  c.attention_head_dim = {2, 4};
  c.cross_attention_dim = {16, 16};
  c.transformer_layers_per_block = {{1}, {2, 1}};
  c.reverse_transformer_layers_per_block = {{3, 1, 2}, {1, 2}};
  c.mid_block_type = mid;
  c.validate();
  return c;
}

bool declares(const UNetConfig& c, const std::string& name) {
  for (const auto& [n, s] : UNet::expected_tensors(c))
    if (n == name) return true;
  return false;
}

std::vector<float> run(const UNet& unet, UNetIntermediates* im = nullptr) {
  const Tensor x = Tensor::from_vector(std::vector<float>(2 * 4 * 8 * 8, 0.25f), {2, 4, 8, 8});
  std::vector<float> ctx(2 * 5 * 16);
  for (size_t i = 0; i < ctx.size(); ++i) ctx[i] = 0.01f * static_cast<float>(i % 17) - 0.05f;
  return unet.forward(x, Tensor::from_vector({250.0f, 750.0f}, {2}), Tensor::from_vector(ctx, {2, 5, 16}), {}, {}, im)
      .to_f32_vector();
}

TEST(UNetLayouts, PerLayerDepthsAndMidBlocksDeclareTheirTensors) {
  const UNetConfig c = asymmetric("UNetMidBlock2D");
  EXPECT_EQ(c.down_transformer_layers(1, 0), 2);
  EXPECT_EQ(c.down_transformer_layers(1, 1), 1);
  EXPECT_EQ(c.up_transformer_layers(0, 0), 3);
  EXPECT_EQ(c.up_transformer_layers(1, 1), 2);
  EXPECT_TRUE(declares(c, "down_blocks.1.attentions.0.transformer_blocks.1.norm1.weight"));
  EXPECT_FALSE(declares(c, "down_blocks.1.attentions.1.transformer_blocks.1.norm1.weight"));
  EXPECT_TRUE(declares(c, "up_blocks.0.attentions.0.transformer_blocks.2.ff.net.2.bias"));
  EXPECT_FALSE(declares(c, "up_blocks.0.attentions.1.transformer_blocks.1.norm1.weight"));
  EXPECT_TRUE(declares(c, "up_blocks.0.attentions.2.transformer_blocks.1.norm1.weight"));
  EXPECT_TRUE(declares(c, "mid_block.resnets.0.conv1.weight"));
  EXPECT_FALSE(declares(c, "mid_block.resnets.1.conv1.weight"));
  EXPECT_FALSE(declares(c, "mid_block.attentions.0.norm.weight"));
  const UNetConfig none = asymmetric("");
  EXPECT_FALSE(declares(none, "mid_block.resnets.0.conv1.weight"));
  // The mid block takes the last down block's first depth, as diffusers does.
  EXPECT_TRUE(declares(asymmetric("UNetMidBlock2DCrossAttn"), "mid_block.attentions.0.transformer_blocks.1.norm1.weight"));
  EXPECT_FALSE(declares(asymmetric("UNetMidBlock2DCrossAttn"), "mid_block.attentions.0.transformer_blocks.2.norm1.weight"));
}

TEST(UNetLayouts, ForwardAndTheSingleFileTableAgree) {
  for (const std::string mid : {"UNetMidBlock2D", "", "UNetMidBlock2DCrossAttn"}) {
    SCOPED_TRACE("mid block '" + mid + "'");
    const UNetConfig c = asymmetric(mid);
    const TensorMap w = UNet::random_weights(c, 3, DType::kF32);
    const UNet a(c, w);
    UNetIntermediates im;
    const std::vector<float> out = run(a, &im);
    ASSERT_EQ(out.size(), 2u * 4 * 8 * 8);
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
    if (mid.empty()) {  // no mid block: the up path starts from the last down block's output
      EXPECT_EQ(im.mid.to_f32_vector(), im.down.back().to_f32_vector());
    } else {
      EXPECT_NE(im.mid.to_f32_vector(), im.down.back().to_f32_vector());
    }
    // The same weights under their LDM names, renamed back by the key table.
    const auto ldm_names = unet_ldm_tensors(c);
    const auto names = UNet::expected_tensors(c);
    ASSERT_EQ(ldm_names.size(), names.size());
    TensorMap ldm;
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_EQ(ldm_names[i].second, names[i].second);
      ldm[ldm_names[i].first] = w.at(names[i].first);
    }
    EXPECT_EQ(ldm.count("middle_block.0.in_layers.0.weight"), mid.empty() ? 0u : 1u);
    EXPECT_EQ(ldm.count("middle_block.2.in_layers.0.weight"), mid == "UNetMidBlock2DCrossAttn" ? 1u : 0u);
    const UNet b(c, unet_weights_from_ldm(ldm, c));
    EXPECT_EQ(run(b), out);
  }
}

TEST(UNetLayouts, ConfigJsonForms) {
  nlohmann::json j = {{"block_out_channels", {32, 64}},
                      {"layers_per_block", 1},
                      {"attention_head_dim", 2},
                      {"cross_attention_dim", 16},
                      {"down_block_types", {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}},
                      {"up_block_types", {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D"}},
                      {"mid_block_type", nullptr},
                      {"transformer_layers_per_block", {1, {2}}},
                      {"reverse_transformer_layers_per_block", {{3, 1}, 2}}};
  const UNetConfig c = UNetConfig::from_json(j);
  EXPECT_EQ(c.mid_block_type, "");  // null: no mid block
  EXPECT_EQ(c.transformer_layers_per_block, (std::vector<std::vector<int>>{{1}, {2}}));
  EXPECT_EQ(c.reverse_transformer_layers_per_block, (std::vector<std::vector<int>>{{3, 1}, {2}}));
  auto code_of = [](const nlohmann::json& cfg) {
    try {
      UNetConfig::from_json(cfg);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kRuntime;
  };
  auto k = j;
  k["reverse_transformer_layers_per_block"] = {{3, 1, 1}, 2};  // up block 0 has 2 layers, not 3
  EXPECT_EQ(code_of(k), ErrorCode::kInvalidArgument);
  k = j;
  k["transformer_layers_per_block"] = {{1}, {2}};
  k.erase("reverse_transformer_layers_per_block");
  EXPECT_NO_THROW(UNetConfig::from_json(k));  // one entry per block mirrors
  k["layers_per_block"] = 2;
  k["transformer_layers_per_block"] = {{1, 2}, 1};  // per-layer depths need the up blocks' too (diffusers)
  EXPECT_EQ(code_of(k), ErrorCode::kInvalidArgument);
  k = j;
  k["mid_block_type"] = "UNetMidBlock2DSimpleCrossAttn";
  EXPECT_EQ(code_of(k), ErrorCode::kUnsupported);
  k = j;
  k["transformer_layers_per_block"] = {1, "two"};
  EXPECT_EQ(code_of(k), ErrorCode::kInvalidArgument);
}

TEST(UNetLayouts, ArchitectureDifferencesIgnoreWhatBuildsNothing) {
  UNetConfig a = UNetConfig::sdxl_base(), b = UNetConfig::sdxl_base();
  b.transformer_layers_per_block[0] = {7};  // down block 0 has no attention
  b.attention_head_dim[0] = 1;
  b.sample_size = 64;                         // not the network
  EXPECT_TRUE(a.architecture_differences(b).empty());
  b.transformer_layers_per_block[1] = {3};
  b.mid_block_type = "UNetMidBlock2D";
  const auto d = a.architecture_differences(b);
  ASSERT_EQ(d.size(), 1u);  // the block structure first; depths once it agrees
  EXPECT_EQ(d[0], "mid_block_type");
  b.mid_block_type = a.mid_block_type;
  EXPECT_EQ(a.architecture_differences(b),
            std::vector<std::string>{"transformer_layers_per_block / reverse_transformer_layers_per_block"});
}

}  // namespace
}  // namespace diffuse
