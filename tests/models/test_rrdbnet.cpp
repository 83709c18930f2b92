// RRDBNet (ESRGAN / Real-ESRGAN) against torch: tests/models/data/rrdbnet,
// written by tools/reference/rrdbnet_goldens.py (Debian python3-torch 1.13, a
// plain-torch RRDBNet from the published architecture, seeded random weights).
// The same x4 network in three files (BasicSR keys as F16 safetensors,
// params_ema .pth, old ESRGAN layout as f16 .pth) and an x2 pixel_unshuffle
// model must give the torch outputs; tiles must not change the result; files
// that are not RRDBNets are refused naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "io/checkpoint.h"
#include "models/rrdbnet.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

const std::string kDir = std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet";

const Checkpoint& goldens() {
  static const Checkpoint g = load_safetensors(kDir + "/goldens.safetensors");
  return g;
}
Tensor golden(const std::string& name) { return goldens().tensors.at(name).to(DType::kF32); }

// f32 end to end: the torch outputs (scale ~0.2) to f32 accumulation-order error.
constexpr double kGoldenAbs = 1e-5;

void expect_matches(const rrdbnet::Model& m, const std::string& in, const std::string& out) {
  Tensor y = m.forward(golden(in));
  ASSERT_EQ(y.shape(), golden(out).shape());
  Diff d = compare(y.to_f32_vector(), golden(out).to_f32_vector());
  EXPECT_LE(d.max_abs, kGoldenAbs) << d.str();
  std::printf("  %s: max abs error %.3g (max rel %.3g)\n", out.c_str(), d.max_abs, d.max_rel);
}

TEST(RrdbNet, BasicSrSafetensorsF16MatchesTorch) {
  auto m = rrdbnet::load(kDir + "/x4_new.safetensors", Device::kCPU);
  EXPECT_EQ(m->layout, rrdbnet::KeyLayout::kBasicSR);
  const rrdbnet::Config& c = m->config;
  EXPECT_EQ(c.num_feat, 4);
  EXPECT_EQ(c.num_block, 2);
  EXPECT_EQ(c.num_grow_ch, 2);
  EXPECT_EQ(c.num_upsample, 2);
  EXPECT_EQ(c.unshuffle, 1);
  EXPECT_EQ(c.in_channels, 3);
  EXPECT_EQ(c.out_channels, 3);
  EXPECT_EQ(c.scale(), 4);
  expect_matches(*m, "x4_in", "x4_out");
}

TEST(RrdbNet, ParamsEmaPthMatchesTorch) {
  auto m = rrdbnet::load(kDir + "/x4_params_ema.pth", Device::kCPU);
  EXPECT_EQ(m->layout, rrdbnet::KeyLayout::kBasicSR);
  EXPECT_EQ(m->config.scale(), 4);
  expect_matches(*m, "x4_in", "x4_out");
}

TEST(RrdbNet, OldEsrganLayoutPthMatchesTorch) {
  auto m = rrdbnet::load(kDir + "/x4_old.pth", Device::kCPU);
  EXPECT_EQ(m->layout, rrdbnet::KeyLayout::kOldEsrgan);
  EXPECT_EQ(m->config.num_block, 2);
  EXPECT_EQ(m->config.num_upsample, 2);
  expect_matches(*m, "x4_in", "x4_out");
}

TEST(RrdbNet, X2PixelUnshuffleMatchesTorch) {
  auto m = rrdbnet::load(kDir + "/x2_unshuffle.safetensors", Device::kCPU);  // keys under "params."
  EXPECT_EQ(m->config.unshuffle, 2);
  EXPECT_EQ(m->config.in_channels, 3);
  EXPECT_EQ(m->config.num_block, 1);
  EXPECT_EQ(m->config.scale(), 2);
  expect_matches(*m, "x2_in", "x2_out");
}

// The whole-image path of upscale() (no tiles) is forward() itself.
TEST(RrdbNet, UpscaleWithoutTilesIsForward) {
  auto m = rrdbnet::load(kDir + "/x4_new.safetensors", Device::kCPU);
  Tensor y = rrdbnet::upscale(*m, golden("x4_in"), rrdbnet::TileOptions{0, 0});
  Diff d = compare(y.to_f32_vector(), golden("x4_out").to_f32_vector());
  EXPECT_LE(d.max_abs, kGoldenAbs) << d.str();
}

Tensor random_image(int64_t h, int64_t w, uint32_t seed) {
  std::vector<float> v = noise(static_cast<size_t>(3 * h * w), seed, 0.5f);
  for (float& x : v) x += 0.5f;
  return Tensor::from_vector(v, {1, 3, h, w});
}

// With an overlap of at least the receptive radius, no output pixel of a
// tile's core sees the tile's edge (its zero padding lies at the image's own
// edges only), so tiles compute exactly what the whole image computes; the
// only difference left is f32 summation order (oneDNN may pick other kernels
// for other sizes), which is ~1e-7 of the outputs. Bound: kGoldenAbs.
TEST(RrdbNet, TilesWithFullContextEqualOnePass) {
  for (const char* file : {"x4_new.safetensors", "x2_unshuffle.safetensors"}) {
    SCOPED_TRACE(file);
    auto m = rrdbnet::load(kDir + "/" + file, Device::kCPU);
    // Odd sizes: the x2 model pads by reflection to even ones and crops back.
    Tensor x = random_image(41, 37, 7);
    const int s = m->config.scale();
    Tensor whole = rrdbnet::upscale(*m, x, rrdbnet::TileOptions{0, 0});
    ASSERT_EQ(whole.shape(), (Shape{1, 3, 41 * s, 37 * s}));
    int calls = 0, total = 0;
    const int radius = rrdbnet::receptive_radius(m->config);
    Tensor tiled = rrdbnet::upscale(*m, x, rrdbnet::TileOptions{16, radius}, [&](int done, int n) {
      ++calls;
      total = n;
      EXPECT_EQ(done, calls);
    });
    EXPECT_EQ(total, 9);  // 3 x 3 tiles of 16 (41 and 37 -> 3 each, after padding to 42 x 38 for x2)
    EXPECT_EQ(calls, 9);
    Diff d = compare(tiled.to_f32_vector(), whole.to_f32_vector());
    EXPECT_LE(d.max_abs, kGoldenAbs) << d.str();
    std::printf("  %s: tiled (16 + %d context) vs whole: max abs %.3g\n", file, radius, d.max_abs);
  }
}

