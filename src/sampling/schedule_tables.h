// Tables shared by the scheduler ports: the training noise schedule (betas,
// alphas_cumprod, sigmas) in torch float32 arithmetic, and numpy-exact helpers
// (linspace, arange, round, interp) used by the set_timesteps() of diffusers.
// Internal to src/sampling.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "sampling/scheduler.h"

namespace diffuse::sched {

// Class defaults for the beta keys (most classes: 1e-4, 0.02, "linear"; LCM: 0.00085, 0.012, "scaled_linear").
struct BetaDefaults {
  double beta_start = 0.0001;
  double beta_end = 0.02;
  const char* beta_schedule = "linear";
};

// The training-time schedule of a scheduler class (its __init__).
struct TrainSchedule {
  int num_train_timesteps = 1000;
  std::vector<float> betas;           // torch float32
  std::vector<float> alphas_cumprod;  // torch.cumprod (double accumulator, float32 stored)
};
TrainSchedule make_train_schedule(const SchedulerConfig& c, const BetaDefaults& d);

// ((1 - a) / a) ** 0.5 in float32, ascending in t (index = training timestep).
std::vector<float> sigma_table(const std::vector<float>& alphas_cumprod);
// np.log of a float32 array (float32 results).
std::vector<float> log_table(const std::vector<float>& values);

// numpy.linspace(start, stop, num) in float64 (endpoint included).
std::vector<double> np_linspace(double start, double stop, int num);
// numpy.arange(start, stop, step) in float64 (numpy's fill: start + i * ((start + step) - start)).
std::vector<double> np_arange(double start, double stop, double step);
// numpy.round: half to even.
double np_round(double x);
// np.interp(x, arange(len(fp)), fp).
double np_interp_index(double x, const std::vector<float>& fp);

// Timesteps of the sigma-based classes (Euler, Euler-a, LMS): float32 values,
// descending, for timestep_spacing linspace | leading | trailing.
std::vector<double> sigma_class_timesteps(const std::string& spacing, int num_train, int n, int steps_offset,
                                          const char* who);

// The timesteps and sigmas of the sigma-based classes (Euler, LMS, Heun) for
// n steps: sigma_class_timesteps, the sigma of each by interpolating the
// training table, and with use_karras_sigmas the Karras schedule between
// karras_min / karras_max (nullopt: the interpolated ends, as the classes
// without sigma_min / sigma_max keys do) mapped back to fractional timesteps;
// with config.sigma_schedule set, that schedule (sigma_schedules.h) mapped
// back the same way (ddim may give one step more than n).
struct SigmaSteps {
  std::vector<double> timesteps, sigmas;  // n each, descending
  std::vector<float> table;               // the training sigmas (sigma_table)
};
SigmaSteps interpolated_sigma_steps(const SchedulerConfig& config, const TrainSchedule& train,
                                    const std::string& spacing, int n, const char* who,
                                    std::optional<double> karras_min = std::nullopt,
                                    std::optional<double> karras_max = std::nullopt);

// The timesteps and sigmas of DPMSolverMultistepScheduler (dpmpp_2m, and
// dpmpp_2m_sde's default): n + 1 linspace timesteps without the last (or
// leading / trailing), lambda_min_clipped; Karras and the k-diffusion
// schedules with rounded timesteps. n values each, without the final sigma.
SigmaSteps dpm_solver_sigma_steps(const SchedulerConfig& config, const TrainSchedule& train, const std::string& spacing,
                                  int n, const char* who);

// Karras et al. 2022 (EDM) rho = 7 schedule from sigma_max down to sigma_min, n values.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// diffusers' _sigma_to_t: fractional training timestep of `sigma` by log-linear
// interpolation in log_sigmas (ascending float32 table).
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);

// Throws kUnsupported when the config asks for something not ported.
void check_common_support(const SchedulerConfig& c, const char* who);

// The config's prediction_type (class default: epsilon), checked against what
// the sampler's catalogue row accepts (kUnsupported otherwise).
Prediction prediction_type(const SchedulerConfig& c, const char* sampler);

// Step math helpers: f32 tensor ops on the tensors' device (core/ops.h).
// x / s. ops.h has no division: multiplies by 1/s, as torch's CUDA kernel
// does for a tensor / scalar (torch's CPU kernel divides: results may differ
// in the last bit).
Tensor div_scalar(const Tensor& x, float s);
// a + s * b (torch: a + s * b, or a - |s| * b with s < 0: the same roundings).
Tensor add_scaled(const Tensor& a, const Tensor& b, float s);
// x.clamp(lo, hi) (diffusers' clip_sample). ops.h has no clamp yet: this one
// goes through the host (no Stable Diffusion config enables clip_sample).
Tensor clamp_sample(const Tensor& x, float lo, float hi);

// The k-diffusion style samplers (Euler, Euler-a, LMS, Heun) share these:
// scale_model_input = sample / sqrt(sigma^2 + 1) (f32, as torch);
Tensor scale_by_sigma(const Tensor& sample, float sigma);
// init_noise_sigma = max sigma for linspace/trailing spacing, sqrt(max^2 + 1) otherwise.
float sigma_init_noise(const std::vector<float>& sigmas, const std::string& spacing);
// diffusers' pred_original_sample of the sigma-parameterised classes for
// prediction p at noise level sigma: epsilon: x - sigma * m;
// v: m * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1); sample: m.
Tensor sigma_x0(Prediction p, const Tensor& model_output, const Tensor& sample, float sigma);

}  // namespace diffuse::sched
