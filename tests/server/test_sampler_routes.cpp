// The server's sampler surfaces read the catalogue (sampling/sampler_catalog.h):
// GET /api/samplers (the web page's list), /sdapi/v1/samplers and
// /sdapi/v1/schedulers, and txt2img with A1111 spellings, including the Heun
// sampler added through one catalogue row and a legacy "... Karras" name.
#include "sampling/sampler_catalog.h"
#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

class SamplerRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    server_ = std::make_unique<RunningServer>(tiny_options(tiny_models_dir(), temp_dir()));
  }
  std::unique_ptr<RunningServer> server_;
};

TEST_F(SamplerRoutesTest, ListsComeFromTheCatalogue) {
  auto c = server_->client();
  const Json web = parse_json(c->Get("/api/samplers"));
  EXPECT_EQ(web, sampler_catalog_json());
  ASSERT_EQ(web["samplers"].size(), sampler_catalog().size());
  bool heun = false;
  for (const Json& s : web["samplers"]) heun |= s["name"] == "heun" && s["label"] == "Heun";
  EXPECT_TRUE(heun);
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/samplers")), a1111_samplers_json());
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/schedulers")), a1111_schedulers_json());
}

TEST_F(SamplerRoutesTest, Txt2ImgTakesA1111Spellings) {
  auto c = server_->client();
  // Heun: 2 steps are 3 UNet evaluations.
  auto r = post_json(*c, "/sdapi/v1/txt2img",
                     {{"prompt", "a red cube"}, {"seed", 5}, {"steps", 2}, {"width", 64}, {"height", 64},
                      {"sampler_name", "Heun"}, {"cfg_scale", 5}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["sampler_name"], "Heun");
  EXPECT_NE(info["infotexts"][0].get<std::string>().find("Sampler: Heun"), std::string::npos) << info["infotexts"][0];

  // A legacy name with its schedule, and a k-diffusion alias with A1111's "scheduler" field.
  for (const Json& extra : {Json{{"sampler_name", "DPM++ 2M Karras"}},
                            Json{{"sampler_name", "k_dpmpp_2m"}, {"scheduler", "Karras"}}}) {
    Json body = {{"prompt", "a red cube"}, {"seed", 5}, {"steps", 2}, {"width", 64}, {"height", 64}};
    body.update(extra);
    r = post_json(*c, "/sdapi/v1/txt2img", body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    info = Json::parse(parse_json(r)["info"].get<std::string>());
    EXPECT_EQ(info["sampler_name"], "DPM++ 2M") << extra;
    const std::string text = info["infotexts"][0].get<std::string>();
    EXPECT_NE(text.find("Schedule type: Karras"), std::string::npos) << extra << ": " << text;
  }

  // A sampler the catalogue has no karras schedule for is not found under a Karras name.
  r = post_json(*c, "/sdapi/v1/txt2img",
                {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"sampler_name", "DDIM Karras"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(r->body.find("Sampler not found"), std::string::npos) << r->body;
}

// Issue #23's samplers with A1111's and ComfyUI's schedule names; bad names and pairs are 422s (the
// server's invalid-argument status, as A1111's FastAPI validation) naming what is valid.
TEST_F(SamplerRoutesTest, NewSamplersAndSchedules) {
  auto c = server_->client();
  struct Case {
    const char* sampler;
    const char* scheduler;
    const char* want_sampler;
    const char* want_schedule;
  };
  for (const Case& k : {Case{"DPM++ SDE", "Exponential", "DPM++ SDE", "Exponential"},
                        Case{"DPM2 a", "align_your_steps", "DPM2 a", "Align Your Steps"},
                        Case{"dpmpp_3m_sde", "ddim_uniform", "DPM++ 3M SDE", "DDIM"},
                        Case{"k_dpmpp_2s_a", "SGMUniform", "DPM++ 2S a", "SGM Uniform"},
                        Case{"DPM++ 2M SDE", "beta", "DPM++ 2M SDE", "Beta"},
                        Case{"DPM2", "KL Optimal", "DPM2", "KL Optimal"}}) {
    SCOPED_TRACE(std::string(k.sampler) + " / " + k.scheduler);
    auto r = post_json(*c, "/sdapi/v1/txt2img",
                       {{"prompt", "a red cube"}, {"seed", 9}, {"steps", 3}, {"width", 64}, {"height", 64},
                        {"sampler_name", k.sampler}, {"scheduler", k.scheduler}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const Json info = Json::parse(parse_json(r)["info"].get<std::string>());
    EXPECT_EQ(info["sampler_name"], k.want_sampler);
    const std::string text = info["infotexts"][0].get<std::string>();
    EXPECT_NE(text.find(std::string("Schedule type: ") + k.want_schedule), std::string::npos) << text;
  }
  auto r = post_json(*c, "/sdapi/v1/txt2img",
                     {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"sampler_name", "Euler"},
                      {"scheduler", "linear_quadratic"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);  // the server's status for invalid arguments (A1111 / FastAPI)
  EXPECT_NE(r->body.find("unknown schedule 'linear_quadratic'"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("align_your_steps"), std::string::npos) << r->body;
  r = post_json(*c, "/sdapi/v1/txt2img",
                {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"sampler_name", "DDIM"},
                 {"scheduler", "Karras"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);  // the server's status for invalid arguments (A1111 / FastAPI)
  EXPECT_NE(r->body.find("not available for sampler 'DDIM' (it runs with automatic)"), std::string::npos) << r->body;
  // The native API takes the same spellings.
  r = post_json(*c, "/api/jobs", {{"prompt", "x"}, {"steps", 2}, {"width", 64}, {"height", 64},
                                  {"sampler", "dpmpp_sde"}, {"schedule", "ays"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const Json job = wait_job(*c, parse_json(r)["id"]);
  ASSERT_EQ(job["state"], "done") << job.dump();
  const std::string params = job["images"][0]["parameters"];
  EXPECT_NE(params.find("Sampler: DPM++ SDE, Schedule type: Align Your Steps"), std::string::npos) << params;
  r = post_json(*c, "/api/jobs", {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64},
                                  {"sampler", "dpmpp_sde"}, {"schedule", "karas"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);  // the server's status for invalid arguments (A1111 / FastAPI)
  EXPECT_NE(r->body.find("unknown schedule 'karas'"), std::string::npos) << r->body;
}

}  // namespace
}  // namespace diffuse::testing
