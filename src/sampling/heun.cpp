// Heun's second-order method on the probability-flow ODE (Karras et al. 2022,
// Algorithm 1 without churn; k-diffusion sample_heun), port of diffusers'
// HeunDiscreteScheduler. Each step from sigma_i to sigma_{i+1} takes an Euler
// (first-order) evaluation at sigma_i and a correcting one at sigma_{i+1},
// averaging the two derivatives; the last step (to sigma = 0) is Euler only.
// Like diffusers, timesteps() lists every evaluation: t0, t1, t1, ..., t_{n-1},
// t_{n-1} (2n - 1 entries) with sigmas s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0, so
// even step indices are first-order and odd ones second-order, and the
// pipeline's one-evaluation-per-index loop runs it unchanged.
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class HeunScheduler final : public Scheduler {
 public:
  explicit HeunScheduler(const SchedulerConfig& c) : Scheduler("heun"), config_(c) {
    check_common_support(c, "heun");
    // HeunDiscreteScheduler's own defaults: beta 0.00085 .. 0.012, "linear".
    train_ = make_train_schedule(c, BetaDefaults{0.00085, 0.012, "linear"});
    prediction_ = prediction_type(c, "heun");
    spacing_ = c.timestep_spacing.value_or("linspace");
    clip_sample_ = c.clip_sample.value_or(false);
    clip_range_ = static_cast<float>(c.clip_sample_range.value_or(1.0));
  }

  int order() const override { return 2; }

  void build_timesteps(int n) override {
    // Like LMS, the class has no sigma_min / sigma_max keys: the Karras bounds are the interpolated ends.
    const SigmaSteps st = interpolated_sigma_steps(config_, train_, spacing_, n, "heun");
    const std::vector<double>& ts = st.timesteps;
    const std::vector<double>& sig = st.sigmas;
    // sigmas = [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps = [t0, t1, t1, ..., t_{n-1}, t_{n-1}].
    sigmas_.clear();
    timesteps_.clear();
    for (size_t i = 0; i < sig.size(); ++i) {
      const int copies = i == 0 ? 1 : 2;
      for (int c = 0; c < copies; ++c) {
        sigmas_.push_back(static_cast<float>(sig[i]));
        timesteps_.push_back(static_cast<float>(ts[i]));
      }
    }
    sigmas_.push_back(0.0f);
    init_noise_sigma_ = sigma_init_noise(sigmas_, spacing_);
    prev_derivative_ = Tensor();
    first_sample_ = Tensor();
    first_step_ = -1;
  }

 protected:
  Tensor scale_input(const Tensor& sample, int k) override {
    return scale_by_sigma(sample, sigmas_[static_cast<size_t>(k)]);
  }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    const size_t i = static_cast<size_t>(k);
    const bool first_order = k % 2 == 0;
    if (!first_order) {
      DIFFUSE_CHECK_ARG(first_step_ == k - 1, "[heun] step " + std::to_string(k) +
                                                  " is the second half of step " + std::to_string(k - 1) +
                                                  ", which must be taken just before it");
    }
    // First order: from sigmas[k] to sigmas[k + 1]; second order: the same interval, from sigmas[k - 1].
    const float sigma = first_order ? sigmas_[i] : sigmas_[i - 1];
    const float sigma_next = first_order ? sigmas_[i + 1] : sigmas_[i];
    const float sigma_hat = sigma * (0.0f + 1.0f);  // gamma = 0
    // x0 at the point where the model was evaluated: sigma_hat, or sigma_next for the correction.
    Tensor x0 = sigma_x0(prediction_, model_output, sample, first_order ? sigma_hat : sigma_next);
    if (clip_sample_) x0 = clamp_sample(x0, -clip_range_, clip_range_);

    if (first_order) {
      const Tensor derivative = div_scalar(sub(sample, x0), sigma_hat);  // (x - x0) / sigma_hat
      dt_ = sigma_next - sigma_hat;
      prev_derivative_ = derivative;
      first_sample_ = sample;
      first_step_ = k;
      return add_scaled(sample, derivative, dt_);  // x + derivative * dt
    }
    const Tensor derivative = div_scalar(sub(sample, x0), sigma_next);  // (x - x0) / sigma_next
    const Tensor mean = scale(add(prev_derivative_, derivative), 0.5f);  // (d_prev + d) / 2
    const Tensor out = add_scaled(first_sample_, mean, dt_);             // x_first + mean * dt
    prev_derivative_ = Tensor();
    first_sample_ = Tensor();
    first_step_ = -1;
    return out;
  }

 private:
  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;
  bool clip_sample_ = false;
  float clip_range_ = 1.0f;
  // State between a first-order step and its correction (diffusers: prev_derivative, dt, sample).
  Tensor prev_derivative_, first_sample_;
  float dt_ = 0.0f;
  int first_step_ = -1;
};

}  // namespace

std::unique_ptr<Scheduler> make_heun(const SchedulerConfig& c) { return std::make_unique<HeunScheduler>(c); }

}  // namespace diffuse::sched
