// read_vae_file (models/vae_file.h): a VAE on its own.
//  - A torch .ckpt in the LDM layout inside a Lightning {"state_dict": ...}
//    wrapper (tests/models/data/vae_ldm/vae_tiny.ckpt, made by
//    tools/reference/vae_ldm_ckpt.py with torch.save; block_out_channels [4, 8])
//    reads through the restricted unpickler; every LDM key becomes the
//    diffusers name Vae expects (the constructor checks names and shapes), the
//    values move unchanged (decoder.up.N -> up_blocks.(levels-1-N), 1x1
//    attention convs -> linears, nin_shortcut -> conv_shortcut), and the
//    non-VAE key is listed as ignored.
//  - Folders: config.json required, AutoencoderKL only; latent channels must
//    match the model's, and the model's latent scaling is kept.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "models/vae.h"
#include "models/vae_file.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

using testing::error_of;

const std::string kCkpt = std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/vae_ldm/vae_tiny.ckpt";

VaeConfig tiny_config() {
  VaeConfig c;
  c.block_out_channels = {4, 8};
  c.layers_per_block = 1;
  c.latent_channels = 4;
  c.norm_num_groups = 4;
  return c;
}

TEST(VaeFile, LdmCkptInAStateDictWrapper) {
  const VaeFile f = read_vae_file(kCkpt);
  EXPECT_EQ(f.layout, "ldm");
  EXPECT_EQ(f.name, "vae_tiny.ckpt");
  EXPECT_FALSE(f.config.has_value());
  EXPECT_EQ(f.ignored, std::vector<std::string>{"loss.logvar"});

  const VaeConfig cfg = tiny_config();
  EXPECT_EQ(f.weights.size(), Vae::expected_tensors(cfg).size());
  const Vae vae(cfg, f.weights);  // throws naming any missing or mis-shaped tensor
  const std::vector<float> img = vae.decode(Tensor::full({1, 4, 2, 3}, 0.3f)).to_f32_vector();
  EXPECT_EQ(img.size(), 3u * 4 * 6);

  const TensorMap raw = load_checkpoint(kCkpt).tensors;
  EXPECT_EQ(raw.size(), f.weights.size() + 1);
  const std::pair<const char*, const char*> pairs[] = {
      {"decoder.up.0.block.0.nin_shortcut.weight", "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"},
      {"decoder.up.1.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight"},
      {"decoder.up.1.block.1.conv2.bias", "decoder.up_blocks.0.resnets.1.conv2.bias"},
      {"encoder.down.1.block.0.nin_shortcut.bias", "encoder.down_blocks.1.resnets.0.conv_shortcut.bias"},
      {"encoder.down.0.downsample.conv.weight", "encoder.down_blocks.0.downsamplers.0.conv.weight"},
      {"encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight"},
      {"decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"},
      {"decoder.mid.attn_1.norm.bias", "decoder.mid_block.attentions.0.group_norm.bias"},
      {"decoder.mid.block_2.norm1.weight", "decoder.mid_block.resnets.1.norm1.weight"},
      {"encoder.norm_out.weight", "encoder.conv_norm_out.weight"},
      {"post_quant_conv.weight", "post_quant_conv.weight"},
  };
  for (const auto& [ldm, diffusers] : pairs) {
    SCOPED_TRACE(std::string(ldm) + " -> " + diffusers);
    ASSERT_TRUE(raw.count(ldm));
    ASSERT_TRUE(f.weights.count(diffusers));
    EXPECT_EQ(f.weights.at(diffusers).contiguous().to_f32_vector(), raw.at(ldm).contiguous().to_f32_vector());
  }
  EXPECT_EQ(f.weights.at("encoder.mid_block.attentions.0.to_q.weight").shape(), (Shape{8, 8}));
}

TEST(VaeFile, FoldersAndConfigs) {
  const std::string dir = testing::temp_dir();
  fs::create_directories(dir + "/no-config");
  const Error e = error_of([&] { read_vae_file(dir + "/no-config"); });
  EXPECT_EQ(e.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();

  fs::create_directories(dir + "/tiny");
  std::ofstream(dir + "/tiny/config.json") << R"({"_class_name": "AutoencoderTiny"})";
  EXPECT_EQ(error_of([&] { read_vae_file(dir + "/tiny"); }).code(), ErrorCode::kUnsupported);

  EXPECT_EQ(error_of([&] { read_vae_file(dir + "/missing"); }).code(), ErrorCode::kNotFound);

  // A single file keeps the model's config; latent scaling is always the model's.
  VaeFile f = read_vae_file(kCkpt);
  VaeConfig model = tiny_config();
  model.scaling_factor = 0.13025f;
  EXPECT_EQ(vae_config_for(f, model).block_out_channels, model.block_out_channels);
  f.config = tiny_config();  // as a folder's config.json: scaling 0.18215
  EXPECT_EQ(vae_config_for(f, model).scaling_factor, 0.13025f);
  model.latent_channels = 16;
  const Error m = error_of([&] { vae_config_for(f, model); });
  EXPECT_EQ(m.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(m.what()).find("latent channels"), std::string::npos) << m.what();
}

}  // namespace
}  // namespace diffuse
