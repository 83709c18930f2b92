// Linear multistep (order 4) on the probability-flow ODE (k-diffusion
// sample_lms), port of diffusers' LMSDiscreteScheduler. diffusers integrates
// each Lagrange basis polynomial numerically (scipy.integrate.quad); the
// integrand is a polynomial of degree < 4, so we integrate it exactly.
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

constexpr int kOrder = 4;

class LmsScheduler final : public Scheduler {
 public:
  explicit LmsScheduler(const SchedulerConfig& c) : Scheduler("lms"), config_(c) {
    check_common_support(c, "lms");
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "lms");
    spacing_ = c.timestep_spacing.value_or("linspace");
  }

  void build_timesteps(int n) override {
    // LMSDiscreteScheduler._convert_to_karras ignores sigma_min / sigma_max keys.
    const SigmaSteps st = interpolated_sigma_steps(config_, train_, spacing_, n, "lms");
    const std::vector<double>& ts = st.timesteps;
    const std::vector<double>& sig = st.sigmas;
    sigmas_.clear();
    for (double s : sig) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(0.0f);
    timesteps_.clear();
    for (double t : ts) timesteps_.push_back(static_cast<float>(t));
    init_noise_sigma_ = sigma_init_noise(sigmas_, spacing_);
    derivatives_.clear();
  }

 protected:
  Tensor scale_input(const Tensor& sample, int k) override {
    return scale_by_sigma(sample, sigmas_[static_cast<size_t>(k)]);
  }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    const float sigma = sigmas_[static_cast<size_t>(k)];
    const Tensor x0 = sigma_x0(prediction_, model_output, sample, sigma);
    derivatives_.push_back(div_scalar(sub(sample, x0), sigma));  // (x - x0) / sigma
    if (derivatives_.size() > static_cast<size_t>(kOrder)) derivatives_.pop_front();

    const int order = std::min(k + 1, kOrder);
    // prev = sample + sum(coeff_j * derivative_{k-j}), summed newest first like Python's sum().
    // After a begin index (img2img) fewer derivatives than `order` exist yet:
    // diffusers zips the order-`order` coefficients with the derivatives it
    // has, so only the first ones are used.
    const size_t nd = derivatives_.size();
    const int terms = std::min(order, static_cast<int>(nd));
    Tensor acc;
    for (int j = 0; j < terms; ++j) {
      const float c = static_cast<float>(lms_coefficient(order, k, j));
      const Tensor& d = derivatives_[nd - 1 - static_cast<size_t>(j)];
      acc = j == 0 ? scale(d, c) : add_scaled(acc, d, c);
    }
    return add(sample, acc);
  }

 private:
  // Integral over [sigma_k, sigma_{k+1}] of the Lagrange basis polynomial that is 1 at
  // sigma_{k-j} and 0 at the other sigma_{k-m}, m < order (diffusers get_lms_coefficient).
  double lms_coefficient(int order, int k, int j) const {
    std::vector<double> poly{1.0};  // ascending powers of tau
    for (int m = 0; m < order; ++m) {
      if (m == j) continue;
      const double root = sigmas_[static_cast<size_t>(k - m)];
      const double scale = 1.0 / (static_cast<double>(sigmas_[static_cast<size_t>(k - j)]) - root);
      std::vector<double> next(poly.size() + 1, 0.0);
      for (size_t p = 0; p < poly.size(); ++p) {
        next[p + 1] += poly[p] * scale;
        next[p] -= poly[p] * root * scale;
      }
      poly = std::move(next);
    }
    const double a = sigmas_[static_cast<size_t>(k)], b = sigmas_[static_cast<size_t>(k) + 1];
    double integral = 0;
    for (size_t p = 0; p < poly.size(); ++p) {
      const double e = static_cast<double>(p + 1);
      integral += poly[p] * (std::pow(b, e) - std::pow(a, e)) / e;
    }
    return integral;
  }

  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;
  std::deque<Tensor> derivatives_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lms(const SchedulerConfig& c) { return std::make_unique<LmsScheduler>(c); }

}  // namespace diffuse::sched
