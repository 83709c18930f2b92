// Editing through the HTTP APIs (issue 19), on the built-in demo model:
// A1111 /sdapi/v1/img2img (data-URL init images, inpainting with A1111's
// field names, include_init_images, strength 0), /sdapi/v1/png-info, the
// native /api/jobs with init_image + mask, OpenAI /v1/images/edits
// (multipart, masks whose transparent pixels are the area to edit), and bad
// uploads answered 400 while the server keeps serving.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>

#include "io/png.h"
#include "pipeline/demo_model.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

constexpr int kSide = 64;  // small images: the demo model is quick at 64x64 on a loaded CPU

// A colourful test picture: gradients plus a few hard edges.
std::vector<uint8_t> test_rgb(int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &px[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>(((x / 8 + y / 8) % 2) ? 200 : 40);
    }
  }
  return px;
}

std::string png_bytes(int w, int h, const std::vector<uint8_t>& rgb) {
  std::vector<uint8_t> b = encode_png(w, h, rgb.data());
  return std::string(b.begin(), b.end());
}

// An 8-bit PNG of `channels` (1 gray, 3 RGB, 4 RGBA) per pixel: encode_png
// writes only RGB, and OpenAI masks need alpha.
std::string raw_png(int w, int h, int channels, const std::vector<uint8_t>& px) {
  auto be32 = [](std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto chunk = [&](std::string& out, const char* type, const std::string& data) {
    be32(out, static_cast<uint32_t>(data.size()));
    std::string td = std::string(type, 4) + data;
    out += td;
    be32(out, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(td.data()), static_cast<uInt>(td.size()))));
  };
  std::string ihdr;
  be32(ihdr, static_cast<uint32_t>(w));
  be32(ihdr, static_cast<uint32_t>(h));
  const char color = channels == 1 ? 0 : channels == 3 ? 2 : 6;
  ihdr += std::string{8, color, 0, 0, 0};
  std::string raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    raw.append(reinterpret_cast<const char*>(&px[static_cast<size_t>(y) * w * channels]), static_cast<size_t>(w) * channels);
  }
  uLongf n = compressBound(static_cast<uLong>(raw.size()));
  std::string z(n, '\0');
  compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()));
  z.resize(n);
  std::string out("\x89PNG\r\n\x1a\n", 8);
  chunk(out, "IHDR", ihdr);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  return out;
}

std::string data_url(const std::string& png) { return "data:image/png;base64," + server::base64_encode(png); }

// A mask (one byte per pixel, 255 = repaint) with a filled rectangle.
std::vector<uint8_t> rect_mask(int w, int h, int x0, int y0, int x1, int y1) {
  std::vector<uint8_t> m(static_cast<size_t>(w) * h, 0);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) m[static_cast<size_t>(y) * w + x] = 255;
  return m;
}

// The mask as an RGB PNG (white = repaint), as A1111 clients send it.
std::string mask_png(int w, int h, const std::vector<uint8_t>& m) {
  std::vector<uint8_t> rgb(m.size() * 3);
  for (size_t i = 0; i < m.size(); ++i) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = m[i];
  return png_bytes(w, h, rgb);
}

PngImage decode_b64_png(const std::string& b64) {
  std::vector<uint8_t> b = server::base64_decode(b64);
  return read_png(b.data(), b.size());
}

// Pixels where the mask is 0 that differ from `expected`.
int unmasked_differences(const PngImage& got, const std::vector<uint8_t>& expected, const std::vector<uint8_t>& mask) {
  int bad = 0;
  for (size_t i = 0; i < mask.size(); ++i) {
    if (mask[i] != 0) continue;
    if (std::memcmp(&got.rgb[3 * i], &expected[3 * i], 3) != 0) ++bad;
  }
  return bad;
}

class EditApiTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }
  void start(server::ServerOptions o = {}) {
    auto demo = demo_model_path();
    ASSERT_TRUE(demo) << "the built-in demo model (models/demo) was not found";
    server_.reset();
    o.model_files = {*demo};
    o.scan_hf_cache = false;
    o.data_dir = temp_dir();
    server_ = std::make_unique<RunningServer>(o);
    c_ = server_->client(300);
  }
  Json img2img_body(const std::string& init_png) const {
    return {{"prompt", "a red circle in the centre, on a blue background"},
            {"init_images", {data_url(init_png)}},
            {"steps", 8},
            {"seed", 1234},
            {"sampler_name", "Euler a"},
            {"cfg_scale", 7}};
  }
  // POST and expect 400 whose message names `needle`.
  void expect_400(const std::string& path, const Json& body, const std::string& needle) {
    auto r = post_json(*c_, path, body);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 400) << path << ": " << r->body.substr(0, 300);
    EXPECT_NE(r->body.find(needle), std::string::npos) << "expected '" << needle << "' in " << r->body.substr(0, 300);
  }
  void expect_alive() {
    auto r = c_->Get("/sdapi/v1/options");
    ASSERT_TRUE(r) << "the server stopped answering";
    EXPECT_EQ(r->status, 200);
  }
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
  const std::vector<uint8_t> init_rgb_ = test_rgb(kSide, kSide);
  const std::string init_png_ = png_bytes(kSide, kSide, init_rgb_);
};

TEST_F(EditApiTest, A1111Img2ImgWithDataUrlReturnsTheInitSizeAndDenoisingStrength) {
  Json body = img2img_body(init_png_);
  body["denoising_strength"] = 0.6;
  body["some_unknown_field"] = {{"ignored", true}};  // A1111 ignores unknown fields
  auto r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  Json out = parse_json(r);
  ASSERT_EQ(out["images"].size(), 1u);
  const std::string first = out["images"][0];
  EXPECT_EQ(first.rfind("data:", 0), std::string::npos) << "A1111 returns plain base64";
  PngImage im = decode_b64_png(first);
  EXPECT_EQ(im.width, kSide);  // no width/height: the init image's size
  EXPECT_EQ(im.height, kSide);
  EXPECT_NE(im.rgb, init_rgb_) << "strength 0.6 changes the image";
  Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_DOUBLE_EQ(info["denoising_strength"].get<double>(), 0.6);
  EXPECT_EQ(info["width"], kSide);
  EXPECT_EQ(info["height"], kSide);
  EXPECT_TRUE(info["warnings"].is_array());
  EXPECT_EQ(info["all_seeds"], Json::array({1234}));
  // Same shape as txt2img; the init images are not echoed without include_init_images.
  EXPECT_DOUBLE_EQ(out["parameters"]["denoising_strength"].get<double>(), 0.6);
  EXPECT_TRUE(out["parameters"]["init_images"].is_null());

  // include_init_images: the init image follows the generated ones.
  body["include_init_images"] = true;
  body["init_images"] = {server::base64_encode(init_png_)};  // plain base64 works too
  out = parse_json(post_json(*c_, "/sdapi/v1/img2img", body));
  ASSERT_EQ(out["images"].size(), 2u) << out.dump().substr(0, 300);
  EXPECT_EQ(out["images"][0], first) << "plain base64 and a data URL give the same image";
  EXPECT_EQ(decode_b64_png(out["images"][1]).rgb, init_rgb_);
}

TEST_F(EditApiTest, A1111InpaintKeepsEveryUnmaskedPixel) {
  const std::vector<uint8_t> mask = rect_mask(kSide, kSide, 16, 20, 44, 48);
  Json body = img2img_body(init_png_);
  body["mask"] = server::base64_encode(mask_png(kSide, kSide, mask));
  body["mask_blur"] = 0;
  body["inpainting_fill"] = 1;  // original
  body["denoising_strength"] = 0.9;
  body["inpaint_full_res"] = false;
  body["inpainting_mask_invert"] = 0;
  body["width"] = kSide;
  body["height"] = kSide;
  auto r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  Json out = parse_json(r);
  PngImage im = decode_b64_png(out["images"][0]);
  ASSERT_EQ(im.width, kSide);
  ASSERT_EQ(im.height, kSide);
  EXPECT_EQ(unmasked_differences(im, init_rgb_, mask), 0) << "the overlay pastes the original back outside the mask";
  int changed = 0;
  for (size_t i = 0; i < mask.size(); ++i) changed += mask[i] && std::memcmp(&im.rgb[3 * i], &init_rgb_[3 * i], 3) != 0;
  EXPECT_GT(changed, 100) << "the masked area is repainted";
  Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["extra_generation_params"]["Mask blur"], 0);

  // Inverted: now the rectangle is kept and everything else repainted.
  body["inpainting_mask_invert"] = 1;
  im = decode_b64_png(parse_json(post_json(*c_, "/sdapi/v1/img2img", body))["images"][0]);
  std::vector<uint8_t> inverted(mask.size());
  for (size_t i = 0; i < mask.size(); ++i) inverted[i] = 255 - mask[i];
  EXPECT_EQ(unmasked_differences(im, init_rgb_, inverted), 0);
}

