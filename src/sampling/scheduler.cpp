// SchedulerConfig::from_json, the Scheduler base (argument checks, generator
// noise), StepNoise and the scheduler factory.
#include "sampling/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/ops.h"
#include "sampling/brownian.h"
#include "sampling/sampler_catalog.h"
#include "sampling/schedule_tables.h"
#include "sampling/scheduler_factories.h"

namespace diffuse {

namespace {

// Reads `key` into `out` when present and not null; a wrong JSON type is an error.
template <class T>
void read_key(const nlohmann::json& j, const char* key, std::optional<T>& out) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kInvalidArgument,
                std::string("[SchedulerConfig] key '") + key + "' has the wrong type: " + it->dump());
  }
}

// Python's float("-inf") is written as -Infinity by json.dump, which strict
// JSON parsers reject; configs in the wild carry it as a string or omit it.
void read_lambda_min_clipped(const nlohmann::json& j, std::optional<double>& out) {
  const auto it = j.find("lambda_min_clipped");
  if (it == j.end() || it->is_null()) return;
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    if (s == "-inf" || s == "-Infinity") out = -std::numeric_limits<double>::infinity();
    else throw_error(ErrorCode::kInvalidArgument, "[SchedulerConfig] bad lambda_min_clipped: " + s);
    return;
  }
  read_key(j, "lambda_min_clipped", out);
}

// EulerDiscreteScheduler also accepts "original_sample", its older name for "sample".
void read_prediction(const nlohmann::json& j, std::optional<Prediction>& out) {
  std::optional<std::string> s;
  read_key(j, "prediction_type", s);
  if (!s) return;
  out = *s == "original_sample" ? std::optional<Prediction>(Prediction::kSample) : parse_prediction(*s);
  if (!out)
    throw_error(ErrorCode::kUnsupported, "[SchedulerConfig] prediction_type '" + *s +
                                             "' is not supported (epsilon, v_prediction, sample)");
}

}  // namespace

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j) {
  DIFFUSE_CHECK_ARG(j.is_object(), "[SchedulerConfig] scheduler config must be a JSON object");
  SchedulerConfig c;
  read_key(j, "num_train_timesteps", c.num_train_timesteps);
  read_key(j, "beta_start", c.beta_start);
  read_key(j, "beta_end", c.beta_end);
  read_key(j, "beta_schedule", c.beta_schedule);
  read_key(j, "trained_betas", c.trained_betas);
  read_prediction(j, c.prediction_type);
  read_key(j, "timestep_spacing", c.timestep_spacing);
  read_key(j, "steps_offset", c.steps_offset);
  read_key(j, "set_alpha_to_one", c.set_alpha_to_one);
  read_key(j, "clip_sample", c.clip_sample);
  read_key(j, "clip_sample_range", c.clip_sample_range);
  read_key(j, "thresholding", c.thresholding);
  read_key(j, "rescale_betas_zero_snr", c.rescale_betas_zero_snr);
  read_key(j, "skip_prk_steps", c.skip_prk_steps);
  read_key(j, "interpolation_type", c.interpolation_type);
  read_key(j, "timestep_type", c.timestep_type);
  read_key(j, "use_karras_sigmas", c.use_karras_sigmas);
  read_key(j, "use_exponential_sigmas", c.use_exponential_sigmas);
  read_key(j, "use_beta_sigmas", c.use_beta_sigmas);
  read_key(j, "sigma_min", c.sigma_min);
  read_key(j, "sigma_max", c.sigma_max);
  read_key(j, "final_sigmas_type", c.final_sigmas_type);
  read_key(j, "solver_order", c.solver_order);
  read_key(j, "algorithm_type", c.algorithm_type);
  read_key(j, "solver_type", c.solver_type);
  read_key(j, "lower_order_final", c.lower_order_final);
  read_key(j, "euler_at_final", c.euler_at_final);
  read_lambda_min_clipped(j, c.lambda_min_clipped);
  read_key(j, "predict_x0", c.predict_x0);
  read_key(j, "disable_corrector", c.disable_corrector);
  read_key(j, "original_inference_steps", c.original_inference_steps);
  read_key(j, "timestep_scaling", c.timestep_scaling);
  return c;
}

