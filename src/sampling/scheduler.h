// Diffusion schedulers ported from Hugging Face diffusers (0.40, commit 58eb52c):
// ddim (DDIMScheduler), pndm (PNDMScheduler, PLMS), lms (LMSDiscreteScheduler),
// euler (EulerDiscreteScheduler), euler_a (EulerAncestralDiscreteScheduler),
// heun (HeunDiscreteScheduler), dpmpp_2m (DPMSolverMultistepScheduler,
// dpmsolver++ order 2), unipc (UniPCMultistepScheduler, bh2) and lcm
// (LCMScheduler) and tcd (TCDScheduler). One file per class; sampler_catalog.h names them.
//
// Numerics follow diffusers: tables that diffusers builds with numpy in
// float64 (timesteps, interpolated / Karras sigmas) are built in double on the
// host; the per-step tensor math is float32 tensor ops (core/ops.h) in torch's
// operation order, so it runs on the device of the tensors it is given (CPU or
// CUDA) and multistep state stays there too. One difference from torch's CPU
// kernels: a tensor divided by a scalar is a multiplication by the scalar's
// reciprocal (what torch's CUDA kernel does; ops.h has no division).
//
// Usage (what StableDiffusionPipeline does):
//   auto s = make_scheduler("euler", SchedulerConfig::from_json(shipped), "default");
//   s->set_timesteps(steps);
//   x = noise * s->init_noise_sigma();
//   StepNoise noise(*s, generator, x.shape(), x.device());   // stochastic samplers' draws, uploaded once
//   for (i = 0; i < s->timesteps().size(); ++i) {
//     eps = unet(s->scale_model_input(x, i), s->timesteps()[i]);
//     x = s->step(eps, i, x, noise.at(i));
//   }
// Two-evaluation samplers (heun) list every evaluation in timesteps(), as
// diffusers does (2n - 1 entries for n steps), so the loop is the same.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "sampling/prediction.h"
#include "sampling/rng.h"
#include "sampling/sampler_catalog.h"

namespace diffuse {

class BrownianTree;  // brownian.h

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
  std::optional<Prediction> prediction_type;   // "epsilon" | "v_prediction" | "sample" ("original_sample" = sample)
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

  // Not scheduler_config.json keys (from_json leaves them alone):
  // the sigma schedule make_scheduler() picked, when it is one of the
  // k-diffusion schedules (sigma_schedules.h) rather than default / karras,
  // which each class builds by its own diffusers rules;
  Schedule sigma_schedule = Schedule::kDefault;
  // the model's family, "sdxl" or "" (align_your_steps has an SDXL table and an SD 1.5 one);
  std::string model_family;
  // the call's eta: TCD's gamma (the stochasticity of each step, 0 = deterministic, 1 = fully
  // stochastic; diffusers' TCDScheduler.step(eta=...)), unset = 0.3 (TCDScheduler.step's default).
  std::optional<double> eta;

  // Reads the keys above from a shipped scheduler_config.json (other keys,
  // such as _class_name, are ignored). Throws kInvalidArgument on a key of the
  // wrong JSON type, kUnsupported on an unknown prediction_type.
  static SchedulerConfig from_json(const nlohmann::json& shipped);
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Catalogue name ("euler_a"), used in error messages.
  const std::string& name() const { return name_; }

  // Builds the timestep / sigma tables and resets the multistep state and
  // the begin index (0).
  void set_timesteps(int num_inference_steps) {
    begin_ = 0;
    build_timesteps(num_inference_steps);
  }

  // Model evaluations per step (diffusers' scheduler.order): 2 for heun, else 1.
  virtual int order() const { return 1; }

  // img2img / inpainting start part-way down the schedule (diffusers'
  // set_begin_index): the first step taken is `step_index`, steps before it
  // are never taken, and multistep state starts empty there. Call after
  // set_timesteps(); 0 <= step_index < timesteps().size().
  void set_begin_index(int step_index);
  int begin_index() const { return begin_; }

  // diffusers' add_noise: `original` noised to the level of step
  // `step_index` (the level the sample has when that step is taken), by the
  // class's own rule (noise_form()). f32 tensors of one shape and device.
  Tensor add_noise(const Tensor& original, const Tensor& noise, int step_index) const;
  // How add_noise mixes, per class (docs/editing.md):
  //  kSigma (euler, euler_a, lms, heun): x + sigma * n;
  //  kAlphaSigma (dpmpp_2m, unipc): alpha * x + alpha * sigma * n, alpha = 1 / sqrt(sigma^2 + 1);
  //  kAlphasCumprod (ddim, pndm, lcm): sqrt(a_t) * x + sqrt(1 - a_t) * n, a_t = alphas_cumprod[timestep].
  enum class NoiseForm { kSigma, kAlphaSigma, kAlphasCumprod };
  NoiseForm noise_form() const { return noise_form_; }

  // Every timestep the pipeline visits, in order (PNDM: n + 1, one repeated;
  // Heun: 2n - 1, each but the first twice).
  const std::vector<float>& timesteps() const { return timesteps_; }
  // Sigma of each visit plus the final one (timesteps().size() + 1 values);
  // empty for DDIM/PNDM/LCM.
  const std::vector<float>& sigmas() const { return sigmas_; }
  // Multiplies the initial noise.
  float init_noise_sigma() const { return init_noise_sigma_; }

