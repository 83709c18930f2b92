// DPM++ SDE: k-diffusion's sample_dpmpp_sde (eta = 1, s_noise = 1, r = 1/2):
// stochastic DPM-Solver++, two evaluations per step. In log-sigma time
// t = -log sigma, h = t_next - t: stage 1 steps ancestrally from sigma to
// sigma_s = sigma_fn(t + r h) = sqrt(sigma * sigma_next) and evaluates the
// model there; stage 2 steps ancestrally from sigma to sigma_next with
// denoised_d = (1 - 1/(2r)) denoised + 1/(2r) denoised_2 (= denoised_2 for
// r = 1/2). The last step is one Euler step to 0.
//
// Noise: k-diffusion's BrownianTreeNoiseSampler: stage 1 takes the normalised
// Brownian increment over [sigma_s, sigma], stage 2 over [sigma_next, sigma],
// of ONE Brownian motion per run (brownian.h, seeded with the generator's
// seed), so the two are correlated as the SDE needs and a finer step grid
// refines the same path. diffusers' DPMSolverSDEScheduler needs torchsde:
// tested against an fp64 port of the k-diffusion function with the same
// Brownian construction (tools/reference/sampler_reference.py).
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DpmPPSdeScheduler final : public KSampler {
 public:
  explicit DpmPPSdeScheduler(const SchedulerConfig& c) : KSampler("dpmpp_sde", c) {}

  NoiseSource noise_source() const override { return NoiseSource::kBrownian; }

 protected:
  std::optional<double> second_sigma(double s, double s_next) const override {
    if (s_next == 0) return std::nullopt;
    return std::exp(-(-std::log(s) + (std::log(s) - std::log(s_next)) * kR));
  }

  bool stage_draws_noise(int, int, bool two_stage) const override { return two_stage; }
  std::pair<double, double> stage_noise_interval(int i, int stage) const override {
    const std::optional<double> mid = second_sigma(s(i), s(i + 1));
    if (!mid) return {0.0, 0.0};  // the last step (to 0) takes no noise
    return {stage == 0 ? *mid : s(i + 1), s(i)};
  }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor& noise, bool two_stage) override {
    const double sigma = s(i);
    if (!two_stage) {  // Euler to sigma_next = 0: x + (x - denoised) / sigma * (0 - sigma)
      const double dt = s(i + 1) - sigma;
      return lin(x, 1 + dt / sigma, den, -dt / sigma);
    }
    const auto [down, up] = ancestral_step(sigma, *second_sigma(sigma, s(i + 1)));
    // (sigma_fn(s_) / sigma_fn(t)) x - expm1(t - s_) denoised, t - s_ = log(sigma_down / sigma)
    const Tensor x_2 = lin(x, down / sigma, den, -std::expm1(std::log(down / sigma)));
    return lin(x_2, 1.0, noise, up);
  }

  Tensor second_stage(int i, const Tensor& x, const Tensor& den, const Tensor&, const Tensor& den_2,
                      const Tensor& noise) override {
    const double sigma = s(i);
    const auto [down, up] = ancestral_step(sigma, s(i + 1));
    const double fac = 1 / (2 * kR);
    const double c = -std::expm1(std::log(down / sigma));
    // (sigma_down / sigma) x - expm1(t - t_next_) ((1 - fac) denoised + fac denoised_2)
    Tensor out = lin(x, down / sigma, den_2, c * fac);
    if (fac != 1.0) out = lin(out, 1.0, den, c * (1 - fac));
    return lin(out, 1.0, noise, up);
  }

 private:
  static constexpr double kR = 0.5;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_sde(const SchedulerConfig& c) { return std::make_unique<DpmPPSdeScheduler>(c); }

}  // namespace diffuse::sched
