// `diffuse upscale` as a user runs it (the real binary): a model from
// models/ESRGAN under the working directory, from --upscaler-dir and by path;
// the output's pixels are UpscalerLibrary's, its PNG text keeps "parameters"
// and adds A1111's "postprocessing"; Lanczos by default; usage errors exit 2,
// unreadable inputs 1; --help and --list.
#include <gtest/gtest.h>

#include <filesystem>

#include "adapters/upscalers.h"
#include "image/image_ops.h"
#include "io/png.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::testing;
namespace fs = std::filesystem;

namespace {

const std::string kData = std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet";

class CliUpscale : public ::testing::Test {
 protected:
  void SetUp() override {
    work_ = temp_dir();
    fs::create_directories(work_ + "/models/ESRGAN");
    fs::copy_file(kData + "/x4_old.pth", work_ + "/models/ESRGAN/4x-Tiny.pth");
    in_ = image::Rgb{24, 18, {}};
    for (float v : noise(24 * 18 * 3, 12, 127.0f)) in_.px.push_back(static_cast<uint8_t>(128.0f + v));
    write_png(work_ + "/in.png", in_.width, in_.height, in_.px.data(), {{"parameters", "a fox\nSteps: 20, Seed: 7"}});
  }
  RunResult run(const std::string& args) {
    return run_command("cd " + shell_quote(work_) + " && " + DIFFUSE_BINARY + " upscale " + args);
  }
  PngImage read(const std::string& name) {
    std::string b = read_file(work_ + "/" + name);
    return read_png(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  }
  std::string work_;
  image::Rgb in_;
};

TEST_F(CliUpscale, ModelFromTheDefaultFolder) {
  RunResult r = run("in.png -o out.png --scale 4 --model 4x-Tiny --device cpu");
  ASSERT_EQ(r.code, 0) << r.out;
  PngImage out = read("out.png");
  EXPECT_EQ(out.width, 96);
  EXPECT_EQ(out.height, 72);
  UpscalerLibrary lib({work_ + "/models/ESRGAN"});
  EXPECT_EQ(out.rgb, lib.upscale("4x-Tiny", in_, 96, 72, Device::kCPU).px);
  PngText text = read_png_text(work_ + "/out.png");
  EXPECT_EQ(text["parameters"], "a fox\nSteps: 20, Seed: 7");
  EXPECT_EQ(text["postprocessing"], "Postprocess upscale by: 4, Postprocess upscaler: 4x-Tiny");
}

TEST_F(CliUpscale, ByPathAndFromUpscalerDirGiveTheSameImage) {
  fs::create_directories(work_ + "/other");
  fs::copy_file(kData + "/x4_new.safetensors", work_ + "/other/Tiny.safetensors");
  RunResult a = run("in.png -o a.png --scale 2 --model " + shell_quote(kData + "/x4_params_ema.pth") + " --device cpu --tile 16");
  ASSERT_EQ(a.code, 0) << a.out;
  RunResult b = run("in.png -o b.png --scale 2 --upscaler-dir other --model Tiny --device cpu --tile 0");
  ASSERT_EQ(b.code, 0) << b.out;
  PngImage ia = read("a.png"), ib = read("b.png");
  EXPECT_EQ(ia.width, 48);
  EXPECT_EQ(ia.height, 32);  // 36 rounded down to a multiple of 8, as A1111
  // The same network (params_ema .pth and F16 safetensors), tiled and not: pixels within 1 step.
  ASSERT_EQ(ia.rgb.size(), ib.rgb.size());
  int worst = 0;
  for (size_t i = 0; i < ia.rgb.size(); ++i) worst = std::max(worst, std::abs(int(ia.rgb[i]) - int(ib.rgb[i])));
  EXPECT_LE(worst, 1);
  EXPECT_EQ(read_png_text(work_ + "/b.png")["postprocessing"], "Postprocess upscale by: 2, Postprocess upscaler: Tiny");
}

TEST_F(CliUpscale, LanczosByDefaultAndScaleTo) {
  RunResult r = run("in.png --width 40 --height 40");
  ASSERT_EQ(r.code, 0) << r.out;
  PngImage out = read("in-upscaled.png");  // default output name
  EXPECT_EQ(out.width, 40);
  EXPECT_EQ(out.height, 40);
  // 24x18 covers 40x40 at 53x40, centre-cropped from x = 26 - 20 = 6.
  EXPECT_EQ(out.rgb, image::crop(image::resize(in_, 53, 40), {6, 0, 40, 40}).px);
  EXPECT_EQ(read_png_text(work_ + "/in-upscaled.png")["postprocessing"],
            "Postprocess upscale to: 40x40, Postprocess crop to: 40x40, Postprocess upscaler: Lanczos");
}

TEST_F(CliUpscale, ErrorsAndHelp) {
  RunResult unknown = run("in.png --model 4x-UltraSharp");
  EXPECT_EQ(unknown.code, 2) << unknown.out;
  EXPECT_NE(unknown.out.find("Upscaler not found: '4x-UltraSharp' (known: Lanczos, Nearest, 4x-Tiny)"),
            std::string::npos)
      << unknown.out;
  EXPECT_EQ(run("in.png --scale 0").code, 2);
  EXPECT_EQ(run("in.png --width 100").code, 2);
  EXPECT_EQ(run("in.png --tile 8 --model 4x-Tiny").code, 2);
  EXPECT_EQ(run("in.png --device tpu --model 4x-Tiny").code, 2);
  RunResult missing = run("absent.png");
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_NE(missing.out.find("absent.png"), std::string::npos) << missing.out;
  RunResult lora_like = run("in.png --model " + shell_quote(work_ + "/in.png"));  // not a model file: not a path
  EXPECT_EQ(lora_like.code, 2) << lora_like.out;

  RunResult help = run("--help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--scale", "--model", "--tile", "--tile-overlap", "--upscaler-dir", "--device", "--width"})
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  RunResult list = run("--list");
  EXPECT_EQ(list.code, 0);
  EXPECT_NE(list.out.find("4x-Tiny"), std::string::npos) << list.out;
}

}  // namespace
