// DPM++ 3M SDE: k-diffusion's sample_dpmpp_3m_sde (eta = 1, s_noise = 1), a
// third-order multistep SDE solver in log-sigma time. Per step,
// h = log(sigma / sigma_next), h_eta = 2h:
//   x = e^-h_eta x + (1 - e^-h_eta) denoised + phi_2 d1 - phi_3 d2
//       + sigma_next sqrt(1 - e^-2h) noise,
// with d1, d2 the first and second divided differences of the last three
// denoised (first order when fewer exist; see the function), phi_2 =
// expm1(-h_eta) / h_eta + 1, phi_3 = phi_2 / h_eta - 0.5; the last step
// returns denoised. diffusers has no 3rd-order SDE solver: tested against an
// fp64 port of the k-diffusion function (tools/reference/sampler_reference.py).
// Noise: one generator draw per step with noise (all but the last).
#include <cmath>

#include "core/ops.h"
#include "sampling/k_sampler.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DpmPP3MSdeScheduler final : public KSampler {
 public:
  explicit DpmPP3MSdeScheduler(const SchedulerConfig& c) : KSampler("dpmpp_3m_sde", c) {}
  int order() const override { return 1; }

 protected:
  std::optional<double> second_sigma(double, double) const override { return std::nullopt; }
  bool stage_draws_noise(int i, int, bool) const override { return s(i + 1) > 0; }
  void reset_history() override {
    den_1_ = den_2_ = Tensor();
    h_1_ = h_2_ = 0;
  }

  Tensor first_stage(int i, const Tensor& x, const Tensor& den, const Tensor& noise, bool) override {
    const double sigma = s(i), sigma_next = s(i + 1);
    Tensor out;
    double h = h_1_;
    if (sigma_next == 0) {
      out = den;  // the denoising step
    } else {
      h = std::log(sigma) - std::log(sigma_next);
      const double h_eta = 2 * h;
      out = lin(x, std::exp(-h_eta), den, -std::expm1(-h_eta));
      const double phi_2 = std::expm1(-h_eta) / h_eta + 1;
      if (den_2_.defined()) {
        // phi_2 d1 - phi_3 d2 with d1_0 = (den - den_1) / r0, d1_1 = (den_1 - den_2) / r1,
        // d1 = d1_0 + (d1_0 - d1_1) r0 / (r0 + r1), d2 = (d1_0 - d1_1) / (r0 + r1), collected
        // per denoised: (phi_2 + q) d1_0 - q d1_1, q = (phi_2 r0 - phi_3) / (r0 + r1).
        const double r0 = h_1_ / h, r1 = h_2_ / h;
        const double phi_3 = phi_2 / h_eta - 0.5;
        const double q = (phi_2 * r0 - phi_3) / (r0 + r1);
        const double a = (phi_2 + q) / r0, b = q / r1;
        const Tensor corr = lin(lin(den, a, den_1_, -a - b), 1.0, den_2_, b);
        out = lin(out, 1.0, corr, 1.0);
      } else if (den_1_.defined()) {
        const double r = h_1_ / h;  // phi_2 (den - den_1) / r
        out = lin(out, 1.0, lin(den, 1.0, den_1_, -1.0), phi_2 / r);
      }
      out = lin(out, 1.0, noise, sigma_next * std::sqrt(-std::expm1(-2 * h)));
    }
    den_2_ = den_1_;
    den_1_ = den;
    h_2_ = h_1_;
    h_1_ = h;
    return out;
  }

 private:
  Tensor den_1_, den_2_;
  double h_1_ = 0, h_2_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_3m_sde(const SchedulerConfig& c) {
  return std::make_unique<DpmPP3MSdeScheduler>(c);
}

}  // namespace diffuse::sched