// ---------------------------------------------------------------- Scheduler

Tensor Scheduler::scale_model_input(const Tensor& sample, int k) {
  const std::string w = "[" + name_ + "] ";
  DIFFUSE_CHECK_ARG(!timesteps_.empty(), w + "call set_timesteps() before scale_model_input()");
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < timesteps_.size(),
                    w + "step_index " + std::to_string(k) + " out of range [0, " +
                        std::to_string(timesteps_.size()) + ")");
  DIFFUSE_CHECK_ARG(sample.dtype() == DType::kF32, w + "the sample must be f32, got " + sample.str());
  return scale_input(sample, k);
}

void Scheduler::set_begin_index(int k) {
  const std::string w = "[" + name_ + "] ";
  DIFFUSE_CHECK_ARG(!timesteps_.empty(), w + "call set_timesteps() before set_begin_index()");
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < timesteps_.size(),
                    w + "begin index " + std::to_string(k) + " out of range [0, " + std::to_string(timesteps_.size()) +
                        ")");
  begin_ = k;
  on_begin_index(k);
}

Tensor Scheduler::add_noise(const Tensor& original, const Tensor& noise, int k) const {
  const std::string w = "[" + name_ + "] add_noise: ";
  DIFFUSE_CHECK_ARG(!timesteps_.empty(), w + "call set_timesteps() first");
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < timesteps_.size(),
                    w + "step_index " + std::to_string(k) + " out of range [0, " + std::to_string(timesteps_.size()) +
                        ")");
  DIFFUSE_CHECK_ARG(original.shape() == noise.shape() && original.dtype() == DType::kF32 &&
                        noise.dtype() == DType::kF32 && original.device() == noise.device(),
                    w + "original " + original.str() + " and noise " + noise.str() +
                        " must be f32 tensors of one shape on one device");
  switch (noise_form_) {
    case NoiseForm::kSigma:  // original + noise * sigma
      return sched::add_scaled(original, noise, sigmas_[static_cast<size_t>(k)]);
    case NoiseForm::kAlphaSigma: {  // _sigma_to_alpha_sigma_t, float32
      const float s = sigmas_[static_cast<size_t>(k)];
      const float alpha = 1.0f / std::sqrt(s * s + 1.0f);
      const float sigma = s * alpha;
      return axpby(original, alpha, noise, sigma);
    }
    case NoiseForm::kAlphasCumprod: {  // alphas_cumprod[t] ** 0.5, (1 - alphas_cumprod[t]) ** 0.5, float32
      const int t = static_cast<int>(timesteps_[static_cast<size_t>(k)]);
      DIFFUSE_CHECK_ARG(t >= 0 && static_cast<size_t>(t) < noise_alphas_cumprod_.size(),
                        w + "timestep " + std::to_string(t) + " outside the training schedule");
      const float a = noise_alphas_cumprod_[static_cast<size_t>(t)];
      return axpby(original, std::sqrt(a), noise, std::sqrt(1.0f - a));
    }
  }
  return Tensor();
}

