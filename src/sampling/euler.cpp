// Euler method on the probability-flow ODE (Karras et al. 2022, Algorithm 2
// without churn), port of diffusers' EulerDiscreteScheduler.
#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class EulerScheduler final : public Scheduler {
 public:
  explicit EulerScheduler(const SchedulerConfig& c) : Scheduler("euler"), config_(c) {
    check_common_support(c, "euler");
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "euler");
    spacing_ = c.timestep_spacing.value_or("linspace");
    if (c.interpolation_type.value_or("linear") != "linear")
      throw_error(ErrorCode::kUnsupported, "[euler] interpolation_type '" + *c.interpolation_type + "' is not supported");
    if (c.timestep_type.value_or("discrete") != "discrete")
      throw_error(ErrorCode::kUnsupported, "[euler] timestep_type '" + *c.timestep_type + "' is not supported");
    final_sigmas_type_ = c.final_sigmas_type.value_or("zero");
    if (final_sigmas_type_ != "zero" && final_sigmas_type_ != "sigma_min")
      throw_error(ErrorCode::kInvalidArgument, "[euler] final_sigmas_type must be zero or sigma_min");
  }

  void build_timesteps(int n) override {
    const SigmaSteps st = interpolated_sigma_steps(config_, train_, spacing_, n, "euler", config_.sigma_min,
                                                   config_.sigma_max);
    const std::vector<double>& ts = st.timesteps;
    const std::vector<double>& sig = st.sigmas;
    const std::vector<float>& table = st.table;
    sigmas_.clear();
    for (double s : sig) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(final_sigmas_type_ == "zero" ? 0.0f : table[0]);
    timesteps_.clear();
    for (double t : ts) timesteps_.push_back(static_cast<float>(t));
    init_noise_sigma_ = sigma_init_noise(sigmas_, spacing_);
  }

 protected:
  Tensor scale_input(const Tensor& sample, int k) override {
    return scale_by_sigma(sample, sigmas_[static_cast<size_t>(k)]);
  }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    // s_churn = 0: gamma = 0 and sigma_hat = sigma.
    const float sigma = sigmas_[static_cast<size_t>(k)];
    const float sigma_hat = sigma * (0.0f + 1.0f);
    const float dt = sigmas_[static_cast<size_t>(k) + 1] - sigma_hat;
    const Tensor x0 = sigma_x0(prediction_, model_output, sample, sigma_hat);
    const Tensor derivative = div_scalar(sub(sample, x0), sigma_hat);  // (x - x0) / sigma_hat
    return add_scaled(sample, derivative, dt);                         // x + derivative * dt
  }

 private:
  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_, final_sigmas_type_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const SchedulerConfig& c) { return std::make_unique<EulerScheduler>(c); }

}  // namespace diffuse::sched
