// Latent Consistency Model multistep sampling (Luo et al. 2023), port of
// diffusers' LCMScheduler: each step predicts the consistency-model denoised
// sample and re-noises it to the next timestep with fresh noise.
#include <cmath>

#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class LcmScheduler final : public Scheduler {
 public:
  explicit LcmScheduler(const SchedulerConfig& c) {
    check_common_support(c, "lcm");
    train_ = make_train_schedule(c, BetaDefaults{0.00085, 0.012, "scaled_linear"});
    prediction_ = prediction_type(c, "lcm", "epsilon v_prediction sample");
    original_steps_ = c.original_inference_steps.value_or(50);
    clip_sample_ = c.clip_sample.value_or(false);
    clip_range_ = static_cast<float>(c.clip_sample_range.value_or(1.0));
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(true) ? 1.0f : train_.alphas_cumprod[0];
    timestep_scaling_ = static_cast<float>(c.timestep_scaling.value_or(10.0));
  }

  void set_timesteps(int n) override {
    const int N = train_.num_train_timesteps;
    DIFFUSE_CHECK_ARG(original_steps_ >= 1 && original_steps_ <= N,
                      "[lcm] original_inference_steps must be in [1, " + std::to_string(N) + "]");
    DIFFUSE_CHECK_ARG(n >= 1 && n <= original_steps_, "[lcm] num_inference_steps must be in [1, " +
                                                          std::to_string(original_steps_) +
                                                          "] (original_inference_steps), got " + std::to_string(n));
    // The distillation schedule: k - 1, 2k - 1, ..., original_steps * k - 1, taken in reverse at
    // floor(linspace(0, len, n, endpoint=False)).
    const int k = N / original_steps_;
    std::vector<int64_t> origin;
    for (int i = original_steps_; i >= 1; --i) origin.push_back(static_cast<int64_t>(i) * k - 1);
    const double step = static_cast<double>(origin.size()) / n;
    timesteps_.clear();
    for (int i = 0; i < n; ++i)
      timesteps_.push_back(static_cast<float>(origin[static_cast<size_t>(std::floor(i * step + 0.0))]));
  }

  Tensor scale_model_input(const Tensor& sample, int) override { return sample; }

  Tensor step(const Tensor& model_output, int k, const Tensor& sample, Generator* generator) override {
    check_step_args("lcm", k, timesteps_.size(), model_output, sample);
    const size_t n_steps = timesteps_.size();
    const bool last = static_cast<size_t>(k) == n_steps - 1;
    DIFFUSE_CHECK_ARG(last || generator != nullptr, "[lcm] step needs a generator for its noise");
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

    const Tensor mo_c = model_output.contiguous(), x_c = sample.contiguous();
    const float* mo = mo_c.data<float>();
    const float* x = x_c.data<float>();
    Tensor out = empty_like(sample);
    float* y = out.data<float>();
    const int64_t n = sample.numel();
    for (int64_t i = 0; i < n; ++i) {
      float x0;
      if (prediction_ == "epsilon") x0 = (x[i] - sqrt_b * mo[i]) / sqrt_a;
      else if (prediction_ == "v_prediction") x0 = sqrt_a * x[i] - sqrt_b * mo[i];
      else x0 = mo[i];
      if (clip_sample_) x0 = std::min(std::max(x0, -clip_range_), clip_range_);
      y[i] = c_out * x0 + c_skip * x[i];  // denoised
    }
    if (!last) {
      const Tensor noise = generator->randn(sample.shape());
      const float* z = noise.data<float>();
      const float sa = std::sqrt(a_prev), sb = std::sqrt(b_prev);
      for (int64_t i = 0; i < n; ++i) y[i] = sa * y[i] + sb * z[i];
    }
    return out;
  }

 private:
  TrainSchedule train_;
  std::string prediction_;
  int original_steps_ = 50;
  bool clip_sample_ = false;
  float clip_range_ = 1.0f, final_alpha_cumprod_ = 1.0f, timestep_scaling_ = 10.0f;
};

}  // namespace

std::unique_ptr<Scheduler> make_lcm(const SchedulerConfig& c) { return std::make_unique<LcmScheduler>(c); }

}  // namespace diffuse::sched
