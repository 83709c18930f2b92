// DPM2 a: k-diffusion's sample_dpm_2_ancestral (eta = 1); diffusers'
// KDPM2AncestralDiscreteScheduler is the same algorithm. A DPM2 step down to
// sigma_down (get_ancestral_step), through the log-midpoint of sigma_i and
// sigma_down, then fresh noise of scale sigma_up; the last step is one Euler
// step to 0. The noise stream is diffusers': one generator draw at every
// evaluation (2n - 1 draws for n steps), of which the second stages use theirs
// (k-diffusion draws only those).
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class Dpm2AncestralScheduler final : public KSampler {
 public:
  explicit Dpm2AncestralScheduler(const SchedulerConfig& c) : KSampler("dpm2_a", c) {}

 protected:
  std::optional<double> second_sigma(double s, double s_next) const override {
    const double down = ancestral_step(s, s_next).first;
    if (down == 0) return std::nullopt;
    return std::exp((std::log(s) + std::log(down)) / 2);
  }

  bool stage_draws_noise(int, int, bool) const override { return true; }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor&, bool two_stage) override {
    const double sigma = s(i);
    const double target =
        two_stage ? static_cast<float>(*second_sigma(sigma, s(i + 1))) : ancestral_step(sigma, s(i + 1)).first;
    const Tensor d = div_scalar(sub(x, den), static_cast<float>(sigma));  // (x - denoised) / sigma
    return add_scaled(x, d, static_cast<float>(target - sigma));          // x + d * dt
  }

  Tensor second_stage(int i, const Tensor& x, const Tensor&, const Tensor& x_2, const Tensor& den_2,
                      const Tensor& noise) override {
    const double sigma = s(i);
    const auto [down, up] = ancestral_step(sigma, s(i + 1));
    const float mid = static_cast<float>(*second_sigma(sigma, s(i + 1)));
    const Tensor d_2 = div_scalar(sub(x_2, den_2), mid);                      // (x_2 - denoised_2) / sigma_mid
    const Tensor out = add_scaled(x, d_2, static_cast<float>(down - sigma));  // x + d_2 * (sigma_down - s)
    return add_scaled(out, noise, static_cast<float>(up));                    // + noise * sigma_up
  }
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm2_ancestral(const SchedulerConfig& c) {
  return std::make_unique<Dpm2AncestralScheduler>(c);
}

}  // namespace diffuse::sched
