// AutoencoderKL decode/encode against the diffusers goldens (cases.json "vae"),
// and the declared tensors against the full-size diffusers key list.
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "models/vae.h"
#include "io/json_util.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::compare;
using testing::fixtures_dir;

// Relative to the reference's max |value|; the README suggests ~1e-5 for single fp32 calls.
constexpr double kTol = 1e-4;

void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const auto d = compare(actual.to_f32_vector(), expected.to_f32_vector());
  std::printf("  %-12s %s\n", what.c_str(), d.str().c_str());
  EXPECT_LE(d.max_rel, kTol) << what << ": " << d.str();
}

class VaeGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(VaeGolden, DecodeAndEncodeMatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const std::string dir = fixtures_dir() + "/" + fam;
  const nlohmann::json cases = read_python_json_file(dir + "/cases.json");
  const Checkpoint golden = load_safetensors(dir + "/tensors.safetensors");
  const VaeConfig cfg = VaeConfig::from_json(read_python_json_file(dir + "/model/vae/config.json"));
  EXPECT_FLOAT_EQ(cfg.scaling_factor, cases["vae"]["scaling_factor"].get<float>());
  const Checkpoint weights = load_safetensors(dir + "/model/vae/diffusion_pytorch_model.safetensors");
  const Vae vae(cfg, weights.tensors);

  std::printf("%s vae\n", fam.c_str());
  const auto& dec = cases["vae"]["decode"];
  expect_close(vae.decode(golden.tensors.at(dec["latent"])), golden.tensors.at(dec["output"]), "decode");
  const auto& enc = cases["vae"]["encode"];
  const Vae::Encoded e = vae.encode(golden.tensors.at(enc["image"]));
  expect_close(e.mean, golden.tensors.at(enc["mean"]), "mean");
  expect_close(e.logvar, golden.tensors.at(enc["logvar"]), "logvar");
  expect_close(e.std, golden.tensors.at(enc["std"]), "std");
}

INSTANTIATE_TEST_SUITE_P(Families, VaeGolden, ::testing::Values("sd1", "sd2", "sdxl"));

// The published SD VAE declares exactly the tensors of the real checkpoints.
TEST(Vae, PublishedConfigMatchesDiffusersKeyLists) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const char* file : {"diffusers_keys_sd15.tsv", "diffusers_keys_sd21.tsv", "diffusers_keys_sdxl.tsv"}) {
    SCOPED_TRACE(file);
    const std::map<std::string, Shape> want = testing::read_key_map(file, "vae/");
    ASSERT_FALSE(want.empty());
    std::map<std::string, Shape> have;
    for (auto& [name, shape] : Vae::expected_tensors(VaeConfig::sd())) have[name] = shape;
    ASSERT_EQ(have.size(), 248u);
    EXPECT_EQ(have, want);
  }
}

VaeConfig tiny_config() {
  VaeConfig c;
  c.block_out_channels = {4, 8};
  c.norm_num_groups = 2;
  c.layers_per_block = 1;
  return c;
}

TEST(Vae, ShapesAndLegacyAttentionNames) {
  const VaeConfig c = tiny_config();
  const TensorMap w = Vae::random_weights(c, 11);
  const Vae vae(c, w);
  const Tensor z = Tensor::full({2, 4, 3, 5}, 0.3f);
  const Tensor img = vae.decode(z);
  EXPECT_EQ(img.shape(), (Shape{2, 3, 6, 10}));
  // Odd sizes exercise the asymmetric Downsample2D padding: 9 -> (9+1-3)/2+1 = 4, 6 -> 3.
  const Vae::Encoded e = vae.encode(Tensor::full({1, 3, 9, 6}, -0.2f));
  EXPECT_EQ(e.mean.shape(), (Shape{1, 4, 4, 3}));
  EXPECT_EQ(e.std.shape(), (Shape{1, 4, 4, 3}));

  // Old diffusers files name the mid attention query/key/value/proj_attn.
  TensorMap legacy;
  for (const auto& [name, t] : w) {
    std::string n = name;
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}) {
      const size_t pos = n.find(from);
      if (pos != std::string::npos) n.replace(pos, from.size(), to);
    }
    legacy.emplace(n, t);
  }
  ASSERT_TRUE(legacy.count("decoder.mid_block.attentions.0.proj_attn.weight"));
  const Vae legacy_vae(c, legacy);
  EXPECT_EQ(legacy_vae.decode(z).to_f32_vector(), img.to_f32_vector());
}

TEST(Vae, ReportsBadInputsAndWeights) {
  const VaeConfig c = tiny_config();
  TensorMap w = Vae::random_weights(c, 5);
  const Vae vae(c, w);
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 3, 4, 4}, DType::kF32)), Error);
  EXPECT_THROW(vae.encode(Tensor::zeros({1, 4, 8, 8}, DType::kF32)), Error);
  w.erase("decoder.up_blocks.0.upsamplers.0.conv.weight");
  try {
    Vae bad(c, w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("missing 'decoder.up_blocks.0.upsamplers.0.conv.weight' (8,8,3,3)"),
              std::string::npos)
        << e.what();
  }
  VaeConfig groups = c;
  groups.norm_num_groups = 3;
  EXPECT_THROW(groups.validate(), Error);
}

}  // namespace
}  // namespace diffuse
