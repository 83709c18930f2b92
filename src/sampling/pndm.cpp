// PNDM / PLMS (Liu et al. 2022), port of diffusers' PNDMScheduler with
// skip_prk_steps = true (the Stable Diffusion configs): a linear multistep
// method on the noise prediction that needs n + 1 model evaluations for n
// steps (the second timestep is visited twice).
#include <algorithm>
#include <cmath>
#include <deque>

#include "core/ops.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class PndmScheduler final : public Scheduler {
 public:
  explicit PndmScheduler(const SchedulerConfig& c) : Scheduler("pndm") {
    check_common_support(c, "pndm");
    if (!c.skip_prk_steps.value_or(false))
      throw_error(ErrorCode::kUnsupported, "[pndm] the Runge-Kutta warm-up (skip_prk_steps = false) is not supported");
    train_ = make_train_schedule(c, BetaDefaults{});
    noise_form_ = NoiseForm::kAlphasCumprod;
    noise_alphas_cumprod_ = train_.alphas_cumprod;
    prediction_ = prediction_type(c, "pndm");
    spacing_ = c.timestep_spacing.value_or("leading");
    steps_offset_ = c.steps_offset.value_or(0);
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(false) ? 1.0f : train_.alphas_cumprod[0];
  }

  void build_timesteps(int n) override {
    const int N = train_.num_train_timesteps;
    DIFFUSE_CHECK_ARG(n >= 1 && n <= N, "[pndm] num_inference_steps must be in [1, " + std::to_string(N) +
                                            "], got " + std::to_string(n));
    n_ = n;
    std::vector<int64_t> base;  // ascending
    if (spacing_ == "linspace") {
      for (double t : np_linspace(0, N - 1, n)) base.push_back(static_cast<int64_t>(np_round(t)));
    } else if (spacing_ == "leading") {
      const int ratio = N / n;
      for (int i = 0; i < n; ++i) base.push_back(static_cast<int64_t>(i) * ratio + steps_offset_);
    } else if (spacing_ == "trailing") {
      const auto t = np_arange(N, 0, -static_cast<double>(N) / n);
      for (auto it = t.rbegin(); it != t.rend(); ++it) base.push_back(static_cast<int64_t>(np_round(*it)) - 1);
    } else {
      throw_error(ErrorCode::kUnsupported, "[pndm] timestep_spacing '" + spacing_ + "' is not supported");
    }
    // plms = concat(base[:-1], base[-2:-1], base[-1:]) reversed.
    std::vector<int64_t> plms(base.begin(), base.end() - 1);
    if (base.size() >= 2) plms.push_back(base[base.size() - 2]);
    plms.push_back(base.back());
    timesteps_.assign(plms.rbegin(), plms.rend());
    // "leading" spacing plus steps_offset reaches timestep N at n = N (SD's
    // steps_offset 1), past the end of alphas_cumprod; diffusers fails there
    // with an IndexError. Refuse it with the limit instead.
    const float t_max = *std::max_element(timesteps_.begin(), timesteps_.end());
    DIFFUSE_CHECK_ARG(t_max <= static_cast<float>(N - 1),
                      "[pndm] " + std::to_string(n) + " steps with steps_offset " + std::to_string(steps_offset_) +
                          " reach timestep " + std::to_string(static_cast<int>(t_max)) + ", beyond the " +
                          std::to_string(N) + " training timesteps; use fewer steps");
    ets_.clear();
    counter_ = 0;
    cur_sample_ = Tensor();
  }

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    // counter_ counts the steps taken since the begin index (diffusers' PLMS
    // counter starts at 0 wherever img2img enters the schedule).
    DIFFUSE_CHECK_ARG(k == begin_index() + counter_, "[pndm] steps must be taken in order: expected step " +
                                                         std::to_string(begin_index() + counter_) + ", got " +
                                                         std::to_string(k));
    const int ratio = train_.num_train_timesteps / n_;
    int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    int prev_t = t - ratio;
    const Tensor mo = copy(model_output);  // kept in ets_: not a reference to the caller's buffer
    if (counter_ != 1) {
      while (ets_.size() > 3) ets_.pop_front();
      ets_.push_back(mo);
    } else {
      prev_t = t;
      t = t + ratio;
    }

    Tensor x = sample;
    Tensor e;
    const size_t ne = ets_.size();
    auto et = [&](size_t back) -> const Tensor& { return ets_[ne - back]; };  // ets[-back]
    if (ne == 1 && counter_ == 0) {
      e = mo;
      cur_sample_ = copy(sample);
    } else if (ne == 1 && counter_ == 1) {
      e = scale(add(mo, et(1)), 0.5f);  // (m + ets[-1]) / 2
      x = cur_sample_;
      cur_sample_ = Tensor();
    } else if (ne == 2) {
      e = scale(axpby(et(1), 3.0f, et(2), -1.0f), 0.5f);  // (3 * ets[-1] - ets[-2]) / 2
    } else if (ne == 3) {
      // (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
      e = div_scalar(add_scaled(axpby(et(1), 23.0f, et(2), -16.0f), et(3), 5.0f), 12.0f);
    } else {
      // (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
      const Tensor sum = add_scaled(add_scaled(axpby(et(1), 55.0f, et(2), -59.0f), et(3), 37.0f), et(4), -9.0f);
      e = scale(sum, static_cast<float>(1.0 / 24.0));
    }
    Tensor out = prev_sample(x, t, prev_t, e);
    ++counter_;
    return out;
  }

 private:
  // Formula (9) of the PNDM paper (diffusers _get_prev_sample).
  Tensor prev_sample(const Tensor& sample, int t, int prev_t, const Tensor& eps) const {
    const float a_t = train_.alphas_cumprod[static_cast<size_t>(t)];
    const float a_prev = prev_t >= 0 ? train_.alphas_cumprod[static_cast<size_t>(prev_t)] : final_alpha_cumprod_;
    const float b_t = 1.0f - a_t, b_prev = 1.0f - a_prev;
    const float sample_coeff = std::sqrt(a_prev / a_t);
    const float denom = a_t * std::sqrt(b_prev) + std::sqrt(a_t * b_t * a_prev);
    const float diff = a_prev - a_t;
    Tensor mo = eps;
    // v: model_output = sqrt(a_t) * model_output + sqrt(b_t) * sample
    if (prediction_ == Prediction::kVPrediction) mo = axpby(mo, std::sqrt(a_t), sample, std::sqrt(b_t));
    // sample_coeff * x - (a_prev - a_t) * model_output / denom
    return axpby(sample, sample_coeff, scale(mo, diff), -1.0f / denom);
  }

  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_;
  int steps_offset_ = 0, n_ = 0, counter_ = 0;
  float final_alpha_cumprod_ = 1.0f;
  std::deque<Tensor> ets_;
  Tensor cur_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& c) { return std::make_unique<PndmScheduler>(c); }

}  // namespace diffuse::sched
