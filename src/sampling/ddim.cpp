// DDIM (Song et al. 2020), port of diffusers' DDIMScheduler with eta = 0
// (what StableDiffusionPipeline uses): deterministic.
#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DdimScheduler final : public Scheduler {
 public:
  explicit DdimScheduler(const SchedulerConfig& c) : Scheduler("ddim") {
    check_common_support(c, "ddim");
    train_ = make_train_schedule(c, BetaDefaults{});
    noise_form_ = NoiseForm::kAlphasCumprod;
    noise_alphas_cumprod_ = train_.alphas_cumprod;
    prediction_ = prediction_type(c, "ddim");
    spacing_ = c.timestep_spacing.value_or("leading");
    steps_offset_ = c.steps_offset.value_or(0);
    clip_sample_ = c.clip_sample.value_or(true);
    clip_range_ = static_cast<float>(c.clip_sample_range.value_or(1.0));
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(true) ? 1.0f : train_.alphas_cumprod[0];
  }

  void build_timesteps(int n) override {
    const int N = train_.num_train_timesteps;
    DIFFUSE_CHECK_ARG(n >= 1 && n <= N, "[ddim] num_inference_steps must be in [1, " + std::to_string(N) +
                                            "], got " + std::to_string(n));
    n_ = n;
    timesteps_.clear();
    if (spacing_ == "linspace") {
      const auto t = np_linspace(0, N - 1, n);
      for (auto it = t.rbegin(); it != t.rend(); ++it) timesteps_.push_back(static_cast<float>(np_round(*it)));
    } else if (spacing_ == "leading") {
      const int ratio = N / n;
      for (int i = n - 1; i >= 0; --i) timesteps_.push_back(static_cast<float>(i * ratio + steps_offset_));
    } else if (spacing_ == "trailing") {
      for (double t : np_arange(N, 0, -static_cast<double>(N) / n)) timesteps_.push_back(static_cast<float>(np_round(t) - 1));
    } else {
      throw_error(ErrorCode::kUnsupported, "[ddim] timestep_spacing '" + spacing_ + "' is not supported");
    }
    // "leading" spacing plus steps_offset reaches timestep N at n = N (SD's
    // steps_offset 1), past the end of alphas_cumprod; diffusers fails there
    // with an IndexError. Refuse it with the limit instead.
    const float t_max = *std::max_element(timesteps_.begin(), timesteps_.end());
    DIFFUSE_CHECK_ARG(t_max <= static_cast<float>(N - 1),
                      "[ddim] " + std::to_string(n) + " steps with steps_offset " + std::to_string(steps_offset_) +
                          " reach timestep " + std::to_string(static_cast<int>(t_max)) + ", beyond the " +
                          std::to_string(N) + " training timesteps; use fewer steps");
  }

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    const int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    const int prev_t = t - train_.num_train_timesteps / n_;
    const float a_t = train_.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev = prev_t >= 0 ? train_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t;
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);
    // eta = 0: std_dev_t = 0, so the direction coefficient is (1 - a_prev - 0) ** 0.5.
    const float dir_coeff = std::sqrt(1.0f - a_prev - 0.0f), sqrt_a_prev = std::sqrt(a_prev);

    Tensor x0, eps;
    switch (prediction_) {
      case Prediction::kEpsilon:  // x0 = (x - sqrt(b) * m) / sqrt(a)
        x0 = div_scalar(add_scaled(sample, model_output, -sqrt_b), sqrt_a);
        eps = model_output;
        break;
      case Prediction::kVPrediction:  // x0 = sqrt(a) * x - sqrt(b) * m; eps = sqrt(a) * m + sqrt(b) * x
        x0 = axpby(sample, sqrt_a, model_output, -sqrt_b);
        eps = axpby(model_output, sqrt_a, sample, sqrt_b);
        break;
      case Prediction::kSample:  // eps = (x - sqrt(a) * x0) / sqrt(b)
        x0 = model_output;
        eps = div_scalar(add_scaled(sample, x0, -sqrt_a), sqrt_b);
        break;
    }
    if (clip_sample_) x0 = clamp_sample(x0, -clip_range_, clip_range_);
    return axpby(x0, sqrt_a_prev, eps, dir_coeff);  // sqrt(a_prev) * x0 + dir_coeff * eps
  }

 private:
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;
  int steps_offset_ = 0, n_ = 0;
  bool clip_sample_ = true;
  float clip_range_ = 1.0f, final_alpha_cumprod_ = 1.0f;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& c) { return std::make_unique<DdimScheduler>(c); }

}  // namespace diffuse::sched
