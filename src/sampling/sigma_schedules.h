// The sigma schedules of A1111's "Schedule type" list (modules/sd_schedulers.py)
// and ComfyUI's "scheduler" list (comfy/samplers.py), as formulas on the
// model's training sigmas. Internal to src/sampling; docs/samplers.md has the
// table of formulas and tools/reference/sampler_reference.py the fp64
// reference they are tested against.
//
// `table` is the model's training sigmas sqrt((1 - a) / a), ascending in the
// training timestep (N values, float32 as the scheduler classes build them);
// sigma_min = table[0], sigma_max = table[N - 1] (A1111's model_wrap.sigmas ends).
// Every function returns the noise levels of the steps, descending, WITHOUT
// the final 0 that every sampler appends. All have n values except ddim,
// which follows A1111 / ComfyUI and can give one more (ceil((N - 1) / floor(N / n))).
#pragma once
#include <string>
#include <vector>

#include "sampling/sampler_catalog.h"

namespace diffuse::sched {

// The schedule `s` (anything but kDefault, which each class builds itself)
// for n >= 1 steps. model_family "sdxl" picks align_your_steps' SDXL table.
std::vector<double> schedule_sigmas(Schedule s, const std::vector<float>& table, int n,
                                    const std::string& model_family);

// k-diffusion DiscreteSchedule.t_to_sigma: exp of the log-linear interpolation
// of log(table) (float32 logs, as its float32 tensor) at the fractional
// timestep t (clamped to [0, N - 1]).
double t_to_sigma(double t, const std::vector<float>& table);

// The quantile function of the Beta(a, b) distribution (scipy.stats.beta.ppf)
// for p in [0, 1]: bisection on the regularized incomplete beta function.
double beta_ppf(double p, double a, double b);

// The Align Your Steps tables (Sabour et al. 2024, NVIDIA's "howto" page; 10
// steps, 11 values): SD 1.5 and SDXL.
const std::vector<double>& ays_table(bool sdxl);

}  // namespace diffuse::sched
