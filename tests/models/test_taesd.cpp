// The TAESD decoder (src/models/taesd.cpp) against a plain-torch reference of
// the published architecture on seeded random weights, width 8
// (tools/reference/taesd_goldens.py writes tests/models/data/taesd/), from both
// key layouts; the file-name table; and corrupt or wrong files.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/taesd.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::compare;
using testing::error_of;

// f32 decode of f32 (fp16-rounded) weights: f32 rounding only, relative to the output's max |value|.
constexpr double kTol = 1e-5;

std::string data_dir() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/taesd"; }
std::string pth_file() { return data_dir() + "/taesd_decoder.pth"; }
std::string diffusers_dir() { return data_dir() + "/diffusers"; }

const Checkpoint& cases() {
  static const Checkpoint c = load_safetensors(data_dir() + "/cases.safetensors");
  return c;
}

void expect_matches_torch(const TaesdDecoder& dec, const std::string& what) {
  const Tensor& latent = cases().tensors.at("latent");
  const Tensor& expected = cases().tensors.at("output");
  const Tensor out = dec.decode(latent);
  ASSERT_EQ(out.shape(), expected.shape()) << what;
  const auto d = compare(out.to_f32_vector(), expected.to_f32_vector());
  std::printf("  %-28s %s\n", what.c_str(), d.str().c_str());
  EXPECT_LE(d.max_rel, kTol) << what << ": " << d.str();
}

TEST(Taesd, OriginalLayoutPthMatchesTorch) {
  const TaesdDecoder dec = TaesdDecoder::load(pth_file());
  EXPECT_EQ(dec.config().channels, 8);  // read from the shapes
  EXPECT_EQ(dec.config().latent_channels, 4);
  EXPECT_EQ(dec.parameter_count(), 19763u);  // the torch module's parameter count
  expect_matches_torch(dec, "taesd_decoder.pth");
}

TEST(Taesd, DiffusersLayoutMatchesTorch) {
  expect_matches_torch(TaesdDecoder::load(diffusers_dir()), "diffusers folder");
  expect_matches_torch(TaesdDecoder::load(diffusers_dir() + "/diffusion_pytorch_model.safetensors"),
                       "diffusers file");
}

// A whole TAESD module's state dict ("decoder.N..." plus "encoder.N...") and an
// original-layout .safetensors (ComfyUI's) decode the same.
TEST(Taesd, ModuleAndSafetensorsLayouts) {
  const TensorMap orig = load_torch_checkpoint(pth_file()).tensors;
  TensorMap module;
  for (const auto& [name, t] : orig) module.emplace("decoder." + name, t);
  module.emplace("encoder.0.weight", Tensor::zeros({8, 3, 3, 3}, DType::kF16));  // dropped
  const std::string dir = testing::temp_dir();
  save_safetensors(dir + "/module.safetensors", module);
  save_safetensors(dir + "/taesd_decoder.safetensors", orig);
  expect_matches_torch(TaesdDecoder::load(dir + "/module.safetensors"), "TAESD module state dict");
  expect_matches_torch(TaesdDecoder::load(dir + "/taesd_decoder.safetensors"), "original .safetensors");
}

TEST(Taesd, LayoutsMapToTheSameNames) {
  const TensorMap a = taesd_decoder_tensors(load_torch_checkpoint(pth_file()).tensors, "pth");
  const TensorMap b = taesd_decoder_tensors(
      load_safetensors(diffusers_dir() + "/diffusion_pytorch_model.safetensors").tensors, "diffusers");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(compare(t.to_f32_vector(), b.at(name).to_f32_vector()).max_abs, 0.0) << name;
  }
  // The declared specs are exactly the file's tensors, in the original names.
  const WeightSpecs specs = TaesdDecoder::expected_tensors(TaesdConfig::from_weights(a, "pth"));
  ASSERT_EQ(specs.size(), a.size());
  for (const auto& [name, shape] : specs) EXPECT_EQ(a.at(name).shape(), shape) << name;
  EXPECT_EQ(specs.front().first, "1.weight");
  EXPECT_EQ(specs.back().first, "19.bias");
}

// The published decoder: 64 channels, 1,222,531 parameters (taesd_decoder.pth).
TEST(Taesd, PublishedSize) {
  const TaesdDecoder dec(TaesdConfig::taesd(), TaesdDecoder::random_weights(TaesdConfig::taesd(), 1));
  EXPECT_EQ(dec.parameter_count(), 1222531u);
  const Tensor out = dec.decode(Tensor::zeros({1, 4, 3, 2}, DType::kF32));
  EXPECT_EQ(out.shape(), (Shape{1, 3, 24, 16}));
}

