// `diffuse preprocess`, `diffuse generate --preprocess` and `diffuse probe`
// as a user drives them (docs/controlnet.md):
//  - preprocess canny on the goldens' input gives the golden edge map
//    (tests/image/data/control_preprocess, made by Python's OpenCV), --list,
//    usage errors exit 2 naming the problem, an unreadable input exits 1;
//  - generate --preprocess canny equals generate with the edge map made
//    beforehand, and the PNG's parameters say "Module: canny";
//  - probe names a ControlNet folder's kind, control type (from its name) and
//    union-ness, a union config, and a checkpoint's family.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/png.h"
#include "test_controlnet_model.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

std::string quote(const std::string& s) { return testing::shell_quote(s); }
std::string goldens() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/image/data/control_preprocess/"; }

PngImage png_of(const std::string& path) {
  const std::string bytes = testing::read_file(path);
  return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

class CliPreprocess : public ::testing::Test {
 protected:
  void SetUp() override { work_ = testing::temp_dir(); }
  RunResult diffuse(const std::string& args) {
    return testing::run_command("cd " + quote(work_) + " && " + DIFFUSE_BINARY + " " + args + " 2>&1");
  }
  std::string work_;
};

TEST_F(CliPreprocess, CannyGivesTheGoldenEdgeMap) {
  const RunResult r = diffuse("preprocess canny " + quote(goldens() + "input.png") + " edges.png --res 128 --low 100 --high 200");
  ASSERT_EQ(r.code, 0) << r.out;
  const PngImage got = png_of(work_ + "/edges.png"), want = png_of(goldens() + "canny_up.png");
  EXPECT_EQ(got.width, want.width);
  EXPECT_EQ(got.height, want.height);
  EXPECT_EQ(got.rgb, want.rgb);
  // -a / -b are the same sliders.
  const RunResult ab = diffuse("preprocess canny " + quote(goldens() + "input.png") + " ab.png --res 64 -a 50 -b 150");
  ASSERT_EQ(ab.code, 0) << ab.out;
  EXPECT_EQ(png_of(work_ + "/ab.png").rgb, png_of(goldens() + "canny_down.png").rgb);
  const RunResult tile = diffuse("preprocess tile_resample " + quote(goldens() + "input.png") + " tile.png --rate 2.5");
  ASSERT_EQ(tile.code, 0) << tile.out;
  EXPECT_EQ(png_of(work_ + "/tile.png").rgb, png_of(goldens() + "tile_resample.png").rgb);
  const RunResult list = diffuse("preprocess --list");
  ASSERT_EQ(list.code, 0) << list.out;
  EXPECT_NE(list.out.find("canny"), std::string::npos);
  EXPECT_NE(list.out.find("Canny Low Threshold (100, 1 to 255)"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("depth_midas"), std::string::npos);
}

TEST_F(CliPreprocess, BadUsage) {
  const std::string in = quote(goldens() + "input.png");
  const RunResult unknown = diffuse("preprocess sobel " + in + " x.png");
  EXPECT_EQ(unknown.code, 2) << unknown.out;
  EXPECT_NE(unknown.out.find("unknown preprocessor 'sobel'; the available ones are none, canny"), std::string::npos)
      << unknown.out;
  const RunResult net = diffuse("preprocess openpose " + in + " x.png");
  EXPECT_EQ(net.code, 2) << net.out;
  EXPECT_NE(net.out.find("'openpose' is not available"), std::string::npos) << net.out;
  const RunResult high = diffuse("preprocess canny " + in + " x.png --low 300");
  EXPECT_EQ(high.code, 2) << high.out;
  EXPECT_NE(high.out.find("must be between 1 and 255, got 300"), std::string::npos) << high.out;
  const RunResult wrong_flag = diffuse("preprocess invert " + in + " x.png --low 10");
  EXPECT_EQ(wrong_flag.code, 2) << wrong_flag.out;
  EXPECT_NE(wrong_flag.out.find("--low does not apply to 'invert'"), std::string::npos) << wrong_flag.out;
  const RunResult mask = diffuse("preprocess inpaint_only " + in + " x.png");
  EXPECT_EQ(mask.code, 2) << mask.out;
  EXPECT_NE(mask.out.find("needs a mask"), std::string::npos) << mask.out;
  const RunResult missing = diffuse("preprocess canny no_such.png x.png");
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_NE(missing.out.find("no_such.png"), std::string::npos) << missing.out;
  EXPECT_FALSE(fs::exists(work_ + "/x.png"));
}

TEST_F(CliPreprocess, GenerateWithPreprocessEqualsTheMapMadeBeforehand) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string model = testing::fixtures_dir() + "/sd1/model";
  testing::make_controlnet_folder("sd1", 3, work_, "control_tiny_canny");
  auto generate = [&](const std::string& args, const std::string& out) {
    return diffuse("generate --device cpu --model " + quote(model) + " --prompt 'a red fox' --steps 3 -W 64 -H 64 "
                   "--seed 77 --sampler euler --controlnet-dir . --controlnet control_tiny_canny --output " + out + " " + args);
  };
  // 64x64 output from a 100x75 image: pixel perfect gives processor_res 64 (crop and resize: the larger scale).
  const RunResult pre = diffuse("preprocess canny " + quote(goldens() + "input.png") + " edges.png --res 64 --low 50 --high 150");
  ASSERT_EQ(pre.code, 0) << pre.out;
  const RunResult a = generate("--control-image edges.png --control-resize crop", "a.png");
  ASSERT_EQ(a.code, 0) << a.out;
  const RunResult b = generate("--control-image " + quote(goldens() + "input.png") +
                                   " --control-resize crop --preprocess canny --preprocess-a 50 --preprocess-b 150",
                               "b.png");
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(png_of(work_ + "/a.png").rgb, png_of(work_ + "/b.png").rgb);
  const std::string text = read_png_text(work_ + "/b.png").at("parameters");
  EXPECT_NE(text.find("ControlNet 0: \"Module: canny, Model: control_tiny_canny ["), std::string::npos) << text;
  EXPECT_NE(text.find("Pixel Perfect: True"), std::string::npos) << text;
  const RunResult bad = generate("--control-image edges.png --preprocess sobel", "c.png");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("--preprocess: unknown preprocessor 'sobel'"), std::string::npos) << bad.out;
  const RunResult no_mask = generate("--control-image edges.png --preprocess inpaint_only", "c.png");
  EXPECT_EQ(no_mask.code, 2) << no_mask.out;
  EXPECT_NE(no_mask.out.find("needs --init-image with --mask"), std::string::npos) << no_mask.out;
}

