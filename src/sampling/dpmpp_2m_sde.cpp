// DPM++ 2M SDE: k-diffusion's sample_dpmpp_2m_sde (eta = 1, s_noise = 1,
// solver_type midpoint), which is also diffusers' DPMSolverMultistepScheduler
// with algorithm_type "sde-dpmsolver++", solver_order 2 (that class works in
// the variance-preserving form alpha * x; this port keeps k-diffusion's
// x = x0 + sigma * eps like the other k-diffusion samplers: the same
// trajectory, scaled). Per step, h = log(sigma / sigma_next):
//   x = (sigma_next / sigma) e^-h x + (1 - e^-2h) denoised
//       [+ 0.5 (1 - e^-2h) (h / h_last) (denoised - denoised_last)]
//       + sigma_next sqrt(1 - e^-2h) noise,
// and the last step (to 0) returns denoised. Noise: one generator draw per
// step, the last included (as diffusers draws it).
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DpmPP2MSdeScheduler final : public KSampler {
 public:
  explicit DpmPP2MSdeScheduler(const SchedulerConfig& c) : KSampler("dpmpp_2m_sde", c) {
    const std::string algorithm = c.algorithm_type.value_or("sde-dpmsolver++");
    if (algorithm != "sde-dpmsolver++" && algorithm != "dpmsolver++")  // a DPMSolverMultistep config names its own
      throw_error(ErrorCode::kUnsupported, "[dpmpp_2m_sde] algorithm_type '" + algorithm + "' is not supported");
  }
  int order() const override { return 1; }

 protected:
  // DPMSolverMultistepScheduler's timesteps and sigmas (its default spacing: n + 1 linspace
  // points without the last; integer timesteps), final sigma 0.
  SigmaSteps step_schedule(int n) const override {
    return dpm_solver_sigma_steps(config_, train_, spacing_, n, "dpmpp_2m_sde");
  }

  std::optional<double> second_sigma(double, double) const override { return std::nullopt; }
  bool stage_draws_noise(int, int, bool) const override { return true; }
  void reset_history() override {
    old_denoised_ = Tensor();
    h_last_ = 0;
  }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor& noise, bool) override {
    const double sigma = s(i), sigma_next = s(i + 1);
    Tensor out;
    double h = h_last_;
    if (sigma_next == 0) {
      out = den;  // the denoising step
    } else {
      h = std::log(sigma) - std::log(sigma_next);
      const double c = -std::expm1(-2 * h);  // (-h - eta h).expm1().neg(), eta = 1
      out = lin(x, sigma_next / sigma * std::exp(-h), den, c);
      if (old_denoised_.defined()) {
        const double k = 0.5 * c * (h / h_last_);  // 0.5 (1 - e^-2h) / r, r = h_last / h
        out = lin(out, 1.0, lin(den, 1.0, old_denoised_, -1.0), k);
      }
      out = lin(out, 1.0, noise, sigma_next * std::sqrt(c));
    }
    old_denoised_ = den;
    h_last_ = h;
    return out;
  }

 private:
  Tensor old_denoised_;
  double h_last_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2m_sde(const SchedulerConfig& c) {
  return std::make_unique<DpmPP2MSdeScheduler>(c);
}

}  // namespace diffuse::sched
