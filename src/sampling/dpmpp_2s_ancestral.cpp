// DPM++ 2S a: k-diffusion's sample_dpmpp_2s_ancestral (eta = 1): a
// DPM-Solver++(2S) step (Lu et al. 2022, single-step, 2nd order, r = 1/2) in
// log-sigma time t = -log sigma, from sigma_i down to sigma_down
// (get_ancestral_step), then fresh noise of scale sigma_up; the last step is
// one Euler step to 0. diffusers has no such class: tested against an fp64
// port of the k-diffusion function (tools/reference/sampler_reference.py).
// Noise: one generator draw per step with noise (every step but the last),
// taken by the step's second evaluation.
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DpmPP2SAncestralScheduler final : public KSampler {
 public:
  explicit DpmPP2SAncestralScheduler(const SchedulerConfig& c) : KSampler("dpmpp_2s_a", c) {}

 protected:
  // sigma_fn(t + h / 2) = sqrt(sigma * sigma_down).
  std::optional<double> second_sigma(double s, double s_next) const override {
    const double down = ancestral_step(s, s_next).first;
    if (down == 0) return std::nullopt;
    return std::exp(-(-std::log(s) + (std::log(s) - std::log(down)) / 2));
  }

  bool stage_draws_noise(int, int stage, bool two_stage) const override { return two_stage && stage == 1; }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor&, bool two_stage) override {
    const double sigma = s(i), down = ancestral_step(sigma, s(i + 1)).first;
    if (!two_stage) {  // Euler: x + (x - denoised) / sigma * (sigma_down - sigma)
      const double dt = down - sigma;
      return lin(x, 1 + dt / sigma, den, -dt / sigma);
    }
    const double h = std::log(sigma) - std::log(down), mid = *second_sigma(sigma, s(i + 1));
    return lin(x, mid / sigma, den, -std::expm1(-h / 2));  // (sigma_s / sigma_t) x - expm1(-h r) denoised
  }

  Tensor second_stage(int i, const Tensor& x, const Tensor&, const Tensor&, const Tensor& den_2,
                      const Tensor& noise) override {
    const double sigma = s(i);
    const auto [down, up] = ancestral_step(sigma, s(i + 1));
    const double h = std::log(sigma) - std::log(down);
    const Tensor out = lin(x, down / sigma, den_2, -std::expm1(-h));  // (sigma_down / sigma) x - expm1(-h) denoised_2
    return lin(out, 1.0, noise, up);                                  // + noise * sigma_up
  }
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2s_ancestral(const SchedulerConfig& c) {
  return std::make_unique<DpmPP2SAncestralScheduler>(c);
}

}  // namespace diffuse::sched
