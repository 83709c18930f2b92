// Golden tests of the scheduler ports against diffusers (../shared/fixtures/<family>/cases.json):
//  - timesteps / sigmas / init_noise_sigma for 1, 4, 10, 20, 50 steps, built from the
//    scheduler_config.json as shipped (checks diffusers' from_config defaulting per class);
//  - 10-step trajectories with given model outputs (SD1), incl. the generator noise of
//    euler_a and lcm.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "sampling/rng.h"
#include "sampling/scheduler.h"
#include "sampling_fixtures.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::FixtureTensors;

// cases.json was written by Python's json.dump, which spells -inf as -Infinity
// (not JSON); turn those into strings, the form SchedulerConfig accepts.
nlohmann::json cases(const std::string& family) {
  std::string text = testing::read_file(testing::fixtures_dir() + "/" + family + "/cases.json");
  for (size_t pos; (pos = text.find("-Infinity")) != std::string::npos;) text.replace(pos, 9, "\"-inf\"");
  return nlohmann::json::parse(text);
}

// Fixture names -> (sampler, schedule).
std::pair<std::string, std::string> sampler_of(const std::string& fixture_name) {
  if (fixture_name == "dpmpp_2m_karras") return {"dpmpp_2m", "karras"};
  return {fixture_name, "default"};
}

std::vector<float> slice(const testing::FixtureTensor& t, size_t i) {
  const size_t per = t.data.size() / static_cast<size_t>(t.shape[0]);
  return {t.data.begin() + static_cast<std::ptrdiff_t>(i * per), t.data.begin() + static_cast<std::ptrdiff_t>((i + 1) * per)};
}

Shape inner_shape(const testing::FixtureTensor& t) { return Shape(t.shape.begin() + 1, t.shape.end()); }

class ScheduleTables : public ::testing::TestWithParam<std::string> {};