Tensor Scheduler::step(const Tensor& model_output, int k, const Tensor& sample, const Tensor& noise) {
  const std::string w = "[" + name_ + "] ";
  DIFFUSE_CHECK_ARG(!timesteps_.empty(), w + "call set_timesteps() before step()");
  DIFFUSE_CHECK_ARG(k >= begin_, w + "step " + std::to_string(k) + " is before the begin index " +
                                     std::to_string(begin_));
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < timesteps_.size(),
                    w + "step_index " + std::to_string(k) + " out of range [0, " +
                        std::to_string(timesteps_.size()) + ")");
  DIFFUSE_CHECK_ARG(model_output.defined() && sample.defined(), w + "model_output and sample must be defined");
  DIFFUSE_CHECK_ARG(model_output.shape() == sample.shape(), w + "model_output " + shape_str(model_output.shape()) +
                                                                " does not match sample " +
                                                                shape_str(sample.shape()));
  DIFFUSE_CHECK_ARG(model_output.dtype() == DType::kF32 && sample.dtype() == DType::kF32,
                    w + "tensors must be f32, got model_output " + model_output.str() + " and sample " + sample.str());
  DIFFUSE_CHECK_ARG(model_output.device() == sample.device(),
                    w + "model_output is on " + device_name(model_output.device()) + ", sample on " +
                        device_name(sample.device()));
  if (draws_noise(k)) {
    DIFFUSE_CHECK_ARG(noise.defined(), w + "step " + std::to_string(k) +
                                           " needs its generator noise (pass a Generator or StepNoise::at())");
    DIFFUSE_CHECK_ARG(noise.shape() == sample.shape() && noise.dtype() == DType::kF32 &&
                          noise.device() == sample.device(),
                      w + "noise " + noise.str() + " must be f32 of the sample's shape " +
                          shape_str(sample.shape()) + " on " + device_name(sample.device()));
  } else {
    DIFFUSE_CHECK_ARG(!noise.defined(), w + "step " + std::to_string(k) + " draws no noise, but noise was given");
  }
  return step_impl(model_output, k, sample, noise);
}

Tensor Scheduler::step(const Tensor& model_output, int k, const Tensor& sample, Generator* generator) {
  Tensor noise;
  if (k >= 0 && static_cast<size_t>(k) < timesteps_.size() && draws_noise(k)) {
    DIFFUSE_CHECK_ARG(generator != nullptr, "[" + name_ + "] step needs a generator for its noise");
    if (noise_source() == NoiseSource::kBrownian) {
      const auto [t0, t1] = noise_domain();
      if (!brownian_ || brownian_->seed() != generator->seed() || brownian_->numel() != shape_numel(sample.shape()) ||
          brownian_->t0() != t0 || brownian_->t1() != t1)
        brownian_ = std::make_shared<BrownianTree>(generator->seed(), shape_numel(sample.shape()), t0, t1);
      const auto [lo, hi] = noise_interval(k);
      noise = brownian_->increment(lo, hi, sample.shape()).to(sample.device());
    } else {
      noise = generator->randn(sample.shape()).to(sample.device());
    }
  }
  return step(model_output, k, sample, noise);
}

// ---------------------------------------------------------------- StepNoise

StepNoise::StepNoise(const Scheduler& scheduler, Generator& generator, const Shape& sample_shape, Device device,
                     size_t max_bytes, int end_step)
    : generator_(generator), shape_(sample_shape), device_(device), scheduler_(scheduler) {
  const size_t steps = scheduler.timesteps().size();
  const size_t end = end_step < 0 ? steps : std::min(steps, static_cast<size_t>(end_step));
  draw_of_step_.assign(steps, -1);
  for (size_t k = static_cast<size_t>(scheduler.begin_index()); k < end; ++k) {
    if (scheduler.draws_noise(static_cast<int>(k))) draw_of_step_[k] = static_cast<int>(num_draws_++);
  }
  if (scheduler.noise_source() == Scheduler::NoiseSource::kBrownian) {
    // One Brownian motion for the run, seeded with the generator's seed (k-diffusion's
    // BrownianTreeNoiseSampler takes the seed too); each noisy step's increment is built by at().
    if (num_draws_ > 0) {
      const auto [t0, t1] = scheduler.noise_domain();
      brownian_ = std::make_shared<BrownianTree>(generator.seed(), shape_numel(shape_), t0, t1);
    }
    return;
  }
  const size_t draw_bytes = static_cast<size_t>(std::max<int64_t>(shape_numel(shape_), 1)) * sizeof(float);
  chunk_draws_ = std::max<size_t>(1, std::min(num_draws_, max_bytes / draw_bytes));
  if (num_draws_ > 0) draw_chunk(0);
}

