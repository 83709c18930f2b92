// The ControlNet preprocessors on the A1111 API (src/server/controlnet_preprocess_api.h):
// /controlnet/module_list's shape (the usable list; every module's sliders;
// the network ones unavailable with the reason), /controlnet/detect returning
// what the preprocessor itself makes (checked against the goldens in
// tests/image/test_control_preprocess.cpp), a txt2img unit with module canny
// equal to sending the canny map with module none, pixel perfect, and bad
// input answered 400 with the server serving on.
#include <gtest/gtest.h>

#include "image/control_preprocess.h"
#include "io/png.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"
#include "test_controlnet_model.h"

namespace diffuse::testing {
namespace {

// A picture with edges: a bright disc and bar on a dark gradient.
image::Rgb picture(int w, int h) {
  image::Rgb im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool disc = (x - w / 3) * (x - w / 3) + (y - h / 2) * (y - h / 2) < (h / 4) * (h / 4);
      const bool bar = x > 2 * w / 3 && x < 2 * w / 3 + w / 8;
      for (int c = 0; c < 3; ++c)
        im.px[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>(disc ? 230 - 40 * c : bar ? 40 + 60 * c : (x + y) * 60 / (w + h));
    }
  return im;
}

std::string b64(const image::Rgb& im) {
  const std::vector<uint8_t> png = encode_png(im.width, im.height, im.px.data());
  return server::base64_encode(std::string(png.begin(), png.end()));
}

image::Rgb decode(const Json& v) {
  const std::vector<uint8_t> b = server::base64_decode(v.get<std::string>());
  PngImage p = read_png(b.data(), b.size());
  return image::Rgb{p.width, p.height, std::move(p.rgb)};
}

class ControlNetPreprocessApi : public TinyServerTest {
 protected:
  void SetUp() override {
    TinyServerTest::SetUp();
    cn_dir_ = temp_dir();
    make_controlnet_folder("sd1", 7, cn_dir_, "control_tiny_sd1_canny");
    server::ServerOptions o = tiny_options(models_, data_);
    o.controlnet_dirs = {cn_dir_};
    start(o);
    c_ = server_->client(300);
  }
  Json post(const std::string& path, const Json& body, int status) {
    auto r = post_json(*c_, path, body);
    EXPECT_TRUE(r);
    if (!r) return Json();
    EXPECT_EQ(r->status, status) << r->body.substr(0, 400);
    return Json::parse(r->body, nullptr, false);
  }
  Json txt2img(const Json& unit) const {
    Json body = {{"prompt", "a red fox"}, {"steps", 3}, {"seed", 99}, {"sampler_name", "Euler"}, {"width", 64},
                 {"height", 64}, {"cfg_scale", 7}, {"override_settings", {{"sd_model_checkpoint", "tiny-sd1"}}}};
    body["alwayson_scripts"] = {{"controlnet", {{"args", Json::array({unit})}}}};
    return body;
  }
  std::string cn_dir_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(ControlNetPreprocessApi, ModuleList) {
  const Json j = parse_json(c_->Get("/controlnet/module_list"));
  const Json expected_list = {"none", "canny", "invert", "tile_resample", "blur_gaussian", "shuffle", "inpaint",
                              "inpaint_only"};
  EXPECT_EQ(j["module_list"], expected_list);
  const Json& d = j["module_detail"];
  // The extension's canny sliders: [resolution, low, high].
  EXPECT_EQ(d["canny"]["sliders"].size(), 3u);
  EXPECT_EQ(d["canny"]["sliders"][0]["name"], "Preprocessor Resolution");
  EXPECT_EQ(d["canny"]["sliders"][1]["value"], 100);
  EXPECT_EQ(d["canny"]["sliders"][2]["value"], 200);
  EXPECT_EQ(d["canny"]["sliders"][2]["max"], 255);
  EXPECT_EQ(d["canny"]["model_free"], false);
  EXPECT_EQ(d["none"]["sliders"], Json::array());
  // tile_resample has no resolution slider: null first, as the extension's table.
  EXPECT_TRUE(d["tile_resample"]["sliders"][0].is_null());
  EXPECT_EQ(d["tile_resample"]["sliders"][1]["name"], "Down Sampling Rate");
  EXPECT_EQ(d["inpaint_only"]["needs_mask"], true);
  // Network preprocessors: in the detail, not in the list, with the reason.
  ASSERT_TRUE(d.contains("depth_midas"));
  EXPECT_EQ(d["depth_midas"]["available"], false);
  EXPECT_NE(d["depth_midas"]["reason"].get<std::string>().find("network"), std::string::npos);
  EXPECT_EQ(d["canny"]["available"], true);
}

TEST_F(ControlNetPreprocessApi, DetectReturnsThePreprocessorsMap) {
  const image::Rgb im = picture(96, 72);
  const Json r = post("/controlnet/detect",
                      {{"controlnet_module", "canny"}, {"controlnet_input_images", {b64(im), b64(picture(40, 40))}},
                       {"controlnet_processor_res", 128}, {"controlnet_threshold_a", 60},
                       {"controlnet_threshold_b", 120}},
                      200);
  ASSERT_EQ(r["images"].size(), 2u) << r.dump().substr(0, 300);
  EXPECT_EQ(r["info"], "Success");
  image::PreprocessOptions o;
  o.resolution = 128;
  o.threshold_a = 60;
  o.threshold_b = 120;
  const image::Rgb want = image::preprocess_control("canny", im, o).image;
  const image::Rgb got = decode(r["images"][0]);
  EXPECT_EQ(got.width, 171);  // 96 * 128 / 72 = 170.67 -> 171
  EXPECT_EQ(got.height, 128);
  EXPECT_EQ(got.px, want.px);
  EXPECT_EQ(decode(r["images"][1]).width, 128);
  // Defaults (-1 or absent): the sliders' defaults (512, 100, 200).
  const Json d = post("/controlnet/detect",
                      {{"controlnet_module", "canny"}, {"controlnet_input_images", {b64(im)}},
                       {"controlnet_processor_res", -1}},
                      200);
  EXPECT_EQ(decode(d["images"][0]).px, image::preprocess_control("canny", im, {}).image.px);
  // shuffle takes controlnet_seed.
  const Json s1 = post("/controlnet/detect",
                       {{"controlnet_module", "shuffle"}, {"controlnet_input_images", {b64(im)}},
                        {"controlnet_processor_res", 64}, {"controlnet_seed", 5}},
                       200);
  image::PreprocessOptions so;
  so.resolution = 64;
  so.seed = 5;
  EXPECT_EQ(decode(s1["images"][0]).px, image::preprocess_control("shuffle", im, so).image.px);
  // inpaint_only with its mask: the display (masked pixels at half brightness).
  image::Rgb mask = picture(96, 72);
  for (size_t i = 0; i < mask.px.size(); ++i) mask.px[i] = i / 3 % 96 < 48 ? 255 : 0;
  const Json ip = post("/controlnet/detect",
                       {{"controlnet_module", "inpaint_only"}, {"controlnet_input_images", {b64(im)}},
                        {"controlnet_masks", {b64(mask)}}},
                       200);
  const image::Rgb shown = decode(ip["images"][0]);
  EXPECT_EQ(shown.px[3 * 60], im.px[3 * 60]);                   // x = 60: kept
  EXPECT_EQ(shown.px[3 * 10], (im.px[3 * 10] * 128 + 127) / 255);  // x = 10: masked
}

TEST_F(ControlNetPreprocessApi, UnitWithCannyEqualsTheMapSentWithNone) {
  const image::Rgb im = picture(80, 80);
  Json unit = {{"image", b64(im)},         {"module", "canny"},     {"model", "control_tiny_sd1_canny"},
               {"processor_res", 64},      {"threshold_a", 50},     {"threshold_b", 150},
               {"resize_mode", "Just Resize"}};
  const Json with_canny = post("/sdapi/v1/txt2img", txt2img(unit), 200);
  image::PreprocessOptions o;
  o.resolution = 64;
  o.threshold_a = 50;
  o.threshold_b = 150;
  Json none = unit;
  none["module"] = "none";
  none["image"] = b64(image::preprocess_control("canny", im, o).image);
  const Json with_map = post("/sdapi/v1/txt2img", txt2img(none), 200);
  ASSERT_EQ(with_canny["images"].size(), 1u);
  EXPECT_EQ(decode(with_canny["images"][0]).px, decode(with_map["images"][0]).px);
  const std::string info = Json::parse(with_canny["info"].get<std::string>())["infotexts"][0].get<std::string>();
  EXPECT_NE(info.find("ControlNet 0: \"Module: canny, Model: control_tiny_sd1_canny ["), std::string::npos) << info;
  // Pixel perfect: the resolution is the output's (64 for an 80x80 image to 64x64), whatever processor_res says.
  Json pp = unit;
  pp["pixel_perfect"] = true;
  pp["processor_res"] = 1024;
  const Json with_pp = post("/sdapi/v1/txt2img", txt2img(pp), 200);
  EXPECT_EQ(decode(with_pp["images"][0]).px, decode(with_map["images"][0]).px);
  const std::string pp_info = Json::parse(with_pp["info"].get<std::string>())["infotexts"][0].get<std::string>();
  EXPECT_NE(pp_info.find("Pixel Perfect: True"), std::string::npos) << pp_info;
}

TEST_F(ControlNetPreprocessApi, BadInputIs400) {
  const std::string img = b64(picture(32, 32));
  auto message = [](const Json& j) { return j.dump(); };
  const Json unknown = post("/controlnet/detect", {{"controlnet_module", "sobel"}, {"controlnet_input_images", {img}}}, 400);
  EXPECT_NE(message(unknown).find("unknown preprocessor 'sobel'; the available ones are none, canny, invert"),
            std::string::npos)
      << message(unknown);
  const Json net = post("/controlnet/detect", {{"controlnet_module", "openpose_full"}, {"controlnet_input_images", {img}}}, 400);
  EXPECT_NE(message(net).find("'openpose_full' is not available"), std::string::npos) << message(net);
  const Json none = post("/controlnet/detect", {{"controlnet_module", "canny"}}, 400);
  EXPECT_NE(message(none).find("controlnet_input_images: no image given"), std::string::npos) << message(none);
  const Json corrupt = post("/controlnet/detect", {{"controlnet_module", "canny"}, {"controlnet_input_images", {"bm90IGFuIGltYWdl"}}}, 400);
  EXPECT_NE(message(corrupt).find("controlnet_input_images[0]"), std::string::npos) << message(corrupt);
  const Json high = post("/controlnet/detect",
                         {{"controlnet_module", "canny"}, {"controlnet_input_images", {img}}, {"controlnet_threshold_a", 400}}, 400);
  EXPECT_NE(message(high).find("threshold_a of 'canny' (Canny Low Threshold) must be between 1 and 255, got 400"),
            std::string::npos)
      << message(high);
  const Json res = post("/controlnet/detect",
                        {{"controlnet_module", "canny"}, {"controlnet_input_images", {img}}, {"controlnet_processor_res", 9000}}, 400);
  EXPECT_NE(message(res).find("processor_res of 'canny'"), std::string::npos) << message(res);
  const Json nomask = post("/controlnet/detect", {{"controlnet_module", "inpaint_only"}, {"controlnet_input_images", {img}}}, 400);
  EXPECT_NE(message(nomask).find("needs one mask per image"), std::string::npos) << message(nomask);
  // In a unit: the same checks, naming the unit.
  Json unit = {{"image", img}, {"module", "canny"}, {"model", "control_tiny_sd1_canny"}, {"threshold_b", 0}};
  const Json bad_unit = post("/sdapi/v1/txt2img", txt2img(unit), 400);
  EXPECT_NE(message(bad_unit).find("alwayson_scripts.controlnet.args[0]: threshold_b of 'canny'"), std::string::npos)
      << message(bad_unit);
  unit = {{"image", img}, {"module", "inpaint_only"}, {"model", "control_tiny_sd1_canny"}};
  const Json no_mask = post("/sdapi/v1/txt2img", txt2img(unit), 400);
  EXPECT_NE(message(no_mask).find("args[0].mask: the preprocessor 'inpaint_only' needs a mask"), std::string::npos)
      << message(no_mask);
  // The server serves on.
  EXPECT_EQ(post("/controlnet/detect", {{"controlnet_module", "invert"}, {"controlnet_input_images", {img}}}, 200)["images"].size(), 1u);
}

}  // namespace
}  // namespace diffuse::testing
