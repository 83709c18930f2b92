// PNDM / PLMS (Liu et al. 2022), port of diffusers' PNDMScheduler with
// skip_prk_steps = true (the Stable Diffusion configs): a linear multistep
// method on the noise prediction that needs n + 1 model evaluations for n
// steps (the second timestep is visited twice).
#include <algorithm>
#include <cmath>
#include <deque>

#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

class PndmScheduler final : public Scheduler {
 public:
  explicit PndmScheduler(const SchedulerConfig& c) {
    check_common_support(c, "pndm");
    if (!c.skip_prk_steps.value_or(false))
      throw_error(ErrorCode::kUnsupported, "[pndm] the Runge-Kutta warm-up (skip_prk_steps = false) is not supported");
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "pndm", "epsilon v_prediction");
    spacing_ = c.timestep_spacing.value_or("leading");
    steps_offset_ = c.steps_offset.value_or(0);
    final_alpha_cumprod_ = c.set_alpha_to_one.value_or(false) ? 1.0f : train_.alphas_cumprod[0];
  }

  void set_timesteps(int n) override {
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

  Tensor scale_model_input(const Tensor& sample, int) override { return sample; }

  Tensor step(const Tensor& model_output, int k, const Tensor& sample, Generator*) override {
    check_step_args("pndm", k, timesteps_.size(), model_output, sample);
    DIFFUSE_CHECK_ARG(k == counter_, "[pndm] steps must be taken in order: expected step " +
                                         std::to_string(counter_) + ", got " + std::to_string(k));
    const int ratio = train_.num_train_timesteps / n_;
    int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
    int prev_t = t - ratio;
    const Tensor mo = model_output.contiguous().clone();
    if (counter_ != 1) {
      while (ets_.size() > 3) ets_.pop_front();
      ets_.push_back(mo);
    } else {
      prev_t = t;
      t = t + ratio;
    }

    Tensor x = sample.contiguous();
    Tensor e = empty_like(sample);
    float* ep = e.data<float>();
    const float* m = mo.data<float>();
    const int64_t n = sample.numel();
    const size_t ne = ets_.size();
    auto et = [&](size_t back) { return ets_[ne - back].data<float>(); };  // ets[-back]
    if (ne == 1 && counter_ == 0) {
      std::copy(m, m + n, ep);
      cur_sample_ = x.clone();
    } else if (ne == 1 && counter_ == 1) {
      const float* e1 = et(1);
      for (int64_t i = 0; i < n; ++i) ep[i] = (m[i] + e1[i]) / 2.0f;
      x = cur_sample_;
      cur_sample_ = Tensor();
    } else if (ne == 2) {
      const float *e1 = et(1), *e2 = et(2);
      for (int64_t i = 0; i < n; ++i) ep[i] = (3.0f * e1[i] - e2[i]) / 2.0f;
    } else if (ne == 3) {
      const float *e1 = et(1), *e2 = et(2), *e3 = et(3);
      for (int64_t i = 0; i < n; ++i) ep[i] = (23.0f * e1[i] - 16.0f * e2[i] + 5.0f * e3[i]) / 12.0f;
    } else {
      const float *e1 = et(1), *e2 = et(2), *e3 = et(3), *e4 = et(4);
      const float c = static_cast<float>(1.0 / 24.0);
      for (int64_t i = 0; i < n; ++i) ep[i] = c * (55.0f * e1[i] - 59.0f * e2[i] + 37.0f * e3[i] - 9.0f * e4[i]);
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
    const float sqrt_a = std::sqrt(a_t), sqrt_b = std::sqrt(b_t);
    const float* x = sample.data<float>();
    const float* e = eps.data<float>();
    Tensor out = empty_like(sample);
    float* y = out.data<float>();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      float mo = e[i];
      if (prediction_ == "v_prediction") mo = sqrt_a * mo + sqrt_b * x[i];
      y[i] = sample_coeff * x[i] - diff * mo / denom;
    }
    return out;
  }

  TrainSchedule train_;
  std::string prediction_, spacing_;
  int steps_offset_ = 0, n_ = 0, counter_ = 0;
  float final_alpha_cumprod_ = 1.0f;
  std::deque<Tensor> ets_;
  Tensor cur_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const SchedulerConfig& c) { return std::make_unique<PndmScheduler>(c); }

}  // namespace diffuse::sched
