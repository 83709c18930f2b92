// VAEs through the HTTP APIs (docs/vae.md), on the tiny sd1 fixture model with
// a VAE folder the test writes: A1111's /sdapi/v1/sd-vae and /refresh-vae, the
// sd_vae option (GET/POST /sdapi/v1/options) and override_settings.sd_vae of
// txt2img, the native jobs' "vae" field, the OpenAI route using the server's
// sd_vae; the image changes with a VAE of other weights and stays bit for bit
// with the model's own weights in LDM form, "VAE hash"/"VAE" in the infotext
// and sd_vae_name/sd_vae_hash in info; unknown names answered 400 naming them,
// a broken file failing its job while the server keeps serving.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/png.h"
#include "io/sha256.h"
#include "server/base64.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kSide = 64;

PngImage decode_b64_png(const std::string& b64) {
  std::vector<uint8_t> b = server::base64_decode(b64);
  return read_png(b.data(), b.size());
}

class VaeApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    model_ = fixtures_dir() + "/sd1/model";
    vae_dir_ = temp_dir();
    // A brighter VAE: the model's own with conv_out's bias + 0.2 (diffusers names).
    TensorMap w;
    for (auto& [k, t] : load_safetensors(model_ + "/vae/diffusion_pytorch_model.safetensors").tensors)
      w.emplace(k, t.to(DType::kF32).contiguous());
    std::vector<float> bias = w.at("decoder.conv_out.bias").to_f32_vector();
    for (float& b : bias) b += 0.2f;
    w["decoder.conv_out.bias"] = Tensor::from_vector(bias, {static_cast<int64_t>(bias.size())});
    save_safetensors(vae_dir_ + "/bright.safetensors", w);
    // The model's own VAE as an LDM single file (the fixture checkpoint's first_stage_model.*).
    TensorMap ldm;
    for (auto& [k, t] : load_safetensors(fixtures_dir() + "/sd1/single_file.safetensors").tensors)
      if (k.rfind("first_stage_model.", 0) == 0) ldm.emplace(k.substr(18), t.contiguous());
    save_safetensors(vae_dir_ + "/ldm-copy.safetensors", ldm);
    // A diffusers VAE folder, one level down.
    fs::create_directories(vae_dir_ + "/sub/folder-vae");
    fs::copy_file(model_ + "/vae/config.json", vae_dir_ + "/sub/folder-vae/config.json");
    fs::copy_file(model_ + "/vae/diffusion_pytorch_model.safetensors",
                  vae_dir_ + "/sub/folder-vae/diffusion_pytorch_model.safetensors");
    std::ofstream(vae_dir_ + "/broken.ckpt") << "not a torch archive";
    std::ofstream(vae_dir_ + "/notes.txt") << "not a VAE";

    server::ServerOptions o;
    o.model_files = {model_};
    o.data_dir = temp_dir();
    o.vae_dirs = {vae_dir_};
    server_ = std::make_unique<RunningServer>(o);
    c_ = server_->client(300);
  }
  httplib::Result txt2img(const Json& overrides) {
    Json body = {{"prompt", "a red fox"}, {"negative_prompt", ""}, {"steps", 2},         {"seed", 4321},
                 {"sampler_name", "Euler"}, {"width", kSide},        {"height", kSide}, {"cfg_scale", 7}};
    if (!overrides.is_null()) body["override_settings"] = overrides;
    return post_json(*c_, "/sdapi/v1/txt2img", body);
  }
  Json txt2img_ok(const Json& overrides = Json()) {
    auto r = txt2img(overrides);
    EXPECT_TRUE(r);
    if (!r) return Json();
    EXPECT_EQ(r->status, 200) << r->body.substr(0, 500);
    return parse_json(r);
  }
  std::string sd_vae_option() { return parse_json(c_->Get("/sdapi/v1/options"))["sd_vae"]; }
  std::string abs(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

  std::string model_, vae_dir_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<httplib::Client> c_;
};

TEST_F(VaeApiTest, ListsVaesInA1111ShapeAndRefreshes) {
  auto r = c_->Get("/sdapi/v1/sd-vae");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  Json list = parse_json(r);
  // By name (notes.txt is no VAE file).
  const Json expected = Json::array({
      {{"model_name", "bright.safetensors"}, {"filename", abs(vae_dir_ + "/bright.safetensors")}},
      {{"model_name", "broken.ckpt"}, {"filename", abs(vae_dir_ + "/broken.ckpt")}},
      {{"model_name", "folder-vae"}, {"filename", abs(vae_dir_ + "/sub/folder-vae")}},
      {{"model_name", "ldm-copy.safetensors"}, {"filename", abs(vae_dir_ + "/ldm-copy.safetensors")}},
  });
  EXPECT_EQ(list, expected);

  fs::copy_file(vae_dir_ + "/bright.safetensors", vae_dir_ + "/later.safetensors");
  EXPECT_EQ(parse_json(c_->Get("/sdapi/v1/sd-vae")).size(), 4u) << "listed again only on refresh";
  httplib::Client raw("127.0.0.1", server_->port());
  r = raw.Post("/sdapi/v1/refresh-vae");  // A1111 clients send no body
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "null");
  EXPECT_EQ(parse_json(c_->Get("/sdapi/v1/sd-vae")).size(), 5u);
}

