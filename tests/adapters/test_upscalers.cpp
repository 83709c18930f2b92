// UpscalerLibrary (adapters/upscalers.h): the folder listing, name lookup, the
// A1111 conventions around a model (BGR in [0, 1], clamp, 8-bit truncation,
// repeated native passes, Lanczos to the exact target), the built-in
// upscalers, errors, and concurrent use. The model itself is checked against
// torch in tests/models/test_rrdbnet.cpp; here its output is recomputed with
// rrdbnet::Model directly.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "adapters/upscalers.h"
#include "image/image_ops.h"
#include "io/checkpoint.h"
#include "models/rrdbnet.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::testing;
namespace fs = std::filesystem;

namespace {

const std::string kData = std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet";

image::Rgb test_image(int w, int h, uint32_t seed) {
  image::Rgb img;
  img.width = w;
  img.height = h;
  std::vector<float> n = noise(static_cast<size_t>(w) * h * 3, seed, 127.0f);
  for (float v : n) img.px.push_back(static_cast<uint8_t>(128.0f + v));
  return img;
}

// The model's 8-bit output as A1111's upscale_without_tiling computes it,
// written out here independently of upscalers.cpp.
image::Rgb reference_pass(const rrdbnet::Model& m, const image::Rgb& in) {
  const int64_t hw = int64_t{in.width} * in.height;
  std::vector<float> bgr(static_cast<size_t>(hw) * 3);
  for (int64_t i = 0; i < hw; ++i) {
    bgr[static_cast<size_t>(i)] = in.px[static_cast<size_t>(i) * 3 + 2] / 255.0f;           // B
    bgr[static_cast<size_t>(hw + i)] = in.px[static_cast<size_t>(i) * 3 + 1] / 255.0f;      // G
    bgr[static_cast<size_t>(2 * hw + i)] = in.px[static_cast<size_t>(i) * 3 + 0] / 255.0f;  // R
  }
  Tensor y = m.forward(Tensor::from_vector(bgr, {1, 3, in.height, in.width}));
  std::vector<float> v = y.to_f32_vector();
  image::Rgb out;
  out.height = static_cast<int>(y.dim(2));
  out.width = static_cast<int>(y.dim(3));
  const int64_t ohw = int64_t{out.width} * out.height;
  out.px.resize(static_cast<size_t>(ohw) * 3);
  for (int64_t i = 0; i < ohw; ++i)
    for (int c = 0; c < 3; ++c)
      out.px[static_cast<size_t>(i) * 3 + c] =
          static_cast<uint8_t>(255.0f * std::clamp(v[static_cast<size_t>((2 - c) * ohw + i)], 0.0f, 1.0f));
  return out;
}

struct Folder {
  std::string dir = temp_dir();
  Folder() {
    fs::create_directories(dir + "/sub");
    fs::copy_file(kData + "/x4_new.safetensors", dir + "/4x-Tiny.safetensors");
    fs::copy_file(kData + "/x4_old.pth", dir + "/sub/OldTiny.pth");
    fs::copy_file(kData + "/x2_unshuffle.safetensors", dir + "/RealESRGAN_x2plus.safetensors");
    std::ofstream(dir + "/2x-Broken.pth") << "not a checkpoint";
    std::ofstream(dir + "/readme.txt") << "not listed";
    TensorMap lora;
    lora["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"] = Tensor::zeros({4, 8}, DType::kF32);
    save_safetensors(dir + "/style_lora.safetensors", lora);
  }
};

TEST(Upscalers, ListsBuiltinsThenModelFilesWithTheirScale) {
  Folder f;
  UpscalerLibrary lib({f.dir});
  std::vector<UpscalerInfo> l = lib.list();
  std::vector<std::string> names;
  for (const auto& u : l) names.push_back(u.name);
  EXPECT_EQ(names, (std::vector<std::string>{"Lanczos", "Nearest", "2x-Broken", "4x-Tiny", "RealESRGAN_x2plus",
                                             "style_lora", "OldTiny"}));
  EXPECT_EQ(l[0].kind, "lanczos");
  EXPECT_EQ(l[1].kind, "nearest");
  EXPECT_EQ(l[2].scale, 2);  // cannot be read: the scale its name states
  EXPECT_EQ(l[3].scale, 4);
  EXPECT_EQ(l[3].kind, "esrgan");
  EXPECT_EQ(l[4].scale, 2);  // read from the tensors (pixel_unshuffle 2)
  EXPECT_EQ(l[6].scale, 4);
  EXPECT_TRUE(fs::path(l[3].path).is_absolute());

  // refresh() sees new and removed files.
  fs::remove(f.dir + "/4x-Tiny.safetensors");
  fs::copy_file(kData + "/x4_params_ema.pth", f.dir + "/Ema.pth");
  lib.refresh();
  names.clear();
  for (const auto& u : lib.list()) names.push_back(u.name);
  EXPECT_EQ(names, (std::vector<std::string>{"Lanczos", "Nearest", "2x-Broken", "Ema", "RealESRGAN_x2plus",
                                             "style_lora", "OldTiny"}));
}

TEST(Upscalers, ModelRunsAtItsFactorThenLanczosToTheTarget) {
  Folder f;
  UpscalerLibrary lib({f.dir});
  auto m = rrdbnet::load(f.dir + "/4x-Tiny.safetensors", Device::kCPU);
  image::Rgb in = test_image(9, 7, 3);

  // Exactly 4x: one pass, no resize.
  image::Rgb one = lib.upscale("4x-tiny", in, 36, 28, Device::kCPU);  // names match case-insensitively
  EXPECT_EQ(one.px, reference_pass(*m, in).px);

  // 3x: one pass (36x28), then Lanczos down to 27x21.
  image::Rgb three = lib.upscale("4x-Tiny", in, 27, 21, Device::kCPU);
  EXPECT_EQ(three.px, image::resize(reference_pass(*m, in), 27, 21).px);

  // 8x: two passes (144x112 after the second), then Lanczos to 70x56.
  image::Rgb eight = lib.upscale("4x-Tiny", in, 70, 56, Device::kCPU);
  EXPECT_EQ(eight.width, 70);
  EXPECT_EQ(eight.height, 56);
  EXPECT_EQ(eight.px, image::resize(reference_pass(*m, reference_pass(*m, in)), 70, 56).px);

  // The old-layout file of the same network gives the same pixels.
  EXPECT_EQ(lib.upscale("OldTiny", in, 36, 28, Device::kCPU).px, one.px);
}

TEST(Upscalers, TilingDoesNotChangeTheImageWithFullContext) {
  Folder f;
  UpscalerLibrary lib({f.dir});
  image::Rgb in = test_image(50, 34, 5);
  lib.set_tiling({0, 0});
  image::Rgb whole = lib.upscale("RealESRGAN_x2plus", in, 100, 68, Device::kCPU);
  lib.set_tiling({16, 48});  // 48 >= the x2 test model's receptive radius
  image::Rgb tiled = lib.upscale("RealESRGAN_x2plus", in, 100, 68, Device::kCPU);
  ASSERT_EQ(tiled.px.size(), whole.px.size());
  int off = 0;
  for (size_t i = 0; i < whole.px.size(); ++i) off += whole.px[i] != tiled.px[i];
  // f32 summation-order differences (<1e-6) can move a value across an 8-bit step only rarely.
  EXPECT_LE(off, static_cast<int>(whole.px.size() / 1000)) << off << " of " << whole.px.size() << " bytes differ";
  EXPECT_EQ(error_of([&] { lib.set_tiling({8, 0}); }).code(), ErrorCode::kInvalidArgument);
}

TEST(Upscalers, BuiltinsResize) {
  UpscalerLibrary lib({temp_dir()});
  image::Rgb in = test_image(3, 2, 9);
  image::Rgb nearest = lib.upscale("Nearest", in, 6, 4, Device::kCPU);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      for (int c = 0; c < 3; ++c)
        EXPECT_EQ(nearest.px[(y * 6 + x) * 3 + c], in.px[((y / 2) * 3 + x / 2) * 3 + c]) << x << "," << y;
  EXPECT_EQ(lib.upscale("lanczos", in, 12, 8, Device::kCPU).px, image::resize(in, 12, 8).px);
}

TEST(Upscalers, UnknownNamesBadFilesAndPaths) {
  Folder f;
  UpscalerLibrary lib({f.dir});
  image::Rgb in = test_image(4, 4, 1);
  Error e1 = error_of([&] { lib.upscale("4x-UltraSharp", in, 16, 16, Device::kCPU); });
  EXPECT_EQ(e1.code(), ErrorCode::kNotFound);
  EXPECT_NE(std::string(e1.what()).find("Upscaler not found: '4x-UltraSharp' (known: Lanczos, Nearest, 2x-Broken"),
            std::string::npos)
      << e1.what();

  Error e2 = error_of([&] { lib.upscale("2x-Broken", in, 8, 8, Device::kCPU); });
  EXPECT_EQ(e2.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e2.what()).find("2x-Broken.pth"), std::string::npos) << e2.what();

