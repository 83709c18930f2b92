// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for
// Fast Sampling of Diffusion Models"), port of diffusers'
// UniPCMultistepScheduler with predict_x0 = true, solver_order 1 or 2, B(h)
// variants bh1 / bh2: each step first corrects the previous prediction with
// the new model output (UniC), then predicts the next sample (UniP).
#include <algorithm>
#include <cmath>

#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse::sched {
namespace {

struct AlphaSigma {
  float alpha, sigma, lambda;
};
AlphaSigma alpha_sigma(float s) {
  const float alpha = 1.0f / std::sqrt(s * s + 1.0f);
  const float sigma = s * alpha;
  return {alpha, sigma, std::log(alpha) - std::log(sigma)};
}

// torch.linalg.solve of [[1, 1], [rk, 1]] rho = b in float32, the way LAPACK's
// sgesv does it (partial pivoting, L scaled by the pivot's reciprocal).
void solve_2x2(float rk, float b1, float b2, float* rho1, float* rho2) {
  if (std::fabs(rk) > 1.0f) {  // rows swapped: pivot rk
    const float l = 1.0f * (1.0f / rk);
    const float u22 = 1.0f - l * 1.0f;
    const float y2 = b1 - l * b2;
    *rho2 = y2 / u22;
    *rho1 = (b2 - *rho2 * 1.0f) / rk;
  } else {
    const float l = rk;
    const float u22 = 1.0f - l * 1.0f;
    const float y2 = b2 - l * b1;
    *rho2 = y2 / u22;
    *rho1 = (b1 - *rho2 * 1.0f) / 1.0f;
  }
}

class UniPcScheduler final : public Scheduler {
 public:
  explicit UniPcScheduler(const SchedulerConfig& c) : config_(c) {
    check_common_support(c, "unipc");
    train_ = make_train_schedule(c, BetaDefaults{});
    prediction_ = prediction_type(c, "unipc", "epsilon v_prediction sample");
    spacing_ = c.timestep_spacing.value_or("linspace");
    order_ = c.solver_order.value_or(2);
    if (order_ != 1 && order_ != 2)
      throw_error(ErrorCode::kUnsupported, "[unipc] solver_order " + std::to_string(order_) + " is not supported");
    if (!c.predict_x0.value_or(true))
      throw_error(ErrorCode::kUnsupported, "[unipc] predict_x0 = false is not supported");
    const std::string solver = c.solver_type.value_or("bh2");
    if (solver == "bh1") bh1_ = true;
    else if (solver != "bh2" && solver != "midpoint" && solver != "heun" && solver != "logrho")  // mapped to bh2
      throw_error(ErrorCode::kUnsupported, "[unipc] solver_type '" + solver + "' is not supported");
    lower_order_final_ = c.lower_order_final.value_or(true);
    disable_corrector_ = c.disable_corrector.value_or(std::vector<int>{});
    final_sigmas_type_ = c.final_sigmas_type.value_or("zero");
    if (final_sigmas_type_ != "zero" && final_sigmas_type_ != "sigma_min")
      throw_error(ErrorCode::kInvalidArgument, "[unipc] final_sigmas_type must be zero or sigma_min");
  }

