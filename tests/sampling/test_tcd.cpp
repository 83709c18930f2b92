// TCD (diffusers' TCDScheduler) and the consistency-model timestep rules it
// shares with LCM: against an fp64 evaluation of TCDScheduler.set_timesteps /
// step written out here, with the same generator noise, for each prediction
// type; and the refusals (steps beyond original_inference_steps, eta outside
// [0, 1]); and against tools/reference/fewstep_reference.py (torch, a
// re-statement of diffusers' TCDScheduler / LCMScheduler code on a toy model
// with torch's generator noise: tests/sampling/data/fewstep_reference.json).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "sampling/rng.h"
#include "sampling/scheduler.h"
#include "../test_util.h"

namespace diffuse {
namespace {

// SD's scaled_linear training schedule in fp64.
std::vector<double> alphas_cumprod_fp64() {
  std::vector<double> out;
  double prod = 1.0;
  const double a = std::sqrt(0.00085), b = std::sqrt(0.012);
  for (int i = 0; i < 1000; ++i) {
    const double s = a + (b - a) * i / 999.0;
    prod *= 1.0 - s * s;
    out.push_back(prod);
  }
  return out;
}

nlohmann::json sd_config(const std::string& prediction = "epsilon") {
  return {{"beta_end", 0.012}, {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},
          {"num_train_timesteps", 1000}, {"set_alpha_to_one", false}, {"steps_offset", 1},
          {"prediction_type", prediction}};
}

std::unique_ptr<Scheduler> tcd(const nlohmann::json& j, std::optional<double> eta) {
  SchedulerConfig c = SchedulerConfig::from_json(j);
  c.eta = eta;
  return make_scheduler("tcd", c);
}

TEST(ConsistencyTimesteps, FollowTheDistillationSchedule) {
  // original_inference_steps 50 -> k = 20, timesteps 999, 979, ..., 19, taken at
  // floor(linspace(0, 50, n, endpoint=False)).
  auto s = tcd(sd_config(), 0.3);
  s->set_timesteps(4);
  EXPECT_EQ(s->timesteps(), (std::vector<float>{999, 759, 499, 259}));
  s->set_timesteps(2);
  EXPECT_EQ(s->timesteps(), (std::vector<float>{999, 499}));
  s->set_timesteps(1);
  EXPECT_EQ(s->timesteps(), (std::vector<float>{999}));
  s->set_timesteps(50);
  EXPECT_EQ(s->timesteps().back(), 19.0f);
  auto lcm = make_scheduler("lcm", SchedulerConfig::from_json(sd_config()));
  lcm->set_timesteps(4);
  EXPECT_EQ(lcm->timesteps(), (std::vector<float>{999, 759, 499, 259}));
  // original_inference_steps from the config: 100 -> k = 10.
  nlohmann::json j = sd_config();
  j["original_inference_steps"] = 100;
  auto s100 = tcd(j, 0.3);
  s100->set_timesteps(3);
  EXPECT_EQ(s100->timesteps(), (std::vector<float>{999, 669, 339}));
}

TEST(ConsistencyTimesteps, RefuseMoreStepsThanTheScheduleHas) {
  for (const char* name : {"lcm", "tcd"}) {
    SCOPED_TRACE(name);
    auto s = make_scheduler(name, SchedulerConfig::from_json(sd_config()));
    const Error e = testing::error_of([&] { s->set_timesteps(51); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[1, 50]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("original_inference_steps"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got 51"), std::string::npos) << msg;
  }
}

TEST(Tcd, RefusesEtaOutsideZeroToOne) {
  for (double eta : {-0.1, 1.5}) {
    const Error e = testing::error_of([&] { tcd(sd_config(), eta); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("eta"), std::string::npos) << e.what();
  }
}

// The fp64 TCDScheduler: x0 and eps from the model output, to timestep
// s = floor((1 - eta) t_prev), then back up to t_prev with noise (not on the last step).
struct Fp64Tcd {
  std::vector<double> ac = alphas_cumprod_fp64();
  std::string prediction;
  double eta;
  std::vector<double> step(const std::vector<double>& m, int t, int prev, const std::vector<double>& x,
                           const std::vector<float>* noise) const {
    const int s = static_cast<int>(std::floor(static_cast<float>(1.0 - eta) * static_cast<float>(prev)));
    const double a = ac[t], b = 1 - a, as = ac[s], ap = ac[prev];
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      double x0, eps;
      if (prediction == "epsilon") {
        x0 = (x[i] - std::sqrt(b) * m[i]) / std::sqrt(a);
        eps = m[i];
      } else if (prediction == "v_prediction") {
        x0 = std::sqrt(a) * x[i] - std::sqrt(b) * m[i];
        eps = std::sqrt(a) * m[i] + std::sqrt(b) * x[i];
      } else {
        x0 = m[i];
        eps = (x[i] - std::sqrt(a) * x0) / std::sqrt(b);
      }
      const double xs = std::sqrt(as) * x0 + std::sqrt(1 - as) * eps;
      out[i] = noise ? std::sqrt(ap / as) * xs + std::sqrt(1 - ap / as) * (*noise)[i] : xs;
    }
    return out;
  }
};

TEST(Tcd, TrajectoryMatchesAnFp64Reference) {
  const Shape shape = {1, 4, 3, 3};
  const size_t n = 36;
  for (const std::string pred : {"epsilon", "v_prediction", "sample"}) {
    for (double eta : {0.3, 0.0, 1.0}) {
      SCOPED_TRACE(pred + ", eta " + std::to_string(eta));
      auto s = tcd(sd_config(pred), eta);
      s->set_timesteps(4);
      const std::vector<float>& ts = s->timesteps();
      Fp64Tcd ref{alphas_cumprod_fp64(), pred, eta};
      CpuGenerator gen(1234), ref_gen(1234);
      std::vector<float> start = ref_gen.randn(shape).to_f32_vector();
      gen.randn(shape);  // the same first draw, as the pipeline's initial noise
      Tensor x = Tensor::from_vector(start, shape);
      std::vector<double> xr(start.begin(), start.end());
      int draws = 0;
      for (size_t k = 0; k < ts.size(); ++k) {
        // A model whose output depends on the sample: m = 0.5 x + 0.1 + 0.01 i.
        std::vector<float> mo(n);
        std::vector<double> mr(n);
        const std::vector<float> xv = x.to_f32_vector();
        for (size_t i = 0; i < n; ++i) {
          mo[i] = 0.5f * xv[i] + 0.1f + 0.01f * static_cast<float>(i);
          mr[i] = mo[i];  // the same model output for both: only the step is compared
        }
        const bool noisy = eta > 0 && k + 1 < ts.size();
        EXPECT_EQ(s->draws_noise(static_cast<int>(k)), noisy);
        std::vector<float> z;
        if (noisy) {
          z = ref_gen.randn(shape).to_f32_vector();
          ++draws;
        }
        const int prev = k + 1 < ts.size() ? static_cast<int>(ts[k + 1]) : 0;
        xr = ref.step(mr, static_cast<int>(ts[k]), prev, std::vector<double>(xv.begin(), xv.end()),
                      noisy ? &z : nullptr);
        x = s->step(Tensor::from_vector(mo, shape), static_cast<int>(k), s->scale_model_input(x, static_cast<int>(k)),
                    &gen);
        const std::vector<float> got = x.to_f32_vector();
        double worst = 0, scale = 0;
        for (size_t i = 0; i < n; ++i) {
          worst = std::max(worst, std::abs(got[i] - xr[i]));
          scale = std::max(scale, std::abs(xr[i]));
        }
        EXPECT_LE(worst, 2e-5 * std::max(1.0, scale)) << "step " << k;
      }
      EXPECT_EQ(draws, eta > 0 ? 3 : 0);
    }
  }
}

nlohmann::json torch_reference() {
  return nlohmann::json::parse(
      testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/sampling/data/fewstep_reference.json"));
}

// The reference's toy model m(x, t) = 0.5 x + 0.1 + 0.0001 t + 0.01 i.
Tensor toy_model(const Tensor& x, float t) {
  std::vector<float> v = x.to_f32_vector();
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.5f * v[i] + 0.1f + 0.0001f * t + 0.01f * static_cast<float>(i);
  return Tensor::from_vector(v, x.shape());
}

// A whole trajectory of `s` on the toy model, from the generator's first draw, each step
// compared with the reference's sample (the errors compound over the run: float32 against fp64).
void check_trajectory(Scheduler& s, const nlohmann::json& run, const Shape& shape, uint64_t seed) {
  const int steps = run["steps"].get<int>();
  s.set_timesteps(steps);
  std::vector<float> want_ts;
  for (const auto& t : run["timesteps"]) want_ts.push_back(t.get<float>());
  ASSERT_EQ(s.timesteps(), want_ts);
  CpuGenerator gen(seed);
  Tensor x = gen.randn(shape);
  double worst = 0;
  for (int k = 0; k < steps; ++k) {
    x = s.step(toy_model(x, s.timesteps()[k]), k, s.scale_model_input(x, k), &gen);
    const std::vector<float> want = run["step_samples"][k].get<std::vector<float>>();
    const testing::Diff d = testing::compare(x.to_f32_vector(), want);
    EXPECT_LE(d.max_rel, 5e-6) << "step " << k << ": " << d.str();  // observed <= 1.3e-6
    worst = std::max(worst, d.max_rel);
  }
  std::printf("  %s %s %s: worst relative error per step %.2g\n", s.name().c_str(), run["prediction"].get<std::string>().c_str(),
              run.contains("eta") ? ("eta " + run["eta"].dump()).c_str() : (run["steps"].dump() + " steps").c_str(), worst);
}

TEST(Tcd, MatchesTheTorchReference) {
  const nlohmann::json ref = torch_reference();
  const Shape shape = ref["shape"].get<std::vector<int64_t>>();
  ASSERT_EQ(ref["tcd"].size(), 9u);
  for (const auto& run : ref["tcd"]) {
    const std::string pred = run["prediction"].get<std::string>();
    SCOPED_TRACE("tcd " + pred + ", eta " + run["eta"].dump());
    auto s = tcd(sd_config(pred), run["eta"].get<double>());
    check_trajectory(*s, run, shape, ref["seed"].get<uint64_t>());
  }
}

TEST(Lcm, MatchesTheTorchReference) {
  const nlohmann::json ref = torch_reference();
  const Shape shape = ref["shape"].get<std::vector<int64_t>>();
  ASSERT_EQ(ref["lcm"].size(), 6u);
  for (const auto& run : ref["lcm"]) {
    const std::string pred = run["prediction"].get<std::string>();
    SCOPED_TRACE("lcm " + pred + ", " + run["steps"].dump() + " steps");
    auto s = make_scheduler("lcm", SchedulerConfig::from_json(sd_config(pred)));
    check_trajectory(*s, run, shape, ref["seed"].get<uint64_t>());
  }
}

TEST(Tcd, IsInTheCatalogue) {
  const SamplerSpec& row = sampler_spec("tcd");
  EXPECT_STREQ(row.diffusers_class, "TCDScheduler");
  EXPECT_STREQ(row.a1111_name, "TCD");
  EXPECT_TRUE(row.stochastic);
  const SamplerSpec* from_class = sampler_for_diffusers_class("TCDScheduler");
  ASSERT_NE(from_class, nullptr);
  EXPECT_STREQ(from_class->name, "tcd");
  // Only the class's own timesteps: another schedule is refused, naming the ones allowed.
  const Error e = testing::error_of([] { make_scheduler("tcd", SchedulerConfig::from_json(sd_config()), "karras"); });
  EXPECT_NE(std::string(e.what()).find("karras"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace diffuse
