// Diffusion schedulers ported from Hugging Face diffusers (0.40, commit 58eb52c):
// ddim (DDIMScheduler), pndm (PNDMScheduler, PLMS), lms (LMSDiscreteScheduler),
// euler (EulerDiscreteScheduler), euler_a (EulerAncestralDiscreteScheduler),
// dpmpp_2m (DPMSolverMultistepScheduler, dpmsolver++ order 2), unipc
// (UniPCMultistepScheduler, bh2) and lcm (LCMScheduler). One file per class.
//
// Numerics follow diffusers: tables that diffusers builds with numpy in
// float64 (timesteps, interpolated / Karras sigmas) are built in double; the
// per-step tensor math runs in float32 in torch's operation order.
//
// Usage (what StableDiffusionPipeline does):
//   auto s = make_scheduler("euler", SchedulerConfig::from_json(shipped), "default");
//   s->set_timesteps(steps);
//   x = noise * s->init_noise_sigma();
//   for (i = 0; i < s->timesteps().size(); ++i) {
//     eps = unet(s->scale_model_input(x, i), s->timesteps()[i]);
//     x = s->step(eps, i, x, generator);
//   }
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "sampling/rng.h"

namespace diffuse {

// Mirrors scheduler_config.json. A field is nullopt when the shipped config
// does not have the key (or has null): diffusers' from_config then gives each
// scheduler class its OWN default for it. That is why SD1/SD2 configs (no
// timestep_spacing) run DDIM/PNDM/LCM with "leading" but LMS/Euler/Euler-a/
// DPM++/UniPC with "linspace".
struct SchedulerConfig {
  std::optional<int> num_train_timesteps;
  std::optional<double> beta_start, beta_end;
  std::optional<std::string> beta_schedule;   // linear | scaled_linear | squaredcos_cap_v2
  std::optional<std::vector<double>> trained_betas;
  std::optional<std::string> prediction_type;  // epsilon | v_prediction | sample
  std::optional<std::string> timestep_spacing;  // leading | linspace | trailing
  std::optional<int> steps_offset;
  std::optional<bool> set_alpha_to_one;
  std::optional<bool> clip_sample;
  std::optional<double> clip_sample_range;
  std::optional<bool> thresholding;
  std::optional<bool> rescale_betas_zero_snr;
  std::optional<bool> skip_prk_steps;            // PNDM
  std::optional<std::string> interpolation_type;  // Euler: linear | log_linear
  std::optional<std::string> timestep_type;       // Euler: discrete | continuous
  std::optional<bool> use_karras_sigmas;
  std::optional<bool> use_exponential_sigmas;
  std::optional<bool> use_beta_sigmas;
  std::optional<double> sigma_min, sigma_max;     // Euler / UniPC Karras bounds
  std::optional<std::string> final_sigmas_type;   // zero | sigma_min
  std::optional<int> solver_order;                // DPM-Solver / UniPC
  std::optional<std::string> algorithm_type;      // DPM-Solver: dpmsolver++ | dpmsolver
  std::optional<std::string> solver_type;         // DPM-Solver: midpoint | heun; UniPC: bh1 | bh2
  std::optional<bool> lower_order_final;
  std::optional<bool> euler_at_final;
  std::optional<double> lambda_min_clipped;
  std::optional<bool> predict_x0;                 // UniPC
  std::optional<std::vector<int>> disable_corrector;  // UniPC
  std::optional<int> original_inference_steps;    // LCM
  std::optional<double> timestep_scaling;         // LCM

  // Reads the keys above from a shipped scheduler_config.json (other keys,
  // such as _class_name, are ignored). Throws kInvalidArgument on a key of the
  // wrong JSON type.
  static SchedulerConfig from_json(const nlohmann::json& shipped);
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Builds the timestep / sigma tables and resets the multistep state.
  virtual void set_timesteps(int num_inference_steps) = 0;

  // Every timestep the pipeline visits, in order (PNDM: n + 1, one repeated).
  const std::vector<float>& timesteps() const { return timesteps_; }
  // Sigma schedule incl. the final one (n + 1 values); empty for DDIM/PNDM/LCM.
  const std::vector<float>& sigmas() const { return sigmas_; }
  // Multiplies the initial noise.
  float init_noise_sigma() const { return init_noise_sigma_; }

  // Model input for step `step_index` (an index into timesteps()).
  virtual Tensor scale_model_input(const Tensor& sample, int step_index) = 0;
  // One step: returns the sample for the next timestep. Ancestral / stochastic
  // samplers (euler_a, lcm) draw noise of the sample's shape from `generator`
  // (which must then be non-null); the others ignore it. Steps must be taken
  // in order 0, 1, 2, ... after set_timesteps().
  virtual Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, Generator* generator) = 0;

 protected:
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  float init_noise_sigma_ = 1.0f;
};

// name: ddim | pndm | lms | euler | euler_a | dpmpp_2m | unipc | lcm.
// schedule: "default" (the config's sigmas) or "karras" (use_karras_sigmas =
// true; lms, euler, dpmpp_2m and unipc only, as in diffusers).
// Throws kInvalidArgument for unknown names and kUnsupported for config
// features not ported (thresholding, zero-SNR rescaling, exponential/beta
// sigmas, solver_order > 2, SDE variants, PNDM's PRK warm-up).
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& shipped,
                                          const std::string& schedule = "default");
std::vector<std::string> scheduler_names();

}  // namespace diffuse