  void set_timesteps(int n) override {
    const int N = train_.num_train_timesteps;
    DIFFUSE_CHECK_ARG(n >= 1 && n <= N, "[unipc] num_inference_steps must be in [1, " + std::to_string(N) +
                                            "], got " + std::to_string(n));
    std::vector<double> ts;
    if (spacing_ == "linspace") {
      const auto t = np_linspace(0, N - 1, n + 1);
      for (int i = n; i >= 1; --i) ts.push_back(np_round(t[static_cast<size_t>(i)]));
    } else if (spacing_ == "leading") {
      const int ratio = N / (n + 1);
      for (int i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + config_.steps_offset.value_or(0)));
    } else if (spacing_ == "trailing") {
      for (double t : np_arange(N, 0, -static_cast<double>(N) / n)) ts.push_back(np_round(t) - 1);
    } else {
      throw_error(ErrorCode::kUnsupported, "[unipc] timestep_spacing '" + spacing_ + "' is not supported");
    }
    const std::vector<float> table = sigma_table(train_.alphas_cumprod);
    sigmas_.clear();
    if (config_.use_karras_sigmas.value_or(false)) {
      const std::vector<double> sig = karras_sigmas(config_.sigma_min.value_or(table.front()),
                                                    config_.sigma_max.value_or(table.back()), n);
      const std::vector<float> log_sigmas = log_table(table);
      ts.clear();
      for (double s : sig) {
        ts.push_back(np_round(sigma_to_t(s, log_sigmas)));
        sigmas_.push_back(static_cast<float>(s));
      }
      sigmas_.push_back(final_sigmas_type_ == "zero" ? 0.0f : static_cast<float>(sig.back()));
    } else {
      for (double t : ts) sigmas_.push_back(static_cast<float>(np_interp_index(t, table)));
      sigmas_.push_back(final_sigmas_type_ == "zero" ? 0.0f : table[0]);
    }
    timesteps_.clear();
    for (double t : ts) timesteps_.push_back(static_cast<float>(t));
    model_outputs_.assign(2, Tensor());
    lower_order_nums_ = 0;
    this_order_ = 0;
    last_sample_ = Tensor();
  }

  Tensor scale_model_input(const Tensor& sample, int) override { return sample; }

  Tensor step(const Tensor& model_output, int k, const Tensor& sample, Generator*) override {
    check_step_args("unipc", k, timesteps_.size(), model_output, sample);
    const bool use_corrector = k > 0 &&
                               std::find(disable_corrector_.begin(), disable_corrector_.end(), k - 1) ==
                                   disable_corrector_.end() &&
                               last_sample_.defined();
    const Tensor mo_c = model_output.contiguous();
    const Tensor converted = convert_model_output(mo_c, sample.contiguous(), k);
    Tensor x = sample.contiguous();
    if (use_corrector) x = corrector(converted, last_sample_, x, k, this_order_);

    model_outputs_[0] = model_outputs_[1];
    model_outputs_[1] = converted;
    const int remaining = static_cast<int>(timesteps_.size()) - k;
    const int this_order = lower_order_final_ ? std::min(order_, remaining) : order_;
    this_order_ = std::min(this_order, lower_order_nums_ + 1);
    last_sample_ = x;
    Tensor out = predictor(x, k, this_order_);
    if (lower_order_nums_ < order_) ++lower_order_nums_;
    return out;
  }

 private:
  Tensor convert_model_output(const Tensor& mo_c, const Tensor& x_c, int k) const {
    const AlphaSigma s = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    const float* mo = mo_c.data<float>();
    const float* x = x_c.data<float>();
    Tensor out = empty_like(x_c);
    float* y = out.data<float>();
    for (int64_t i = 0, n = x_c.numel(); i < n; ++i) {
      if (prediction_ == "epsilon") y[i] = (x[i] - s.sigma * mo[i]) / s.alpha;
      else if (prediction_ == "v_prediction") y[i] = s.alpha * x[i] - s.sigma * mo[i];
      else y[i] = mo[i];
    }
    return out;
  }

  // h * phi_1(h) = expm1(hh) and B(h) for hh = -h.
  void phi(float hh, float* h_phi_1, float* b_h) const {
    *h_phi_1 = std::expm1(hh);
    *b_h = bh1_ ? hh : std::expm1(hh);
  }

