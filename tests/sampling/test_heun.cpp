// The Heun sampler (src/sampling/heun.cpp, diffusers' HeunDiscreteScheduler):
//  - tables and trajectories against the fp64 reference (tools/reference/heun_reference.py,
//    goldens in tests/sampling/data/heun_reference.json);
//  - its un-doubled tables against diffusers' own Euler tables of the shipped SD1/SD2/SDXL
//    configs (the fixtures): both classes build sigmas and timesteps the same way;
//  - the four full loops of diffusers' tests/schedulers/test_scheduler_heun.py with their
//    published sums and means.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "sampling/sampler_catalog.h"
#include "sampling/scheduler.h"
#include "test_util.h"

namespace diffuse {
namespace {

const nlohmann::json& reference() {
  static const nlohmann::json j = nlohmann::json::parse(
      testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/sampling/data/heun_reference.json"));
  return j;
}

std::vector<float> floats(const nlohmann::json& a) {
  std::vector<float> out;
  for (const auto& v : a) out.push_back(static_cast<float>(v.get<double>()));
  return out;
}

std::unique_ptr<Scheduler> heun_for(const nlohmann::json& config) {
  const bool karras = config.value("use_karras_sigmas", false);
  nlohmann::json c = config;
  c.erase("use_karras_sigmas");  // the schedule argument sets it, as the pipeline does
  return make_scheduler("heun", SchedulerConfig::from_json(c), karras ? "karras" : "default");
}

TEST(HeunTables, MatchReference) {
  int checked = 0;
  for (const auto& [name, entry] : reference().at("tables").items()) {
    auto s = heun_for(entry.at("config"));
    for (const auto& [steps, want] : entry.at("by_steps").items()) {
      SCOPED_TRACE(name + " " + steps + " steps");
      const int n = std::stoi(steps);
      s->set_timesteps(n);
      const std::vector<float> ts = floats(want.at("timesteps")), sig = floats(want.at("sigmas"));
      ASSERT_EQ(s->timesteps().size(), static_cast<size_t>(2 * n - 1));
      ASSERT_EQ(s->timesteps().size(), ts.size());
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(s->timesteps()[i], ts[i]) << "timestep " << i;
      ASSERT_EQ(s->sigmas().size(), sig.size());
      for (size_t i = 0; i < sig.size(); ++i) EXPECT_NEAR(s->sigmas()[i], sig[i], 1e-6 * sig[i]) << "sigma " << i;
      const float init = want.at("init_noise_sigma").get<float>();
      EXPECT_NEAR(s->init_noise_sigma(), init, 1e-6 * init);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 * 5);
}

// HeunDiscreteScheduler and EulerDiscreteScheduler build the same sigmas and
// timesteps from a config (Heun then lists each but the first twice): the
// fixtures' Euler tables, made by diffusers, check the Heun tables too.
class HeunVsDiffusersEuler : public ::testing::TestWithParam<std::string> {};

TEST_P(HeunVsDiffusersEuler, UndoubledTablesMatch) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::string text = testing::read_file(testing::fixtures_dir() + "/" + GetParam() + "/cases.json");
  for (size_t pos; (pos = text.find("-Infinity")) != std::string::npos;) text.replace(pos, 9, "\"-inf\"");
  const nlohmann::json c = nlohmann::json::parse(text);
  auto s = make_scheduler("heun", SchedulerConfig::from_json(c.at("configs").at("scheduler_config_json_as_shipped")));
  int checked = 0;
  for (const auto& [steps, want] : c.at("schedulers").at("euler").at("by_steps").items()) {
    SCOPED_TRACE(GetParam() + " " + steps + " steps");
    const size_t n = std::stoul(steps);
    s->set_timesteps(static_cast<int>(n));
    const auto ts = want.at("timesteps").get<std::vector<double>>();
    const auto sig = want.at("sigmas").get<std::vector<double>>();
    ASSERT_EQ(ts.size(), n);
    ASSERT_EQ(s->timesteps().size(), 2 * n - 1);
    ASSERT_EQ(s->sigmas().size(), 2 * n);
    for (size_t i = 0; i < n; ++i) {
      const size_t first = i == 0 ? 0 : 2 * i - 1;  // where t_i first appears
      EXPECT_EQ(s->timesteps()[first], static_cast<float>(ts[i])) << "timestep " << i;
      EXPECT_EQ(s->timesteps()[i == 0 ? 0 : 2 * i], static_cast<float>(ts[i])) << "timestep " << i;
      EXPECT_NEAR(s->sigmas()[first], sig[i], 1e-6 * sig[i]) << "sigma " << i;
      EXPECT_EQ(s->sigmas()[first], s->sigmas()[i == 0 ? 0 : 2 * i]) << "sigma " << i;
    }
    EXPECT_EQ(s->sigmas().back(), static_cast<float>(sig.back()));
    EXPECT_NEAR(s->init_noise_sigma(), want.at("init_noise_sigma").get<double>(),
                1e-6 * want.at("init_noise_sigma").get<double>());
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

INSTANTIATE_TEST_SUITE_P(Families, HeunVsDiffusersEuler, ::testing::Values("sd1", "sd2", "sdxl"));

class HeunTrajectory : public ::testing::TestWithParam<std::string> {};

TEST_P(HeunTrajectory, MatchesReference) {
  const nlohmann::json& e = reference().at("trajectories").at(GetParam());
  auto s = heun_for(e.at("config"));
  s->set_timesteps(e.at("steps").get<int>());
  const std::vector<float> ts = floats(e.at("timesteps"));
  ASSERT_EQ(s->timesteps(), ts);
  const Shape shape = e.at("shape").get<Shape>();
  Tensor sample = Tensor::from_vector(floats(e.at("sample0")), shape);
  for (size_t k = 0; k < ts.size(); ++k) {
    SCOPED_TRACE(GetParam() + " step " + std::to_string(k));
    const Tensor x_in = s->scale_model_input(sample, static_cast<int>(k));
    const auto d_in = testing::compare(x_in.to_f32_vector(), floats(e.at("scaled_inputs").at(k)));
    EXPECT_LE(d_in.max_rel, 1e-6) << "scaled input: " << d_in.str();
    const Tensor mo = Tensor::from_vector(floats(e.at("model_outputs").at(k)), shape);
    sample = s->step(mo, static_cast<int>(k), sample, Tensor());
    const auto d = testing::compare(sample.to_f32_vector(), floats(e.at("prev_samples").at(k)));
    EXPECT_LE(d.max_rel, 1e-5) << "prev sample: " << d.str();
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, HeunTrajectory,
                         ::testing::Values("epsilon_linspace_10", "epsilon_karras_8", "v_prediction_trailing_6",
                                           "sample_leading_5"));

// diffusers' tests/schedulers/test_scheduler_heun.py: config {num_train_timesteps 1100,
// beta 1e-4 .. 0.02 linear}, 10 steps, the dummy model sample * t / (t + 1) and
// dummy_sample_deter (arange(768) / 768 reshaped (3, 8, 8, 4), permuted to (4, 3, 8, 8)).
// Like that test, each scaled sample is also what step() gets as its sample.
struct LoopResult {
  double sum = 0, mean = 0;
};

std::vector<float> dummy_deter(bool flip) {
  const int n = 4 * 3 * 8 * 8;
  std::vector<float> v(n);
  for (int b = 0; b < 4; ++b)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 8; ++h)
        for (int w = 0; w < 8; ++w) {
          const int src = ((c * 8 + h) * 8 + w) * 4 + b;
          const int value = flip ? n - 1 - src : src;
          v[((b * 3 + c) * 8 + h) * 8 + w] = static_cast<float>(value) / static_cast<float>(n);  // torch: int / int
        }
  return v;
}

LoopResult diffusers_loop(const std::string& prediction, const std::string& schedule, int t_start) {
  nlohmann::json cfg = {{"num_train_timesteps", 1100}, {"beta_start", 0.0001}, {"beta_end", 0.02},
                        {"beta_schedule", "linear"}, {"prediction_type", prediction}};
  auto s = make_scheduler("heun", SchedulerConfig::from_json(cfg), schedule);
  s->set_timesteps(10);
  const Shape shape = {4, 3, 8, 8};
  std::vector<float> x = dummy_deter(false);
  for (float& v : x) v = v * s->init_noise_sigma();
  int first = 0;
  if (t_start > 0) {
    // add_noise(sample, noise, timesteps[t_start * order]): that index's sigma.
    first = t_start * 2;
    const std::vector<float> noise = dummy_deter(true);
    const float sigma = s->sigmas()[static_cast<size_t>(first)];
    for (size_t i = 0; i < x.size(); ++i) x[i] = x[i] + noise[i] * sigma;
  }
  Tensor sample = Tensor::from_vector(x, shape);
  for (size_t k = static_cast<size_t>(first); k < s->timesteps().size(); ++k) {
    const float t = s->timesteps()[k];
    sample = s->scale_model_input(sample, static_cast<int>(k));
    std::vector<float> out = sample.to_f32_vector();
    for (float& v : out) v = v * t / (t + 1.0f);
    sample = s->step(Tensor::from_vector(out, shape), static_cast<int>(k), sample, Tensor());
  }
  LoopResult r;
  for (float v : sample.to_f32_vector()) r.sum += std::fabs(v);
  r.mean = r.sum / static_cast<double>(shape_numel(shape));
  return r;
}

TEST(HeunDiffusersTests, FullLoopsMatchPublishedNumbers) {
  // Values and tolerances as test_scheduler_heun.py asserts them on the CPU.
  const LoopResult eps = diffusers_loop("epsilon", "default", 0);  // test_full_loop_no_noise
  EXPECT_NEAR(eps.sum, 0.1233, 1e-2);
  EXPECT_NEAR(eps.mean, 0.0002, 1e-3);
  const LoopResult v = diffusers_loop("v_prediction", "default", 0);  // test_full_loop_with_v_prediction
  EXPECT_NEAR(v.sum, 4.6934e-07, 1e-2);
  EXPECT_NEAR(v.mean, 6.1112e-10, 1e-3);
  const LoopResult karras = diffusers_loop("epsilon", "karras", 0);  // test_full_loop_device_karras_sigmas
  EXPECT_NEAR(karras.sum, 0.00015, 1e-2);
  EXPECT_NEAR(karras.mean, 1.9869554535034695e-07, 1e-2);
  const LoopResult noisy = diffusers_loop("epsilon", "default", 8);  // test_full_loop_with_noise
  EXPECT_NEAR(noisy.sum, 75074.8906, 1e-2);
  EXPECT_NEAR(noisy.mean, 97.7538, 1e-3);
  // Those tolerances are loose for the small results; ours are much closer.
  EXPECT_NEAR(eps.sum, 0.1233, 1e-4);
  EXPECT_NEAR(karras.mean, 1.9869554535034695e-07, 1e-4 * 1.9869554535034695e-07);
}

TEST(Heun, TwoEvaluationsPerStepButTheLast) {
  const auto cfg = SchedulerConfig::from_json(nlohmann::json::object());
  auto s = make_scheduler("heun", cfg);
  for (int n : {1, 2, 7}) {
    s->set_timesteps(n);
    EXPECT_EQ(s->timesteps().size(), static_cast<size_t>(2 * n - 1));
    EXPECT_EQ(s->sigmas().size(), s->timesteps().size() + 1);
    EXPECT_EQ(s->sigmas().back(), 0.0f);
  }
  const SamplerSpec& row = sampler_spec("heun");
  EXPECT_EQ(row.evals_per_step, 2);
  EXPECT_STREQ(row.diffusers_class, "HeunDiscreteScheduler");
  EXPECT_EQ(sampler_for_diffusers_class("HeunDiscreteScheduler"), &row);
}

TEST(Heun, SecondHalfNeedsItsFirstHalf) {
  auto s = make_scheduler("heun", SchedulerConfig::from_json(nlohmann::json::object()));
  s->set_timesteps(4);
  const Tensor x = Tensor::full({1, 4, 2, 2}, 0.5f);
  EXPECT_THROW(s->step(x, 1, x, Tensor()), Error);  // a correction without its Euler step
  const Tensor y = s->step(x, 0, x, Tensor());
  EXPECT_NO_THROW(s->step(x, 1, y, Tensor()));
  EXPECT_THROW(s->step(x, 3, y, Tensor()), Error);  // step 2 skipped
  EXPECT_FALSE(s->draws_noise(0));
  EXPECT_THROW(s->step(x, 2, y, x), Error);  // noise given to a deterministic step
}

TEST(Heun, RejectsWhatDiffusersDoesNotPort) {
  EXPECT_THROW(make_scheduler("heun", SchedulerConfig::from_json(nlohmann::json{{"use_exponential_sigmas", true}})),
               Error);
  EXPECT_THROW(make_scheduler("heun", SchedulerConfig::from_json(nlohmann::json{{"timestep_spacing", "cosine"}}))
                   ->set_timesteps(4),
               Error);
}

}  // namespace
}  // namespace diffuse
