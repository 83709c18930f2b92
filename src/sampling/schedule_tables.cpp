#include "sampling/schedule_tables.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/ops.h"
#include "sampling/sampler_catalog.h"
#include "sampling/sigma_schedules.h"

namespace diffuse::sched {

namespace {

// torch.linspace(start, end, steps, dtype=float32) on the CPU: float step,
// the first half counted from start, the second half from end.
std::vector<float> torch_linspace_f32(double start_d, double end_d, int steps) {
  std::vector<float> out(static_cast<size_t>(steps));
  if (steps == 1) {
    out[0] = static_cast<float>(start_d);
    return out;
  }
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i) {
    out[static_cast<size_t>(i)] = i < halfway ? start + step * static_cast<float>(i)
                                              : end - step * static_cast<float>(steps - i - 1);
  }
  return out;
}

// betas_for_alpha_bar (cosine, max_beta 0.999): the "squaredcos_cap_v2" schedule (Nichol & Dhariwal 2021).
std::vector<float> cosine_betas(int n) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

}  // namespace

TrainSchedule make_train_schedule(const SchedulerConfig& c, const BetaDefaults& d) {
  TrainSchedule s;
  s.num_train_timesteps = c.num_train_timesteps.value_or(1000);
  DIFFUSE_CHECK_ARG(s.num_train_timesteps >= 2 && s.num_train_timesteps <= 100000,
                    "[scheduler] num_train_timesteps must be in [2, 100000], got " +
                        std::to_string(s.num_train_timesteps));
  const int n = s.num_train_timesteps;
  if (c.trained_betas) {
    DIFFUSE_CHECK_ARG(static_cast<int>(c.trained_betas->size()) == n,
                      "[scheduler] trained_betas has " + std::to_string(c.trained_betas->size()) +
                          " values, num_train_timesteps is " + std::to_string(n));
    for (double b : *c.trained_betas) s.betas.push_back(static_cast<float>(b));
  } else {
    const double start = c.beta_start.value_or(d.beta_start), end = c.beta_end.value_or(d.beta_end);
    const std::string schedule = c.beta_schedule.value_or(d.beta_schedule);
    if (schedule == "linear") {
      s.betas = torch_linspace_f32(start, end, n);
    } else if (schedule == "scaled_linear") {
      s.betas = torch_linspace_f32(std::sqrt(start), std::sqrt(end), n);
      for (float& b : s.betas) b = b * b;
    } else if (schedule == "squaredcos_cap_v2") {
      s.betas = cosine_betas(n);
    } else {
      throw_error(ErrorCode::kUnsupported, "[scheduler] beta_schedule '" + schedule + "' is not supported");
    }
  }
  s.alphas_cumprod.resize(s.betas.size());
  double acc = 1.0;  // torch's CPU cumprod accumulates in double
  for (size_t i = 0; i < s.betas.size(); ++i) {
    acc *= static_cast<double>(1.0f - s.betas[i]);
    s.alphas_cumprod[i] = static_cast<float>(acc);
  }
  return s;
}

std::vector<float> sigma_table(const std::vector<float>& ac) {
  std::vector<float> out(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) out[i] = std::sqrt((1.0f - ac[i]) / ac[i]);
  return out;
}

std::vector<float> log_table(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = std::log(values[i]);
  return out;
}

std::vector<double> np_linspace(double start, double stop, int num) {
  std::vector<double> out(static_cast<size_t>(std::max(num, 0)));
  if (num <= 0) return out;
  if (num == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) out[static_cast<size_t>(i)] = static_cast<double>(i) * step + start;
  out.back() = stop;
  return out;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len = std::ceil((stop - start) / step);
  std::vector<double> out;
  if (!(len > 0)) return out;
  out.resize(static_cast<size_t>(len));
  out[0] = start;
  if (out.size() > 1) {
    const double delta = (start + step) - start;  // numpy fills with the difference of the first two values
    for (size_t i = 1; i < out.size(); ++i) out[i] = start + static_cast<double>(i) * delta;
  }
  return out;
}

double np_round(double x) { return std::nearbyint(x); }

double np_interp_index(double x, const std::vector<float>& fp) {
  const size_t n = fp.size();
  if (x <= 0) return fp[0];
  if (x >= static_cast<double>(n - 1)) return fp[n - 1];
  const size_t j = static_cast<size_t>(std::floor(x));
  const double slope = (static_cast<double>(fp[j + 1]) - fp[j]) / 1.0;
  return slope * (x - static_cast<double>(j)) + fp[j];
}

