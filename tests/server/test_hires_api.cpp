// The hires fix on the HTTP APIs (server/hires_request.h, docs/hires-fix.md):
// A1111's enable_hr / hr_* fields on /sdapi/v1/txt2img, the native "hires"
// object on /api/jobs, the /sdapi/v1/upscalers and latent-upscale-modes
// listings, and bad fields answered 400 naming them while the server keeps serving.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/infotext.h"
#include "io/png.h"
#include "pipeline/demo_model.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

class HiresApi : public ::testing::Test {
 protected:
  void SetUp() override {
    auto demo = demo_model_path();
    ASSERT_TRUE(demo) << "the built-in demo model (models/demo) was not found";
    server::ServerOptions o;
    o.model_files = {*demo};
    o.scan_hf_cache = false;
    o.data_dir = temp_dir();
    o.upscaler_dirs = {temp_dir()};  // no models: the built-in upscalers and the latent modes
    server_ = std::make_unique<RunningServer>(o);
    c_ = server_->client(300);
  }
  Json body() const {
    return {{"prompt", "a red circle on a blue background"}, {"steps", 4}, {"seed", 9}, {"sampler_name", "Euler"},
            {"width", 128}, {"height", 128}};
  }
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(HiresApi, EnableHrMakesTheTargetSizeWithA1111Infotext) {
  Json b = body();
  b["enable_hr"] = true;
  b["hr_scale"] = 1.5;
  b["hr_second_pass_steps"] = 4;
  b["denoising_strength"] = 0.5;
  auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 400);
  Json out = parse_json(r);
  std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  const PngImage im = read_png(png.data(), png.size());
  EXPECT_EQ(im.width, 192);
  EXPECT_EQ(im.height, 192);
  const Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["denoising_strength"], 0.5);
  const std::string text = info["infotexts"][0].get<std::string>();
  EXPECT_NE(text.find("Size: 128x128"), std::string::npos) << text;
  EXPECT_NE(text.find("Denoising strength: 0.5"), std::string::npos) << text;
  EXPECT_NE(text.find("Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Latent"), std::string::npos) << text;

  // enable_hr false (A1111's default): the base size.
  b["enable_hr"] = false;
  r = post_json(*c_, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  out = parse_json(r);
  png = server::base64_decode(out["images"][0].get<std::string>());
  EXPECT_EQ(read_png(png.data(), png.size()).width, 128);
}

TEST_F(HiresApi, PixelUpscalerAndResizeWithCrop) {
  Json b = body();
  b["enable_hr"] = true;
  b["hr_upscaler"] = "Lanczos";
  b["hr_resize_x"] = 256;
  b["hr_resize_y"] = 192;  // covers to 256x256, then 8 latent cells cut
  b["hr_sampler_name"] = "DDIM";
  auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 400);
  const Json out = parse_json(r);
  const std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  const PngImage im = read_png(png.data(), png.size());
  EXPECT_EQ(im.width, 256);
  EXPECT_EQ(im.height, 192);
  const std::string text = Json::parse(out["info"].get<std::string>())["infotexts"][0].get<std::string>();
  EXPECT_NE(text.find("Hires resize: 256x192, Hires upscaler: Lanczos, Hires sampler: DDIM"), std::string::npos)
      << text;
  EXPECT_NE(text.find("Denoising strength: 0.7"), std::string::npos) << text;  // A1111's default
}

TEST_F(HiresApi, NativeJobsTakeAHiresObject) {
  Json j = {{"prompt", "a red circle"}, {"width", 128}, {"height", 128}, {"steps", 2}, {"seed", 3},
            {"sampler", "euler"}, {"hires", {{"scale", 2}, {"upscaler", "Latent (nearest-exact)"}, {"denoise", 0.5}}}};
  auto r = post_json(*c_, "/api/jobs", j);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const Json done = wait_job(*c_, parse_json(r)["id"].get<std::string>(), 300);
  ASSERT_EQ(done["state"], "done") << done.dump();
  EXPECT_EQ(done["images"][0]["width"], 256) << done.dump();
  EXPECT_EQ(done["total_steps"], 3);  // 2 steps, then int(2 x 0.5)
}

