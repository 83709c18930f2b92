// Few-step models through the pipeline (docs/few-step.md), on the tiny fixture
// models: kind detection and defaults, the LCM UNet's guidance embedding in
// place of CFG (diffusers' StableDiffusionPipeline rule), TCD's eta, and the
// refusals. The per-step numerics are checked against references in
// tests/sampling/test_tcd.cpp and tests/models/test_unet_lcm.cpp; the diffusers
// image goldens (tools/reference/fewstep_goldens.py) are still to be made.
#include <filesystem>
#include <fstream>

#include "edit_runs.h"
#include "pipeline/few_step.h"

namespace diffuse {
namespace {

using namespace testing;
namespace fs = std::filesystem;

// SD-Turbo / SDXL-Turbo's scheduler config (the keys that matter).
const nlohmann::json kTurboScheduler = {
    {"_class_name", "EulerAncestralDiscreteScheduler"}, {"beta_end", 0.012}, {"beta_schedule", "scaled_linear"},
    {"beta_start", 0.00085}, {"num_train_timesteps", 1000}, {"prediction_type", "epsilon"},
    {"set_alpha_to_one", false}, {"steps_offset", 1}, {"timestep_spacing", "trailing"}};
const nlohmann::json kLcmScheduler = {
    {"_class_name", "LCMScheduler"}, {"beta_end", 0.012}, {"beta_schedule", "scaled_linear"},
    {"beta_start", 0.00085}, {"num_train_timesteps", 1000}, {"original_inference_steps", 50},
    {"prediction_type", "epsilon"}, {"set_alpha_to_one", true}, {"steps_offset", 1}, {"timestep_scaling", 10.0}};

// A fixture model with its scheduler config replaced (and optionally its UNet's config and a cond_proj).
std::string model_folder(const std::string& fam, const std::string& name, const nlohmann::json& scheduler,
                         int time_cond_proj_dim = 0) {
  const fs::path base = fs::path(fixtures_dir()) / fam / "model";
  const fs::path dst = fs::path(temp_dir()) / name;
  fs::create_directories(dst / "scheduler");
  for (const auto& e : fs::directory_iterator(base)) {
    const std::string f = e.path().filename().string();
    if (f == "scheduler" || (f == "unet" && time_cond_proj_dim > 0)) continue;
    fs::create_symlink(fs::canonical(e.path()), dst / f);
  }
  std::ofstream((dst / "scheduler/scheduler_config.json").string()) << scheduler.dump(1);
  if (time_cond_proj_dim > 0) {
    fs::create_directories(dst / "unet");
    nlohmann::json cfg = nlohmann::json::parse(read_file((base / "unet/config.json").string()));
    cfg["time_cond_proj_dim"] = time_cond_proj_dim;
    std::ofstream((dst / "unet/config.json").string()) << cfg.dump(1);
    TensorMap w = load_safetensors((base / "unet/diffusion_pytorch_model.safetensors").string()).tensors;
    const int64_t c0 = cfg["block_out_channels"][0].get<int64_t>();
    w["time_embedding.cond_proj.weight"] =
        Tensor::from_vector(noise(static_cast<size_t>(c0 * time_cond_proj_dim), 2323, 0.05f), {c0, time_cond_proj_dim});
    save_safetensors((dst / "unet/diffusion_pytorch_model.safetensors").string(), w);
  }
  return dst.string();
}

GenerationParams prompt_only(int64_t seed) {
  GenerationParams p;
  p.prompt = "a red fox sitting in a snowy forest, detailed oil painting";
  p.seed = seed;
  p.output_latents = true;  // the latents are what is compared
  return p;
}

TEST(FewStepDetection, ReadsConfigsThenNamesThenSchedulerShapes) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig plain = UNetConfig::sd15();
  UNetConfig lcm = plain;
  lcm.time_cond_proj_dim = 256;
  FewStepDetection d = detect_few_step("my-model", nlohmann::json(), lcm);
  ASSERT_NE(d.kind, nullptr);
  EXPECT_STREQ(d.kind->name, "lcm");
  EXPECT_FALSE(d.guessed);
  d = detect_few_step("my-model", kLcmScheduler, plain);
  EXPECT_STREQ(d.kind->name, "lcm");
  EXPECT_FALSE(d.guessed);
  d = detect_few_step("sdxl_lightning_8step_unet", nlohmann::json(), plain);
  EXPECT_STREQ(d.kind->name, "lightning");
  EXPECT_TRUE(d.guessed);
  EXPECT_EQ(d.steps_in_name, 8);
  d = detect_few_step("Hyper-SDXL-12steps", nlohmann::json(), plain);
  EXPECT_STREQ(d.kind->name, "hyper");
  EXPECT_EQ(d.steps_in_name, 12);
  d = detect_few_step("sd_xl_turbo_1.0_fp16", nlohmann::json(), plain);
  EXPECT_STREQ(d.kind->name, "turbo");
  d = detect_few_step("some-folder", kTurboScheduler, plain);
  EXPECT_STREQ(d.kind->name, "turbo");
  EXPECT_TRUE(d.guessed);
  EXPECT_NE(d.reason.find("trailing"), std::string::npos) << d.reason;
  // Words inside other words are not names of kinds; a plain model is none.
  EXPECT_EQ(detect_few_step("hyperrealism_v3", nlohmann::json(), plain).kind, nullptr);
  EXPECT_EQ(detect_few_step("photon", nlohmann::json{{"_class_name", "PNDMScheduler"}}, plain).kind, nullptr);
}

// A Lightning UNet in a folder with SDXL base's scheduler: the folder's class picks the sampler,
// the name the steps, and the kind's trailing timesteps replace "leading".
TEST(FewStepDetection, DefaultsGoIntoInfoAndTheSchedulerConfig) {
  ModelInfo info;
  info.name = "sdxl-lightning-2step";
  info.default_sampler = "euler";
  nlohmann::json sched = {{"_class_name", "EulerDiscreteScheduler"}, {"timestep_spacing", "leading"}};
  apply_few_step_defaults(info, sched, UNetConfig::sdxl_base(), true);
  EXPECT_EQ(info.kind, "lightning");
  EXPECT_TRUE(info.kind_guessed);
  EXPECT_EQ(info.default_steps, 2);
  EXPECT_EQ(info.default_cfg, 0.0f);
  EXPECT_EQ(info.default_sampler, "euler");
  EXPECT_EQ(sched["timestep_spacing"], "trailing");
  // A single file named as an LCM merge (no guidance embedding): lcm's sampler, CFG 1.
  ModelInfo merge;
  merge.name = "dreamshaper_lcm_merge";
  merge.default_sampler = "pndm";
  merge.default_width = merge.default_height = 512;
  nlohmann::json family_sched = {{"_class_name", "PNDMScheduler"}};
  apply_few_step_defaults(merge, family_sched, UNetConfig::sd15(), false);
  EXPECT_EQ(merge.kind, "lcm");
  EXPECT_EQ(merge.default_sampler, "lcm");
  EXPECT_EQ(merge.default_cfg, 1.0f);
  EXPECT_FALSE(merge.guidance_embedding);
  // A plain model keeps its defaults.
  ModelInfo plain;
  plain.name = "photon_v1";
  plain.default_steps = 50;
  nlohmann::json plain_sched = {{"_class_name", "PNDMScheduler"}};
  apply_few_step_defaults(plain, plain_sched, UNetConfig::sd15(), true);
  EXPECT_TRUE(plain.kind.empty());
  EXPECT_EQ(plain.default_steps, 50);
  EXPECT_FALSE(plain_sched.contains("timestep_spacing"));
}

// A folder shipping SD-Turbo's scheduler: detected, and a request without steps / CFG / sampler
// runs 1 step of Euler ancestral at timestep 999 without CFG, as an explicit request for that does.
TEST(FewStepPipeline, TurboFolderRunsWithItsDefaults) {
  DIFFUSE_REQUIRE_FIXTURES();
  Pipeline& pipe = cached_pipeline(model_folder("sd2", "tiny-sd2-folder", kTurboScheduler));
  const ModelInfo& info = pipe.info();
  EXPECT_EQ(info.kind, "turbo");
  EXPECT_TRUE(info.kind_guessed);
  EXPECT_EQ(info.default_steps, 1);
  EXPECT_EQ(info.default_cfg, 0.0f);
  EXPECT_EQ(info.default_sampler, "euler_a");
  GenerationParams p = prompt_only(7);
  p.negative_prompt = "blurry";
  const GenerationResult r = pipe.generate(p);
  EXPECT_EQ(r.steps_run, 1);
  EXPECT_EQ(r.timings.unet_evals, 1) << "guidance 0: one UNet batch, no CFG";
  GenerationParams q = prompt_only(7);
  q.steps = 1;
  q.cfg_scale = 0.0f;
  q.sampler = "euler_a";
  const GenerationResult explicit_run = pipe.generate(q);
  EXPECT_EQ(compare(r.final_latents.to_f32_vector(), explicit_run.final_latents.to_f32_vector()).max_abs, 0.0);
  // Each default can be overridden.
  GenerationParams o = prompt_only(7);
  o.steps = 4;
  EXPECT_EQ(pipe.generate(o).steps_run, 4);
}

// An LCM-distilled UNet: the guidance goes in as the w-embedding, never as CFG (one UNet batch per
// step, the negative prompt unused), and it changes the result.
TEST(FewStepPipeline, LcmUNetTakesGuidanceAsEmbedding) {
  DIFFUSE_REQUIRE_FIXTURES();
  Pipeline& pipe = cached_pipeline(model_folder("sd1", "tiny-lcm-unet", kLcmScheduler, 256));
  const ModelInfo& info = pipe.info();
  EXPECT_EQ(info.kind, "lcm");
  EXPECT_FALSE(info.kind_guessed);
  EXPECT_TRUE(info.guidance_embedding);
  EXPECT_EQ(info.default_steps, 4);
  EXPECT_EQ(info.default_cfg, 8.0f);
  EXPECT_EQ(info.default_sampler, "lcm");
  GenerationParams p = prompt_only(11);
  const GenerationResult r8 = pipe.generate(p);
  EXPECT_EQ(r8.steps_run, 4);
  EXPECT_EQ(r8.timings.unet_evals, 4);
  GenerationParams neg = prompt_only(11);
  neg.negative_prompt = "blurry, low quality";
  const GenerationResult with_negative = pipe.generate(neg);
  EXPECT_EQ(compare(with_negative.final_latents.to_f32_vector(), r8.final_latents.to_f32_vector()).max_abs, 0.0)
      << "no CFG: the negative prompt takes no part";
  GenerationParams low = prompt_only(11);
  low.cfg_scale = 2.0f;
  const Diff d = compare(pipe.generate(low).final_latents.to_f32_vector(), r8.final_latents.to_f32_vector());
  EXPECT_GT(d.max_rel, 1e-3) << "the guidance scale reaches the UNet: " << d.str();
  // More steps than the distillation schedule has: a usage error naming the limit.
  GenerationParams many = prompt_only(11);
  many.steps = 60;
  const Error e = error_of([&] { pipe.generate(many); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("[1, 50]"), std::string::npos) << e.what();
}

TEST(FewStepPipeline, TcdEtaAndRefusals) {
  DIFFUSE_REQUIRE_FIXTURES();
  Pipeline& pipe = cached_pipeline(fixtures_dir() + "/sd1/model");
  GenerationParams p = prompt_only(5);
  p.sampler = "tcd";
  p.steps = 4;
  p.cfg_scale = 0.0f;
  p.eta = 0.0;
  const GenerationResult a = pipe.generate(p), b = pipe.generate(p);
  EXPECT_EQ(compare(a.final_latents.to_f32_vector(), b.final_latents.to_f32_vector()).max_abs, 0.0);
  p.eta = 0.3;
  const Diff d = compare(pipe.generate(p).final_latents.to_f32_vector(), a.final_latents.to_f32_vector());
  EXPECT_GT(d.max_rel, 1e-3) << "eta 0.3 adds noise: " << d.str();
  p.eta = 1.5;
  EXPECT_EQ(error_of([&] { pipe.generate(p); }).code(), ErrorCode::kInvalidArgument);
}

// A sampler that cannot run the model's prediction type: a usage error listing those that can.
TEST(FewStepPipeline, RefusesASamplerForAnotherPrediction) {
  DIFFUSE_REQUIRE_FIXTURES();
  nlohmann::json x0 = kTurboScheduler;
  x0["prediction_type"] = "sample";  // SDXL-Lightning's 1-step UNet predicts x0
  Pipeline& pipe = cached_pipeline(model_folder("sd1", "tiny-x0", x0));
  GenerationParams p = prompt_only(3);
  p.sampler = "euler_a";
  p.steps = 1;
  const Error e = error_of([&] { pipe.generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  const std::string msg = e.what();
  EXPECT_NE(msg.find("sample"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tcd"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("euler_a,"), std::string::npos) << msg;
}

// Random weights of a few-step kind (diffuse bench --kind): an unknown kind is refused, naming
// the kinds, before any weight is made.
TEST(FewStepPipeline, RandomKindMustBeKnown) {
  LoadOptions load;
  load.random_kind = "nope";
  const Error e = error_of([&] { Pipeline::random("sd15", load); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("turbo, lcm, lightning, hyper"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace diffuse
