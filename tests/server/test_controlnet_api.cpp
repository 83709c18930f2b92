// sd-webui-controlnet's API on the tiny sd1 fixture model with a ControlNet
// folder the test writes (docs/controlnet.md): /controlnet/model_list,
// module_list, version; alwayson_scripts.controlnet.args on txt2img and
// img2img (the image changes with a unit, not with a disabled or weight-0
// one, the PNG infotext carries "ControlNet 0"); bad units answered 400
// naming the field, and the server serving on.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/png.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"
#include "test_controlnet_model.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

std::string png_b64(int w, int h, uint8_t seed) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[static_cast<size_t>((y * w + x) * 3 + c)] = static_cast<uint8_t>(((x / 8 + y / 8 + seed) % 2) * 220 + c * 10);
  const std::vector<uint8_t> png = encode_png(w, h, rgb.data());
  return server::base64_encode(std::string(png.begin(), png.end()));
}

std::vector<uint8_t> pixels(const Json& image_b64) {
  const std::vector<uint8_t> b = server::base64_decode(image_b64.get<std::string>());
  return read_png(b.data(), b.size()).rgb;
}

class ControlNetApi : public TinyServerTest {
 protected:
  void SetUp() override {
    TinyServerTest::SetUp();
    cn_dir_ = temp_dir();
    make_controlnet_folder("sd1", 7, cn_dir_, "control_tiny_sd1_canny");
    make_controlnet_folder("sdxl", 8, cn_dir_, "control_tiny_sdxl");
    server::ServerOptions o = tiny_options(models_, data_);
    o.controlnet_dirs = {cn_dir_};
    start(o);
    c_ = server_->client(300);
  }
  Json txt2img_body() const {
    return {{"prompt", "a red fox"}, {"negative_prompt", ""}, {"steps", 3}, {"seed", 99}, {"sampler_name", "Euler"},
            {"width", 64}, {"height", 64}, {"cfg_scale", 7},
            {"override_settings", {{"sd_model_checkpoint", "tiny-sd1"}}}};
  }
  static Json with_units(Json body, const Json& units) {
    body["alwayson_scripts"] = {{"controlnet", {{"args", units}}}};
    return body;
  }
  Json unit(const std::string& model, double weight = 1.0) const {
    return {{"enabled", true}, {"image", png_b64(48, 48, 0)}, {"module", "none"}, {"model", model},
            {"weight", weight}, {"guidance_start", 0.0}, {"guidance_end", 1.0}, {"control_mode", "Balanced"},
            {"resize_mode", "Crop and Resize"}, {"pixel_perfect", false}, {"processor_res", 512},
            {"threshold_a", 100}, {"threshold_b", 200}};
  }
  Json ok(const Json& body, const std::string& path = "/sdapi/v1/txt2img") {
    auto r = post_json(*c_, path, body);
    EXPECT_TRUE(r);
    if (!r) return Json();
    EXPECT_EQ(r->status, 200) << r->body.substr(0, 400);
    return parse_json(r);
  }
  std::string bad(const Json& body, const std::string& path = "/sdapi/v1/txt2img") {
    auto r = post_json(*c_, path, body);
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 400) << r->body.substr(0, 400);
    return r->body;
  }
  std::string cn_dir_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(ControlNetApi, ListsAndGenerates) {
  const Json models = parse_json(c_->Get("/controlnet/model_list"));
  ASSERT_EQ(models["model_list"].size(), 2u) << models.dump();
  const std::string title = models["model_list"][0].get<std::string>();
  EXPECT_EQ(title.rfind("control_tiny_sd1_canny [", 0), 0u) << title;
  // (the preprocessors' list: tests/server/test_controlnet_preprocess_api.cpp)
  EXPECT_EQ(parse_json(c_->Get("/controlnet/module_list"))["module_list"][0], "none");
  EXPECT_EQ(parse_json(c_->Get("/controlnet/version"))["version"], 2);

  const Json plain = ok(txt2img_body());
  // A unit named by its title (as model_list gives it) changes the image; the infotext says so.
  const Json with = ok(with_units(txt2img_body(), Json::array({unit(title, 1.0)})));
  ASSERT_EQ(with["images"].size(), 1u);
  EXPECT_NE(pixels(with["images"][0]), pixels(plain["images"][0]));
  const Json info = Json::parse(with["info"].get<std::string>());
  const std::string text = info["infotexts"][0].get<std::string>();
  EXPECT_NE(text.find("ControlNet 0: \"Module: none, Model: " + title +
                      ", Weight: 1, Resize Mode: Crop and Resize, Low Vram: False, Guidance Start: 0, Guidance End: 1, "
                      "Pixel Perfect: False, Control Mode: Balanced\""),
            std::string::npos)
      << text;
  // Disabled or weight 0: the plain image, bit for bit (a disabled unit not even in the infotext).
  Json off = unit("control_tiny_sd1_canny");
  off["enabled"] = false;
  EXPECT_EQ(ok(with_units(txt2img_body(), Json::array({off})))["images"][0], plain["images"][0]);
  EXPECT_EQ(pixels(ok(with_units(txt2img_body(), Json::array({unit("control_tiny_sd1_canny", 0.0)})))["images"][0]),
            pixels(plain["images"][0]));
  // img2img with a unit without an image uses the init image.
  Json i2i = with_units(txt2img_body(), Json::array({unit("control_tiny_sd1_canny")}));
  i2i["alwayson_scripts"]["controlnet"]["args"][0].erase("image");
  i2i["init_images"] = Json::array({png_b64(64, 64, 1)});
  i2i["denoising_strength"] = 0.6;
  EXPECT_EQ(ok(i2i, "/sdapi/v1/img2img")["images"].size(), 1u);
}