TEST_F(HiresApi, Listings) {
  auto r = c_->Get("/sdapi/v1/upscalers");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const Json ups = Json::parse(r->body);
  std::vector<std::string> names;
  for (const Json& u : ups) {
    names.push_back(u["name"]);
    for (const char* k : {"model_name", "model_path", "model_url", "scale"}) EXPECT_TRUE(u.contains(k)) << u.dump();
  }
  const std::vector<std::string> want = {"None",
                                         "Lanczos",
                                         "Nearest",
                                         "Latent",
                                         "Latent (antialiased)",
                                         "Latent (bicubic)",
                                         "Latent (bicubic antialiased)",
                                         "Latent (nearest)",
                                         "Latent (nearest-exact)"};
  EXPECT_EQ(names, want);
  r = c_->Get("/sdapi/v1/latent-upscale-modes");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const Json modes = Json::parse(r->body);
  ASSERT_EQ(modes.size(), 6u);
  EXPECT_EQ(modes[0]["name"], "Latent");
  EXPECT_EQ(modes[5]["name"], "Latent (nearest-exact)");
}

TEST(HiresApiModels, UpscalerModelsAreListedAndUsable) {
  auto demo = demo_model_path();
  ASSERT_TRUE(demo);
  const std::string dir = temp_dir();
  std::filesystem::copy_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/rrdbnet/x4_new.safetensors",
                             dir + "/4x-Tiny.safetensors");
  server::ServerOptions o;
  o.model_files = {*demo};
  o.scan_hf_cache = false;
  o.data_dir = temp_dir();
  o.upscaler_dirs = {dir};
  RunningServer server(o);
  auto c = server.client(300);
  auto r = c->Get("/sdapi/v1/upscalers");
  ASSERT_TRUE(r);
  const Json ups = Json::parse(r->body);
  ASSERT_EQ(ups.size(), 10u) << ups.dump();
  EXPECT_EQ(ups[3]["name"], "4x-Tiny");
  EXPECT_EQ(ups[3]["scale"], 4);
  EXPECT_EQ(ups[3]["model_path"], dir + "/4x-Tiny.safetensors");
  EXPECT_EQ(ups[4]["name"], "Latent");
  Json b = {{"prompt", "a red circle"}, {"steps", 2}, {"seed", 1}, {"width", 128}, {"height", 128},
            {"enable_hr", true}, {"hr_upscaler", "4x-Tiny"}, {"hr_scale", 1.5}, {"denoising_strength", 0.5}};
  r = post_json(*c, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 400);
  const Json out = parse_json(r);
  const std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  EXPECT_EQ(read_png(png.data(), png.size()).width, 192);
  // A path is not a listed name: the server opens only its folders' files.
  b["hr_upscaler"] = dir + "/4x-Tiny.safetensors";
  r = post_json(*c, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
}

TEST_F(HiresApi, BadFieldsAre400NamingThem) {
  const std::vector<std::pair<Json, std::string>> cases = {
      {{{"hr_scale", 1.0}}, "hires scale must be above 1"},
      {{{"hr_upscaler", "R-ESRGAN 9x"}}, "unknown hires upscaler 'R-ESRGAN 9x'"},
      {{{"hr_resize_x", 8192}}, "hires resize must be between 0 and 4096"},
      {{{"hr_scale", 40}}, "larger than 4096 pixels a side"},
      {{{"denoising_strength", 0}}, "hires denoising strength"},
      {{{"hr_second_pass_steps", -3}}, "hires steps"},
  };
  for (const auto& [fields, needle] : cases) {
    Json b = body();
    b["enable_hr"] = true;
    b.update(fields);
    auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << fields.dump() << ": " << r->body;
    EXPECT_NE(r->body.find(needle), std::string::npos) << r->body;
  }
  Json b = body();
  b["enable_hr"] = true;
  b["hr_sampler_name"] = "Warp Drive";
  auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
  ASSERT_TRUE(r);
  EXPECT_GE(r->status, 400);
  EXPECT_LT(r->status, 500);
  r = post_json(*c_, "/api/jobs", Json{{"prompt", "x"}, {"hires", {{"upscaler", "Nope"}}}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("unknown hires upscaler 'Nope'"), std::string::npos) << r->body;
  r = post_json(*c_, "/api/jobs", Json{{"prompt", "x"}, {"hires", "yes"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  auto alive = c_->Get("/sdapi/v1/options");
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->status, 200);
}

}  // namespace
}  // namespace diffuse::testing