void StepNoise::draw_chunk(size_t first) {
  const size_t count = std::min(chunk_draws_, num_draws_ - first);
  Shape chunk_shape = shape_;
  chunk_shape.insert(chunk_shape.begin(), static_cast<int64_t>(count));
  Tensor host = Tensor::empty(chunk_shape, DType::kF32);
  const int64_t per = shape_numel(shape_);
  float* p = host.data<float>();
  // One randn(shape) call per step, exactly as the step would make it.
  for (size_t i = 0; i < count; ++i) generator_.randn_fill(p + static_cast<int64_t>(i) * per, per);
  chunk_ = host.to(device_);
  if (device_ != Device::kCPU) ++uploads_;
  chunk_first_ = first;
  next_draw_ = first + count;
}

Tensor StepNoise::at(int k) {
  DIFFUSE_CHECK_ARG(k >= 0 && static_cast<size_t>(k) < draw_of_step_.size(),
                    "[StepNoise] step_index " + std::to_string(k) + " out of range [0, " +
                        std::to_string(draw_of_step_.size()) + ")");
  const int d = draw_of_step_[static_cast<size_t>(k)];
  if (d < 0) return Tensor();
  if (brownian_) {  // built on the host, one upload per noisy step
    const auto [lo, hi] = scheduler_.noise_interval(k);
    if (device_ != Device::kCPU) ++uploads_;
    return brownian_->increment(lo, hi, shape_).to(device_);
  }
  const size_t draw = static_cast<size_t>(d);
  DIFFUSE_CHECK_ARG(draw >= chunk_first_, "[StepNoise] steps must be visited in increasing order");
  while (draw >= next_draw_) draw_chunk(next_draw_);  // skipped steps' draws are still drawn, in order
  return chunk_.select(0, static_cast<int64_t>(draw - chunk_first_));
}

// ---------------------------------------------------------------- factory

std::vector<std::string> scheduler_names() {
  std::vector<std::string> out;
  for (const SamplerSpec& r : sampler_catalog()) out.push_back(r.name);
  return out;
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& shipped,
                                          const std::string& schedule) {
  const SamplerSpec* row = find_sampler(name);
  if (!row)
    throw_error(ErrorCode::kInvalidArgument,
                "[make_scheduler] unknown sampler '" + name + "' (one of " + sampler_names_list() + ")");
  SchedulerConfig c = shipped;
  const ScheduleSpec* sched = find_schedule(schedule);
  if (!sched)
    throw_error(ErrorCode::kInvalidArgument,
                "[make_scheduler] unknown schedule '" + schedule + "' (one of " + schedule_names_list() + ")");
  if (!row->supports(sched->id)) {
    std::string with, allowed;
    for (const SamplerSpec& r : sampler_catalog()) {
      if (r.supports(sched->id)) with += (with.empty() ? "" : ", ") + std::string(r.name);
    }
    for (const ScheduleSpec& s : schedule_catalog()) {
      if (row->supports(s.id)) allowed += (allowed.empty() ? "" : ", ") + std::string(s.name);
    }
    throw_error(ErrorCode::kUnsupported, "[make_scheduler] the " + std::string(sched->name) +
                                             " schedule is not available for '" + name + "' (it runs with " +
                                             allowed + "; " + sched->name + " is for " + with + ")");
  }
  if (sched->id == Schedule::kKarras) c.use_karras_sigmas = true;  // each class's own (diffusers) Karras rule
  else if (sched->id != Schedule::kDefault) c.sigma_schedule = sched->id;
  return row->make(c);
}

}  // namespace diffuse
