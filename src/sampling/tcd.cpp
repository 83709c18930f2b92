// Trajectory Consistency Distillation sampling (Zheng et al. 2024, "TCD"), port
// of diffusers' TCDScheduler: the timesteps of LCMScheduler; each step predicts
// x0 and the noise, moves them to the intermediate timestep
// s = floor((1 - gamma) * t_prev) (DDIM-style, no boundary-condition scalings),
// then re-noises from s to t_prev with fresh noise in proportion to gamma
// (diffusers' `eta`). gamma = 0 is deterministic; the last step draws nothing.
// Like diffusers' TCDScheduler.step, x0 is not clipped (clip_sample is ignored).
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class TcdScheduler final : public Scheduler {
 public:
  explicit TcdScheduler(const SchedulerConfig& c) : Scheduler("tcd") {
    check_common_support(c, "tcd");
    train_ = make_train_schedule(c, BetaDefaults{0.00085, 0.012, "scaled_linear"});
    noise_form_ = NoiseForm::kAlphasCumprod;
    noise_alphas_cumprod_ = train_.alphas_cumprod;
    prediction_ = prediction_type(c, "tcd");
    original_steps_ = c.original_inference_steps.value_or(50);
    gamma_ = c.eta.value_or(0.3);
    DIFFUSE_CHECK_ARG(gamma_ >= 0.0 && gamma_ <= 1.0,
                      "[tcd] eta (gamma) must be in [0, 1], got " + std::to_string(gamma_));
  }

  void build_timesteps(int n) override {
    timesteps_ = consistency_timesteps(train_.num_train_timesteps, original_steps_, n, "tcd");
  }

  // diffusers draws noise only when eta > 0, and never on the last step.
  bool draws_noise(int k) const override { return gamma_ > 0.0 && static_cast<size_t>(k) + 1 < timesteps_.size(); }

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) override {
    const bool last = static_cast<size_t>(k) + 1 == timesteps_.size();
    const int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    const int prev_t = last ? 0 : static_cast<int>(timesteps_[static_cast<size_t>(k) + 1]);  // diffusers: 0 at the end
    // torch: floor((1 - eta) * long tensor) in float32.
    const int s = static_cast<int>(std::floor(static_cast<float>(1.0 - gamma_) * static_cast<float>(prev_t)));
    const std::vector<float>& ac = train_.alphas_cumprod;
    const float a_t = ac[static_cast<size_t>(t)], b_t = 1.0f - a_t;
    const float a_prev = ac[static_cast<size_t>(prev_t)];
    const float a_s = ac[static_cast<size_t>(s)], b_s = 1.0f - a_s;
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);

    Tensor x0, eps;
    switch (prediction_) {
      case Prediction::kEpsilon:  // x0 = (x - sqrt(b) m) / sqrt(a), eps = m
        x0 = div_scalar(add_scaled(sample, model_output, -sqrt_b), sqrt_a);
        eps = model_output;
        break;
      case Prediction::kVPrediction:  // x0 = sqrt(a) x - sqrt(b) m, eps = sqrt(a) m + sqrt(b) x
        x0 = axpby(sample, sqrt_a, model_output, -sqrt_b);
        eps = axpby(model_output, sqrt_a, sample, sqrt_b);
        break;
      case Prediction::kSample:  // x0 = m, eps = (x - sqrt(a) x0) / sqrt(b)
        x0 = model_output;
        eps = div_scalar(add_scaled(sample, model_output, -sqrt_a), sqrt_b);
        break;
    }
    // The sample moved to timestep s: sqrt(a_s) x0 + sqrt(1 - a_s) eps.
    const Tensor noised = axpby(x0, std::sqrt(a_s), eps, std::sqrt(b_s));
    if (!draws_noise(k)) return noised;
    // From s back up to t_prev: sqrt(a_prev / a_s) x_s + sqrt(1 - a_prev / a_s) z.
    const float r = a_prev / a_s;
    return axpby(noised, std::sqrt(r), noise, std::sqrt(1.0f - r));
  }

 private:
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  int original_steps_ = 50;
  double gamma_ = 0.3;
};

}  // namespace

std::unique_ptr<Scheduler> make_tcd(const SchedulerConfig& c) { return std::make_unique<TcdScheduler>(c); }

}  // namespace diffuse::sched