std::vector<double> sigma_class_timesteps(const std::string& spacing, int N, int n, int steps_offset,
                                          const char* who) {
  DIFFUSE_CHECK_ARG(n >= 1 && n <= N, std::string("[") + who + "] num_inference_steps must be in [1, " +
                                          std::to_string(N) + "], got " + std::to_string(n));
  std::vector<double> out;
  if (spacing == "linspace") {
    const auto t = np_linspace(0, N - 1, n);
    for (auto it = t.rbegin(); it != t.rend(); ++it) out.push_back(static_cast<float>(*it));
  } else if (spacing == "leading") {
    const int ratio = N / n;
    for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<float>(i * ratio) + static_cast<float>(steps_offset));
  } else if (spacing == "trailing") {
    for (double t : np_arange(N, 0, -static_cast<double>(N) / n)) out.push_back(static_cast<float>(np_round(t)) - 1.0f);
  } else {
    throw_error(ErrorCode::kUnsupported,
                std::string("[") + who + "] timestep_spacing '" + spacing + "' is not supported");
  }
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  const double rho = 7.0;
  const std::vector<double> ramp = np_linspace(0, 1, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho), max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) out[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return out;
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const size_t n = log_sigmas.size();
  // low = last index whose log-sigma <= log_sigma (0 if none), at most n - 2.
  size_t low = 0;
  for (size_t i = 0; i < n; ++i) {
    if (log_sigma - static_cast<double>(log_sigmas[i]) >= 0) low = i;
  }
  low = std::min(low, n - 2);
  const double lo = log_sigmas[low], hi = log_sigmas[low + 1];
  const double w = std::clamp((lo - log_sigma) / (lo - hi), 0.0, 1.0);
  return (1 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
}

void check_common_support(const SchedulerConfig& c, const char* who) {
  const std::string w = std::string("[") + who + "] ";
  if (c.thresholding.value_or(false))
    throw_error(ErrorCode::kUnsupported, w + "thresholding (dynamic thresholding) is not supported");
  if (c.rescale_betas_zero_snr.value_or(false))
    throw_error(ErrorCode::kUnsupported, w + "rescale_betas_zero_snr is not supported");
  if (c.use_exponential_sigmas.value_or(false) || c.use_beta_sigmas.value_or(false))
    throw_error(ErrorCode::kUnsupported, w + "exponential / beta sigmas are not supported");
}

Prediction prediction_type(const SchedulerConfig& c, const char* sampler) {
  const Prediction p = c.prediction_type.value_or(Prediction::kEpsilon);
  const SamplerSpec& row = sampler_spec(sampler);
  if (!row.supports(p)) {
    std::string allowed;
    for (Prediction q : {Prediction::kEpsilon, Prediction::kVPrediction, Prediction::kSample}) {
      if (row.supports(q)) allowed += (allowed.empty() ? "" : ", ") + std::string(prediction_name(q));
    }
    throw_error(ErrorCode::kUnsupported, std::string("[") + sampler + "] prediction_type '" + prediction_name(p) +
                                             "' is not supported (" + allowed + ")");
  }
  return p;
}

Tensor div_scalar(const Tensor& x, float s) { return scale(x, 1.0f / s); }

Tensor add_scaled(const Tensor& a, const Tensor& b, float s) { return axpby(a, 1.0f, b, s); }

Tensor clamp_sample(const Tensor& x, float lo, float hi) {
  std::vector<float> v = x.to_f32_vector();
  for (float& e : v) e = std::min(std::max(e, lo), hi);
  return Tensor::from_vector(v, x.shape()).to(x.device());
}

Tensor scale_by_sigma(const Tensor& sample, float sigma) {
  const float denom = std::sqrt(sigma * sigma + 1.0f);
  return div_scalar(sample, denom);
}

Tensor sigma_x0(Prediction p, const Tensor& model_output, const Tensor& sample, float sigma) {
  switch (p) {
    case Prediction::kEpsilon:
      return add_scaled(sample, model_output, -sigma);
    case Prediction::kVPrediction: {
      // m * (-sigma / (sigma^2 + 1) ** 0.5) + x / (sigma^2 + 1)
      const float c_out = -sigma / std::sqrt(sigma * sigma + 1.0f);
      const float c_skip = 1.0f / (sigma * sigma + 1.0f);
      return axpby(model_output, c_out, sample, c_skip);
    }
    case Prediction::kSample:
      return model_output;
  }
  throw_error(ErrorCode::kRuntime, "[sigma_x0] unknown prediction");
}

float sigma_init_noise(const std::vector<float>& sigmas, const std::string& spacing) {
  const float max_sigma = *std::max_element(sigmas.begin(), sigmas.end());
  return (spacing == "linspace" || spacing == "trailing") ? max_sigma : std::sqrt(max_sigma * max_sigma + 1.0f);
}

SigmaSteps interpolated_sigma_steps(const SchedulerConfig& config, const TrainSchedule& train,
                                    const std::string& spacing, int n, const char* who, std::optional<double> karras_min,
                                    std::optional<double> karras_max) {
  SigmaSteps s;
  s.timesteps = sigma_class_timesteps(spacing, train.num_train_timesteps, n, config.steps_offset.value_or(0), who);
  s.table = sigma_table(train.alphas_cumprod);
  for (double t : s.timesteps) s.sigmas.push_back(np_interp_index(t, s.table));
  if (config.use_karras_sigmas.value_or(false)) {
    s.sigmas = karras_sigmas(karras_min.value_or(s.sigmas.back()), karras_max.value_or(s.sigmas.front()), n);
    const std::vector<float> log_sigmas = log_table(s.table);
    s.timesteps.clear();
    for (double sigma : s.sigmas) s.timesteps.push_back(sigma_to_t(sigma, log_sigmas));
  } else if (config.sigma_schedule != Schedule::kDefault) {
    // A k-diffusion schedule (sigma_schedules.h) on the training sigmas; the model's
    // timestep of each is the fractional sigma_to_t, as for the Karras sigmas.
    s.sigmas = schedule_sigmas(config.sigma_schedule, s.table, n, config.model_family);
    const std::vector<float> log_sigmas = log_table(s.table);
    s.timesteps.clear();
    for (double sigma : s.sigmas) s.timesteps.push_back(sigma_to_t(sigma, log_sigmas));
  }
  return s;
}

SigmaSteps dpm_solver_sigma_steps(const SchedulerConfig& config, const TrainSchedule& train, const std::string& spacing,
                                  int n, const char* who) {
  const std::string w = std::string("[") + who + "] ";
  const int N = train.num_train_timesteps;
  DIFFUSE_CHECK_ARG(n >= 1 && n <= N, w + "num_inference_steps must be in [1, " + std::to_string(N) + "], got " +
                                          std::to_string(n));
  // last_timestep = N - searchsorted(flip(lambda_t), lambda_min_clipped).
  const double lambda_min = config.lambda_min_clipped.value_or(-std::numeric_limits<double>::infinity());
  int clipped = 0;
  for (int i = N - 1; i >= 0; --i) {
    const float a = train.alphas_cumprod[static_cast<size_t>(i)];
    const float lambda = std::log(std::sqrt(a)) - std::log(std::sqrt(1.0f - a));
    if (static_cast<double>(lambda) < lambda_min) ++clipped;
  }
  const int last_timestep = N - clipped;
  SigmaSteps s;
  std::vector<double>& ts = s.timesteps;
  if (spacing == "linspace") {
    const auto t = np_linspace(0, last_timestep - 1, n + 1);
    for (int i = n; i >= 1; --i) ts.push_back(np_round(t[static_cast<size_t>(i)]));
  } else if (spacing == "leading") {
    const int ratio = last_timestep / (n + 1);
    for (int i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + config.steps_offset.value_or(0)));
  } else if (spacing == "trailing") {
    for (double t : np_arange(last_timestep, 0, -static_cast<double>(N) / n)) ts.push_back(np_round(t) - 1);
  } else {
    throw_error(ErrorCode::kUnsupported, w + "timestep_spacing '" + spacing + "' is not supported");
  }
  s.table = sigma_table(train.alphas_cumprod);
  const std::vector<float>& table = s.table;
  std::vector<double>& sig = s.sigmas;
  if (config.use_karras_sigmas.value_or(false)) {
    sig = karras_sigmas(table.front(), table.back(), n);
    const std::vector<float> log_sigmas = log_table(table);
    const bool cosine = config.beta_schedule.value_or("linear") == "squaredcos_cap_v2";
    ts.clear();
    for (double v : sig) {
      const double t = sigma_to_t(v, log_sigmas);
      ts.push_back(cosine ? std::trunc(t) : np_round(t));  // int64 cast truncates
    }
  } else if (config.sigma_schedule != Schedule::kDefault) {
    // A k-diffusion schedule (sigma_schedules.h), timesteps rounded as for the Karras sigmas.
    sig = schedule_sigmas(config.sigma_schedule, table, n, config.model_family);
    const std::vector<float> log_sigmas = log_table(table);
    ts.clear();
    for (double v : sig) ts.push_back(np_round(sigma_to_t(v, log_sigmas)));
  } else {
    for (double t : ts) sig.push_back(np_interp_index(t, table));
  }
  return s;
}

}  // namespace diffuse::sched