TEST_P(ScheduleTables, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string family = GetParam();
  const nlohmann::json c = cases(family);
  const SchedulerConfig shipped = SchedulerConfig::from_json(c.at("configs").at("scheduler_config_json_as_shipped"));
  int checked = 0;
  for (const auto& [name, entry] : c.at("schedulers").items()) {
    if (!entry.is_object()) continue;  // base_scheduler_class, how
    const auto [sampler, schedule] = sampler_of(name);
    auto s = make_scheduler(sampler, shipped, schedule);
    for (const auto& [steps, want] : entry.at("by_steps").items()) {
      SCOPED_TRACE(family + " " + name + " " + steps + " steps");
      s->set_timesteps(std::stoi(steps));
      const auto ts = want.at("timesteps").get<std::vector<double>>();
      ASSERT_EQ(s->timesteps().size(), ts.size());
      for (size_t i = 0; i < ts.size(); ++i)
        EXPECT_EQ(s->timesteps()[i], static_cast<float>(ts[i])) << "timestep " << i;
      if (want.contains("sigmas")) {
        const auto sig = want.at("sigmas").get<std::vector<double>>();
        ASSERT_EQ(s->sigmas().size(), sig.size());
        for (size_t i = 0; i < sig.size(); ++i)
          EXPECT_NEAR(s->sigmas()[i], sig[i], 1e-6 * std::fabs(sig[i])) << "sigma " << i;
      } else {
        EXPECT_TRUE(s->sigmas().empty());
      }
      const double init = want.at("init_noise_sigma").get<double>();
      EXPECT_NEAR(s->init_noise_sigma(), init, 1e-6 * init);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 9 * 5);
}

INSTANTIATE_TEST_SUITE_P(Families, ScheduleTables, ::testing::Values("sd1", "sd2", "sdxl"));

class Trajectory : public ::testing::TestWithParam<std::string> {};

TEST_P(Trajectory, MatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string name = GetParam();
  const nlohmann::json c = cases("sd1");
  const nlohmann::json& e = c.at("scheduler_steps").at(name);
  const FixtureTensors tensors(testing::fixtures_dir() + "/sd1/tensors.safetensors");
  const auto sample0 = tensors.get(e.at("sample0"));
  const auto outputs = tensors.get(e.at("model_outputs"));
  const auto scaled = tensors.get(e.at("scaled_inputs"));
  const auto prev = tensors.get(e.at("prev_samples"));

  const SchedulerConfig shipped = SchedulerConfig::from_json(c.at("configs").at("scheduler_config_json_as_shipped"));
  const auto [sampler, schedule] = sampler_of(name);
  auto s = make_scheduler(sampler, shipped, schedule);
  s->set_timesteps(10);
  const auto ts = e.at("timesteps").get<std::vector<double>>();
  ASSERT_EQ(s->timesteps().size(), ts.size());

  std::unique_ptr<Generator> gen;
  if (e.at("uses_generator_noise").get<bool>()) gen = std::make_unique<CpuGenerator>(e.at("generator_seed").get<uint64_t>());

  Tensor sample = Tensor::from_vector(sample0.data, sample0.shape);
  for (size_t i = 0; i < ts.size(); ++i) {
    SCOPED_TRACE(name + " step " + std::to_string(i));
    EXPECT_EQ(s->timesteps()[i], static_cast<float>(ts[i]));
    const Tensor x_in = s->scale_model_input(sample, static_cast<int>(i));
    const auto d_in = testing::compare(x_in.to_f32_vector(), slice(scaled, i));
    EXPECT_LE(d_in.max_rel, 1e-6) << "scaled input: " << d_in.str();
    const Tensor mo = Tensor::from_vector(slice(outputs, i), inner_shape(outputs));
    sample = s->step(mo, static_cast<int>(i), sample, gen.get());
    const auto d = testing::compare(sample.to_f32_vector(), slice(prev, i));
    EXPECT_LE(d.max_rel, 1e-5) << "prev sample: " << d.str();
  }
}

INSTANTIATE_TEST_SUITE_P(Schedulers, Trajectory,
                         ::testing::Values("ddim", "pndm", "lms", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras",
                                           "unipc", "lcm"));

TEST(SchedulerConfig, AbsentKeysUseEachClassDefault) {
  // SD1's shipped config has no timestep_spacing: DDIM uses "leading" (901 ... 1),
  // Euler its own "linspace" (999 ... 0).
  const auto cfg = SchedulerConfig::from_json(nlohmann::json::parse(
      R"({"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,
          "num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,
          "trained_betas":null,"clip_sample":false})"));
  EXPECT_FALSE(cfg.timestep_spacing.has_value());
  EXPECT_FALSE(cfg.trained_betas.has_value());  // null is "absent"
  auto ddim = make_scheduler("ddim", cfg);
  ddim->set_timesteps(10);
  EXPECT_EQ(ddim->timesteps().front(), 901.0f);
  auto euler = make_scheduler("euler", cfg);
  euler->set_timesteps(10);
  EXPECT_EQ(euler->timesteps().front(), 999.0f);
}

TEST(SchedulerConfig, RejectsBadInput) {
  const auto cfg = SchedulerConfig::from_json(nlohmann::json::object());
  EXPECT_THROW(make_scheduler("dpmpp_4m", cfg), Error);  // not in the catalogue
  EXPECT_THROW(make_scheduler("euler", cfg, "linear_quadratic"), Error);
  EXPECT_THROW(make_scheduler("ddim", cfg, "karras"), Error);
  EXPECT_THROW(make_scheduler("unipc", cfg, "exponential"), Error);
  EXPECT_THROW(SchedulerConfig::from_json(nlohmann::json::parse(R"({"steps_offset":"one"})")), Error);
  auto s = make_scheduler("euler", cfg);
  EXPECT_THROW(s->set_timesteps(0), Error);
  s->set_timesteps(5);
  const Tensor x = Tensor::zeros({1, 4, 2, 2}, DType::kF32);
  EXPECT_THROW(s->step(x, 5, x, nullptr), Error);
  EXPECT_THROW(s->step(Tensor::zeros({1, 4, 2, 3}, DType::kF32), 0, x, nullptr), Error);
  auto a = make_scheduler("euler_a", cfg);
  a->set_timesteps(5);
  EXPECT_THROW(a->step(x, 0, x, nullptr), Error);  // ancestral sampling needs a generator
}

TEST(SchedulerNames, AllConstructible) {
  const auto cfg = SchedulerConfig::from_json(nlohmann::json::parse(R"({"skip_prk_steps":true})"));
  for (const auto& n : scheduler_names()) {
    auto s = make_scheduler(n, cfg);
    s->set_timesteps(4);
    EXPECT_FALSE(s->timesteps().empty()) << n;
  }
}

}  // namespace
}  // namespace diffuse