TEST_F(CliPreprocess, ProbeSaysWhatAFileIs) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string cn = testing::make_controlnet_folder("sd1", 3, work_, "control_v11p_tiny_canny");
  const RunResult r = diffuse("probe " + quote(cn) + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kind"], "ControlNet");
  EXPECT_EQ(j["control_type"], "canny");
  EXPECT_EQ(j["control_type_from"], "name");
  EXPECT_EQ(j["union"], false);
  EXPECT_EQ(j["layout"], "diffusers");
  EXPECT_EQ(j["cross_attention_dim"], 16);  // the tiny fixture's width: no published family
  EXPECT_TRUE(j["family"].is_null());
  const RunResult text = diffuse("probe " + quote(cn));
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("ControlNet, family unknown (cross-attention width 16), diffusers layout"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("control type: canny (from the name)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("union: no"), std::string::npos) << text.out;
  // A union model's config (xinsir controlnet-union-sdxl-1.0 is a ControlNetUnionModel of width 2048).
  fs::create_directories(work_ + "/union");
  std::ofstream(work_ + "/union/config.json") << R"({"_class_name": "ControlNetUnionModel", "cross_attention_dim": 2048})";
  const RunResult u = diffuse("probe union --json");
  ASSERT_EQ(u.code, 0) << u.out;
  const nlohmann::json uj = nlohmann::json::parse(u.out);
  EXPECT_EQ(uj["union"], true);
  EXPECT_EQ(uj["family"], "sdxl");
  // A checkpoint is not a ControlNet.
  const RunResult m = diffuse("probe " + quote(testing::fixtures_dir() + "/sd1/model") + " --json");
  ASSERT_EQ(m.code, 0) << m.out;
  const nlohmann::json mj = nlohmann::json::parse(m.out);
  EXPECT_EQ(mj["kind"], "checkpoint");
  EXPECT_EQ(mj["family"], "sd1");
  const RunResult none = diffuse("probe nothing_here");
  EXPECT_EQ(none.code, 1) << none.out;
}

}  // namespace
}  // namespace diffuse
