// UNet tensor declarations and the LDM -> diffusers key table, checked against
// the full-size key lists of the published SD1.5 / SD2.1 / SDXL checkpoints
// (fixtures/baselines/*_keys_*.tsv, made with diffusers' conversion scripts).
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "models/unet.h"
#include "models/unet_keys.h"
#include "test_util.h"

namespace diffuse {
namespace {

using ShapeMap = std::map<std::string, Shape>;

// "name\t[320, 4, 3, 3]\tF16" lines; keeps those starting with `prefix`, stripped.
ShapeMap read_keys(const std::string& file, const std::string& prefix) { return testing::read_key_map(file, prefix); }

// cases.json comes from Python's json, which writes -Infinity / NaN for some
// scheduler fields; nlohmann rejects those, and we do not read them.
nlohmann::json read_cases(const std::string& fam) {
  std::string text = testing::read_file(testing::fixtures_dir() + "/" + fam + "/cases.json");
  for (const std::string bad : {": -Infinity", ": Infinity", ": NaN"}) {
    for (size_t at = text.find(bad); at != std::string::npos; at = text.find(bad, at))
      text.replace(at, bad.size(), ": null");
  }
  return nlohmann::json::parse(text);
}

struct Published {
  const char* name;
  UNetConfig config;
  int64_t params;
};

std::vector<Published> published() {
  return {{"sd15", UNetConfig::sd15(), 859520964},
          {"sd21", UNetConfig::sd21(), 865910724},
          {"sdxl", UNetConfig::sdxl_base(), 2567463684}};
}

TEST(UNetKeys, ExpectedTensorsMatchDiffusersKeyLists) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const auto& p : published()) {
    SCOPED_TRACE(p.name);
    const ShapeMap want = read_keys(std::string("diffusers_keys_") + p.name + ".tsv", "unet/");
    ASSERT_GT(want.size(), 600u);
    const auto list = UNet::expected_tensors(p.config);
    ShapeMap got;
    int64_t params = 0;
    for (const auto& [name, shape] : list) {
      EXPECT_TRUE(got.emplace(name, shape).second) << "declared twice: " << name;
      params += shape_numel(shape);
    }
    for (const auto& [name, shape] : want) {
      auto it = got.find(name);
      if (it == got.end())
        ADD_FAILURE() << "not declared: " << name;
      else
        EXPECT_EQ(shape_str(it->second), shape_str(shape)) << name;
    }
    for (const auto& [name, shape] : got) EXPECT_TRUE(want.count(name)) << "declared but not in diffusers: " << name;
    EXPECT_EQ(params, p.params);
  }
}

TEST(UNetKeys, LdmTableMapsEveryFullSizeKey) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const auto& p : published()) {
    SCOPED_TRACE(p.name);
    const ShapeMap ldm = read_keys(std::string("single_file_keys_") + p.name + ".tsv", "model.diffusion_model.");
    const ShapeMap diffusers = read_keys(std::string("diffusers_keys_") + p.name + ".tsv", "unet/");
    ASSERT_EQ(ldm.size(), diffusers.size());
    std::vector<std::string> keys;
    for (const auto& [k, s] : ldm) keys.push_back(k);
    const auto mapping = unet_ldm_to_diffusers(keys, p.config);
    ASSERT_EQ(mapping.size(), ldm.size());
    std::set<std::string> targets;
    for (const auto& [from, to] : mapping) {
      EXPECT_TRUE(targets.insert(to).second) << "two LDM keys map to " << to;
      auto it = diffusers.find(to);
      if (it == diffusers.end()) {
        ADD_FAILURE() << from << " -> " << to << " is not a diffusers key";
        continue;
      }
      // Same shapes in both layouts (SD1 stores proj_in/out as 1x1 convs in both, SD2/SDXL as linears in both).
      EXPECT_EQ(shape_str(ldm.at(from)), shape_str(it->second)) << from << " -> " << to;
    }
    EXPECT_EQ(targets.size(), diffusers.size());
  }
}

