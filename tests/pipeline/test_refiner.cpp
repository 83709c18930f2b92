// The SDXL refiner and the multi-pass hooks of GenerationParams, on the CPU in
// f32, against diffusers (fixture set v2, sdxl/cases.json "refiner"; made by
// the set's generator, see its README):
//  - the hooks: denoising_end then denoising_start on one generator equal a
//    full run (an ancestral sampler included: the stream continues);
//    init_latents + strength equal img2img from the same latents;
//    output_latents skips the decode; bad combinations are refused;
//  - the refiner: prompt embeddings (OpenCLIP-bigG alone), pooled embeddings
//    and aesthetic-score time ids; the base -> refiner hand-off at 0.8 (two
//    generators, seeds 7710 / 7711, as diffusers ran it) and the refiner as
//    img2img at 0.3: final latents within 1e-3 relative, images within a mean
//    of 1/255 and a max of 8/255 (of the golden 8-bit PNG); the single file
//    gives the same; GenerationParams::refiner runs the same hand-off in one
//    call with A1111's metadata and whole-call progress.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/ops.h"
#include "models/probe.h"
#include "pipeline/pipeline_impl.h"
#include "refiner_runs.h"
#include "sampling/rng.h"

namespace diffuse {
namespace {

using namespace testing;

const EditFamily& goldens() { return edit_family("sdxl"); }
const Tensor& golden(const std::string& key) { return goldens().tensors.at(key); }
Pipeline& base() { return *shared_pipeline(sdxl_base_dir()); }
std::shared_ptr<Pipeline> refiner() { return shared_pipeline(refiner_dir()); }

Diff latents_diff(const Tensor& got, const Tensor& want) {
  return compare(got.to(DType::kF32).contiguous().to_f32_vector(), want.to(DType::kF32).contiguous().to_f32_vector());
}

void expect_image_matches(const Tensor& decoded, const std::string& png, const char* what) {
  const PixelDiff d = image_vs_png(decoded, goldens().dir + "/" + png);
  std::printf("  %s image vs diffusers' PNG: mean %.3f/255, max %.1f/255\n", what, d.mean, d.max);
  EXPECT_LE(d.mean, 1.0) << what;
  EXPECT_LE(d.max, 8.0) << what;
}

// ---- the hooks -----------------------------------------------------------------------------

GenerationParams small_run(const std::string& sampler) {
  GenerationParams p = handoff_base_params();
  p.denoising_end = 1.0;
  p.output_latents = false;
  p.sampler = sampler;
  return p;
}

TEST(MultiPassHooks, EndThenStartOnOneGeneratorEqualsOneRun) {
  DIFFUSE_REQUIRE_FIXTURES();
  // Samplers without multistep state (dpmpp_2m / unipc restart their history at
  // a split and Heun's cut-off repeats an evaluation, as in diffusers).
  for (const std::string sampler : {"euler", "euler_a", "ddim"}) {
    SCOPED_TRACE(sampler);
    GenerationParams full = small_run(sampler);
    const GenerationResult whole = base().generate(full);

    GenerationParams first = full;
    first.denoising_end = 0.8;
    first.output_latents = true;
    first.generator = make_generator(RngKind::kCpu, static_cast<uint64_t>(full.seed));
    const GenerationResult a = base().generate(first);
    EXPECT_TRUE(a.images.empty());
    GenerationParams second = full;
    second.init_latents = a.final_latents;
    second.denoising_start = 0.8;
    second.generator = first.generator;  // the same stream goes on
    const GenerationResult b = base().generate(second);
    EXPECT_EQ(a.timings.unet_evals + b.timings.unet_evals, whole.timings.unet_evals);
    const Diff d = latents_diff(b.final_latents, whole.final_latents);
    std::printf("  %s: split at 0.8 (%d + %d evals) vs one run: %s\n", sampler.c_str(), a.timings.unet_evals,
                b.timings.unet_evals, d.str().c_str());
    EXPECT_LE(d.max_rel, 1e-6) << d.str();
    ASSERT_EQ(b.images.size(), 1u);
  }
}

TEST(MultiPassHooks, DenoisingEndKeepsTheTimestepsAboveTheCutoff) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& c = refiner_run("base_to_refiner");
  GenerationParams p = handoff_base_params();
  std::vector<int> steps;
  const GenerationResult r = base().generate(p, [&](const StepProgress& s) {
    steps.push_back(s.step);
    EXPECT_EQ(s.total_steps, c["base_call"]["n_unet_evals"].get<int>());
    return false;
  });
  EXPECT_EQ(r.timings.unet_evals, c["base_call"]["n_unet_evals"].get<int>());  // 8 of 10: t >= 200
  EXPECT_EQ(steps.size(), 8u);
  EXPECT_TRUE(r.images.empty());
  EXPECT_FALSE(r.decoded.defined());
  EXPECT_EQ(r.timings.vae_decode_s, 0.0);
  EXPECT_EQ(r.final_latents.shape(), (Shape{1, 4, 16, 16}));
}

TEST(MultiPassHooks, InitLatentsWithStrengthEqualImg2ImgFromThoseLatents) {
  DIFFUSE_REQUIRE_FIXTURES();
  // diffusers' img2img of an image draws the VAE posterior sample, then the
  // noise; given latents it draws the noise only. So the image's latents
  // (golden) and the generator advanced past the posterior draw must give the
  // image run's result.
  const nlohmann::json& run = refiner_run("refiner_img2img_s0.3");
  GenerationParams from_image = refiner_img2img_params();
  const GenerationResult want = refiner()->generate(from_image);

  GenerationParams p = refiner_img2img_params();
  p.edit = EditParams{};
  p.edit.strength = run["strength"].get<double>();
  p.init_latents = golden(run["image_latents"].get<std::string>());
  p.generator = make_generator(RngKind::kCpu, static_cast<uint64_t>(p.seed));
  p.generator->randn({1, 4, 16, 16});  // the posterior sample's draw
  const GenerationResult got = refiner()->generate(p);
  EXPECT_EQ(got.timings.unet_evals, run["n_unet_evals"].get<int>());
  const Diff d = latents_diff(got.final_latents, want.final_latents);
  std::printf("  init latents + strength 0.3 vs img2img of the image: %s\n", d.str().c_str());
  EXPECT_LE(d.max_rel, 1e-5) << d.str();
  const Diff g = latents_diff(got.final_latents, golden(run["final_latents"].get<std::string>()));
  EXPECT_LE(g.max_rel, 1e-3) << g.str();
  ASSERT_EQ(got.images.size(), 1u);
  EXPECT_EQ(got.images[0].width, 128);
}

TEST(MultiPassHooks, BadCombinationsAreRefused) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto message = [](GenerationParams p) {
    const Error e = error_of([&] { base().generate(p); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    return std::string(e.what());
  };
  GenerationParams p = small_run("euler");
  p.denoising_start = 0.5;
  EXPECT_NE(message(p).find("denoising_start needs init_latents"), std::string::npos);
  p.init_latents = Tensor::zeros({1, 4, 16, 16}, DType::kF32);
  p.denoising_end = 0.5;
  EXPECT_NE(message(p).find("must be below denoising_end"), std::string::npos);
  p.denoising_end = 1.0;
  p.denoising_start = 1.5;
  EXPECT_NE(message(p).find("denoising_start must be in [0, 1)"), std::string::npos);
  p.denoising_start = 0.0;
  p.init_latents = Tensor::zeros({1, 3, 16, 16}, DType::kF32);
  EXPECT_NE(message(p).find("4 channels"), std::string::npos);
  p.init_latents = Tensor::zeros({3, 4, 16, 16}, DType::kF32);
  EXPECT_NE(message(p).find("a batch of 1 or of the call's 1 images"), std::string::npos);
  p.init_latents = Tensor::zeros({1, 4, 16, 16}, DType::kF32);
  p.edit.init_image = load_rgb(goldens().dir + "/" + goldens().cases["img2img"]["init_image"].get<std::string>());
  EXPECT_NE(message(p).find("init latents and an init image"), std::string::npos);
  p = small_run("euler");
  p.denoising_end = 0.01;  // cut-off 990: no timestep of 10 steps is above it
  EXPECT_NE(message(p).find("runs no step"), std::string::npos);
  p = small_run("euler");
  p.refiner.model = refiner();
  p.refiner.switch_at = 1.0;
  EXPECT_NE(message(p).find("switch point"), std::string::npos);
}

// ---- the refiner model ---------------------------------------------------------------------

TEST(Refiner, LoadsAsTheSdxlRefiner) {
  DIFFUSE_REQUIRE_FIXTURES();
  const ModelInfo& info = refiner()->info();
  EXPECT_TRUE(info.refiner);
  EXPECT_EQ(info.family, Family::kSDXL);
  EXPECT_FALSE(base().info().refiner);
  const CheckpointInfo probed = probe(refiner_dir());
  EXPECT_EQ(probed.family->name, "sdxl-refiner");
  EXPECT_NE(probed.label().find("refiner"), std::string::npos) << probed.label();
  const ModelInfo described = describe_model(refiner_dir());
  EXPECT_TRUE(described.refiner);
  // Text-to-image is refused with what to do instead.
  GenerationParams p = small_run("euler");
  const Error e = error_of([&] { refiner()->generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("init image"), std::string::npos) << e.what();
}

TEST(Refiner, ConditioningMatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::unique_ptr<Pipeline::Impl> m = load_pipeline_impl(refiner_dir(), {});
  EXPECT_TRUE(m->requires_aesthetics_score);
  ASSERT_EQ(m->encoders.size(), 1u);  // OpenCLIP-bigG only
  for (const char* name : {"base_to_refiner", "refiner_img2img_s0.3"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& run = refiner_run(name);
    const nlohmann::json& c = run.contains("refiner_call") ? run["refiner_call"] : run;
    const Pipeline::Impl::Conditioning pos = m->encode_prompts({c["prompt"].get<std::string>()}, 1);
    const Pipeline::Impl::Conditioning neg = m->encode_prompts({c["negative_prompt"].get<std::string>()}, 1);
    const Diff e = latents_diff(concat({neg.context, pos.context}, 0), golden(c["unet_prompt_embeds"].get<std::string>()));
    const Diff pooled =
        latents_diff(concat({neg.pooled, pos.pooled}, 0), golden(c["unet_add_text_embeds"].get<std::string>()));
    std::printf("  %s: prompt embeds %s, pooled %s\n", name, e.str().c_str(), pooled.str().c_str());
    EXPECT_LE(e.max_rel, 1e-5) << e.str();
    EXPECT_LE(pooled.max_rel, 1e-5) << pooled.str();

    GenerationParams p;
    p.width = p.height = 128;
    if (c.contains("aesthetic_score")) {
      p.refiner.aesthetic_score = c["aesthetic_score"].get<double>();
      p.refiner.negative_aesthetic_score = c["negative_aesthetic_score"].get<double>();
    }
    const Tensor ids = m->time_ids(p, 1, true);
    std::vector<float> want;
    for (const auto& row : c["add_time_ids_values"])
      for (const auto& v : row) want.push_back(v.get<float>());
    EXPECT_EQ(ids.to_f32_vector(), want);
    if (c.contains("unet_add_time_ids")) {
      EXPECT_EQ(ids.to_f32_vector(), golden(c["unet_add_time_ids"].get<std::string>()).to_f32_vector());
    }
  }
}

TEST(Refiner, HandOffMatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& run = refiner_run("base_to_refiner");
  // The base: 8 of 10 Euler steps, latents out (seed 7710).
  const GenerationResult a = base().generate(handoff_base_params());
  const Diff h = latents_diff(a.final_latents, golden(run["handoff_latents"].get<std::string>()));
  std::printf("  hand-off latents: %s\n", h.str().c_str());
  EXPECT_LE(h.max_rel, 1e-3) << h.str();
  // The refiner: the last 2 steps on the base's latents (its own generator, seed 7711, as diffusers ran it).
  const GenerationResult b = refiner()->generate(handoff_refiner_params(a.final_latents));
  EXPECT_EQ(b.timings.unet_evals, run["refiner_call"]["n_unet_evals"].get<int>());
  const Diff f = latents_diff(b.final_latents, golden(run["refiner_call"]["final_latents"].get<std::string>()));
  std::printf("  refined final latents: %s\n", f.str().c_str());
  EXPECT_LE(f.max_rel, 1e-3) << f.str();
  ASSERT_EQ(b.images.size(), 1u);
  expect_image_matches(b.decoded, run["refiner_call"]["image_png"].get<std::string>(), "hand-off");
}

TEST(Refiner, Img2ImgMatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& run = refiner_run("refiner_img2img_s0.3");
  const GenerationResult r = refiner()->generate(refiner_img2img_params());
  EXPECT_EQ(r.timings.unet_evals, run["n_unet_evals"].get<int>());
  EXPECT_EQ(r.steps_run, 3);
  const Diff f = latents_diff(r.final_latents, golden(run["final_latents"].get<std::string>()));
  std::printf("  refiner img2img final latents: %s\n", f.str().c_str());
  EXPECT_LE(f.max_rel, 1e-3) << f.str();
  ASSERT_EQ(r.images.size(), 1u);
  expect_image_matches(r.decoded, run["image_png"].get<std::string>(), "refiner img2img");
}

TEST(Refiner, SingleFileMatchesFolder) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string file = refiner_single_file();
  const CheckpointInfo probed = probe(file);
  EXPECT_EQ(probed.family->name, "sdxl-refiner");
  EXPECT_EQ(probed.variant, Variant::kRefiner);
  EXPECT_TRUE(describe_model(file).refiner);
  // The tiny model's head counts do not follow the published convention: its folder's configs describe it.
  LoadOptions o;
  o.config_dir = refiner_dir();
  std::unique_ptr<Pipeline> single = Pipeline::load(file, o);
  EXPECT_TRUE(single->info().single_file);
  EXPECT_TRUE(single->info().refiner);
  const GenerationResult a = single->generate(refiner_img2img_params());
  const GenerationResult b = refiner()->generate(refiner_img2img_params());
  const Diff d = latents_diff(a.final_latents, b.final_latents);
  EXPECT_EQ(d.max_abs, 0.0) << d.str();
  const GenerationResult h = single->generate(handoff_refiner_params(base().generate(handoff_base_params()).final_latents));
  const Diff g = latents_diff(h.final_latents, golden(refiner_run("base_to_refiner")["refiner_call"]["final_latents"].get<std::string>()));
  std::printf("  single file: img2img vs folder %s; hand-off vs diffusers %s\n", d.str().c_str(), g.str().c_str());
  EXPECT_LE(g.max_rel, 1e-3) << g.str();
}

// ---- the hand-off in one call (GenerationParams::refiner) ----------------------------------

// The progress total of a call is known before the refiner runs: it counts the
// base schedule's timesteps below the switch. align_your_steps has an SDXL
// table and an SD 1.5 one, so the count must use the model's family or the
// last tick would not reach the total.
TEST(Refiner, ProgressTotalFollowsTheFamilysSchedule) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const int steps : {10, 13, 20}) {
    GenerationParams p = handoff_base_params();
    p.denoising_end = 1.0;
    p.output_latents = false;
    p.refiner.model = refiner();
    p.refiner.switch_at = 0.5;
    p.steps = steps;
    p.schedule = "align_your_steps";
    std::vector<std::pair<int, int>> progress;
    const GenerationResult r = base().generate(p, [&](const StepProgress& s) {
      progress.emplace_back(s.step, s.total_steps);
      return false;
    });
    ASSERT_FALSE(progress.empty());
    for (const auto& [step, total] : progress) EXPECT_EQ(total, r.timings.unet_evals) << steps << " steps";
    EXPECT_EQ(progress.back().first, progress.back().second) << steps << " steps";
  }
}

TEST(Refiner, OneCallHandOffMatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json& run = refiner_run("base_to_refiner");
  GenerationParams p = handoff_base_params();
  p.denoising_end = 1.0;
  p.output_latents = false;
  p.refiner.model = refiner();
  p.refiner.switch_at = 0.8;
  std::vector<std::pair<int, int>> progress;
  const GenerationResult r = base().generate(p, [&](const StepProgress& s) {
    progress.emplace_back(s.step, s.total_steps);
    return false;
  });
  // Euler draws nothing after the initial noise: one generator gives diffusers' two-generator result.
  const Diff f = latents_diff(r.final_latents, golden(run["refiner_call"]["final_latents"].get<std::string>()));
  std::printf("  one call: final latents %s\n", f.str().c_str());
  EXPECT_LE(f.max_rel, 1e-3) << f.str();
  EXPECT_EQ(r.timings.unet_evals, 10);
  EXPECT_EQ(r.steps_run, 10);
  EXPECT_EQ(r.seed, 7710);
  ASSERT_EQ(r.images.size(), 1u);
  expect_image_matches(r.decoded, run["refiner_call"]["image_png"].get<std::string>(), "one-call hand-off");
  // Progress over the whole call: 1..10 of 10.
  ASSERT_EQ(progress.size(), 10u);
  for (size_t i = 0; i < progress.size(); ++i) {
    EXPECT_EQ(progress[i].first, static_cast<int>(i) + 1);
    EXPECT_EQ(progress[i].second, 10);
  }
  // A1111's metadata: the base is the model, the refiner and the switch beside it.
  const std::string& meta = r.images[0].parameters;
  const ModelInfo& ri = refiner()->info();
  EXPECT_NE(meta.find("Model: " + base().info().name), std::string::npos) << meta;
  EXPECT_NE(meta.find("Refiner: " + ri.name + " [" + ri.short_hash + "], Refiner switch at: 0.8"), std::string::npos)
      << meta;

  // The same by path (loaded for the call), and with an ancestral sampler the
  // generator's stream runs on: the refiner's steps draw after the base's.
  GenerationParams by_path = p;
  by_path.refiner.model.reset();
  by_path.refiner.path = refiner_dir();
  const GenerationResult q = base().generate(by_path);
  EXPECT_EQ(latents_diff(q.final_latents, r.final_latents).max_abs, 0.0);

  GenerationParams ancestral = p;
  ancestral.sampler = "euler_a";
  const GenerationResult one = base().generate(ancestral);
  GenerationParams first = handoff_base_params();
  first.sampler = "euler_a";
  first.generator = make_generator(RngKind::kCpu, 7710);
  const GenerationResult a = base().generate(first);
  GenerationParams second = handoff_refiner_params(a.final_latents);
  second.sampler = "euler_a";
  second.generator = first.generator;
  const GenerationResult b = refiner()->generate(second);
  EXPECT_EQ(latents_diff(one.final_latents, b.final_latents).max_abs, 0.0);
  second.generator = make_generator(RngKind::kCpu, 7710);  // a fresh stream differs
  EXPECT_GT(latents_diff(refiner()->generate(second).final_latents, b.final_latents).max_abs, 0.0);
}

TEST(Refiner, OneCallRefusals) {
  DIFFUSE_REQUIRE_FIXTURES();
  GenerationParams p = handoff_base_params();
  p.denoising_end = 1.0;
  p.output_latents = false;
  p.refiner.path = "/nonexistent/refiner.safetensors";
  Error e = error_of([&] { base().generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_NE(std::string(e.what()).find("/nonexistent/refiner.safetensors"), std::string::npos) << e.what();
  // The refiner cannot be the first pass; an SD 1.x model cannot refine SDXL latents.
  GenerationParams q = refiner_img2img_params();
  q.refiner.model = refiner();
  e = error_of([&] { refiner()->generate(q); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("first pass needs a base model"), std::string::npos) << e.what();
  p.refiner.path = fixtures_dir() + "/sd1/model";
  e = error_of([&] { base().generate(p); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("latents differ"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace diffuse