  // multistep_uni_p_bh_update: from sigma_k to sigma_{k+1}.
  Tensor predictor(const Tensor& x_t, int k, int order) const {
    const AlphaSigma t = alpha_sigma(sigmas_[static_cast<size_t>(k) + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    const float h = t.lambda - s0.lambda;
    const float hh = -h;
    float h_phi_1, b_h;
    phi(hh, &h_phi_1, &b_h);
    const float c_x = t.sigma / s0.sigma, c_m0 = t.alpha * h_phi_1, c_res = t.alpha * b_h;
    const float* x = x_t.data<float>();
    const float* m0 = model_outputs_[1].data<float>();
    Tensor out = empty_like(x_t);
    float* y = out.data<float>();
    const int64_t n = x_t.numel();
    if (order == 2) {
      const AlphaSigma s1 = alpha_sigma(sigmas_[static_cast<size_t>(k) - 1]);
      const float rk = (s1.lambda - s0.lambda) / h;
      const float* m1 = model_outputs_[0].data<float>();
      for (int64_t i = 0; i < n; ++i) {
        const float d1 = (m1[i] - m0[i]) / rk;
        const float pred_res = 0.5f * d1;  // rhos_p = [0.5] for order 2
        y[i] = (c_x * x[i] - c_m0 * m0[i]) - c_res * pred_res;
      }
    } else {
      const float zero_res = c_res * 0.0f;
      for (int64_t i = 0; i < n; ++i) y[i] = (c_x * x[i] - c_m0 * m0[i]) - zero_res;
    }
    return out;
  }

  // multistep_uni_c_bh_update: corrects the sample at sigma_k using the new model output.
  Tensor corrector(const Tensor& model_t, const Tensor& last_sample, const Tensor& this_sample, int k,
                   int order) const {
    const AlphaSigma t = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    const AlphaSigma s0 = alpha_sigma(sigmas_[static_cast<size_t>(k) - 1]);
    const float h = t.lambda - s0.lambda;
    const float hh = -h;
    float h_phi_1, b_h;
    phi(hh, &h_phi_1, &b_h);
    float rk = 1.0f;
    if (order == 2) {
      const AlphaSigma s1 = alpha_sigma(sigmas_[static_cast<size_t>(k) - 2]);
      rk = (s1.lambda - s0.lambda) / h;
    }
    // b_i = h_phi_i * i! / B(h), h_phi_{i+1} = h_phi_i / hh - 1 / (i + 1)!
    float h_phi_k = h_phi_1 / hh - 1.0f;
    float factorial = 1.0f;
    float b[2];
    for (int i = 1; i <= order; ++i) {
      b[i - 1] = h_phi_k * factorial / b_h;
      factorial *= static_cast<float>(i + 1);
      h_phi_k = h_phi_k / hh - 1.0f / factorial;
    }
    float rho_1 = 0.5f, rho_last = 0.5f;
    if (order == 2) solve_2x2(rk, b[0], b[1], &rho_1, &rho_last);

    const float c_x = t.sigma / s0.sigma, c_m0 = t.alpha * h_phi_1, c_res = t.alpha * b_h;
    const float* x = last_sample.data<float>();
    const float* m0 = model_outputs_[1].data<float>();
    const float* mt = model_t.data<float>();
    Tensor out = empty_like(this_sample);
    float* y = out.data<float>();
    const int64_t n = this_sample.numel();
    const float* m1 = order == 2 ? model_outputs_[0].data<float>() : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const float base = c_x * x[i] - c_m0 * m0[i];
      const float d1_t = mt[i] - m0[i];
      float corr;
      if (order == 2) {
        const float d1 = (m1[i] - m0[i]) / rk;
        corr = rho_1 * d1 + rho_last * d1_t;
      } else {
        corr = 0.0f + rho_last * d1_t;
      }
      y[i] = base - c_res * corr;
    }
    return out;
  }

  SchedulerConfig config_;
  TrainSchedule train_;
  std::string prediction_, spacing_, final_sigmas_type_;
  int order_ = 2, lower_order_nums_ = 0, this_order_ = 0;
  bool bh1_ = false, lower_order_final_ = true;
  std::vector<int> disable_corrector_;
  std::vector<Tensor> model_outputs_;
  Tensor last_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_unipc(const SchedulerConfig& c) { return std::make_unique<UniPcScheduler>(c); }

}  // namespace diffuse::sched
