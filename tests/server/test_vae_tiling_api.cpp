// tiled_vae on /sdapi/v1/txt2img (true tiles, false never, "auto" or absent
// when memory is short) and vae_tiling on the native /api/jobs: a tiled
// decode gives the untiled picture up to f32 rounding; a bad value is a 4xx
// naming the field, and the server keeps serving.
#include <gtest/gtest.h>

#include "io/png.h"
#include "pipeline/demo_model.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

class VaeTilingApi : public ::testing::Test {
 protected:
  void SetUp() override {
    auto demo = demo_model_path();
    ASSERT_TRUE(demo) << "the built-in demo model (models/demo) was not found";
    server::ServerOptions o;
    o.model_files = {*demo};
    o.scan_hf_cache = false;
    o.data_dir = temp_dir();
    server_ = std::make_unique<RunningServer>(o);
    c_ = server_->client(300);
  }
  // 576x512: the demo VAE's default tile is 512x512 pixels, so tiling gives two tiles.
  Json body() const {
    return {{"prompt", "a red circle on a blue background"}, {"steps", 2}, {"seed", 9},
            {"sampler_name", "Euler"}, {"width", 576}, {"height", 512}};
  }
  PngImage txt2img(const Json& b) {
    auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body.substr(0, 400);
    Json out = parse_json(r);
    std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
    return read_png(png.data(), png.size());
  }
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(VaeTilingApi, TiledVaeTrueGivesTheUntiledPictureUpToRounding) {
  Json b = body();
  b["tiled_vae"] = false;
  const PngImage untiled = txt2img(b);
  b["tiled_vae"] = true;
  const PngImage tiled = txt2img(b);
  b["tiled_vae"] = "auto";
  const PngImage automatic = txt2img(b);
  ASSERT_EQ(untiled.width, 576);
  ASSERT_EQ(tiled.rgb.size(), untiled.rgb.size());
  int max_diff = 0;
  for (size_t i = 0; i < tiled.rgb.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(int(tiled.rgb[i]) - int(untiled.rgb[i])));
  }
  EXPECT_LE(max_diff, 1);
  EXPECT_EQ(automatic.rgb, untiled.rgb) << "auto: this size fits, so no tiles";
}

TEST_F(VaeTilingApi, BadValuesAreClientErrorsNamingTheField) {
  for (const Json& bad : {Json("sideways"), Json(3), Json::array()}) {
    Json b = body();
    b["tiled_vae"] = bad;
    auto r = post_json(*c_, "/sdapi/v1/txt2img", b);
    ASSERT_TRUE(r);
    EXPECT_GE(r->status, 400);
    EXPECT_LT(r->status, 500);
    EXPECT_NE(r->body.find(bad.is_string() ? "sideways" : "tiled_vae"), std::string::npos) << r->body;
  }
  Json native = {{"prompt", "x"}, {"vae_tiling", "sometimes"}};
  auto r = post_json(*c_, "/api/jobs", native);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;  // the native API's answer to a field it cannot use
  EXPECT_NE(r->body.find("sometimes"), std::string::npos) << r->body;
  auto alive = c_->Get("/sdapi/v1/options");
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->status, 200);
}

}  // namespace
}  // namespace diffuse::testing