  Error e3 = error_of([&] { lib.upscale("style_lora", in, 8, 8, Device::kCPU); });
  EXPECT_EQ(e3.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e3.what()).find("its keys are a LoRA's"), std::string::npos) << e3.what();

  // A path: only when allowed (the CLI), never on the server.
  const std::string path = kData + "/x4_new.safetensors";
  EXPECT_EQ(lib.find(path).scale, 4);
  lib.set_allow_paths(false);
  EXPECT_EQ(error_of([&] { lib.find(path); }).code(), ErrorCode::kNotFound);

  EXPECT_EQ(error_of([&] { lib.upscale("Lanczos", in, 0, 8, Device::kCPU); }).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(error_of([&] { lib.upscale("Lanczos", image::Rgb{}, 8, 8, Device::kCPU); }).code(),
            ErrorCode::kInvalidArgument);
}

// The server calls upscale() from many threads; the weights load once and
// every thread gets the single-threaded result.
TEST(Upscalers, ConcurrentCallsAgree) {
  Folder f;
  UpscalerLibrary lib({f.dir});
  image::Rgb in = test_image(20, 12, 4);
  const image::Rgb expected = lib.upscale("4x-Tiny", in, 80, 48, Device::kCPU);
  UpscalerLibrary fresh({f.dir});  // nothing cached yet: the threads race to load
  std::vector<image::Rgb> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&fresh, &got, &in, i] { got[static_cast<size_t>(i)] = fresh.upscale("4x-Tiny", in, 80, 48, Device::kCPU); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g.px, expected.px);
}

}  // namespace
