// The scheduler steps on a CUDA device (needs a GPU; ctest label "cuda"): the
// same golden trajectories as test_schedulers.cpp (diffusers, SD1 config) and
// test_heun.cpp (fp64 reference), with the sample, model outputs, noise and
// every multistep state on the GPU. The noise of euler_a / lcm comes from
// StepNoise: one host-to-device copy for the whole loop. Tolerances are the
// CPU tests' own.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "sampling/rng.h"
#include "sampling/scheduler.h"
#include "sampling_fixtures.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::FixtureTensors;

#define REQUIRE_CUDA() \
  if (!device_available(Device::kCUDA)) GTEST_SKIP() << "no CUDA device"

nlohmann::json cases_sd1() {
  std::string text = testing::read_file(testing::fixtures_dir() + "/sd1/cases.json");
  for (size_t pos; (pos = text.find("-Infinity")) != std::string::npos;) text.replace(pos, 9, "\"-inf\"");
  return nlohmann::json::parse(text);
}

std::vector<float> slice(const testing::FixtureTensor& t, size_t i) {
  const size_t per = t.data.size() / static_cast<size_t>(t.shape[0]);
  return {t.data.begin() + static_cast<std::ptrdiff_t>(i * per),
          t.data.begin() + static_cast<std::ptrdiff_t>((i + 1) * per)};
}

class CudaTrajectory : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaTrajectory, MatchesDiffusersOnTheGpu) {
  REQUIRE_CUDA();
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string name = GetParam();
  const nlohmann::json c = cases_sd1();
  const nlohmann::json& e = c.at("scheduler_steps").at(name);
  const FixtureTensors tensors(testing::fixtures_dir() + "/sd1/tensors.safetensors");
  const auto sample0 = tensors.get(e.at("sample0"));
  const auto outputs = tensors.get(e.at("model_outputs"));
  const auto scaled = tensors.get(e.at("scaled_inputs"));
  const auto prev = tensors.get(e.at("prev_samples"));
  const Shape shape(outputs.shape.begin() + 1, outputs.shape.end());

  const SchedulerConfig shipped = SchedulerConfig::from_json(c.at("configs").at("scheduler_config_json_as_shipped"));
  const bool karras = name == "dpmpp_2m_karras";
  auto s = make_scheduler(karras ? "dpmpp_2m" : name, shipped, karras ? "karras" : "default");
  s->set_timesteps(10);
  std::unique_ptr<Generator> gen;
  if (e.at("uses_generator_noise").get<bool>())
    gen = std::make_unique<CpuGenerator>(e.at("generator_seed").get<uint64_t>());
  CpuGenerator unused(0);
  StepNoise noise(*s, gen ? *gen : unused, shape, Device::kCUDA);
  EXPECT_EQ(noise.uploads(), gen ? 1 : 0);

  Tensor sample = Tensor::from_vector(sample0.data, sample0.shape).to(Device::kCUDA);
  for (size_t i = 0; i < s->timesteps().size(); ++i) {
    SCOPED_TRACE(name + " step " + std::to_string(i));
    const Tensor x_in = s->scale_model_input(sample, static_cast<int>(i));
    EXPECT_EQ(x_in.device(), Device::kCUDA);
    const auto d_in = testing::compare(x_in.to_f32_vector(), slice(scaled, i));
    EXPECT_LE(d_in.max_rel, 1e-6) << "scaled input: " << d_in.str();
    const Tensor mo = Tensor::from_vector(slice(outputs, i), shape).to(Device::kCUDA);
    sample = s->step(mo, static_cast<int>(i), sample, noise.at(static_cast<int>(i)));
    ASSERT_EQ(sample.device(), Device::kCUDA);
    const auto d = testing::compare(sample.to_f32_vector(), slice(prev, i));
    EXPECT_LE(d.max_rel, 1e-5) << "prev sample: " << d.str();
  }
  EXPECT_EQ(noise.uploads(), gen ? 1 : 0);  // the whole run's noise in one copy
}