  // Whether step `step_index` uses noise of the sample's shape (euler_a:
  // every step, the last included, as diffusers draws it; lcm: all but the last).
  virtual bool draws_noise(int step_index) const { return false; }
  // Where that noise comes from: one generator draw per noisy step, or
  // (dpmpp_sde) the normalised increment (W(hi) - W(lo)) / sqrt(hi - lo) of one
  // Brownian motion W per run over noise_interval(step) (brownian.h), seeded
  // with the generator's seed, so that the noise of overlapping intervals is
  // correlated as k-diffusion's BrownianTreeNoiseSampler makes it.
  enum class NoiseSource { kGenerator, kBrownian };
  virtual NoiseSource noise_source() const { return NoiseSource::kGenerator; }
  // kBrownian: the interval [lo, hi] (noise levels) of a noisy step, and the
  // domain of the whole run's Brownian motion (its smallest positive and
  // largest sigma).
  virtual std::pair<double, double> noise_interval(int step_index) const { return {0.0, 0.0}; }
  virtual std::pair<double, double> noise_domain() const { return {0.0, 0.0}; }

  // Model input for step `step_index` (an index into timesteps()): f32, on
  // the sample's device.
  Tensor scale_model_input(const Tensor& sample, int step_index);

  // One step: returns the sample for the next timestep. model_output and
  // sample are f32 tensors of one shape on one device (any strides); the
  // result is a new tensor on that device. `noise` is the step's generator
  // draw (same shape and device; StepNoise gives it) when draws_noise(),
  // else undefined (pass Tensor(), not {}). Steps must be taken in order 0,
  // 1, 2, ... after set_timesteps(). A scheduler may keep `sample` (and
  // tensors it computed) for later steps: do not write into it afterwards;
  // it copies model_output where it keeps it.
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, const Tensor& noise);
  // The same, drawing the step's noise from `generator` on the host when
  // draws_noise() (then `generator` must be non-null) and moving it to the
  // sample's device: one host-to-device copy per noisy step.
  Tensor step(const Tensor& model_output, int step_index, const Tensor& sample, Generator* generator);

 protected:
  explicit Scheduler(std::string name) : name_(std::move(name)) {}

  virtual void build_timesteps(int num_inference_steps) = 0;
  // Called by set_begin_index (after the base has stored it).
  virtual void on_begin_index(int step_index) {}

  // The arguments are checked (index in range, shapes, f32, one device, noise
  // present iff draws_noise()).
  virtual Tensor scale_input(const Tensor& sample, int step_index) = 0;
  virtual Tensor step_impl(const Tensor& model_output, int step_index, const Tensor& sample,
                           const Tensor& noise) = 0;

  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  float init_noise_sigma_ = 1.0f;
  NoiseForm noise_form_ = NoiseForm::kSigma;
  std::vector<float> noise_alphas_cumprod_;  // kAlphasCumprod: the training alphas_cumprod

 private:
  std::string name_;
  int begin_ = 0;
  std::shared_ptr<BrownianTree> brownian_;  // step(..., Generator*) of a kBrownian sampler
};

// The generator noise of a whole run for a stochastic scheduler, drawn up
// front in the order step() would have drawn it (one randn(sample_shape) call
// per noisy step, so the stream is the same as drawing inside the loop) and
// moved to `device` in one copy; steps before the scheduler's begin index
// draw nothing. Runs whose draws exceed `max_bytes` are drawn
// and moved in chunks of steps as at() reaches them. Nothing else may draw
// from `generator` while this lives; it draws nothing for deterministic
// samplers. Call after set_timesteps().
class StepNoise {
 public:
  static constexpr size_t kDefaultMaxBytes = size_t{128} << 20;
  // end_step: the steps from end_step on are not taken (diffusers'
  // denoising_end) and draw nothing; -1: every step to the end.
  StepNoise(const Scheduler& scheduler, Generator& generator, const Shape& sample_shape, Device device,
            size_t max_bytes = kDefaultMaxBytes, int end_step = -1);

  // Step `step_index`'s draw (a view on `device`), or an undefined tensor
  // when that step draws none. Call with increasing step indices.
  Tensor at(int step_index);
  // Host-to-device copies made so far (0 on the CPU).
  int uploads() const { return uploads_; }

 private:
  void draw_chunk(size_t first_draw);

  Generator& generator_;
  Shape shape_;
  Device device_;
  std::vector<int> draw_of_step_;  // step -> index of its draw, or -1
  size_t num_draws_ = 0, chunk_draws_ = 0, chunk_first_ = 0, next_draw_ = 0;
  Tensor chunk_;  // [chunk_draws_, *shape_] on device_
  int uploads_ = 0;
  const Scheduler& scheduler_;
  std::shared_ptr<BrownianTree> brownian_;  // kBrownian samplers: the run's Brownian motion
};

// name: a catalogue name (sampler_catalog.h: euler_a | euler | lms | heun |
// dpm2 | dpm2_a | dpmpp_2s_a | dpmpp_2m | dpmpp_sde | dpmpp_2m_sde |
// dpmpp_3m_sde | ddim | pndm | unipc | lcm). schedule: any spelling of a
// catalogue schedule (find_schedule): "default" (the config's sigmas),
// "karras" (use_karras_sigmas = true, as in diffusers), or one of the
// k-diffusion schedules (SchedulerConfig::sigma_schedule), each for the
// samplers whose catalogue row lists it.
// Throws kInvalidArgument for unknown names, kUnsupported for a schedule the
// sampler does not run with and for config features not ported
// (thresholding, zero-SNR rescaling, exponential/beta sigmas keys,
// solver_order > 2, diffusers' SDE variants, PNDM's PRK warm-up).
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& shipped,
                                          const std::string& schedule = "default");
// The catalogue's names, in its order.
std::vector<std::string> scheduler_names();

}  // namespace diffuse
