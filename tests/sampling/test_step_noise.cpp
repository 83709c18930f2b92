// The step interface for device tensors (src/sampling/scheduler.h): noise given
// as a tensor, drawn up front by StepNoise, is the same stream as drawing it
// inside the loop, so the results are bit-identical, chunked or not; and the
// argument checks of step().
#include <gtest/gtest.h>

#include <cstring>

#include "core/ops.h"
#include "sampling/rng.h"
#include "sampling/scheduler.h"

namespace diffuse {
namespace {

const nlohmann::json kSd1Config = {{"beta_end", 0.012},      {"beta_schedule", "scaled_linear"},
                                   {"beta_start", 0.00085},  {"num_train_timesteps", 1000},
                                   {"set_alpha_to_one", false}, {"skip_prk_steps", true},
                                   {"steps_offset", 1},       {"clip_sample", false}};
const Shape kShape = {2, 4, 3, 5};  // 120 values: torch's vectorised randn path with a tail block

// A deterministic stand-in for the UNet.
Tensor fake_model(const Tensor& x_in, float t) {
  std::vector<float> v = x_in.to_f32_vector();
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.3f * v[i] + 0.01f * static_cast<float>(i % 7) - t * 1e-4f;
  return Tensor::from_vector(v, x_in.shape());
}

// Runs a whole loop; `max_bytes` = 0: noise drawn inside step() from the generator,
// else StepNoise with that chunk budget. Returns the final sample and the
// generator's next draw (which shows how much of the stream was used).
std::pair<std::vector<float>, std::vector<float>> run(const std::string& sampler, size_t max_bytes, int* uploads) {
  auto s = make_scheduler(sampler, SchedulerConfig::from_json(kSd1Config));
  s->set_timesteps(7);
  CpuGenerator gen(1234);
  Tensor x = scale(gen.randn(kShape), s->init_noise_sigma());
  std::unique_ptr<StepNoise> noise;
  if (max_bytes > 0) noise = std::make_unique<StepNoise>(*s, gen, kShape, Device::kCPU, max_bytes);
  for (size_t k = 0; k < s->timesteps().size(); ++k) {
    const int i = static_cast<int>(k);
    const Tensor out = fake_model(s->scale_model_input(x, i), s->timesteps()[k]);
    x = noise ? s->step(out, i, x, noise->at(i)) : s->step(out, i, x, &gen);
  }
  if (uploads) *uploads = noise ? noise->uploads() : 0;
  return {x.to_f32_vector(), gen.randn({3}).to_f32_vector()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class StepNoiseStream : public ::testing::TestWithParam<std::string> {};

TEST_P(StepNoiseStream, SameAsDrawingInTheLoop) {
  const auto in_loop = run(GetParam(), 0, nullptr);
  int uploads = -1;
  const auto up_front = run(GetParam(), StepNoise::kDefaultMaxBytes, &uploads);
  EXPECT_TRUE(same_bits(in_loop.first, up_front.first));
  EXPECT_TRUE(same_bits(in_loop.second, up_front.second));  // the same amount of the stream was used
  EXPECT_EQ(uploads, 0);  // CPU: nothing to copy
  // Chunks of 3 draws (3 * 120 floats): drawn as the loop reaches them, same stream.
  const auto chunked = run(GetParam(), 3 * 120 * sizeof(float), nullptr);
  EXPECT_TRUE(same_bits(in_loop.first, chunked.first));
  EXPECT_TRUE(same_bits(in_loop.second, chunked.second));
}

// Stochastic (euler_a: every step; lcm: all but the last) and deterministic samplers.
INSTANTIATE_TEST_SUITE_P(Samplers, StepNoiseStream, ::testing::Values("euler_a", "lcm", "euler", "heun", "unipc"));

TEST(StepNoise, DrawsOnlyForNoisySteps) {
  auto lcm = make_scheduler("lcm", SchedulerConfig::from_json(kSd1Config));
  lcm->set_timesteps(4);
  CpuGenerator gen(7), ref(7);
  StepNoise noise(*lcm, gen, kShape, Device::kCPU);
  for (int k = 0; k < 3; ++k) {
    const Tensor z = noise.at(k);
    ASSERT_TRUE(z.defined());
    EXPECT_EQ(z.shape(), kShape);
    EXPECT_TRUE(same_bits(z.to_f32_vector(), ref.randn(kShape).to_f32_vector())) << "step " << k;
  }
  EXPECT_FALSE(noise.at(3).defined());  // LCM's last step draws none
  EXPECT_THROW(noise.at(4), Error);
  EXPECT_THROW(noise.at(-1), Error);

  auto euler = make_scheduler("euler", SchedulerConfig::from_json(kSd1Config));
  euler->set_timesteps(4);
  CpuGenerator g2(7);
  StepNoise none(*euler, g2, kShape, Device::kCPU);
  EXPECT_FALSE(none.at(0).defined());
  EXPECT_TRUE(same_bits(g2.randn({4}).to_f32_vector(), CpuGenerator(7).randn({4}).to_f32_vector()));  // untouched
}

TEST(StepNoise, StepChecksItsNoise) {
  auto s = make_scheduler("euler_a", SchedulerConfig::from_json(kSd1Config));
  s->set_timesteps(3);
  const Tensor x = Tensor::full(kShape, 0.5f);
  EXPECT_THROW(s->step(x, 0, x, Tensor()), Error);                        // missing
  EXPECT_THROW(s->step(x, 0, x, Tensor::full({2, 4, 3, 4}, 0.1f)), Error);  // wrong shape
  EXPECT_THROW(s->step(x, 0, x, Tensor::full(kShape, 0.1f, DType::kF16)), Error);
  EXPECT_NO_THROW(s->step(x, 0, x, Tensor::full(kShape, 0.1f)));
  EXPECT_THROW(s->step(x.to(DType::kF16), 1, x, Tensor::full(kShape, 0.1f)), Error);  // f32 only
  EXPECT_THROW(s->scale_model_input(x, 3), Error);
  auto fresh = make_scheduler("euler", SchedulerConfig::from_json(kSd1Config));
  EXPECT_THROW(fresh->step(x, 0, x, Tensor()), Error);  // before set_timesteps
}

// Strided inputs (the CFG halves of a batch are views) give the same step as contiguous ones.
TEST(StepNoise, StridedInputs) {
  auto a = make_scheduler("dpmpp_2m", SchedulerConfig::from_json(kSd1Config));
  auto b = make_scheduler("dpmpp_2m", SchedulerConfig::from_json(kSd1Config));
  a->set_timesteps(5);
  b->set_timesteps(5);
  CpuGenerator gen(3);
  const Tensor both = gen.randn({4, 4, 3, 5});
  Tensor xa = gen.randn(kShape), xb = xa;
  for (int k = 0; k < 5; ++k) {
    const Tensor view = both.slice(0, 2, 4);  // a strided-offset view
    xa = a->step(view, k, xa, Tensor());
    xb = b->step(view.contiguous(), k, xb, Tensor());
  }
  EXPECT_TRUE(same_bits(xa.to_f32_vector(), xb.to_f32_vector()));
}

}  // namespace
}  // namespace diffuse
