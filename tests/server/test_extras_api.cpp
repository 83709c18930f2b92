// A1111's /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images
// (src/server/api_extras.cpp) on a server whose upscaler folder holds the tiny
// RRDBNet test models (tests/models/data/rrdbnet) and a LoRA: the pixels are
// what UpscalerLibrary makes, the PNG keeps the input's "parameters" and gets
// A1111's "postprocessing" text, html_info carries it; bad base64, unknown
// upscalers, oversize images and bodies, face restoration and a LoRA in the
// folder are answered 4xx/5xx with the reason while the server keeps serving.
#include <gtest/gtest.h>

#include <filesystem>

#include "adapters/upscalers.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "server/base64.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

const std::string kData = std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet";

image::Rgb test_image(int w, int h, uint32_t seed) {
  image::Rgb img{w, h, {}};
  for (float v : noise(static_cast<size_t>(w) * h * 3, seed, 127.0f)) img.px.push_back(static_cast<uint8_t>(128.0f + v));
  return img;
}

std::string png_b64(const image::Rgb& img, const PngText& text = {}) {
  std::vector<uint8_t> png = encode_png(img.width, img.height, img.px.data(), text);
  return server::base64_encode(std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
}

struct Decoded {
  PngImage image;
  PngText text;
};
Decoded decode(const Json& b64) {
  std::vector<uint8_t> b = server::base64_decode(b64.get<std::string>());
  return {read_png(b.data(), b.size()), read_png_text(b.data(), b.size())};
}

class ExtrasApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    fs::copy_file(kData + "/x4_new.safetensors", dir_ + "/4x-Tiny.safetensors");
    TensorMap lora;
    lora["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"] = Tensor::zeros({4, 8}, DType::kF32);
    save_safetensors(dir_ + "/style_lora.safetensors", lora);
    server::ServerOptions o;
    o.data_dir = temp_dir();
    o.upscaler_dirs = {dir_};
    o.max_upload_side = 1024;
    o.max_upload_bytes = 256 * 1024;
    server_ = std::make_unique<RunningServer>(o);
    client_ = server_->client();
  }
  httplib::Result post(const std::string& path, const Json& body) { return post_json(*client_, path, body); }

  std::string dir_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ExtrasApiTest, SingleImageLanczosKeepsParametersAndAddsPostprocessing) {
  const image::Rgb in = test_image(20, 12, 1);
  auto r = post("/sdapi/v1/extra-single-image",
                {{"image", png_b64(in, {{"parameters", "a cat\nSteps: 20, Seed: 1"}})},
                 {"upscaling_resize", 2},
                 {"upscaler_1", "Lanczos"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json j = parse_json(r);
  EXPECT_EQ(j["html_info"], "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>");
  Decoded d = decode(j["image"]);
  EXPECT_EQ(d.image.width, 40);
  EXPECT_EQ(d.image.height, 24);
  EXPECT_EQ(d.image.rgb, image::resize(in, 40, 24).px);
  EXPECT_EQ(d.text["parameters"], "a cat\nSteps: 20, Seed: 1");
  EXPECT_EQ(d.text["postprocessing"], "Postprocess upscale by: 2, Postprocess upscaler: Lanczos");
}

TEST_F(ExtrasApiTest, SingleImageModelMatchesTheLibrary) {
  const image::Rgb in = test_image(16, 9, 2);
  // A data: URL, the model's name in another case, 4x: 64 x 36 -> rounded down to 64 x 32 as A1111.
  auto r = post("/sdapi/v1/extra-single-image", {{"image", "data:image/png;base64," + png_b64(in)},
                                                 {"upscaling_resize", 4.0},
                                                 {"upscaler_1", "4x-tiny"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json j = parse_json(r);
  EXPECT_EQ(j["html_info"], "<p>Postprocess upscale by: 4, Postprocess upscaler: 4x-Tiny</p>");
  Decoded d = decode(j["image"]);
  UpscalerLibrary lib({dir_});
  image::Rgb expected = lib.upscale("4x-Tiny", in, 64, 32, Device::kCPU);
  EXPECT_EQ(d.image.width, 64);
  EXPECT_EQ(d.image.height, 32);
  EXPECT_EQ(d.image.rgb, expected.px);
  EXPECT_EQ(d.text.count("parameters"), 0u);
}

TEST_F(ExtrasApiTest, ScaleToCropAndSecondUpscaler) {
  const image::Rgb in = test_image(30, 20, 3);
  auto r = post("/sdapi/v1/extra-single-image", {{"image", png_b64(in)},
                                                 {"resize_mode", 1},
                                                 {"upscaling_resize_w", 50},
                                                 {"upscaling_resize_h", 50},
                                                 {"upscaler_1", "Nearest"},
                                                 {"upscaler_2", "Lanczos"},
                                                 {"extras_upscaler_2_visibility", 0.5}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json j = parse_json(r);
  EXPECT_EQ(j["html_info"],
            "<p>Postprocess upscale to: 50x50, Postprocess crop to: 50x50, Postprocess upscaler: Nearest, "
            "Postprocess upscaler 2: Lanczos</p>");
  Decoded d = decode(j["image"]);
  EXPECT_EQ(d.image.width, 50);
  EXPECT_EQ(d.image.height, 50);
  // 30x20 covers 50x50 at 75x50; centre crop x 12..62; the blend is PIL's (a + 0.5 (b - a), truncated).
  UpscalerLibrary lib({dir_});
  const image::Rect crop{12, 0, 50, 50};
  image::Rgb a = image::crop(lib.upscale("Nearest", in, 75, 50, Device::kCPU), crop);
  image::Rgb b = image::crop(image::resize(in, 75, 50), crop);
  for (size_t i = 0; i < a.px.size(); ++i) {
    const uint8_t want = static_cast<uint8_t>(a.px[i] + 0.5f * (float(b.px[i]) - float(a.px[i])));
    ASSERT_EQ(d.image.rgb[i], want) << i;
  }
}

TEST_F(ExtrasApiTest, BatchImages) {
  Json list = Json::array();
  list.push_back({{"data", png_b64(test_image(8, 8, 4))}, {"name", "a.png"}});
  list.push_back({{"data", png_b64(test_image(16, 8, 5))}, {"name", "b.png"}});
  auto r = post("/sdapi/v1/extra-batch-images", {{"imageList", list}, {"upscaling_resize", 3}, {"upscaler_1", "Lanczos"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json j = parse_json(r);
  ASSERT_EQ(j["images"].size(), 2u);
  EXPECT_EQ(decode(j["images"][0]).image.width, 24);
  EXPECT_EQ(decode(j["images"][1]).image.width, 48);
  EXPECT_EQ(decode(j["images"][1]).image.height, 24);
  EXPECT_EQ(j["html_info"], "<p>Postprocess upscale by: 3, Postprocess upscaler: Lanczos</p>");

  // upscaler_1 "None" (A1111's default): the images come back unchanged, no infotext.
  auto none = post("/sdapi/v1/extra-batch-images", {{"imageList", list}});
  ASSERT_EQ(none->status, 200) << none->body;
  EXPECT_EQ(decode(parse_json(none)["images"][0]).image.width, 8);
  EXPECT_EQ(parse_json(none)["html_info"], "<p></p>");
}

TEST_F(ExtrasApiTest, BadRequestsAreAnsweredAndTheServerKeepsServing) {
  const std::string ok_image = png_b64(test_image(8, 8, 6));
  auto status_and_detail = [&](const std::string& path, const Json& body) {
    auto r = post(path, body);
    EXPECT_TRUE(r);
    return std::make_pair(r ? r->status : -1, r ? parse_json(r).value("detail", "") : "");
  };
  // Bad base64 and a JPEG-looking payload: 400 naming the field.
  auto [s1, d1] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", "%%%not base64%%%"}, {"upscaler_1", "Lanczos"}});
  EXPECT_EQ(s1, 400);
  EXPECT_NE(d1.find("image"), std::string::npos) << d1;
  auto [s2, d2] = status_and_detail("/sdapi/v1/extra-batch-images",
                                    {{"imageList", {{{"data", ok_image}}, {{"data", "AAAA"}}}}, {"upscaler_1", "Lanczos"}});
  EXPECT_EQ(s2, 400);
  EXPECT_NE(d2.find("imageList[1].data"), std::string::npos) << d2;
  // Unknown upscaler: 404.
  auto [s3, d3] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", ok_image}, {"upscaler_1", "4x-UltraSharp"}});
  EXPECT_EQ(s3, 404);
  EXPECT_NE(d3.find("Upscaler not found: '4x-UltraSharp'"), std::string::npos) << d3;
  auto [s3b, d3b] = status_and_detail("/sdapi/v1/extra-single-image",
                                      {{"image", ok_image}, {"upscaler_1", "Lanczos"}, {"upscaler_2", "Bicubic"}});
  EXPECT_EQ(s3b, 404) << d3b;
  // An image over max_upload_side (1024): 400.
  auto [s4, d4] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", png_b64(test_image(1100, 4, 7))}, {"upscaler_1", "Lanczos"}});
  EXPECT_EQ(s4, 400);
  EXPECT_NE(d4.find("1100"), std::string::npos) << d4;
  // A result over 8192x8192 pixels: 422 before any work (a flat image: a small upload).
  image::Rgb flat{600, 600, std::vector<uint8_t>(600 * 600 * 3, 90)};
  auto [s5, d5] = status_and_detail("/sdapi/v1/extra-single-image",
                                    {{"image", png_b64(flat)}, {"upscaling_resize", 16}, {"upscaler_1", "Lanczos"}});
  EXPECT_EQ(s5, 422);
  EXPECT_NE(d5.find("9600x9600"), std::string::npos) << d5;
  // Bad fields and face restoration: 422.
  auto [s6, d6] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", ok_image}, {"resize_mode", 2}});
  EXPECT_EQ(s6, 422);
  EXPECT_NE(d6.find("resize_mode"), std::string::npos) << d6;
  auto [s7, d7] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", ok_image}, {"gfpgan_visibility", 0.5}});
  EXPECT_EQ(s7, 422);
  EXPECT_NE(d7.find("face restoration"), std::string::npos) << d7;
  auto [s8, d8] = status_and_detail("/sdapi/v1/extra-single-image", {{"upscaler_1", "Lanczos"}});
  EXPECT_EQ(s8, 422);
  // A LoRA in the upscaler folder: listed by name, refused when used, saying why.
  auto [s9, d9] = status_and_detail("/sdapi/v1/extra-single-image", {{"image", ok_image}, {"upscaler_1", "style_lora"}});
  EXPECT_EQ(s9, 500);
  EXPECT_NE(d9.find("its keys are a LoRA's"), std::string::npos) << d9;
  // A body larger than the upload limit: 413 before it is read.
  auto big = client_->Post("/sdapi/v1/extra-single-image", std::string(3 << 20, 'A'), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);

  auto r = post("/sdapi/v1/extra-single-image", {{"image", ok_image}, {"upscaler_1", "Lanczos"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

}  // namespace
}  // namespace diffuse::testing