TEST_F(EditApiTest, SameSeedGivesIdenticalBytesAndStrengthZeroReturnsTheInput) {
  Json body = img2img_body(init_png_);
  body["denoising_strength"] = 0.5;
  Json a = parse_json(post_json(*c_, "/sdapi/v1/img2img", body));
  Json b = parse_json(post_json(*c_, "/sdapi/v1/img2img", body));
  ASSERT_EQ(a["images"].size(), 1u) << a.dump().substr(0, 300);
  ASSERT_EQ(b["images"].size(), 1u);
  EXPECT_EQ(a["images"][0], b["images"][0]);
  body["seed"] = 1235;
  Json other = parse_json(post_json(*c_, "/sdapi/v1/img2img", body));
  EXPECT_NE(other["images"][0], a["images"][0]) << "another seed gives another image";

  body["denoising_strength"] = 0;
  auto r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  PngImage im = decode_b64_png(parse_json(r)["images"][0]);
  ASSERT_EQ(im.width, kSide);
  EXPECT_EQ(im.rgb, init_rgb_) << "strength 0 returns the input pixels";
}

TEST_F(EditApiTest, SizesAndMasksOfOtherSizesAreAdaptedAndSaidSo) {
  // 131 x 70: worked at 128 x 64, and info.warnings says so.
  const std::vector<uint8_t> odd_rgb = test_rgb(131, 70);
  Json body = img2img_body(png_bytes(131, 70, odd_rgb));
  body["denoising_strength"] = 0.5;
  auto r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  Json out = parse_json(r);
  PngImage im = decode_b64_png(out["images"][0]);
  EXPECT_EQ(im.width, 128);
  EXPECT_EQ(im.height, 64);
  Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["width"], 128);
  EXPECT_EQ(info["height"], 64);
  ASSERT_FALSE(info["warnings"].empty()) << info.dump();
  EXPECT_NE(info["warnings"][0].get<std::string>().find("131x70"), std::string::npos) << info["warnings"];

  // A 32 x 32 mask for a 64 x 64 image is resized (a warning), not refused.
  body = img2img_body(init_png_);
  body["mask"] = server::base64_encode(mask_png(32, 32, rect_mask(32, 32, 8, 8, 24, 24)));
  body["mask_blur"] = 0;
  r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  out = parse_json(r);
  info = Json::parse(out["info"].get<std::string>());
  ASSERT_FALSE(info["warnings"].empty()) << info.dump();
  EXPECT_NE(info["warnings"].dump().find("mask"), std::string::npos) << info["warnings"];
  im = decode_b64_png(out["images"][0]);
  EXPECT_EQ(unmasked_differences(im, init_rgb_, rect_mask(kSide, kSide, 14, 14, 50, 50)), 0);

  // The native job reports its warnings too; an all-black mask returns the image unchanged.
  r = post_json(*c_, "/api/jobs", {{"prompt", "x"}, {"init_image", data_url(init_png_)}, {"steps", 4},
                                   {"mask", data_url(mask_png(kSide, kSide, std::vector<uint8_t>(kSide * kSide, 0)))}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  Json job = wait_job(*c_, parse_json(r)["id"].get<std::string>(), 300);
  ASSERT_EQ(job["state"], "done") << job.dump();
  ASSERT_FALSE(job["warnings"].empty()) << job.dump();
  EXPECT_NE(job["warnings"].dump().find("black"), std::string::npos) << job["warnings"];
}

TEST_F(EditApiTest, PngInfoReadsTheParametersBack) {
  Json body = img2img_body(init_png_);
  body["denoising_strength"] = 0.5;
  Json out = parse_json(post_json(*c_, "/sdapi/v1/img2img", body));
  ASSERT_EQ(out["images"].size(), 1u) << out.dump().substr(0, 300);
  auto r = post_json(*c_, "/sdapi/v1/png-info", {{"image", "data:image/png;base64," + out["images"][0].get<std::string>()}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json info = parse_json(r);
  const std::string text = info["info"];
  EXPECT_EQ(text.rfind("a red circle in the centre, on a blue background", 0), 0u) << text;
  EXPECT_NE(text.find("Seed: 1234"), std::string::npos) << text;
  EXPECT_EQ(info["parameters"]["Seed"], "1234");
  EXPECT_EQ(info["parameters"]["Steps"], "8");
  EXPECT_EQ(info["parameters"]["Size-1"], std::to_string(kSide));
  EXPECT_EQ(info["parameters"]["Prompt"], "a red circle in the centre, on a blue background");
  EXPECT_EQ(info["parameters"]["Denoising strength"], "0.5");
  EXPECT_TRUE(info["items"].is_object());
  // A PNG without parameters: empty info; an empty image: the same (A1111).
  info = parse_json(post_json(*c_, "/sdapi/v1/png-info", {{"image", server::base64_encode(init_png_)}}));
  EXPECT_EQ(info["info"], "");
  info = parse_json(post_json(*c_, "/sdapi/v1/png-info", {{"image", ""}}));
  EXPECT_EQ(info["info"], "");
  expect_400("/sdapi/v1/png-info", {{"image", "%%%"}}, "image");
}

TEST_F(EditApiTest, BadUploadsAre400AndTheServerStaysUp) {
  Json body = img2img_body(init_png_);
  auto with = [&](const char* key, Json v) {
    Json b = body;
    b[key] = std::move(v);
    return b;
  };
  expect_400("/sdapi/v1/img2img", with("init_images", {"data:image/png;base64,@@@not base64@@@"}), "init_images[0]");
  expect_400("/sdapi/v1/img2img", with("init_images", {server::base64_encode("hello, I am not a PNG")}), "not a PNG");
  expect_400("/sdapi/v1/img2img", with("init_images", {server::base64_encode("\xff\xd8\xff\xe0 JFIF")}), "JPEG");
  expect_400("/sdapi/v1/img2img", with("init_images", Json::array()), "init_images");
  expect_400("/sdapi/v1/img2img", with("init_images", {"http://example.com/a.png"}), "URL");
  // A PNG cut short: its header is fine, its pixels are not.
  expect_400("/sdapi/v1/img2img", with("init_images", {server::base64_encode(init_png_.substr(0, 60))}), "corrupt");
  expect_400("/sdapi/v1/img2img", with("denoising_strength", 1.5), "denoising_strength");
  expect_400("/sdapi/v1/img2img", with("denoising_strength", -0.1), "between 0 and 1");
  expect_400("/sdapi/v1/img2img", with("mask", "not-a-mask!"), "mask");
  expect_400("/sdapi/v1/img2img", with("inpainting_fill", 7), "inpainting_fill");
  expect_400("/sdapi/v1/img2img", with("resize_mode", 9), "resize_mode");
  // Too many pixels: refused from the PNG header, before decoding (4100 x 8 compresses to nothing).
  const std::string wide = png_bytes(4100, 8, std::vector<uint8_t>(4100 * 8 * 3, 128));
  expect_400("/sdapi/v1/img2img", with("init_images", {server::base64_encode(wide)}), "4096x4096");
  // The native API and its fields.
  Json native = {{"prompt", "x"}, {"steps", 2}, {"init_image", data_url(init_png_)}};
  auto with_native = [&](const char* key, Json v) {
    Json b = native;
    b[key] = std::move(v);
    return b;
  };
  expect_400("/api/jobs", with_native("init_image", "!!"), "init_image");
  expect_400("/api/jobs", with_native("init_image", data_url(wide)), "4096x4096");
  expect_400("/api/jobs", with_native("strength", 1.5), "strength");
  expect_400("/api/jobs", with_native("masked_content", "lava"), "masked_content");
  expect_400("/api/jobs", with_native("inpaint_area", "everywhere"), "inpaint_area");
  expect_400("/api/jobs", with_native("resize_mode", "squash"), "resize_mode");
  expect_400("/api/jobs", with_native("outpaint", {{"left", -8}}), "outpaint.left");
  expect_400("/api/jobs", {{"prompt", "x"}, {"mask", data_url(init_png_)}}, "needs an init_image");
  EXPECT_EQ(parse_json(c_->Get("/api/jobs")).size(), 0u) << "nothing was queued";
  expect_alive();
  // And it still generates.
  auto r = post_json(*c_, "/sdapi/v1/img2img", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body.substr(0, 300);
}

TEST_F(EditApiTest, UploadByteLimitAndBodyLimits) {
  server::ServerOptions o;
  o.max_upload_bytes = 64 * 1024;
  start(o);
  // Noise does not compress: a 160 x 160 RGB PNG is about 77 KB.
  std::vector<uint8_t> noise(160 * 160 * 3);
  uint32_t x = 12345;
  for (auto& v : noise) v = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
  const std::string big = png_bytes(160, 160, noise);
  ASSERT_GT(big.size(), 64u * 1024);
  expect_400("/sdapi/v1/img2img", img2img_body(big), "upload limit of 65536 bytes");

  // Routes without uploads keep the 1 MiB body limit, even on a kept-alive connection.
  auto r = c_->Post("/sdapi/v1/options", std::string((1 << 20) + 100, ' '), "application/json");
  if (r) {
    EXPECT_EQ(r->status, 413);
  }
  expect_alive();
  // /api/jobs: over 1 MiB only with images; text alone is refused.
  r = c_->Post("/api/jobs", std::string((1 << 20) + 100, ' '), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  expect_alive();
}

TEST_F(EditApiTest, NativeJobWithInitImageAndMask) {
  server::ServerOptions o;
  start(o);
  // An init image of more than 1 MiB (noise, 640 x 640) goes through /api/jobs, resized to 64 x 64.
  std::vector<uint8_t> noise(640 * 640 * 3);
  uint32_t x = 777;
  for (auto& v : noise) v = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
  const std::string big = png_bytes(640, 640, noise);
  ASSERT_GT(big.size(), 1u << 20);
  auto r = post_json(*c_, "/api/jobs", {{"prompt", "a blue star"}, {"init_image", data_url(big)}, {"width", kSide},
                                       {"height", kSide}, {"steps", 4}, {"strength", 0.5}, {"seed", 5}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body.substr(0, 300);
  Json job = wait_job(*c_, parse_json(r)["id"].get<std::string>(), 300);
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_EQ(job["images"][0]["width"], kSide);

  const std::vector<uint8_t> mask = rect_mask(kSide, kSide, 8, 8, 40, 30);
  r = post_json(*c_, "/api/jobs",
                {{"prompt", "a yellow circle"}, {"init_image", data_url(init_png_)},
                 {"mask", data_url(mask_png(kSide, kSide, mask))}, {"mask_blur", 0}, {"strength", 0.8},
                 {"masked_content", "original"}, {"inpaint_area", "whole"}, {"steps", 6}, {"seed", 9}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body.substr(0, 300);
  const std::string id = parse_json(r)["id"];
  job = wait_job(*c_, id, 300);
  ASSERT_EQ(job["state"], "done") << job.dump();
  ASSERT_EQ(job["images"].size(), 1u);
  EXPECT_TRUE(job["warnings"].is_array());
  auto png = c_->Get(job["images"][0]["url"].get<std::string>().c_str());
  ASSERT_TRUE(png);
  ASSERT_EQ(png->status, 200);
  PngImage im = read_png(reinterpret_cast<const uint8_t*>(png->body.data()), png->body.size());
  ASSERT_EQ(im.width, kSide);  // no width/height: the init image's
  EXPECT_EQ(unmasked_differences(im, init_rgb_, mask), 0);
  // The history keeps the request without megabytes of base64.
  Json hist = parse_json(c_->Get("/api/history?limit=1"));
  ASSERT_EQ(hist["items"].size(), 1u);
  EXPECT_EQ(hist["items"][0]["params"]["init_image"], "<image 64x64>");
  EXPECT_EQ(hist["items"][0]["params"]["mask"], "<image 64x64>");
}

TEST_F(EditApiTest, OpenAIEditsMultipart) {
  // RGBA mask: transparent (alpha 0) where the image is edited.
  std::vector<uint8_t> rgba(static_cast<size_t>(kSide) * kSide * 4, 255);
  const std::vector<uint8_t> edit_area = rect_mask(kSide, kSide, 20, 20, 44, 44);
  for (size_t i = 0; i < edit_area.size(); ++i) rgba[4 * i + 3] = edit_area[i] ? 0 : 255;
  const std::string mask = raw_png(kSide, kSide, 4, rgba);
  httplib::MultipartFormDataItems items = {
      {"image", init_png_, "image.png", "image/png"},
      {"mask", mask, "mask.png", "image/png"},
      {"prompt", "a green square", "", ""},
      {"n", "2", "", ""},
      {"size", "64x64", "", ""},
      {"response_format", "b64_json", "", ""},
      {"model", "dall-e-2", "", ""},
  };
  auto r = c_->Post("/v1/images/edits", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 500);
  Json out = parse_json(r);
  ASSERT_EQ(out["data"].size(), 2u);
  EXPECT_TRUE(out["created"].is_number_integer());
  for (const Json& d : out["data"]) {
    PngImage im = decode_b64_png(d["b64_json"]);
    EXPECT_EQ(im.width, kSide);
    EXPECT_EQ(im.height, kSide);
    EXPECT_EQ(unmasked_differences(im, init_rgb_, edit_area), 0) << "opaque mask pixels are kept";
  }
  EXPECT_NE(out["data"][0]["b64_json"], out["data"][1]["b64_json"]);

  // response_format url: a link to the stored PNG.
  items[5].content = "url";
  items[3].content = "1";
  out = parse_json(c_->Post("/v1/images/edits", items));
  ASSERT_EQ(out["data"].size(), 1u) << out.dump();
  EXPECT_NE(out["data"][0]["url"].get<std::string>().find("/images/"), std::string::npos);

  // No mask: the image's own transparency marks the area to edit; an opaque image has none.
  httplib::MultipartFormDataItems no_mask = {{"image", init_png_, "image.png", "image/png"},
                                             {"prompt", "x", "", ""}};
  r = c_->Post("/v1/images/edits", no_mask);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_EQ(parse_json(r)["error"]["param"], "mask") << r->body;
  // A mask without transparency: nothing to edit.
  std::vector<uint8_t> opaque(static_cast<size_t>(kSide) * kSide * 4, 255);
  httplib::MultipartFormDataItems opaque_mask = {{"image", init_png_, "image.png", "image/png"},
                                                 {"mask", raw_png(kSide, kSide, 4, opaque), "mask.png", "image/png"},
                                                 {"prompt", "x", "", ""}};
  r = c_->Post("/v1/images/edits", opaque_mask);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  Json err = parse_json(r);
  EXPECT_EQ(err["error"]["param"], "mask") << r->body;
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  // An image with alpha and no mask: its transparent pixels are edited.
  std::vector<uint8_t> image_rgba(static_cast<size_t>(kSide) * kSide * 4);
  for (size_t i = 0; i < edit_area.size(); ++i) {
    std::memcpy(&image_rgba[4 * i], &init_rgb_[3 * i], 3);
    image_rgba[4 * i + 3] = edit_area[i] ? 0 : 255;
  }
  httplib::MultipartFormDataItems alpha_image = {{"image", raw_png(kSide, kSide, 4, image_rgba), "image.png", "image/png"},
                                                 {"prompt", "a red circle", "", ""},
                                                 {"response_format", "b64_json", "", ""}};
  r = c_->Post("/v1/images/edits", alpha_image);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  PngImage im = decode_b64_png(parse_json(r)["data"][0]["b64_json"]);
  EXPECT_EQ(im.width, kSide);  // no size: the image's
  EXPECT_EQ(unmasked_differences(im, init_rgb_, edit_area), 0);
  // Other bad input, in OpenAI's error shape.
  r = c_->Post("/v1/images/edits", httplib::MultipartFormDataItems{{"image", "not a png", "i.png", "image/png"},
                                                                   {"prompt", "x", "", ""}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(parse_json(r)["error"]["param"], "image") << r->body;
  r = c_->Post("/v1/images/edits", R"({"prompt":"x"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(parse_json(r)["error"]["message"].is_string());
  expect_alive();
}

}  // namespace
}  // namespace diffuse::testing
