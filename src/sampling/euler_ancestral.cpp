// Ancestral Euler sampling (k-diffusion sample_euler_ancestral, eta = 1),
// port of diffusers' EulerAncestralDiscreteScheduler: an Euler step down to
// sigma_down, then fresh noise of scale sigma_up (drawn at every step,
// including the last where sigma_up = 0, which keeps the RNG stream aligned
// with diffusers).
#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class EulerAncestralScheduler final : public Scheduler {
 public:
  explicit EulerAncestralScheduler(const SchedulerConfig& c) : Scheduler("euler_a") {
    check_common_support(c, "euler_a");
    // diffusers' class has no use_karras_sigmas; k-diffusion's sample_euler_ancestral runs on any
    // sigmas, so the karras (and every other) schedule is built as for Euler / LMS.
    config_ = c;
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "euler_a");
    spacing_ = c.timestep_spacing.value_or("linspace");
  }

  void build_timesteps(int n) override {
    const SigmaSteps st = interpolated_sigma_steps(config_, train_, spacing_, n, "euler_a");
    sigmas_.clear();
    timesteps_.clear();
    for (size_t i = 0; i < st.sigmas.size(); ++i) {
      sigmas_.push_back(static_cast<float>(st.sigmas[i]));
      timesteps_.push_back(static_cast<float>(st.timesteps[i]));
    }
    sigmas_.push_back(0.0f);
    init_noise_sigma_ = sigma_init_noise(sigmas_, spacing_);
  }

  bool draws_noise(int) const override { return true; }

 protected:
  Tensor scale_input(const Tensor& sample, int k) override {
    return scale_by_sigma(sample, sigmas_[static_cast<size_t>(k)]);
  }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) override {
    const float sigma = sigmas_[static_cast<size_t>(k)];
    const float s_from = sigma, s_to = sigmas_[static_cast<size_t>(k) + 1];
    const float sigma_up = std::sqrt(s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from));
    const float sigma_down = std::sqrt(s_to * s_to - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;
    const Tensor x0 = sigma_x0(prediction_, model_output, sample, sigma);
    const Tensor derivative = div_scalar(sub(sample, x0), sigma);  // (x - x0) / sigma
    const Tensor prev = add_scaled(sample, derivative, dt);        // x + derivative * dt
    return add_scaled(prev, noise, sigma_up);                      // prev + noise * sigma_up
  }

 private:
  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral(const SchedulerConfig& c) {
  return std::make_unique<EulerAncestralScheduler>(c);
}

}  // namespace diffuse::sched
