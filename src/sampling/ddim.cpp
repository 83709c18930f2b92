// DDIM (Song et al. 2020), port of diffusers' DDIMScheduler with eta = 0
// (what StableDiffusionPipeline uses): deterministic.
#include <algorithm>
#include <cmath>

#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class DdimScheduler final : public Scheduler {
 public:
  explicit DdimScheduler(const SchedulerConfig& c) {
    check_common_support(c, "ddim");
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "ddim", "epsilon v_prediction sample");
    spacing_ = c.timestep_spacing.value_or("leading");
    steps_offset_ = c.steps_offset.value_or(0);
    clip_sample_ = c.clip_sample.value_or(true);
    clip_range_ = static_cast<float>(c.clip_sample_range.value_or(1.0));
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(true) ? 1.0f : train_.alphas_cumprod[0];
  }

  void set_timesteps(int n) override {
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

  Tensor scale_model_input(const Tensor& sample, int) override { return sample; }

  Tensor step(const Tensor& model_output, int k, const Tensor& sample, Generator*) override {
    check_step_args("ddim", k, timesteps_.size(), model_output, sample);
    const int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    const int prev_t = t - train_.num_train_timesteps / n_;
    const float a_t = train_.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev = prev_t >= 0 ? train_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t;
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);
    // eta = 0: std_dev_t = 0, so the direction coefficient is (1 - a_prev - 0) ** 0.5.
    const float dir_coeff = std::sqrt(1.0f - a_prev - 0.0f), sqrt_a_prev = std::sqrt(a_prev);

    const Tensor mo_c = model_output.contiguous(), x_c = sample.contiguous();
    const float* mo = mo_c.data<float>();
    const float* x = x_c.data<float>();
    Tensor out = empty_like(sample);
    float* y = out.data<float>();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      float x0, eps;
      if (prediction_ == "epsilon") {
        x0 = (x[i] - sqrt_b * mo[i]) / sqrt_a;
        eps = mo[i];
      } else if (prediction_ == "v_prediction") {
        x0 = sqrt_a * x[i] - sqrt_b * mo[i];
        eps = sqrt_a * mo[i] + sqrt_b * x[i];
      } else {  // sample
        x0 = mo[i];
        eps = (x[i] - sqrt_a * x0) / sqrt_b;
      }
      if (clip_sample_) x0 = std::min(std::max(x0, -clip_range_), clip_range_);
      y[i] = sqrt_a_prev * x0 + dir_coeff * eps;
    }
    return out;
  }

 private:
  TrainSchedule train_;
  std::string prediction_, spacing_;
  int steps_offset_ = 0, n_ = 0;
  bool clip_sample_ = true;
  float clip_range_ = 1.0f, final_alpha_cumprod_ = 1.0f;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const SchedulerConfig& c) { return std::make_unique<DdimScheduler>(c); }

}  // namespace diffuse::sched
