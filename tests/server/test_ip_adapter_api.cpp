// sd-webui-controlnet's IP-Adapter units on the A1111 API and the native
// "ip_adapter" field (docs/ip-adapter.md), on the tiny sd1 fixture model with
// the repository's tiny IP-Adapters in the ControlNet folder: a unit changes
// the image and the infotext carries it, weight 0 is the plain image; bad
// units are answered 400 (404 for an unknown model) naming the field, and the
// server serves on with the model unchanged.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/checkpoint.h"
#include "io/png.h"
#include "server/base64.h"
#include "server/queue_codec.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

std::string data() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/adapters/data/ipadapter"; }

std::string file_b64(const std::string& path) { return server::base64_encode(read_file(path)); }

std::vector<uint8_t> pixels(const Json& image_b64) {
  const std::vector<uint8_t> b = server::base64_decode(image_b64.get<std::string>());
  return read_png(b.data(), b.size()).rgb;
}

class IpAdapterApi : public TinyServerTest {
 protected:
  void SetUp() override {
    TinyServerTest::SetUp();
    dir_ = temp_dir();
    fs::copy_file(data() + "/sd1_base.bin", dir_ + "/ip-adapter_tiny_sd15.bin");
    fs::copy(data() + "/image_encoder", dir_ + "/image_encoder", fs::copy_options::recursive);
    fs::copy_file(data() + "/sdxl_plus.safetensors", dir_ + "/ip-adapter-plus_tiny_sdxl.safetensors");
    server::ServerOptions o = tiny_options(models_, data_);
    o.controlnet_dirs = {dir_};
    start(o);
    c_ = server_->client(300);
  }
  Json body() const {
    return {{"prompt", "a red fox"}, {"negative_prompt", ""}, {"steps", 3}, {"seed", 99}, {"sampler_name", "Euler"},
            {"width", 64}, {"height", 64}, {"cfg_scale", 7},
            {"override_settings", {{"sd_model_checkpoint", "tiny-sd1"}}}};
  }
  Json unit(const std::string& model, double weight, const std::string& module = "ip-adapter_clip_sd15") const {
    return {{"enabled", true}, {"image", file_b64(data() + "/ref_a.png")}, {"module", module}, {"model", model},
            {"weight", weight}, {"resize_mode", "Crop and Resize"}, {"processor_res", 512}};
  }
  static Json with_units(Json b, const Json& units) {
    b["alwayson_scripts"] = {{"controlnet", {{"args", units}}}};
    return b;
  }
  httplib::Result post(const Json& b, const std::string& path = "/sdapi/v1/txt2img") { return post_json(*c_, path, b); }
  std::string dir_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(IpAdapterApi, UnitsGenerateAndBadOnesAre400) {
  auto plain = post(body());
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body.substr(0, 300);
  const Json pj = Json::parse(plain->body);
  auto with = post(with_units(body(), Json::array({unit("ip-adapter_tiny_sd15", 0.7)})));
  ASSERT_TRUE(with);
  ASSERT_EQ(with->status, 200) << with->body.substr(0, 300);
  const Json wj = Json::parse(with->body);
  EXPECT_NE(pixels(wj["images"][0]), pixels(pj["images"][0]));
  const std::string text = Json::parse(wj["info"].get<std::string>())["infotexts"][0].get<std::string>();
  EXPECT_NE(text.find("ControlNet 0: \"Module: ip-adapter_clip_sd15, Model: ip-adapter_tiny_sd15 ["), std::string::npos)
      << text;
  EXPECT_NE(text.find("Weight: 0.7"), std::string::npos) << text;
  auto zero = post(with_units(body(), Json::array({unit("ip-adapter_tiny_sd15", 0.0)})));
  ASSERT_TRUE(zero);
  ASSERT_EQ(zero->status, 200);
  EXPECT_EQ(pixels(Json::parse(zero->body)["images"][0]), pixels(pj["images"][0]));

  // Bad units: 400 naming the field (404: an unknown model), the server serving on.
  Json u = unit("ip-adapter_tiny_sd15", 2.5);
  auto r = post(with_units(body(), Json::array({u})));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("weight"), std::string::npos) << r->body;
  u = unit("ip-adapter_tiny_sd15", 1.0);
  u["image"] = server::base64_encode(std::string("not a png"));
  r = post(with_units(body(), Json::array({u})));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find(".image"), std::string::npos) << r->body;
  r = post(with_units(body(), Json::array({unit("ip-adapter-plus_tiny_sdxl", 1.0, "ip-adapter_clip_h")})));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("token width 48"), std::string::npos) << r->body;
  r = post(with_units(body(), Json::array({unit("ip-adapter_missing", 1.0)})));
  ASSERT_TRUE(r);
  EXPECT_GE(r->status, 400);
  EXPECT_LT(r->status, 500);
  EXPECT_NE(r->body.find("ip-adapter_missing"), std::string::npos) << r->body;

  // Native: "ip_adapter" with two images.
  Json nb = {{"prompt", "a red fox"}, {"steps", 3}, {"seed", 5}, {"width", 64}, {"height", 64}, {"model", "tiny-sd1"},
             {"ip_adapter", {{"model", "ip-adapter_tiny_sd15"}, {"scale", 0.5},
                             {"images", Json::array({file_b64(data() + "/ref_a.png"), file_b64(data() + "/ref_b.png")})}}}};
  r = post(nb, "/api/jobs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  nb["ip_adapter"]["block_scales"] = {{"up", {{"block_0", 1.0}}}};  // tiny-sd1's up block 0 has no attention
  r = post(nb, "/api/jobs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("up.block_0"), std::string::npos) << r->body;
  nb["ip_adapter"].erase("block_scales");
  nb["ip_adapter"]["scale"] = -1;
  r = post(nb, "/api/jobs");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("scale"), std::string::npos) << r->body;

  // Still serving, the model as it was.
  auto again = post(body());
  ASSERT_TRUE(again);
  ASSERT_EQ(again->status, 200);
  EXPECT_EQ(pixels(Json::parse(again->body)["images"][0]), pixels(pj["images"][0]));
}

// The Redis queue carries the IP-Adapter to its workers (queue_codec.h).
TEST(IpAdapterQueueCodec, RoundTrips) {
  server::JobRequest r;
  r.model = "m";
  IpAdapterParams& ip = r.params.ip_adapter;
  ip.model = "/m/ip-adapter_sd15.bin";
  ip.image_encoder = "/m/image_encoder";
  ip.images = {{2, 1, {1, 2, 3, 4, 5, 6}}, {1, 1, {7, 8, 9}}};
  ip.scale = 0.6f;
  ip.block_scales = R"({"up": {"block_0": [0.0, 1.0, 0.0]}})";
  ip.module = "ip-adapter_clip_sd15";
  const IpAdapterParams got = server::decode_job_request(server::encode_job_request(r)).params.ip_adapter;
  EXPECT_EQ(got.model, ip.model);
  EXPECT_EQ(got.image_encoder, ip.image_encoder);
  ASSERT_EQ(got.images.size(), 2u);
  EXPECT_EQ(got.images[0].px, ip.images[0].px);
  EXPECT_EQ(got.images[0].width, 2);
  EXPECT_EQ(got.images[1].px, ip.images[1].px);
  EXPECT_EQ(got.scale, 0.6f);
  EXPECT_EQ(got.block_scales, ip.block_scales);
  EXPECT_EQ(got.module, ip.module);
  EXPECT_FALSE(server::decode_job_request(server::encode_job_request(server::JobRequest{})).params.ip_adapter.active());
}

}  // namespace
}  // namespace diffuse::testing
