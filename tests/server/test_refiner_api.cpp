// The SDXL refiner through the HTTP APIs: A1111's refiner_checkpoint /
// refiner_switch_at on /sdapi/v1/txt2img reproduce diffusers' base -> refiner
// hand-off (fixture set v2) within 1/255 per pixel of the golden PNG, with the
// "Refiner" infotext; an unknown refiner is 404 naming it, a bad switch 422;
// the native /api/jobs "refiner" field likewise.
#include <gtest/gtest.h>

#include "io/png.h"
#include "pipeline/refiner_runs.h"
#include "server/base64.h"
#include "server_test_util.h"

namespace diffuse {
namespace {

using namespace testing;

class RefinerApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    namespace fs = std::filesystem;
    const std::string models = temp_dir();
    fs::create_directory_symlink(sdxl_base_dir(), fs::path(models) / "tiny-sdxl");
    fs::create_directory_symlink(refiner_dir(), fs::path(models) / "tiny-refiner");
    server_ = std::make_unique<RunningServer>(tiny_options(models, temp_dir()));
    c_ = server_->client(300);
  }
  Json txt2img_body() const {
    const nlohmann::json& base = refiner_run("base_to_refiner")["base_call"];
    return {{"prompt", base["prompt"]},
            {"negative_prompt", base["negative_prompt"]},
            {"steps", base["num_inference_steps"]},
            {"cfg_scale", base["guidance_scale"]},
            {"width", 128},
            {"height", 128},
            {"sampler_name", "Euler"},
            {"seed", base["generator"]["seed"]},
            {"override_settings", {{"sd_model_checkpoint", "tiny-sdxl"}}},
            {"refiner_checkpoint", "tiny-refiner"},
            {"refiner_switch_at", base["denoising_end"]}};
  }
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(RefinerApiTest, A1111Txt2ImgWithRefinerMatchesDiffusers) {
  auto r = post_json(*c_, "/sdapi/v1/txt2img", txt2img_body());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 400);
  const Json out = parse_json(r);
  ASSERT_EQ(out["images"].size(), 1u);
  const std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  const PngImage got = read_png(png.data(), png.size());
  const image::Rgb want =
      load_rgb(goldens_dir() + "/sdxl/" + refiner_run("base_to_refiner")["refiner_call"]["image_png"].get<std::string>());
  ASSERT_EQ(got.rgb.size(), want.px.size());
  int worst = 0;
  for (size_t i = 0; i < got.rgb.size(); ++i) worst = std::max(worst, std::abs(static_cast<int>(got.rgb[i]) - static_cast<int>(want.px[i])));
  std::printf("  /sdapi/v1/txt2img base -> refiner vs diffusers' PNG: max %d/255\n", worst);
  EXPECT_LE(worst, 1);
  const Json info = Json::parse(out["info"].get<std::string>());
  const std::string text = info["infotexts"][0].get<std::string>();
  EXPECT_NE(text.find("Refiner: tiny-refiner ["), std::string::npos) << text;
  EXPECT_NE(text.find("Refiner switch at: 0.8"), std::string::npos) << text;
  EXPECT_NE(text.find("Model: tiny-sdxl"), std::string::npos) << text;
}

TEST_F(RefinerApiTest, BadRefinerFieldsAreRefusedWithTheirName) {
  Json body = txt2img_body();
  body["refiner_checkpoint"] = "no-such-refiner";
  auto r = post_json(*c_, "/sdapi/v1/txt2img", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_NE(r->body.find("no-such-refiner"), std::string::npos) << r->body;
  body = txt2img_body();
  body["refiner_switch_at"] = 1.5;
  r = post_json(*c_, "/sdapi/v1/txt2img", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("refiner_switch_at"), std::string::npos) << r->body;
  // "None" (A1111's empty choice) runs without a refiner.
  body = txt2img_body();
  body["refiner_checkpoint"] = "None";
  body["steps"] = 2;
  r = post_json(*c_, "/sdapi/v1/txt2img", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body.substr(0, 300);
  EXPECT_EQ(Json::parse(parse_json(r)["info"].get<std::string>())["infotexts"][0].get<std::string>().find("Refiner:"),
            std::string::npos);

  Json native = {{"model", "tiny-sdxl"}, {"prompt", "a fox"}, {"steps", 2}, {"width", 64}, {"height", 64},
                 {"refiner", {{"model", "no-such-refiner"}, {"switch_at", 0.8}}}};
  r = post_json(*c_, "/api/jobs", native);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_NE(r->body.find("no-such-refiner"), std::string::npos) << r->body;
  native["refiner"] = {{"model", "tiny-refiner"}, {"switch_at", 0}};
  r = post_json(*c_, "/api/jobs", native);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  native["refiner"] = {{"model", "tiny-refiner"}, {"switch_at", 0.5}};
  r = post_json(*c_, "/api/jobs", native);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  const std::string id = parse_json(r)["id"].get<std::string>();
  Json job;
  ASSERT_TRUE(eventually(
      [&] {
        job = parse_json(c_->Get(("/api/jobs/" + id).c_str()));
        return job.is_object() && (job["state"] == "done" || job["state"] == "failed");
      },
      std::chrono::seconds(120)));
  EXPECT_EQ(job["state"], "done") << job.dump();
}

}  // namespace
}  // namespace diffuse
