// The k-diffusion sampler base (see k_sampler.h).
#include "sampling/k_sampler.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"

namespace diffuse::sched {

std::pair<double, double> ancestral_step(double sigma_from, double sigma_to) {
  const double up = std::min(sigma_to, std::sqrt(sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) /
                                                 (sigma_from * sigma_from)));
  const double down = std::sqrt(sigma_to * sigma_to - up * up);
  return {down, up};
}

Tensor lin(const Tensor& x, double a, const Tensor& y, double b) {
  return axpby(x, static_cast<float>(a), y, static_cast<float>(b));
}

KSampler::KSampler(const std::string& name, const SchedulerConfig& c) : Scheduler(name), config_(c) {
  check_common_support(c, name.c_str());
  // KDPM2DiscreteScheduler's defaults (as Heun's): beta 0.00085 .. 0.012, "linear".
  train_ = make_train_schedule(c, BetaDefaults{0.00085, 0.012, "linear"});
  prediction_ = prediction_type(c, name.c_str());
  spacing_ = c.timestep_spacing.value_or("linspace");
}

void KSampler::build_timesteps(int n) {
  const SigmaSteps st = step_schedule(n);
  const std::vector<float> log_sigmas = log_table(st.table);
  step_sigmas_.clear();
  for (double s : st.sigmas) step_sigmas_.push_back(static_cast<float>(s));
  step_sigmas_.push_back(0.0);
  sigmas_.clear();
  timesteps_.clear();
  eval_step_.clear();
  eval_stage_.clear();
  two_stage_.clear();
  for (int i = 0; i < num_steps(); ++i) {
    const std::optional<double> mid = second_sigma(s(i), s(i + 1));
    two_stage_.push_back(mid.has_value());
    sigmas_.push_back(static_cast<float>(s(i)));
    timesteps_.push_back(static_cast<float>(st.timesteps[static_cast<size_t>(i)]));
    eval_step_.push_back(i);
    eval_stage_.push_back(0);
    if (mid) {
      sigmas_.push_back(static_cast<float>(*mid));
      timesteps_.push_back(static_cast<float>(sigma_to_t(static_cast<float>(*mid), log_sigmas)));
      eval_step_.push_back(i);
      eval_stage_.push_back(1);
    }
  }
  sigmas_.push_back(0.0f);
  init_noise_sigma_ = sigma_init_noise(sigmas_, spacing_);
  x_start_ = Tensor();
  den_start_ = Tensor();
  first_eval_ = -1;
  reset_history();
}

void KSampler::on_begin_index(int) {
  x_start_ = Tensor();
  den_start_ = Tensor();
  first_eval_ = -1;
  reset_history();
}

bool KSampler::draws_noise(int k) const {
  if (k < 0 || static_cast<size_t>(k) >= eval_step_.size()) return false;
  const int i = eval_step_[static_cast<size_t>(k)];
  return stage_draws_noise(i, eval_stage_[static_cast<size_t>(k)], two_stage_[static_cast<size_t>(i)]);
}

std::pair<double, double> KSampler::noise_interval(int k) const {
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < eval_step_.size(),
                    "[" + name() + "] noise_interval: step_index " + std::to_string(k) + " out of range");
  return stage_noise_interval(eval_step_[static_cast<size_t>(k)], eval_stage_[static_cast<size_t>(k)]);
}

std::pair<double, double> KSampler::noise_domain() const {
  // k-diffusion: sigma_min = sigmas[sigmas > 0].min(), sigma_max = sigmas.max().
  double lo = 0, hi = 0;
  for (double v : step_sigmas_) {
    if (v > 0 && (lo == 0 || v < lo)) lo = v;
    hi = std::max(hi, v);
  }
  return {lo, hi};
}

Tensor KSampler::scale_input(const Tensor& sample, int k) {
  return scale_by_sigma(sample, sigmas_[static_cast<size_t>(k)]);
}

Tensor KSampler::step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) {
  const size_t e = static_cast<size_t>(k);
  const int i = eval_step_[e];
  const bool two = two_stage_[static_cast<size_t>(i)];
  // k-diffusion's denoised at the evaluation's sigma (a copy for a sample model: it may be kept).
  const Tensor den =
      prediction_ == Prediction::kSample ? copy(model_output) : sigma_x0(prediction_, model_output, sample, sigmas_[e]);
  if (eval_stage_[e] == 0) {
    if (two) {
      x_start_ = sample;
      den_start_ = den;
      first_eval_ = k;
    }
    return first_stage(i, sample, den, noise, two);
  }
  DIFFUSE_CHECK_ARG(first_eval_ == k - 1, "[" + name() + "] step " + std::to_string(k) +
                                              " is the second evaluation of step " + std::to_string(k - 1) +
                                              ", which must be taken just before it");
  Tensor out = second_stage(i, x_start_, den_start_, sample, den, noise);
  x_start_ = Tensor();
  den_start_ = Tensor();
  first_eval_ = -1;
  return out;
}

}  // namespace diffuse::sched