INSTANTIATE_TEST_SUITE_P(Schedulers, CudaTrajectory,
                         ::testing::Values("ddim", "pndm", "lms", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras",
                                           "unipc", "lcm"));

class CudaHeun : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaHeun, MatchesReferenceOnTheGpu) {
  REQUIRE_CUDA();
  const nlohmann::json ref = nlohmann::json::parse(
      testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/sampling/data/heun_reference.json"));
  const nlohmann::json& e = ref.at("trajectories").at(GetParam());
  nlohmann::json config = e.at("config");
  const bool karras = config.value("use_karras_sigmas", false);
  config.erase("use_karras_sigmas");
  auto s = make_scheduler("heun", SchedulerConfig::from_json(config), karras ? "karras" : "default");
  s->set_timesteps(e.at("steps").get<int>());
  const Shape shape = e.at("shape").get<Shape>();
  auto floats = [](const nlohmann::json& a) { return a.get<std::vector<float>>(); };
  Tensor sample = Tensor::from_vector(floats(e.at("sample0")), shape).to(Device::kCUDA);
  for (size_t k = 0; k < s->timesteps().size(); ++k) {
    SCOPED_TRACE(GetParam() + " step " + std::to_string(k));
    const Tensor mo = Tensor::from_vector(floats(e.at("model_outputs").at(k)), shape).to(Device::kCUDA);
    (void)s->scale_model_input(sample, static_cast<int>(k));
    sample = s->step(mo, static_cast<int>(k), sample, Tensor());
    ASSERT_EQ(sample.device(), Device::kCUDA);
    const auto d = testing::compare(sample.to_f32_vector(), floats(e.at("prev_samples").at(k)));
    EXPECT_LE(d.max_rel, 1e-5) << d.str();
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, CudaHeun,
                         ::testing::Values("epsilon_linspace_10", "epsilon_karras_8", "v_prediction_trailing_6",
                                           "sample_leading_5"));

// The GPU steps agree with the CPU steps to a few float32 roundings (the CUDA
// kernels may fuse a multiply-add), for a batch of 2 on a 64x64 latent.
TEST(CudaSchedulers, AgreeWithTheCpu) {
  REQUIRE_CUDA();
  const nlohmann::json sd1 = {{"beta_end", 0.012}, {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085},
                              {"num_train_timesteps", 1000}, {"set_alpha_to_one", false}, {"skip_prk_steps", true},
                              {"steps_offset", 1}, {"clip_sample", false}};
  for (const std::string& name : scheduler_names()) {
    SCOPED_TRACE(name);
    auto cpu = make_scheduler(name, SchedulerConfig::from_json(sd1));
    auto gpu = make_scheduler(name, SchedulerConfig::from_json(sd1));
    cpu->set_timesteps(12);
    gpu->set_timesteps(12);
    const Shape shape = {2, 4, 64, 64};
    CpuGenerator g_cpu(42), g_gpu(42);
    Tensor x_cpu = scale(g_cpu.randn(shape), cpu->init_noise_sigma());
    Tensor x_gpu = scale(g_gpu.randn(shape), gpu->init_noise_sigma()).to(Device::kCUDA);
    StepNoise n_cpu(*cpu, g_cpu, shape, Device::kCPU), n_gpu(*gpu, g_gpu, shape, Device::kCUDA);
    CpuGenerator model(7);
    for (size_t k = 0; k < cpu->timesteps().size(); ++k) {
      const int i = static_cast<int>(k);
      const Tensor mo = model.randn(shape);
      x_cpu = cpu->step(mo, i, cpu->scale_model_input(x_cpu, i), n_cpu.at(i));
      x_gpu = gpu->step(mo.to(Device::kCUDA), i, gpu->scale_model_input(x_gpu, i), n_gpu.at(i));
    }
    const auto d = testing::compare(x_gpu.to_f32_vector(), x_cpu.to_f32_vector());
    EXPECT_LE(d.max_rel, 1e-5) << d.str();
  }
}

}  // namespace
}  // namespace diffuse
