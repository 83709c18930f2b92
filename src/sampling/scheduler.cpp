// SchedulerConfig::from_json and the scheduler factory.
#include "sampling/scheduler.h"

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

}  // namespace

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j) {
  DIFFUSE_CHECK_ARG(j.is_object(), "[SchedulerConfig] scheduler config must be a JSON object");
  SchedulerConfig c;
  read_key(j, "num_train_timesteps", c.num_train_timesteps);
  read_key(j, "beta_start", c.beta_start);
  read_key(j, "beta_end", c.beta_end);
  read_key(j, "beta_schedule", c.beta_schedule);
  read_key(j, "trained_betas", c.trained_betas);
  read_key(j, "prediction_type", c.prediction_type);
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

std::vector<std::string> scheduler_names() {
  return {"ddim", "pndm", "lms", "euler", "euler_a", "dpmpp_2m", "unipc", "lcm"};
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& shipped,
                                          const std::string& schedule) {
  SchedulerConfig c = shipped;
  if (schedule == "karras") {
    if (name != "lms" && name != "euler" && name != "dpmpp_2m" && name != "unipc")
      throw_error(ErrorCode::kUnsupported, "[make_scheduler] the karras schedule is not available for '" + name +
                                               "' (diffusers supports it for lms, euler, dpmpp_2m, unipc)");
    c.use_karras_sigmas = true;
  } else if (schedule != "default") {
    throw_error(ErrorCode::kInvalidArgument,
                "[make_scheduler] unknown schedule '" + schedule + "' (expected default or karras)");
  }
  if (name == "ddim") return sched::make_ddim(c);
  if (name == "pndm") return sched::make_pndm(c);
  if (name == "lms") return sched::make_lms(c);
  if (name == "euler") return sched::make_euler(c);
  if (name == "euler_a") return sched::make_euler_ancestral(c);
  if (name == "dpmpp_2m") return sched::make_dpmpp_2m(c);
  if (name == "unipc") return sched::make_unipc(c);
  if (name == "lcm") return sched::make_lcm(c);
  std::string names;
  for (const auto& n : scheduler_names()) names += (names.empty() ? "" : ", ") + n;
  throw_error(ErrorCode::kInvalidArgument, "[make_scheduler] unknown sampler '" + name + "' (one of " + names + ")");
}

}  // namespace diffuse
