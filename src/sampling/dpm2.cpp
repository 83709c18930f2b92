// DPM2: k-diffusion's sample_dpm_2 (s_churn = 0), "a sampler inspired by
// DPM-Solver-2 and Algorithm 2 from Karras et al. (2022)"; diffusers'
// KDPM2DiscreteScheduler is the same algorithm. Each step but the last takes
// an Euler step to the log-midpoint sigma_mid = exp((log s_i + log s_{i+1}) / 2),
// evaluates the model there, and takes the full step with that derivative;
// the last step (to 0) is one Euler step.
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class Dpm2Scheduler final : public KSampler {
 public:
  explicit Dpm2Scheduler(const SchedulerConfig& c) : KSampler("dpm2", c) {}

 protected:
  std::optional<double> second_sigma(double s, double s_next) const override {
    if (s_next == 0) return std::nullopt;
    return std::exp((std::log(s) + std::log(s_next)) / 2);
  }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor&, bool two_stage) override {
    const double sigma = s(i);
    const double target = two_stage ? static_cast<float>(*second_sigma(sigma, s(i + 1))) : s(i + 1);
    const Tensor d = div_scalar(sub(x, den), static_cast<float>(sigma));  // (x - denoised) / sigma
    return add_scaled(x, d, static_cast<float>(target - sigma));          // x + d * dt
  }

  Tensor second_stage(int i, const Tensor& x, const Tensor&, const Tensor& x_2, const Tensor& den_2,
                      const Tensor&) override {
    const double sigma = s(i), sigma_next = s(i + 1);
    const float mid = static_cast<float>(*second_sigma(sigma, sigma_next));
    const Tensor d_2 = div_scalar(sub(x_2, den_2), mid);                // (x_2 - denoised_2) / sigma_mid
    return add_scaled(x, d_2, static_cast<float>(sigma_next - sigma));  // x + d_2 * (s_next - s)
  }
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm2(const SchedulerConfig& c) { return std::make_unique<Dpm2Scheduler>(c); }

}  // namespace diffuse::sched
