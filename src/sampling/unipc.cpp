// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for
// Fast Sampling of Diffusion Models"), port of diffusers'
// UniPCMultistepScheduler with predict_x0 = true, solver_order 1 or 2, B(h)
// variants bh1 / bh2: each step first corrects the previous prediction with
// the new model output (UniC), then predicts the next sample (UniP).
#include <algorithm>
#include <cmath>

#include "core/ops.h"
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
  explicit UniPcScheduler(const SchedulerConfig& c) : Scheduler("unipc"), config_(c) {
    check_common_support(c, "unipc");
    train_ = make_train_schedule(c, BetaDefaults{});
    noise_form_ = NoiseForm::kAlphaSigma;
    prediction_ = prediction_type(c, "unipc");
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

  void build_timesteps(int n) override {
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

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    const bool use_corrector = k > 0 &&
                               std::find(disable_corrector_.begin(), disable_corrector_.end(), k - 1) ==
                                   disable_corrector_.end() &&
                               last_sample_.defined();
    const Tensor converted = convert_model_output(model_output, sample, k);
    Tensor x = sample;
    if (use_corrector) x = corrector(converted, last_sample_, k, this_order_);

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
  // The data prediction x0 (kept for later steps: a model output is copied, not referenced).
  Tensor convert_model_output(const Tensor& model_output, const Tensor& sample, int k) const {
    const AlphaSigma s = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    switch (prediction_) {
      case Prediction::kEpsilon:  // (x - sigma_t * m) / alpha_t
        return div_scalar(add_scaled(sample, model_output, -s.sigma), s.alpha);
      case Prediction::kVPrediction:  // alpha_t * x - sigma_t * m
        return axpby(sample, s.alpha, model_output, -s.sigma);
      case Prediction::kSample:
        return copy(model_output);
    }
    throw_error(ErrorCode::kRuntime, "[unipc] unknown prediction");
  }

  // h * phi_1(h) = expm1(hh) and B(h) for hh = -h.
  void phi(float hh, float* h_phi_1, float* b_h) const {
    *h_phi_1 = std::expm1(hh);
    *b_h = bh1_ ? hh : std::expm1(hh);
  }

  // multistep_uni_p_bh_update: from sigma_k to sigma_{k+1}.
  Tensor predictor(const Tensor& x, int k, int order) const {
    const AlphaSigma t = alpha_sigma(sigmas_[static_cast<size_t>(k) + 1]);
    const AlphaSigma s0 = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    const float h = t.lambda - s0.lambda;
    const float hh = -h;
    float h_phi_1, b_h;
    phi(hh, &h_phi_1, &b_h);
    const float c_x = t.sigma / s0.sigma, c_m0 = t.alpha * h_phi_1, c_res = t.alpha * b_h;
    const Tensor& m0 = model_outputs_[1];
    // x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
    const Tensor x_t_ = axpby(x, c_x, m0, -c_m0);
    // Order 1: pred_res = 0 and x_t = x_t_ - alpha_t * B_h * 0 = x_t_.
    if (order != 2) return x_t_;
    const AlphaSigma s1 = alpha_sigma(sigmas_[static_cast<size_t>(k) - 1]);
    const float rk = (s1.lambda - s0.lambda) / h;
    const Tensor d1 = div_scalar(sub(model_outputs_[0], m0), rk);  // D1 = (m1 - m0) / rk
    // rhos_p = [0.5]: pred_res = 0.5 * D1; x_t = x_t_ - alpha_t * B_h * pred_res (0.5 * c_res is exact)
    return add_scaled(x_t_, d1, -(c_res * 0.5f));
  }

  // multistep_uni_c_bh_update: corrects the sample at sigma_k using the new model output.
  Tensor corrector(const Tensor& model_t, const Tensor& last_sample, int k, int order) const {
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
    const Tensor& m0 = model_outputs_[1];
    const Tensor x_t_ = axpby(last_sample, c_x, m0, -c_m0);
    const Tensor d1_t = sub(model_t, m0);  // D1_t = model_t - m0
    Tensor corr;
    if (order == 2) {
      const Tensor d1 = div_scalar(sub(model_outputs_[0], m0), rk);  // D1 = (m1 - m0) / rk
      corr = axpby(d1, rho_1, d1_t, rho_last);                      // rho_1 * D1 + rho_last * D1_t
    } else {
      corr = scale(d1_t, rho_last);  // corr_res = 0: 0 + rho_last * D1_t
    }
    return add_scaled(x_t_, corr, -c_res);  // x_t_ - alpha_t * B_h * (corr_res + rho_last * D1_t)
  }

  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_, final_sigmas_type_;
  int order_ = 2, lower_order_nums_ = 0, this_order_ = 0;
  bool bh1_ = false, lower_order_final_ = true;
  std::vector<int> disable_corrector_;
  std::vector<Tensor> model_outputs_;
  Tensor last_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_unipc(const SchedulerConfig& c) { return std::make_unique<UniPcScheduler>(c); }

}  // namespace diffuse::sched
