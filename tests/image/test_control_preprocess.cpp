// ControlNet preprocessors (src/image/control_preprocess.h) against
// tests/image/data/control_preprocess: the outputs of
// tools/reference/control_preprocess_goldens.py, which runs the steps of
// sd-webui-controlnet's preprocessors with Python's OpenCV and numpy
// (including numpy's seeded legacy RandomState for the shuffle). Same OpenCV
// (Debian 4.6.0) on both sides: the maps must match byte for byte.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "image/control_preprocess.h"
#include "io/png.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::image;

namespace {

using diffuse::testing::error_of;

std::string data_dir() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/image/data/control_preprocess/"; }

Rgb read_rgb(const std::string& name) {
  const std::string bytes = diffuse::testing::read_file(data_dir() + name);
  PngImage im = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return Rgb{im.width, im.height, std::move(im.rgb)};
}

nlohmann::json cases() { return nlohmann::json::parse(diffuse::testing::read_file(data_dir() + "cases.json")); }

// Pixels that differ, and the largest difference.
std::pair<size_t, int> diff(const Rgb& a, const Rgb& b) {
  size_t n = 0;
  int worst = 0;
  for (size_t i = 0; i < a.px.size(); ++i) {
    const int d = std::abs(int(a.px[i]) - int(b.px[i]));
    n += d != 0;
    worst = std::max(worst, d);
  }
  return {n, worst};
}

void expect_invalid(const std::function<void()>& f, const std::string& fragment) {
  const Error e = error_of(f);
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
  EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "'" << e.what() << "' lacks '" << fragment << "'";
}

TEST(ControlPreprocess, MatchesTheReferenceByteForByte) {
  const Rgb input = read_rgb("input.png");
  ASSERT_EQ(input.width, 100);
  ASSERT_EQ(input.height, 75);
  const nlohmann::json all = cases();
  ASSERT_GE(all["cases"].size(), 7u);
  for (auto it = all["cases"].begin(); it != all["cases"].end(); ++it) {
    SCOPED_TRACE(it.key());
    const nlohmann::json& c = it.value();
    const nlohmann::json& prm = c["params"];
    PreprocessOptions o;
    o.resolution = prm.value("processor_res", -1.0);
    o.threshold_a = prm.value("threshold_a", -1.0);
    o.threshold_b = prm.value("threshold_b", -1.0);
    o.seed = prm.value("seed", 0u);
    const ControlMap got = preprocess_control(c["module"].get<std::string>(), input, o);
    const Rgb want = read_rgb(c["file"].get<std::string>());
    ASSERT_EQ(got.image.width, want.width);
    ASSERT_EQ(got.image.height, want.height);
    const auto [n, worst] = diff(got.image, want);
    EXPECT_EQ(n, 0u) << "pixels differing, worst by " << worst;
    EXPECT_TRUE(got.mask.empty());
  }
}

TEST(ControlPreprocess, CannyMakesEdgesNotAPicture) {
  // The map is binary (0 / 255, grey: the three channels equal) and has edges.
  const Rgb input = read_rgb("input.png");
  const ControlMap m = preprocess_control("canny", input, {});
  EXPECT_EQ(std::min(m.image.width, m.image.height), 512);  // the default processor_res
  size_t on = 0;
  for (size_t i = 0; i < m.image.px.size(); i += 3) {
    ASSERT_TRUE(m.image.px[i] == 0 || m.image.px[i] == 255);
    ASSERT_EQ(m.image.px[i], m.image.px[i + 1]);
    ASSERT_EQ(m.image.px[i], m.image.px[i + 2]);
    on += m.image.px[i] == 255;
  }
  EXPECT_GT(on, 500u);
  EXPECT_LT(on, m.image.px.size() / 3 / 4);
}

TEST(ControlPreprocess, InvertNoneAndTileBelowTheThresholdAreExact) {
  const Rgb input = read_rgb("input.png");
  const Rgb inv = preprocess_control("invert", input, {}).image;
  ASSERT_EQ(inv.px.size(), input.px.size());
  for (size_t i = 0; i < inv.px.size(); ++i) ASSERT_EQ(inv.px[i], 255 - input.px[i]);
  // The extension's label works as the name.
  EXPECT_EQ(preprocess_control("invert (from white bg & black line)", input, {}).image.px, inv.px);
  EXPECT_EQ(preprocess_control("none", input, {}).image.px, input.px);
  EXPECT_EQ(preprocess_control("", input, {}).image.px, input.px);
  PreprocessOptions keep;
  keep.threshold_a = 1.05;  // below 1.1: the image as it is
  EXPECT_EQ(preprocess_control("tile_resample", input, keep).image.px, input.px);
  // The default rate (1) keeps it too.
  EXPECT_EQ(preprocess_control("tile_resample", input, {}).image.px, input.px);
}

TEST(ControlPreprocess, ShuffleDependsOnTheSeedOnly) {
  const Rgb input = read_rgb("input.png");
  PreprocessOptions a;
  a.resolution = 64;
  a.seed = 5;
  PreprocessOptions b = a;
  b.seed = 6;
  const Rgb x = preprocess_control("shuffle", input, a).image, y = preprocess_control("shuffle", input, a).image;
  EXPECT_EQ(x.px, y.px);
  EXPECT_NE(x.px, preprocess_control("shuffle", input, b).image.px);
}

TEST(ControlPreprocess, InpaintKeepsTheImageAndTheMask) {
  const Rgb input = read_rgb("input.png");
  PreprocessOptions o;
  o.mask = Gray{input.width, input.height, std::vector<uint8_t>(input.px.size() / 3, 0)};
  for (int y = 10; y < 30; ++y)
    for (int x = 20; x < 60; ++x) o.mask.px[static_cast<size_t>(y * input.width + x)] = 255;
  for (const char* name : {"inpaint_only", "inpaint", "inpaint_global_harmonious"}) {
    const ControlMap m = preprocess_control(name, input, o);
    EXPECT_EQ(m.image.px, input.px) << name;
    EXPECT_EQ(m.mask.px, o.mask.px) << name;
  }
  // The display: masked pixels at half brightness (alpha 255 - 255 / 2 = 128 over black).
  const Rgb d = inpaint_display(input, o.mask);
  const size_t in = static_cast<size_t>(15 * input.width + 30) * 3, out = 0;
  EXPECT_EQ(d.px[in], (input.px[in] * 128 + 127) / 255);
  EXPECT_EQ(d.px[out], input.px[out]);
}

TEST(ControlPreprocess, PixelPerfectResolution) {
  const nlohmann::json all = cases();
  ASSERT_GE(all["pixel_perfect"].size(), 10u);
  for (const auto& c : all["pixel_perfect"]) {
    const ResizeMode mode = c["fill"].get<bool>() ? ResizeMode::kResizeAndFill : ResizeMode::kCropAndResize;
    EXPECT_EQ(pixel_perfect_resolution(c["raw"][0], c["raw"][1], c["target"][0], c["target"][1], mode),
              c["resolution"].get<int>())
        << c.dump();
  }
  // Just resize uses the larger scale, as crop and resize does.
  EXPECT_EQ(pixel_perfect_resolution(640, 480, 512, 768, ResizeMode::kJustResize), 768);
}

TEST(ControlPreprocess, ListsNetworkPreprocessorsAsUnavailable) {
  const auto& all = control_preprocessors();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front().name, "none");
  for (const char* name : {"canny", "invert", "tile_resample", "blur_gaussian", "shuffle", "inpaint", "inpaint_only"}) {
    const PreprocessorInfo* p = find_control_preprocessor(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_TRUE(p->available) << name;
  }
  for (const char* name : {"depth_midas", "depth", "openpose_full", "lineart_realistic", "softedge_pidinet"}) {
    const PreprocessorInfo* p = find_control_preprocessor(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_FALSE(p->available) << name;
    EXPECT_NE(p->reason.find("network"), std::string::npos);
  }
  const PreprocessorInfo* canny = find_control_preprocessor("Canny");
  ASSERT_TRUE(canny && canny->threshold_a && canny->threshold_b && canny->resolution);
  EXPECT_EQ(canny->threshold_a->value, 100);
  EXPECT_EQ(canny->threshold_b->value, 200);
  EXPECT_EQ(canny->resolution->value, 512);
  EXPECT_EQ(control_preprocessor_list().rfind("none, canny", 0), 0u);
}

TEST(ControlPreprocess, BadInput) {
  const Rgb input = read_rgb("input.png");
  expect_invalid([&] { preprocess_control("sobel", input, {}); }, "unknown preprocessor 'sobel': the available ones are none, canny");
  expect_invalid([&] { preprocess_control("depth_midas", input, {}); }, "'depth_midas' is not available");
  PreprocessOptions o;
  o.threshold_a = 300;
  expect_invalid([&] { preprocess_control("canny", input, o); }, "threshold_a of 'canny' (Canny Low Threshold) must be between 1 and 255, got 300");
  o = {};
  o.threshold_b = 0.5;
  expect_invalid([&] { preprocess_control("canny", input, o); }, "threshold_b of 'canny'");
  o = {};
  o.resolution = 32;
  expect_invalid([&] { preprocess_control("canny", input, o); }, "processor_res of 'canny' (Preprocessor Resolution) must be between 64 and 2048");
  o = {};
  o.threshold_a = 9;
  expect_invalid([&] { preprocess_control("tile_resample", input, o); }, "between 1 and 8, got 9");
  expect_invalid([&] { preprocess_control("inpaint_only", input, {}); }, "needs a mask");
  o = {};
  o.mask = Gray{10, 10, std::vector<uint8_t>(100, 255)};
  expect_invalid([&] { preprocess_control("inpaint_only", input, o); }, "must have the same size");
  expect_invalid([&] { preprocess_control("canny", Rgb{}, {}); }, "the image is empty");
}

}  // namespace
