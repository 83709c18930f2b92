// Latent Consistency Model multistep sampling (Luo et al. 2023), port of
// diffusers' LCMScheduler: each step predicts the consistency-model denoised
// sample and re-noises it to the next timestep with fresh noise.
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class LcmScheduler final : public Scheduler {
 public:
  explicit LcmScheduler(const SchedulerConfig& c) : Scheduler("lcm") {
    check_common_support(c, "lcm");
    train_ = make_train_schedule(c, BetaDefaults{0.00085, 0.012, "scaled_linear"});
    noise_form_ = NoiseForm::kAlphasCumprod;
    noise_alphas_cumprod_ = train_.alphas_cumprod;
    prediction_ = prediction_type(c, "lcm");
    original_steps_ = c.original_inference_steps.value_or(50);
    clip_sample_ = c.clip_sample.value_or(false);
    clip_range_ = static_cast<float>(c.clip_sample_range.value_or(1.0));
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(true) ? 1.0f : train_.alphas_cumprod[0];
    timestep_scaling_ = static_cast<float>(c.timestep_scaling.value_or(10.0));
  }

  void build_timesteps(int n) override {
    timesteps_ = consistency_timesteps(train_.num_train_timesteps, original_steps_, n, "lcm");
  }

  // diffusers draws no noise on the last step.
  bool draws_noise(int k) const override { return static_cast<size_t>(k) + 1 < timesteps_.size(); }

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) override {
    const size_t n_steps = timesteps_.size();
    const bool last = static_cast<size_t>(k) == n_steps - 1;
    const int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    const int prev_t = last ? t : static_cast<int>(timesteps_[static_cast<size_t>(k) + 1]);
    const float a_t = train_.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev = prev_t >= 0 ? train_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    // Boundary-condition scalings with sigma_data = 0.5; the int64 timestep times the float
    // scaling is computed in float32 by torch.
    const float st = static_cast<float>(t) * timestep_scaling_;
    const float c_skip = 0.25f / (st * st + 0.25f);
    const float c_out = st / std::sqrt(st * st + 0.25f);
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);

    Tensor x0;
    switch (prediction_) {
      case Prediction::kEpsilon:  // (x - sqrt(b) * m) / sqrt(a)
        x0 = div_scalar(add_scaled(sample, model_output, -sqrt_b), sqrt_a);
        break;
      case Prediction::kVPrediction:  // sqrt(a) * x - sqrt(b) * m
        x0 = axpby(sample, sqrt_a, model_output, -sqrt_b);
        break;
      case Prediction::kSample:
        x0 = model_output;
        break;
    }
    if (clip_sample_) x0 = clamp_sample(x0, -clip_range_, clip_range_);
    const Tensor denoised = axpby(x0, c_out, sample, c_skip);  // c_out * x0 + c_skip * x
    if (last) return denoised;
    return axpby(denoised, std::sqrt(a_prev), noise, std::sqrt(b_prev));  // sqrt(a_prev) * d + sqrt(b_prev) * z
  }

 private:
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  int original_steps_ = 50;
  bool clip_sample_ = false;
  float clip_range_ = 1.0f, final_alpha_cumprod_ = 1.0f, timestep_scaling_ = 10.0f;
};

}  // namespace

std::vector<float> consistency_timesteps(int num_train_timesteps, int original_steps, int n, const char* who) {
  const int N = num_train_timesteps;
  const std::string w = std::string("[") + who + "] ";
  DIFFUSE_CHECK_ARG(original_steps >= 1 && original_steps <= N,
                    w + "original_inference_steps must be in [1, " + std::to_string(N) + "], got " +
                        std::to_string(original_steps));
  DIFFUSE_CHECK_ARG(n >= 1 && n <= original_steps,
                    w + "this schedule has " + std::to_string(original_steps) +
                        " timesteps (original_inference_steps), so steps must be in [1, " +
                        std::to_string(original_steps) + "], got " + std::to_string(n));
  // The distillation schedule: k - 1, 2k - 1, ..., original_steps * k - 1 with the skipping
  // step k = N // original_steps, taken in reverse at floor(linspace(0, len, n, endpoint=False)).
  const int k = N / original_steps;
  std::vector<int64_t> origin;
  for (int i = original_steps; i >= 1; --i) origin.push_back(static_cast<int64_t>(i) * k - 1);
  const double step = static_cast<double>(origin.size()) / n;
  std::vector<float> out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<float>(origin[static_cast<size_t>(std::floor(i * step))]));
  return out;
}

std::unique_ptr<Scheduler> make_lcm(const SchedulerConfig& c) { return std::make_unique<LcmScheduler>(c); }

}  // namespace diffuse::sched
