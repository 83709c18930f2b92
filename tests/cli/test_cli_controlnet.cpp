// `diffuse generate --controlnet`, as a user drives it (docs/controlnet.md):
// a ControlNet in models/ControlNet (the default --controlnet-dir) named with a
// weight changes the picture and the PNG's parameters carry "ControlNet 0";
// weight 0 gives the picture without it; two units; usage errors exit 2
// naming the flag (a --controlnet without its --control-image, an unknown
// name, a bad weight or window), a ControlNet of another model exits 1 naming both.
#include <filesystem>
#include <fstream>

#include "io/png.h"
#include "test_controlnet_model.h"
#include "cli_adapter_fixture.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

std::string quote(const std::string& s) { return testing::shell_quote(s); }

class CliControlNet : public testing::CliAdapterFixture {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    make_work_folder();
    testing::make_controlnet_folder("sd1", 3, work_ + "/models/ControlNet", "control_tiny_canny");
    testing::make_controlnet_folder("sdxl", 4, work_, "xl_controlnet");
    std::vector<uint8_t> rgb(48 * 40 * 3);
    for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(((i / 3) % 48 / 6 % 2) * 255);
    const std::vector<uint8_t> png = encode_png(48, 40, rgb.data());
    std::ofstream(work_ + "/edges.png", std::ios::binary).write(reinterpret_cast<const char*>(png.data()), png.size());
    std::ofstream(work_ + "/broken.png") << "not a png";
  }
  std::string parameters(const std::string& out) { return read_png_text(work_ + "/" + out).at("parameters"); }
};

TEST_F(CliControlNet, ChangesThePictureAndSaysSo) {
  RunResult plain = generate("", "plain.png");
  ASSERT_EQ(plain.code, 0) << plain.out;
  RunResult with = generate("--controlnet control_tiny_canny:0.9 --control-image edges.png --control-end 0.8", "cn.png");
  ASSERT_EQ(with.code, 0) << with.out;
  EXPECT_NE(pixels("cn.png"), pixels("plain.png"));
  const std::string text = parameters("cn.png");
  EXPECT_NE(text.find("ControlNet 0: \"Module: none, Model: control_tiny_canny ["), std::string::npos) << text;
  EXPECT_NE(text.find("Weight: 0.9, Resize Mode: Just Resize"), std::string::npos) << text;
  EXPECT_NE(text.find("Guidance End: 0.8"), std::string::npos) << text;
  RunResult zero = generate("--controlnet control_tiny_canny:0 --control-image edges.png", "zero.png");
  ASSERT_EQ(zero.code, 0) << zero.out;
  EXPECT_EQ(pixels("zero.png"), pixels("plain.png"));
  RunResult two = generate("--controlnet control_tiny_canny:0.5 --control-image edges.png --controlnet " +
                               quote(work_ + "/models/ControlNet/control_tiny_canny") +
                               ":0.5 --control-image edges.png --control-mode balanced --control-mode prompt",
                           "two.png");
  ASSERT_EQ(two.code, 0) << two.out;
  EXPECT_NE(parameters("two.png").find("ControlNet 1: "), std::string::npos);
}

TEST_F(CliControlNet, BadInput) {
  RunResult no_image = generate("--controlnet control_tiny_canny", "x.png");
  EXPECT_EQ(no_image.code, 2) << no_image.out;
  EXPECT_NE(no_image.out.find("each --controlnet needs its --control-image"), std::string::npos) << no_image.out;
  RunResult unknown = generate("--controlnet nothing_here --control-image edges.png", "x.png");
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE(unknown.out.find("ControlNet 'nothing_here' not found"), std::string::npos) << unknown.out;
  EXPECT_NE(unknown.out.find("control_tiny_canny"), std::string::npos) << unknown.out;
  RunResult heavy = generate("--controlnet control_tiny_canny:3 --control-image edges.png", "x.png");
  EXPECT_EQ(heavy.code, 2) << heavy.out;
  EXPECT_NE(heavy.out.find("weight must be between 0 and 2, got 3"), std::string::npos) << heavy.out;
  RunResult window = generate("--controlnet control_tiny_canny --control-image edges.png --control-start 0.7 "
                              "--control-end 0.3", "x.png");
  EXPECT_EQ(window.code, 2) << window.out;
  RunResult corrupt = generate("--controlnet control_tiny_canny --control-image broken.png", "x.png");
  EXPECT_NE(corrupt.code, 0);
  EXPECT_NE(corrupt.out.find("--control-image broken.png"), std::string::npos) << corrupt.out;
  RunResult orphan = generate("--control-image edges.png", "x.png");
  EXPECT_EQ(orphan.code, 2) << orphan.out;
  RunResult other = generate("--controlnet " + quote(work_ + "/xl_controlnet") + " --control-image edges.png", "x.png");
  EXPECT_EQ(other.code, 2) << other.out;
  EXPECT_NE(other.out.find("'xl_controlnet' is for"), std::string::npos) << other.out;
  EXPECT_NE(other.out.find("is sd1"), std::string::npos) << other.out;
  RunResult help = testing::run_command(std::string(DIFFUSE_BINARY) + " generate --help");
  EXPECT_NE(help.out.find("--controlnet"), std::string::npos);
  EXPECT_NE(help.out.find("--control-image"), std::string::npos);
}

}  // namespace
}  // namespace diffuse