TEST(Taesd, FilesPerFamily) {
  const std::string dir = testing::temp_dir();
  EXPECT_FALSE(find_taesd_decoder({dir}, Family::kSD1));
  fs::copy_file(pth_file(), dir + "/taesd_decoder.pth");
  EXPECT_EQ(find_taesd_decoder({dir}, Family::kSD1), dir + "/taesd_decoder.pth");
  EXPECT_EQ(find_taesd_decoder({dir}, Family::kSD2), dir + "/taesd_decoder.pth");
  EXPECT_FALSE(find_taesd_decoder({dir}, Family::kSDXL));  // SDXL needs taesdxl_decoder
  // .safetensors first; then a diffusers folder; folders in order.
  fs::copy_file(pth_file(), dir + "/taesd_decoder.safetensors");
  EXPECT_EQ(find_taesd_decoder({dir}, Family::kSD1), dir + "/taesd_decoder.safetensors");
  const std::string other = testing::temp_dir();
  fs::create_directory(other + "/taesdxl");
  fs::copy_file(diffusers_dir() + "/diffusion_pytorch_model.safetensors",
                other + "/taesdxl/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(find_taesd_decoder({"/nonexistent", dir, other}, Family::kSDXL), other + "/taesdxl");
  EXPECT_EQ(find_taesd_decoder({other, dir}, Family::kSD1), dir + "/taesd_decoder.safetensors");
  EXPECT_STREQ(taesd_variant(Family::kSDXL).decoder_stem, "taesdxl_decoder");
}

void expect_io_error(const std::string& path, const std::string& needle) {
  const Error e = error_of([&] { TaesdDecoder::load(path); });
  EXPECT_EQ(e.code(), ErrorCode::kIo) << e.what();
  EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
}

TEST(Taesd, CorruptFilesAreRejectedByName) {
  const std::string dir = testing::temp_dir();
  // Truncated: the reader names the file.
  const std::string bytes = testing::read_file(diffusers_dir() + "/diffusion_pytorch_model.safetensors");
  {
    std::ofstream(dir + "/truncated.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  expect_io_error(dir + "/truncated.safetensors", "truncated.safetensors");
  {
    std::ofstream(dir + "/garbage.pth", std::ios::binary) << "not a checkpoint at all";
  }
  expect_io_error(dir + "/garbage.pth", "garbage.pth");

  TensorMap good = load_torch_checkpoint(pth_file()).tensors;
  // A tensor missing, one mis-shaped, one extra: each named.
  TensorMap missing = good;
  missing.erase("19.bias");
  save_safetensors(dir + "/missing.safetensors", missing);
  expect_io_error(dir + "/missing.safetensors", "missing '19.bias' (3)");
  TensorMap shaped = good;
  shaped["8.conv.2.weight"] = Tensor::zeros({8, 8, 1, 1}, DType::kF16);
  save_safetensors(dir + "/shaped.safetensors", shaped);
  expect_io_error(dir + "/shaped.safetensors", "'8.conv.2.weight' has shape (8,8,1,1), expected (8,8,3,3)");
  TensorMap extra = good;
  extra["20.weight"] = Tensor::zeros({3}, DType::kF16);
  save_safetensors(dir + "/extra.safetensors", extra);
  expect_io_error(dir + "/extra.safetensors", "unexpected '20.weight'");
  // Integer weights.
  TensorMap ints = good;
  ints["1.bias"] = Tensor::zeros({8}, DType::kI32);
  save_safetensors(dir + "/ints.safetensors", ints);
  expect_io_error(dir + "/ints.safetensors", "'1.bias' has dtype i32");
  // Not a TAESD decoder at all (a full VAE's names), a bad first conv, wrong paths.
  save_safetensors(dir + "/vae.safetensors", {{"decoder.conv_in.weight", Tensor::zeros({8, 4, 3, 3}, DType::kF16)}});
  expect_io_error(dir + "/vae.safetensors", "not a TAESD decoder");
  TensorMap flat = good;
  flat["1.weight"] = Tensor::zeros({8, 36}, DType::kF16);
  save_safetensors(dir + "/flat.safetensors", flat);
  expect_io_error(dir + "/flat.safetensors", "'1.weight' has shape (8,36), expected (C,latent,3,3)");
  expect_io_error(dir + "/nope.safetensors", "no such TAESD decoder file");
  fs::create_directory(dir + "/empty");
  expect_io_error(dir + "/empty", "without diffusion_pytorch_model.safetensors");
}

TEST(Taesd, BadLatentsAreInvalidArguments) {
  const TaesdDecoder dec = TaesdDecoder::load(pth_file());
  const Error e = error_of([&] { dec.decode(Tensor::zeros({1, 16, 4, 4}, DType::kF32)); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("(1,16,4,4)"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace diffuse