// The native API's "controlnets" list: a job with a unit finishes, its infotext names the unit,
// the history echo keeps no base64, and a bad unit is 400.
TEST_F(ControlNetApi, NativeJobs) {
  Json body = Json::parse(cheap_job(5, 2));
  body["model"] = "tiny-sd1";
  body["controlnets"] = Json::array({{{"model", "control_tiny_sd1_canny"}, {"image", png_b64(64, 64, 0)}, {"weight", 0.7}}});
  auto r = post_json(*c_, "/api/jobs", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const Json done = wait_job(*c_, parse_json(r)["id"].get<std::string>(), 300);
  ASSERT_EQ(done["state"], "done") << done.dump().substr(0, 400);
  const std::string dump = done.dump();
  EXPECT_NE(dump.find("ControlNet 0: \\\"Module: none, Model: control_tiny_sd1_canny ["), std::string::npos)
      << dump.substr(0, 2000);
  EXPECT_EQ(dump.find(png_b64(64, 64, 0).substr(0, 40)), std::string::npos) << "the echo kept the base64";
  body["controlnets"][0]["weight"] = -1;
  auto bad_r = post_json(*c_, "/api/jobs", body);
  ASSERT_TRUE(bad_r);
  EXPECT_EQ(bad_r->status, 400) << bad_r->body;
  EXPECT_NE(bad_r->body.find("ControlNet unit 0: weight must be between 0 and 2"), std::string::npos) << bad_r->body;
}

TEST_F(ControlNetApi, BadUnitsAre400) {
  const std::string missing = bad(with_units(txt2img_body(), Json::array({unit("no_such_controlnet")})));
  EXPECT_NE(missing.find("ControlNet 'no_such_controlnet' not found"), std::string::npos) << missing;
  EXPECT_NE(missing.find("control_tiny_sd1_canny"), std::string::npos) << missing;  // what there is

  Json depth = unit("control_tiny_sd1_canny");
  depth["module"] = "depth_midas";  // a network preprocessor: listed, not available
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({depth}))).find("args[0].module"), std::string::npos);

  Json corrupt = unit("control_tiny_sd1_canny");
  corrupt["image"] = "bm90IGFuIGltYWdl";  // "not an image"
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({corrupt}))).find("args[0].image"), std::string::npos);

  Json no_image = unit("control_tiny_sd1_canny");
  no_image.erase("image");
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({no_image}))).find("no control image"), std::string::npos);

  Json heavy = unit("control_tiny_sd1_canny", 3.0);
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({heavy}))).find("weight must be between 0 and 2"),
            std::string::npos);
  Json window = unit("control_tiny_sd1_canny");
  window["guidance_start"] = 0.8;
  window["guidance_end"] = 0.2;
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({window}))).find("must be below guidance_end"),
            std::string::npos);
  Json mode = unit("control_tiny_sd1_canny");
  mode["control_mode"] = 7;
  EXPECT_NE(bad(with_units(txt2img_body(), Json::array({mode}))).find("args[0].control_mode"), std::string::npos);

  // A ControlNet of another architecture: the job fails naming it, and the server serves on.
  auto r = post_json(*c_, "/sdapi/v1/txt2img", with_units(txt2img_body(), Json::array({unit("control_tiny_sdxl")})));
  ASSERT_TRUE(r);
  EXPECT_NE(r->status, 200);
  EXPECT_NE(r->body.find("'control_tiny_sdxl' is for"), std::string::npos) << r->body;
  EXPECT_EQ(ok(txt2img_body())["images"].size(), 1u);
}

}  // namespace
}  // namespace diffuse::testing