TEST(UNetKeys, SpotChecks) {
  const auto m = unet_ldm_to_diffusers(
      {"input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight", "input_blocks.3.0.op.bias",
       "input_blocks.4.0.skip_connection.weight", "middle_block.1.proj_in.weight", "output_blocks.2.1.conv.weight",
       "output_blocks.5.2.conv.weight", "out.2.bias", "time_embed.2.weight",
       "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"},
      UNetConfig::sd15());
  EXPECT_EQ(m.at("input_blocks.0.0.weight"), "conv_in.weight");
  EXPECT_EQ(m.at("input_blocks.1.0.in_layers.2.weight"), "down_blocks.0.resnets.0.conv1.weight");
  EXPECT_EQ(m.at("input_blocks.3.0.op.bias"), "down_blocks.0.downsamplers.0.conv.bias");
  EXPECT_EQ(m.at("input_blocks.4.0.skip_connection.weight"), "down_blocks.1.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(m.at("middle_block.1.proj_in.weight"), "mid_block.attentions.0.proj_in.weight");
  EXPECT_EQ(m.at("output_blocks.2.1.conv.weight"), "up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(m.at("output_blocks.5.2.conv.weight"), "up_blocks.1.upsamplers.0.conv.weight");
  EXPECT_EQ(m.at("out.2.bias"), "conv_out.bias");
  EXPECT_EQ(m.at("time_embed.2.weight"), "time_embedding.linear_2.weight");
  EXPECT_EQ(m.at("output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"),
            "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight");
  const auto x = unet_ldm_to_diffusers({"label_emb.0.0.weight", "input_blocks.7.1.transformer_blocks.9.ff.net.2.bias"},
                                       UNetConfig::sdxl_base());
  EXPECT_EQ(x.at("label_emb.0.0.weight"), "add_embedding.linear_1.weight");
  EXPECT_EQ(x.at("input_blocks.7.1.transformer_blocks.9.ff.net.2.bias"),
            "down_blocks.2.attentions.0.transformer_blocks.9.ff.net.2.bias");
}

TEST(UNetKeys, UnknownKeysAreNamed) {
  try {
    unet_ldm_to_diffusers({"input_blocks.0.0.weight", "label_emb.0.0.weight", "input_blocks.99.0.op.weight"},
                          UNetConfig::sd15());  // SD1 has no label_emb
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("label_emb.0.0.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("input_blocks.99.0.op.weight"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("input_blocks.0.0.weight"), std::string::npos) << msg;
  }
}

TEST(UNetKeys, ProjectionsAreReshapedToTheConfigsForm) {
  // An SD2-style config fed an LDM file whose proj_in is a 1x1 conv.
  UNetConfig c = UNetConfig::sd21();
  TensorMap ldm;
  ldm["middle_block.1.proj_in.weight"] = Tensor::zeros({1280, 1280, 1, 1}, DType::kF16);
  ldm["middle_block.1.proj_in.bias"] = Tensor::zeros({1280}, DType::kF16);
  const TensorMap out = unet_weights_from_ldm(ldm, c);
  EXPECT_EQ(shape_str(out.at("mid_block.attentions.0.proj_in.weight").shape()), "(1280,1280)");
  EXPECT_EQ(shape_str(out.at("mid_block.attentions.0.proj_in.bias").shape()), "(1280)");
}

TEST(UNetConfig, FixtureConfigsParse) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const char* fam : {"sd1", "sd2", "sdxl"}) {
    SCOPED_TRACE(fam);
    const auto j = nlohmann::json::parse(testing::read_file(testing::fixtures_dir() + "/" + fam + "/model/unet/config.json"));
    const UNetConfig c = UNetConfig::from_json(j);
    const auto cases = read_cases(fam);
    int64_t params = 0;
    for (const auto& [n, s] : UNet::expected_tensors(c)) params += shape_numel(s);
    EXPECT_EQ(params, cases["param_counts"]["unet"].get<int64_t>());
  }
  const auto j = nlohmann::json::parse(testing::read_file(testing::fixtures_dir() + "/sd2/model/unet/config.json"));
  const UNetConfig c = UNetConfig::from_json(j);
  EXPECT_EQ(c.heads(0), 2);  // attention_head_dim [2,4,4,4] means heads (diffusers naming)
  EXPECT_TRUE(c.use_linear_projection);
  EXPECT_EQ(c.cross_attention_dim, std::vector<int>(4, 16));
}

TEST(UNetConfig, RejectsWhatItDoesNotImplement) {
  nlohmann::json j = {{"block_out_channels", {32, 64}},
                      {"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
                      {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}}};
  EXPECT_NO_THROW(UNetConfig::from_json(j));
  auto code_of = [](const nlohmann::json& cfg) {
    try {
      UNetConfig::from_json(cfg);
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::kRuntime;
  };
  auto k = j;
  k["class_embed_type"] = "timestep";
  EXPECT_EQ(code_of(k), ErrorCode::kUnsupported);
  k = j;
  k["resnet_time_scale_shift"] = "scale_shift";
  EXPECT_EQ(code_of(k), ErrorCode::kUnsupported);
  k = j;
  k["down_block_types"] = {"SimpleCrossAttnDownBlock2D", "DownBlock2D"};
  EXPECT_EQ(code_of(k), ErrorCode::kUnsupported);
  k = j;
  k["attention_head_dim"] = {1, 2, 3};
  EXPECT_EQ(code_of(k), ErrorCode::kInvalidArgument);
  k = j;
  k["attention_head_dim"] = 7;  // 32 channels do not split into 7 heads
  EXPECT_EQ(code_of(k), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace diffuse
