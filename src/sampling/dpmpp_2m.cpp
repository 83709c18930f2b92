// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
// Sampling of Diffusion Probabilistic Models"), port of diffusers'
// DPMSolverMultistepScheduler with algorithm_type dpmsolver++ and
// solver_order 1 or 2 (midpoint or heun), lower_order_final and
// final_sigmas_type handled like diffusers.
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
// _sigma_to_alpha_sigma_t plus lambda = log(alpha) - log(sigma), in float32 (sigma = 0 gives lambda = +inf).
AlphaSigma alpha_sigma(float s) {
  const float alpha = 1.0f / std::sqrt(s * s + 1.0f);
  const float sigma = s * alpha;
  return {alpha, sigma, std::log(alpha) - std::log(sigma)};
}

class DpmSolverPP2MScheduler final : public Scheduler {
 public:
  explicit DpmSolverPP2MScheduler(const SchedulerConfig& c) : Scheduler("dpmpp_2m"), config_(c) {
    check_common_support(c, "dpmpp_2m");
    train_ = make_train_schedule(c, BetaDefaults{});
    noise_form_ = NoiseForm::kAlphaSigma;
    prediction_ = prediction_type(c, "dpmpp_2m");
    spacing_ = c.timestep_spacing.value_or("linspace");
    order_ = c.solver_order.value_or(2);
    if (order_ != 1 && order_ != 2)
      throw_error(ErrorCode::kUnsupported, "[dpmpp_2m] solver_order " + std::to_string(order_) + " is not supported");
    const std::string algorithm = c.algorithm_type.value_or("dpmsolver++");
    if (algorithm != "dpmsolver++" && algorithm != "deis")  // diffusers maps deis to dpmsolver++
      throw_error(ErrorCode::kUnsupported, "[dpmpp_2m] algorithm_type '" + algorithm + "' is not supported");
    const std::string solver = c.solver_type.value_or("midpoint");
    if (solver == "heun") heun_ = true;
    else if (solver != "midpoint" && solver != "logrho" && solver != "bh1" && solver != "bh2")  // mapped to midpoint
      throw_error(ErrorCode::kUnsupported, "[dpmpp_2m] solver_type '" + solver + "' is not supported");
    lower_order_final_ = c.lower_order_final.value_or(true);
    euler_at_final_ = c.euler_at_final.value_or(false);
    final_sigmas_type_ = c.final_sigmas_type.value_or("zero");
    if (final_sigmas_type_ != "zero" && final_sigmas_type_ != "sigma_min")
      throw_error(ErrorCode::kInvalidArgument, "[dpmpp_2m] final_sigmas_type must be zero or sigma_min");
  }

  void build_timesteps(int n) override {
    const SigmaSteps st = dpm_solver_sigma_steps(config_, train_, spacing_, n, "dpmpp_2m");
    const std::vector<double>& ts = st.timesteps;
    const std::vector<double>& sig = st.sigmas;
    const std::vector<float>& table = st.table;
    sigmas_.clear();
    for (double s : sig) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(final_sigmas_type_ == "zero" ? 0.0f : table[0]);
    timesteps_.clear();
    for (double t : ts) timesteps_.push_back(static_cast<float>(t));
    model_outputs_.assign(2, Tensor());
    lower_order_nums_ = 0;
  }

 protected:
  Tensor scale_input(const Tensor& sample, int) override { return sample; }

  Tensor step_impl(const Tensor& model_output, int k, const Tensor& sample, const Tensor&) override {
    const size_t n_steps = timesteps_.size();
    const bool lower_order_final =
        static_cast<size_t>(k) == n_steps - 1 &&
        (euler_at_final_ || (lower_order_final_ && n_steps < 15) || final_sigmas_type_ == "zero");

    // convert_model_output: the data prediction x0 (kept for the next step, so
    // a model output is copied rather than referenced).
    const AlphaSigma s0 = alpha_sigma(sigmas_[static_cast<size_t>(k)]);
    Tensor x0;
    switch (prediction_) {
      case Prediction::kEpsilon:  // (x - sigma_t * m) / alpha_t
        x0 = div_scalar(add_scaled(sample, model_output, -s0.sigma), s0.alpha);
        break;
      case Prediction::kVPrediction:  // alpha_t * x - sigma_t * m
        x0 = axpby(sample, s0.alpha, model_output, -s0.sigma);
        break;
      case Prediction::kSample:
        x0 = copy(model_output);
        break;
    }
    model_outputs_[0] = model_outputs_[1];
    model_outputs_[1] = x0;

    const AlphaSigma t = alpha_sigma(sigmas_[static_cast<size_t>(k) + 1]);
    const float h = t.lambda - s0.lambda;
    const float c_sample = t.sigma / s0.sigma;
    const float c_d0 = t.alpha * (std::exp(-h) - 1.0f);
    // (sigma_t / sigma_s0) * x - (alpha_t * (exp(-h) - 1)) * D0
    Tensor out = axpby(sample, c_sample, x0, -c_d0);
    if (!(order_ == 1 || lower_order_nums_ < 1 || lower_order_final)) {
      // Second-order multistep update with D1 = (1 / r0) * (m0 - m1).
      const AlphaSigma s1 = alpha_sigma(sigmas_[static_cast<size_t>(k) - 1]);
      const float h0 = s0.lambda - s1.lambda;
      const float r0 = h0 / h;
      const Tensor d1 = scale(sub(x0, model_outputs_[0]), 1.0f / r0);
      // midpoint: ... - 0.5 * (alpha_t * (exp(-h) - 1)) * D1; heun: ... + (alpha_t * ((exp(-h) - 1) / h + 1)) * D1
      const float c_d1 = heun_ ? t.alpha * ((std::exp(-h) - 1.0f) / h + 1.0f) : 0.5f * c_d0;
      out = add_scaled(out, d1, heun_ ? c_d1 : -c_d1);
    }
    if (lower_order_nums_ < order_) ++lower_order_nums_;
    return out;
  }

 private:
  SchedulerConfig config_;
  TrainSchedule train_;
  Prediction prediction_ = Prediction::kEpsilon;
  std::string spacing_, final_sigmas_type_;
  int order_ = 2, lower_order_nums_ = 0;
  bool heun_ = false, lower_order_final_ = true, euler_at_final_ = false;
  std::vector<Tensor> model_outputs_;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2m(const SchedulerConfig& c) {
  return std::make_unique<DpmSolverPP2MScheduler>(c);
}

}  // namespace diffuse::sched
