// The sampler catalogue: one row per sampler and one per sigma schedule. It is
// the only place that names samplers; every surface reads it:
//   make_scheduler()                     row.make, row.schedules, row.predictions
//   CLI `generate --help`                sampler_help_text()
//   GET /sdapi/v1/samplers, /schedulers  row.a1111_name / a1111_aliases / a1111 options; ScheduleSpec
//   GET /api/samplers -> the web page    sampler_catalog_json()
//   A1111 infotext "Sampler:"            row.a1111_name
//   a model folder's scheduler class     sampler_for_diffusers_class()
//   user spellings (APIs, history)       resolve_sampler()
//
// Adding a sampler: write its step function file (one Scheduler subclass, see
// scheduler.h) and add its row to kSamplers in sampler_catalog.cpp.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sampling/prediction.h"

namespace diffuse {

class Scheduler;
struct SchedulerConfig;

// Sigma schedules a sampler can run with: A1111's "Schedule type" list (its
// order), ComfyUI's "scheduler". Formulas: sampling/sigma_schedules.h and
// docs/samplers.md.
enum class Schedule : uint8_t {
  kDefault,          // "automatic": the scheduler config's own sigmas / timesteps (the diffusers class's rules)
  kUniform,          // k-diffusion DiscreteSchedule.get_sigmas: timesteps evenly spaced, log-linear sigmas
  kKarras,           // Karras et al. 2022 (EDM) rho = 7 sigmas: diffusers' use_karras_sigmas
  kExponential,      // evenly spaced in log sigma (k-diffusion get_sigmas_exponential)
  kPolyexponential,  // polynomial in log sigma, rho = 1 (k-diffusion get_sigmas_polyexponential)
  kSgmUniform,       // n + 1 evenly spaced timesteps, the last dropped (SGM / ComfyUI sgm_uniform)
  kKlOptimal,        // tan-spaced (Sabour et al. 2024, "Align Your Steps", KL-optimal)
  kAlignYourSteps,   // the AYS paper's 10-step SD1.5 / SDXL tables, log-linearly interpolated
  kSimple,           // every (N / n)-th training sigma from the top (ComfyUI simple)
  kNormal,           // n evenly spaced timesteps from the top to 0 (ComfyUI normal)
  kDdim,             // every floor(N / n)-th training sigma from 1 (ComfyUI ddim_uniform)
  kBeta,             // Beta(0.6, 0.6) quantiles (Lee et al. 2024, "Beta Sampling is All You Need")
};
using ScheduleSet = uint32_t;
constexpr ScheduleSet schedule_bit(Schedule s) { return ScheduleSet{1} << static_cast<unsigned>(s); }

struct ScheduleSpec {
  Schedule id;
  const char* name;         // ours (CLI --schedule, native API "schedule"): "default", "karras"
  const char* label;        // the web page's option text
  const char* a1111_name;   // A1111 scheduler name (/sdapi/v1/schedulers, txt2img "scheduler")
  const char* a1111_label;  // A1111 label, also written as the infotext's "Schedule type" ("" = omitted)
  std::vector<const char*> a1111_aliases;  // A1111's alias list (null in its JSON when empty)
  double default_rho;       // A1111's default_rho (-1: none)
  bool need_inner_model;    // A1111's need_inner_model (built from the model's training sigmas)
  std::vector<const char*> aliases;  // further spellings accepted (ComfyUI's names: "ddim_uniform")
};

struct SamplerSpec {
  const char* name;             // ours (CLI --sampler, native API, GenerationParams::sampler): "euler_a"
  const char* label;            // the web page's option text: "Euler a"
  const char* summary;          // one line for --help
  const char* diffusers_class;  // the diffusers scheduler class it ports
  const char* a1111_name;       // A1111 sampler name and infotext "Sampler:": "Euler a"
  std::vector<const char*> a1111_aliases;  // A1111's aliases, k-diffusion names first: "k_euler_a"
  const char* comfyui;          // ComfyUI's sampler_name ("" when ComfyUI has none)
  std::vector<const char*> aliases;  // further spellings accepted from users
  bool ancestral;               // adds fresh noise every step (A1111 "uses_ensd")
  bool stochastic;              // its steps draw noise (Scheduler::draws_noise)
  const char* noise;            // where that noise comes from: "" (none), "generator", "brownian" (brownian.h)
  PredictionSet predictions;    // model predictions it accepts
  ScheduleSet schedules;        // sigma schedules it runs with
  int order;                    // order of the solver (its default solver_order where configurable)
  int evals_per_step;           // model evaluations per step (Heun: 2, but 1 on the last step)
  // Builds its Scheduler from a config (make_scheduler() has already applied the schedule to it).
  std::unique_ptr<Scheduler> (*make)(const SchedulerConfig&);

  bool supports(Prediction p) const { return (predictions & prediction_bit(p)) != 0; }
  bool supports(Schedule s) const { return (schedules & schedule_bit(s)) != 0; }
};

// All rows, in the order every list shows them (A1111's order).
const std::vector<SamplerSpec>& sampler_catalog();
const std::vector<ScheduleSpec>& schedule_catalog();

// By our name exactly ("euler_a"); nullptr when unknown.
const SamplerSpec* find_sampler(std::string_view name);
// By our name; throws kInvalidArgument "unknown sampler 'x' (one of ...)".
const SamplerSpec& sampler_spec(std::string_view name);
// By our name ("karras"), A1111's name or label, or an alias (ComfyUI's names,
// "automatic" for "default"), case-insensitively; nullptr when unknown.
const ScheduleSpec* find_schedule(std::string_view name);
// "default, uniform, karras, ..." (for messages).
std::string schedule_names_list();
// By any spelling; throws kInvalidArgument "unknown schedule 'x' (one of ...)".
const ScheduleSpec& schedule_spec(std::string_view name);
const ScheduleSpec& schedule_spec(Schedule s);

// A sampler from any spelling a user or client may send, case-insensitively:
// our name, label, A1111 name and aliases, ComfyUI name, the other aliases, the
// diffusers class; an optional "k_" prefix (k-diffusion style); and A1111's
// legacy "<sampler> Karras" names, which also pick the karras schedule.
struct SamplerChoice {
  const SamplerSpec* sampler;
  std::optional<Schedule> schedule;  // set by a "... Karras" name
};
std::optional<SamplerChoice> resolve_sampler(std::string_view spelling);

// The sampler of a diffusers scheduler class ("EulerDiscreteScheduler"); nullptr when none ports it.
const SamplerSpec* sampler_for_diffusers_class(std::string_view class_name);

// "euler_a, euler, lms, ..." (for messages).
std::string sampler_names_list();
// The CLI's description of --sampler / --schedule: one line per sampler and the schedules.
std::string sampler_help_text();

// The catalogue for clients (GET /api/samplers):
//   {"samplers": [{name, label, summary, diffusers_class, a1111_name, a1111_aliases, comfyui, aliases,
//                  ancestral, stochastic, noise, predictions: ["epsilon", ...], schedules: ["default", ...],
//                  order, evals_per_step}],
//    "schedules": [{name, label, a1111_name, a1111_label, aliases}]}
nlohmann::json sampler_catalog_json();
// A1111's GET /sdapi/v1/samplers: [{name, aliases, options}].
nlohmann::json a1111_samplers_json();
// A1111's GET /sdapi/v1/schedulers: [{name, label, aliases, default_rho, need_inner_model}].
nlohmann::json a1111_schedulers_json();

}  // namespace diffuse