TEST_F(VaeApiTest, OptionSetsTheServersVae) {
  EXPECT_EQ(sd_vae_option(), "Automatic");
  const Json base = txt2img_ok();
  const Json base_info = Json::parse(base["info"].get<std::string>());
  EXPECT_TRUE(base_info["sd_vae_name"].is_null());
  EXPECT_EQ(base_info["infotexts"][0].get<std::string>().find("VAE"), std::string::npos);

  auto r = post_json(*c_, "/sdapi/v1/options", {{"sd_vae", "bright.safetensors"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(sd_vae_option(), "bright.safetensors");
  const Json bright = txt2img_ok();
  EXPECT_NE(decode_b64_png(bright["images"][0]).rgb, decode_b64_png(base["images"][0]).rgb);
  const Json info = Json::parse(bright["info"].get<std::string>());
  const std::string hash = sha256_file(vae_dir_ + "/bright.safetensors").substr(0, 10);
  EXPECT_EQ(info["sd_vae_name"], "bright.safetensors");
  EXPECT_EQ(info["sd_vae_hash"], hash);
  const std::string text = info["infotexts"][0];
  EXPECT_NE(text.find("VAE hash: " + hash + ", VAE: bright.safetensors"), std::string::npos) << text;
  // PNG Info reads them back.
  r = post_json(*c_, "/sdapi/v1/png-info", {{"image", bright["images"][0]}});
  ASSERT_TRUE(r);
  const Json png = parse_json(r);
  EXPECT_EQ(png["parameters"]["VAE hash"], hash);
  EXPECT_EQ(png["parameters"]["VAE"], "bright.safetensors");

  // An unknown name: 400 naming it, the option unchanged.
  r = post_json(*c_, "/sdapi/v1/options", {{"sd_vae", "nope.safetensors"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("VAE 'nope.safetensors' not found"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("bright.safetensors"), std::string::npos) << "lists what is available: " << r->body;
  EXPECT_EQ(sd_vae_option(), "bright.safetensors");

  // The OpenAI route uses the server's sd_vae too.
  r = post_json(*c_, "/v1/images/generations",
                {{"prompt", "a red fox"}, {"size", "64x64"}, {"response_format", "b64_json"}, {"steps", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const std::vector<uint8_t> bytes = server::base64_decode(parse_json(r)["data"][0]["b64_json"].get<std::string>());
  bool tagged = false;
  for (const auto& [k, v] : read_png_text(bytes.data(), bytes.size()))
    tagged |= k == "parameters" && v.find("VAE: bright.safetensors") != std::string::npos;
  EXPECT_TRUE(tagged);

  // "None" (and "Automatic") is the model's own again.
  r = post_json(*c_, "/sdapi/v1/options", {{"sd_vae", "None"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(sd_vae_option(), "Automatic");
  EXPECT_EQ(decode_b64_png(txt2img_ok()["images"][0]).rgb, decode_b64_png(base["images"][0]).rgb);
}

TEST_F(VaeApiTest, OverrideSettingsPickTheVaeOfOneRequest) {
  const Json base = txt2img_ok();
  const auto base_rgb = decode_b64_png(base["images"][0]).rgb;
  // The model's own weights as an LDM file, and as a diffusers folder: the same image, bit for bit.
  for (const char* name : {"ldm-copy.safetensors", "folder-vae"}) {
    SCOPED_TRACE(name);
    const Json same = txt2img_ok({{"sd_vae", name}});
    EXPECT_EQ(decode_b64_png(same["images"][0]).rgb, base_rgb);
    EXPECT_EQ(Json::parse(same["info"].get<std::string>())["sd_vae_name"], name);
  }
  // A name without its extension; other weights change the image.
  const Json bright = txt2img_ok({{"sd_vae", "bright"}});
  EXPECT_NE(decode_b64_png(bright["images"][0]).rgb, base_rgb);
  EXPECT_EQ(sd_vae_option(), "Automatic") << "override_settings do not change the option";

  auto r = txt2img({{"sd_vae", "missing-vae"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("VAE 'missing-vae' not found"), std::string::npos) << r->body;
  // Names only: a path elsewhere on the machine is not opened.
  r = txt2img({{"sd_vae", abs(model_ + "/vae")}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body.substr(0, 300);

  // A broken file fails its job with the reader's message; the server keeps serving.
  r = txt2img({{"sd_vae", "broken.ckpt"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("broken.ckpt"), std::string::npos) << r->body;
  EXPECT_EQ(decode_b64_png(txt2img_ok()["images"][0]).rgb, base_rgb);
}

TEST_F(VaeApiTest, NativeJobsTakeAVaeName) {
  auto r = post_json(*c_, "/api/jobs",
                     {{"prompt", "a red fox"}, {"steps", 2}, {"seed", 4321}, {"sampler", "euler"}, {"width", kSide},
                      {"height", kSide}, {"vae", "bright.safetensors"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const Json job = wait_job(*c_, parse_json(r)["id"]);
  ASSERT_EQ(job["state"], "done") << job.dump();
  const std::string params = job["images"][0]["parameters"];
  EXPECT_NE(params.find("VAE: bright.safetensors"), std::string::npos) << params;

  r = post_json(*c_, "/api/jobs", {{"prompt", "a red fox"}, {"steps", 2}, {"vae", "nope"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("VAE 'nope' not found"), std::string::npos) << r->body;
}

}  // namespace
}  // namespace diffuse::testing
