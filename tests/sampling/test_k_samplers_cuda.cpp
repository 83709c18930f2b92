// The k-diffusion samplers of issue #23 on a CUDA device (needs a GPU; ctest
// label "cuda"): the analytic-model runs of test_k_samplers.cpp with the
// sample, every multistep / two-stage state and the noise (StepNoise: the
// generator draws, or DPM++ SDE's Brownian increments) on the GPU, against
// the same runs on the CPU and against the float64 k-diffusion reference.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "sampling/rng.h"
#include "sampling/scheduler.h"
#include "test_util.h"

namespace diffuse {
namespace {

#define REQUIRE_CUDA() \
  if (!device_available(Device::kCUDA)) GTEST_SKIP() << "no CUDA device"

const nlohmann::json kSd1 = {{"beta_end", 0.012},         {"beta_schedule", "scaled_linear"},
                             {"beta_start", 0.00085},     {"num_train_timesteps", 1000},
                             {"set_alpha_to_one", false}, {"skip_prk_steps", true},
                             {"steps_offset", 1},         {"clip_sample", false}};

// The analytic model of test_k_samplers.cpp (data ~ N(mu, 0.5^2)), epsilon prediction, on the host.
std::vector<float> model(const std::vector<float>& x_in, double sigma) {
  std::vector<float> out(x_in.size());
  const double scale = std::sqrt(sigma * sigma + 1), c = 0.25 / (0.25 + sigma * sigma);
  for (size_t i = 0; i < x_in.size(); ++i) {
    const double mu = 0.5 * std::sin(0.7 * static_cast<double>(i) + 0.3);
    const double x = x_in[i] * scale;
    out[i] = static_cast<float>((x - (mu + c * (x - mu))) / sigma);
  }
  return out;
}

std::vector<float> run(const std::string& sampler, const std::string& schedule, Device device) {
  auto s = make_scheduler(sampler, SchedulerConfig::from_json(kSd1), schedule);
  s->set_timesteps(10);
  const Shape shape = {1, 4, 4, 4};
  CpuGenerator sample_gen(2311), noise_gen(2312);
  Tensor x = scale(sample_gen.randn(shape), s->sigmas()[0]).to(device);
  StepNoise noise(*s, noise_gen, shape, device);
  for (size_t k = 0; k < s->timesteps().size(); ++k) {
    const int i = static_cast<int>(k);
    const Tensor x_in = s->scale_model_input(x, i);
    const Tensor out =
        Tensor::from_vector(model(x_in.to(Device::kCPU).to_f32_vector(), s->sigmas()[k]), shape).to(device);
    x = s->step(out, i, x, noise.at(i));
    EXPECT_EQ(x.device(), device);
  }
  return x.to(Device::kCPU).to_f32_vector();
}

class KSamplerCuda : public ::testing::TestWithParam<std::string> {};

TEST_P(KSamplerCuda, GpuMatchesCpuAndReference) {
  REQUIRE_CUDA();
  const nlohmann::json ref = nlohmann::json::parse(
      testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/sampling/data/sampler_reference.json"));
  const std::string key = GetParam();
  const std::string sampler = key.substr(0, key.find('/')), schedule = key.substr(key.find('/') + 1);
  const std::vector<float> cpu = run(sampler, schedule, Device::kCPU), gpu = run(sampler, schedule, Device::kCUDA);
  const auto want = ref.at("samplers").at(key).get<std::vector<double>>();
  double d_cpu = 0, d_ref = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    d_cpu = std::max(d_cpu, static_cast<double>(std::fabs(gpu[i] - cpu[i])));
    d_ref = std::max(d_ref, std::fabs(gpu[i] - want[i]));
  }
  EXPECT_LE(d_cpu, 1e-5) << "max abs GPU - CPU";
  EXPECT_LE(d_ref, 2e-5) << "max abs GPU - fp64 reference";
  std::printf("%-26s GPU vs CPU %.3g, vs fp64 %.3g\n", key.c_str(), d_cpu, d_ref);
}

INSTANTIATE_TEST_SUITE_P(All, KSamplerCuda,
                         ::testing::Values("dpm2/karras", "dpm2_a/karras", "dpmpp_2s_a/karras", "dpmpp_sde/karras",
                                           "dpmpp_2m_sde/karras", "dpmpp_3m_sde/karras", "dpmpp_sde/default",
                                           "dpmpp_3m_sde/exponential"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace diffuse
