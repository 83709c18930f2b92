// Few-step models through the APIs (docs/few-step.md): the kind in
// /api/models, A1111 txt2img filling what the request leaves out with the
// model's defaults (steps, CFG, sampler, size), TCD in /sdapi/v1/samplers and
// its "eta", and the refusals of bad input (the A1111 routes answer 422 for an
// invalid field, as A1111's FastAPI validation does, and so does the native API).
#include <filesystem>
#include <fstream>

#include "server_harness.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

// The sd2 fixture as "tiny-sd2-turbo" (SD-Turbo's scheduler config) beside the plain tiny models.
std::string models_with_turbo() {
  const std::string dir = tiny_models_dir();
  const fs::path base = fs::path(fixtures_dir()) / "sd2" / "model";
  const fs::path dst = fs::path(dir) / "tiny-sd2-turbo";
  fs::create_directories(dst / "scheduler");
  for (const auto& e : fs::directory_iterator(base))
    if (e.path().filename() != "scheduler") fs::create_symlink(fs::canonical(e.path()), dst / e.path().filename());
  const Json sched = {{"_class_name", "EulerAncestralDiscreteScheduler"}, {"beta_end", 0.012},
                      {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085}, {"num_train_timesteps", 1000},
                      {"prediction_type", "epsilon"}, {"set_alpha_to_one", false}, {"steps_offset", 1},
                      {"timestep_spacing", "trailing"}};
  std::ofstream((dst / "scheduler/scheduler_config.json").string()) << sched.dump(1);
  return dir;
}

class FewStepApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    server_ = std::make_unique<RunningServer>(tiny_options(models_with_turbo(), temp_dir()));
  }
  std::unique_ptr<RunningServer> server_;
};

TEST_F(FewStepApiTest, ModelsShowTheKindAndItsDefaults) {
  auto c = server_->client();
  const Json models = parse_json(c->Get("/api/models"));
  bool turbo = false;
  for (const Json& m : models) {
    if (m["id"] == "tiny-sd2-turbo") {
      turbo = true;
      EXPECT_EQ(m["kind"], "turbo");
      EXPECT_EQ(m["kind_guessed"], true);
      EXPECT_EQ(m["defaults"]["steps"], 1);
      EXPECT_EQ(m["defaults"]["cfg_scale"], 0.0);
      EXPECT_EQ(m["defaults"]["sampler"], "euler_a");
    } else {
      EXPECT_TRUE(m["kind"].is_null()) << m;
    }
  }
  EXPECT_TRUE(turbo) << models;
  bool tcd = false;
  for (const Json& s : parse_json(c->Get("/sdapi/v1/samplers"))) tcd |= s["name"] == "TCD";
  EXPECT_TRUE(tcd);
}

TEST_F(FewStepApiTest, A1111RequestWithoutStepsOrCfgTakesTheModelsDefaults) {
  auto c = server_->client();
  auto r = post_json(*c, "/sdapi/v1/txt2img",
                     {{"prompt", "a red cube"}, {"seed", 5}, {"override_settings", {{"sd_model_checkpoint", "tiny-sd2-turbo"}}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["steps"], 1) << info;
  EXPECT_EQ(info["cfg_scale"], 0.0) << info;
  EXPECT_EQ(info["sampler_name"], "Euler a") << info;
  EXPECT_EQ(info["width"], 128) << info;
  // Given values win.
  r = post_json(*c, "/sdapi/v1/txt2img",
                {{"prompt", "a red cube"}, {"seed", 5}, {"steps", 2}, {"cfg_scale", 1.5}, {"width", 64}, {"height", 64},
                 {"sampler_name", "TCD"}, {"eta", 0.5}, {"override_settings", {{"sd_model_checkpoint", "tiny-sd2-turbo"}}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json given = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(given["steps"], 2);
  EXPECT_EQ(given["sampler_name"], "TCD");
}

TEST_F(FewStepApiTest, BadInputIsRefusedWithTheReason) {
  auto c = server_->client();
  const Json base = {{"prompt", "x"}, {"seed", 1}, {"width", 64}, {"height", 64},
                     {"override_settings", {{"sd_model_checkpoint", "tiny-sd2-turbo"}}}};
  Json many = base;
  many.update({{"sampler_name", "LCM"}, {"steps", 60}});
  auto r = post_json(*c, "/sdapi/v1/txt2img", many);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("[1, 50]"), std::string::npos) << r->body;
  Json eta = base;
  eta.update({{"sampler_name", "TCD"}, {"steps", 2}, {"eta", 3}});
  r = post_json(*c, "/sdapi/v1/txt2img", eta);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  Json sched = base;
  sched.update({{"sampler_name", "TCD"}, {"steps", 2}, {"scheduler", "Karras"}});
  r = post_json(*c, "/sdapi/v1/txt2img", sched);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("runs with automatic"), std::string::npos) << r->body;
  // The native API refuses a bad eta when the job is submitted.
  r = post_json(*c, "/api/jobs", {{"model", "tiny-sd2-turbo"}, {"prompt", "x"}, {"sampler", "tcd"}, {"eta", -1}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("eta must be between 0 and 1"), std::string::npos) << r->body;
}

}  // namespace
}  // namespace diffuse::testing
