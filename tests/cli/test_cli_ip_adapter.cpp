// `diffuse generate --ip-adapter`, as a user drives it (docs/ip-adapter.md): an
// adapter in models/ControlNet (the default --controlnet-dir) with its
// image_encoder/ beside it changes the picture and the PNG's parameters carry
// the unit; --ip-scale 0 gives the picture without it; usage errors exit 2
// naming the flag; a missing encoder, an unreadable image or an adapter of
// another family exit 1 with a message naming the problem.
#include <filesystem>
#include <fstream>

#include "io/png.h"
#include "cli_adapter_fixture.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

std::string quote(const std::string& s) { return testing::shell_quote(s); }
std::string data() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/adapters/data/ipadapter"; }

class CliIpAdapter : public testing::CliAdapterFixture {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    make_work_folder();
    fs::copy_file(data() + "/sd1_base.bin", work_ + "/models/ControlNet/ip-adapter_tiny.bin");
    fs::copy(data() + "/image_encoder", work_ + "/models/ControlNet/image_encoder", fs::copy_options::recursive);
    fs::create_directories(work_ + "/lonely");
    fs::copy_file(data() + "/sd1_base.bin", work_ + "/lonely/ip-adapter_tiny.bin");
    fs::copy_file(data() + "/ref_a.png", work_ + "/ref.png");
    std::ofstream(work_ + "/broken.png") << "not a png";
  }
};

TEST_F(CliIpAdapter, ChangesThePictureAndSaysSo) {
  RunResult plain = generate("", "plain.png");
  ASSERT_EQ(plain.code, 0) << plain.out;
  RunResult with = generate("--ip-adapter ip-adapter_tiny --ip-image ref.png --ip-scale 0.6", "ip.png");
  ASSERT_EQ(with.code, 0) << with.out;
  EXPECT_NE(pixels("ip.png"), pixels("plain.png"));
  const std::string text = read_png_text(work_ + "/ip.png").at("parameters");
  EXPECT_NE(text.find("ControlNet 0: \"Module: ip-adapter_clip, Model: ip-adapter_tiny ["), std::string::npos) << text;
  EXPECT_NE(text.find("Weight: 0.6"), std::string::npos) << text;
  RunResult zero = generate("--ip-adapter ip-adapter_tiny --ip-image ref.png --ip-scale 0", "zero.png");
  ASSERT_EQ(zero.code, 0) << zero.out;
  EXPECT_EQ(pixels("zero.png"), pixels("plain.png"));
  RunResult two = generate("--ip-adapter ip-adapter_tiny --ip-image ref.png --ip-image ref.png "
                           "--ip-block-scales '{\"down\": {\"block_1\": [0.0, 1.0]}, \"mid\": 0.5}'", "two.png");
  ASSERT_EQ(two.code, 0) << two.out;
}

TEST_F(CliIpAdapter, ErrorsNameTheProblem) {
  RunResult r = generate("--ip-adapter ip-adapter_tiny", "x.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--ip-image"), std::string::npos) << r.out;
  r = generate("--ip-image ref.png", "x.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--ip-adapter"), std::string::npos) << r.out;
  r = generate("--ip-adapter ip-adapter_tiny --ip-image ref.png --ip-scale 3", "x.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--ip-scale"), std::string::npos) << r.out;
  r = generate("--ip-adapter no_such_adapter --ip-image ref.png", "x.png");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("no_such_adapter"), std::string::npos) << r.out;
  r = generate("--ip-adapter ip-adapter_tiny --ip-image broken.png", "x.png");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("broken.png"), std::string::npos) << r.out;
  r = generate("--ip-adapter lonely/ip-adapter_tiny.bin --ip-image ref.png", "x.png");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("lonely/image_encoder/model.safetensors"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(work_ + "/x.png"));
  // An SD1 adapter on the SDXL model names both families.
  r = testing::run_command("cd " + quote(work_) + " && " + DIFFUSE_BINARY + " generate --device cpu --model " +
                           quote(testing::fixtures_dir() + "/sdxl/model") + " --prompt x --steps 2 -W 64 -H 64 " +
                           "--ip-adapter ip-adapter_tiny --ip-image ref.png --output " + quote(work_ + "/y.png"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("token width 16, 16 cross-attention layers), but sdxl model"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace diffuse