// With less context the tiles differ near their edges (the point of the
// overlap): measured, and checked to be a real difference, so the test above
// cannot pass by running one tile.
TEST(RrdbNet, TilesWithShortContextDifferNearEdges) {
  auto m = rrdbnet::load(kDir + "/x4_new.safetensors", Device::kCPU);
  Tensor x = random_image(40, 40, 11);
  Tensor whole = rrdbnet::upscale(*m, x, rrdbnet::TileOptions{0, 0});
  Tensor tiled = rrdbnet::upscale(*m, x, rrdbnet::TileOptions{16, 2});
  Diff d = compare(tiled.to_f32_vector(), whole.to_f32_vector());
  EXPECT_GT(d.max_abs, 1e-4) << d.str();
  std::printf("  overlap 2 of radius %d: max abs %.3g\n", rrdbnet::receptive_radius(m->config), d.max_abs);
}

// ---- files that are not RRDBNets ----------------------------------------------

std::string write_bytes(const std::string& name, const std::string& bytes) {
  std::string path = temp_dir() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(RrdbNet, LoraFileIsRefusedAsNotAnUpscaler) {
  TensorMap lora;
  lora["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = Tensor::zeros({4, 320}, DType::kF32);
  lora["lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"] = Tensor::zeros({320, 4}, DType::kF32);
  std::string path = temp_dir() + "/style.safetensors";
  save_safetensors(path, lora);
  Error e = error_of([&] { rrdbnet::load(path, Device::kCPU); });
  EXPECT_EQ(e.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e.what()).find("not an ESRGAN / Real-ESRGAN (RRDBNet) model (its keys are a LoRA's)"),
            std::string::npos)
      << e.what();
  EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
}

TEST(RrdbNet, TruncatedAndForeignFilesAreRefused) {
  std::string pth = read_file(kDir + "/x4_old.pth");
  Error e1 = error_of([&] { rrdbnet::load(write_bytes("cut.pth", pth.substr(0, pth.size() / 2)), Device::kCPU); });
  EXPECT_EQ(e1.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e1.what()).find("cut.pth"), std::string::npos) << e1.what();
  Error e2 = error_of([&] { rrdbnet::load(write_bytes("notes.pth", "these are not weights\n"), Device::kCPU); });
  EXPECT_EQ(e2.code(), ErrorCode::kIo);
  Error e3 = error_of([&] { rrdbnet::load(temp_dir() + "/absent.pth", Device::kCPU); });
  EXPECT_EQ(e3.code(), ErrorCode::kNotFound);
  EXPECT_NE(std::string(e3.what()).find("absent.pth"), std::string::npos) << e3.what();
}

TEST(RrdbNet, MissingOrMisShapedTensorsAreNamed) {
  TensorMap t = load_safetensors(kDir + "/x4_new.safetensors").tensors;
  TensorMap missing = t;
  missing.erase("body.1.rdb2.conv3.weight");
  Error e1 = error_of([&] { rrdbnet::detect(missing, "m.safetensors"); });
  EXPECT_EQ(e1.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e1.what()).find("missing 'body.1.rdb2.conv3.weight' (2,8,3,3)"), std::string::npos) << e1.what();

  TensorMap wrong = t;
  wrong["conv_hr.weight"] = Tensor::zeros({4, 5, 3, 3}, DType::kF32);
  Error e2 = error_of([&] { rrdbnet::detect(wrong, "m.safetensors"); });
  EXPECT_NE(std::string(e2.what()).find("'conv_hr.weight' has shape (4,5,3,3), expected (4,4,3,3)"), std::string::npos)
      << e2.what();

  TensorMap channels = t;
  channels["conv_first.weight"] = Tensor::zeros({4, 5, 3, 3}, DType::kF32);
  Error e3 = error_of([&] { rrdbnet::detect(channels, "m.safetensors"); });
  EXPECT_NE(std::string(e3.what()).find("conv_first takes 5 channels and conv_last gives 3"), std::string::npos)
      << e3.what();
}

TEST(RrdbNet, OldLayoutVariantsAreRefusedByName) {
  TensorMap t = load_torch_checkpoint(kDir + "/x4_old.pth").tensors;
  TensorMap plus = t;
  plus["model.1.sub.0.RDB1.conv1x1.weight"] = Tensor::zeros({2, 4, 1, 1}, DType::kF32);
  Error e1 = error_of([&] { rrdbnet::detect(plus, "plus.pth"); });
  EXPECT_NE(std::string(e1.what()).find("'model.1.sub.0.RDB1.conv1x1.weight'"), std::string::npos) << e1.what();

  TensorMap no_last = t;
  no_last.erase("model.10.weight");
  no_last.erase("model.10.bias");
  Error e2 = error_of([&] { rrdbnet::detect(no_last, "short.pth"); });
  EXPECT_EQ(e2.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e2.what()).find("model.3, model.6, model.8"), std::string::npos) << e2.what();
}

}  // namespace
