// The sampler and schedule rows, and the look-ups every surface uses (see the header).
#include "sampling/sampler_catalog.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "sampling/scheduler_factories.h"

namespace diffuse {

namespace {

constexpr PredictionSet kEps = prediction_bit(Prediction::kEpsilon);
constexpr PredictionSet kV = prediction_bit(Prediction::kVPrediction);
constexpr PredictionSet kX0 = prediction_bit(Prediction::kSample);
constexpr ScheduleSet kDefaultOnly = schedule_bit(Schedule::kDefault);
constexpr ScheduleSet kWithKarras = schedule_bit(Schedule::kDefault) | schedule_bit(Schedule::kKarras);
// Every schedule of the catalogue: the k-diffusion samplers run on any sigma list.
constexpr ScheduleSet kAllSchedules = (ScheduleSet{1} << (static_cast<unsigned>(Schedule::kBeta) + 1)) - 1;

// Predictions and schedules follow what each diffusers class accepts, and for
// the k-diffusion samplers (sigma-based, any sigma list) what k-diffusion accepts.
const std::vector<SamplerSpec>& rows() {
  static const std::vector<SamplerSpec> kSamplers = {
      {"euler_a", "Euler a", "ancestral Euler: an Euler step, then fresh noise (k-diffusion sample_euler_ancestral)",
       "EulerAncestralDiscreteScheduler", "Euler a", {"k_euler_a", "k_euler_ancestral"}, "euler_ancestral",
       {"euler ancestral"}, /*ancestral=*/true, /*stochastic=*/true, "generator", kEps | kV, kAllSchedules, 1, 1,
       sched::make_euler_ancestral},
      {"euler", "Euler", "Euler's method on the probability-flow ODE (Karras et al. 2022)", "EulerDiscreteScheduler",
       "Euler", {"k_euler"}, "euler", {}, false, false, "", kEps | kV | kX0, kAllSchedules, 1, 1, sched::make_euler},
      {"lms", "LMS", "linear multistep, order 4 (k-diffusion sample_lms)", "LMSDiscreteScheduler", "LMS", {"k_lms"},
       "lms", {}, false, false, "", kEps | kV | kX0, kAllSchedules, 4, 1, sched::make_lms},
      {"heun", "Heun", "Heun's 2nd-order method: 2 model evaluations per step, 1 on the last (Karras et al. 2022)",
       "HeunDiscreteScheduler", "Heun", {"k_heun"}, "heun", {}, false, false, "", kEps | kV | kX0, kAllSchedules, 2,
       2, sched::make_heun},
      {"dpm2", "DPM2", "DPM-Solver-2 steps in Karras' ODE form: 2 evaluations per step, 1 on the last (k-diffusion sample_dpm_2)",
       "KDPM2DiscreteScheduler", "DPM2", {"k_dpm_2"}, "dpm_2", {"dpm_2", "kdpm2"}, false, false, "",
       kEps | kV | kX0, kAllSchedules, 2, 2, sched::make_dpm2},
      {"dpm2_a", "DPM2 a", "ancestral DPM2: a DPM-Solver-2 step down to sigma_down, then fresh noise (k-diffusion sample_dpm_2_ancestral)",
       "KDPM2AncestralDiscreteScheduler", "DPM2 a", {"k_dpm_2_a"}, "dpm_2_ancestral", {"dpm_2_a", "dpm2 ancestral"},
       /*ancestral=*/true, /*stochastic=*/true, "generator", kEps | kV | kX0, kAllSchedules, 2, 2,
       sched::make_dpm2_ancestral},
      {"dpmpp_2s_a", "DPM++ 2S a", "ancestral DPM-Solver++(2S), single-step 2nd order (k-diffusion sample_dpmpp_2s_ancestral)",
       "", "DPM++ 2S a", {"k_dpmpp_2s_a"}, "dpmpp_2s_ancestral", {"dpm++ 2s a", "dpmpp_2s_ancestral"},
       /*ancestral=*/true, /*stochastic=*/true, "generator", kEps | kV | kX0, kAllSchedules, 2, 2,
       sched::make_dpmpp_2s_ancestral},
      {"dpmpp_2m", "DPM++ 2M", "DPM-Solver++(2M), 2nd-order multistep (Lu et al. 2022)",
       "DPMSolverMultistepScheduler", "DPM++ 2M", {"k_dpmpp_2m"}, "dpmpp_2m", {"dpm++2m"}, false, false, "",
       kEps | kV | kX0, kAllSchedules, 2, 1, sched::make_dpmpp_2m},
      {"dpmpp_sde", "DPM++ SDE", "stochastic DPM-Solver++, 2 evaluations per step, Brownian-tree noise (k-diffusion sample_dpmpp_sde)",
       "DPMSolverSDEScheduler", "DPM++ SDE", {"k_dpmpp_sde"}, "dpmpp_sde", {"dpm++ sde"}, /*ancestral=*/false,
       /*stochastic=*/true, "brownian", kEps | kV | kX0, kAllSchedules, 2, 2, sched::make_dpmpp_sde},
      {"dpmpp_2m_sde", "DPM++ 2M SDE", "DPM-Solver++(2M) SDE, midpoint, eta 1 (k-diffusion sample_dpmpp_2m_sde; diffusers sde-dpmsolver++)",
       "", "DPM++ 2M SDE", {"k_dpmpp_2m_sde"}, "dpmpp_2m_sde", {"dpm++ 2m sde", "sde-dpmsolver++"},
       /*ancestral=*/false, /*stochastic=*/true, "generator", kEps | kV | kX0, kAllSchedules, 2, 1,
       sched::make_dpmpp_2m_sde},
      {"dpmpp_3m_sde", "DPM++ 3M SDE", "DPM-Solver++(3M) SDE, eta 1 (k-diffusion sample_dpmpp_3m_sde)", "",
       "DPM++ 3M SDE", {"k_dpmpp_3m_sde"}, "dpmpp_3m_sde", {"dpm++ 3m sde"}, /*ancestral=*/false,
       /*stochastic=*/true, "generator", kEps | kV | kX0, kAllSchedules, 3, 1, sched::make_dpmpp_3m_sde},
      {"ddim", "DDIM", "denoising diffusion implicit models, deterministic (Song et al. 2020)", "DDIMScheduler", "DDIM",
       {"ddim"}, "ddim", {}, false, false, "", kEps | kV | kX0, kDefaultOnly, 1, 1, sched::make_ddim},
      {"pndm", "PLMS (PNDM)", "pseudo linear multistep, order 4, one extra evaluation (Liu et al. 2022)",
       "PNDMScheduler", "PLMS", {"plms"}, "", {}, false, false, "", kEps | kV, kDefaultOnly, 4, 1, sched::make_pndm},
      {"unipc", "UniPC", "unified predictor-corrector, bh2 (Zhao et al. 2023)", "UniPCMultistepScheduler", "UniPC",
       {"unipc"}, "uni_pc", {}, false, false, "", kEps | kV | kX0, kWithKarras, 2, 1, sched::make_unipc},
      {"lcm", "LCM", "Latent Consistency Model sampling, for LCM-distilled models (Luo et al. 2023)", "LCMScheduler",
       "LCM", {"lcm"}, "lcm", {}, false, /*stochastic=*/true, "generator", kEps | kV | kX0, kDefaultOnly, 1, 1,
       sched::make_lcm},
      // Neither A1111 nor ComfyUI has TCD in core: the names are those of the Forge / ComfyUI
      // extensions that add it (sd-forge's "TCD" sampler, ComfyUI-TCD's "TCD" sampler).
      {"tcd", "TCD", "Trajectory Consistency Distillation, gamma = eta (Zheng et al. 2024)", "TCDScheduler", "TCD",
       {"tcd"}, "tcd", {}, false, /*stochastic=*/true, "generator", kEps | kV | kX0, kDefaultOnly, 1, 1,
       sched::make_tcd},
  };
  return kSamplers;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool same_ci(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// Whether `s` (already lower case) is one of the sampler's spellings.
bool spelled(const SamplerSpec& r, const std::string& s) {
  if (same_ci(s, r.name) || same_ci(s, r.label) || same_ci(s, r.a1111_name)) return true;
  if (*r.diffusers_class && same_ci(s, r.diffusers_class)) return true;
  if (*r.comfyui && same_ci(s, r.comfyui)) return true;
  for (const char* a : r.a1111_aliases) {
    if (same_ci(s, a)) return true;
  }
  for (const char* a : r.aliases) {
    if (same_ci(s, a)) return true;
  }
  return false;
}

const SamplerSpec* by_spelling(const std::string& s) {
  for (const SamplerSpec& r : rows()) {
    if (spelled(r, s)) return &r;
  }
  if (s.rfind("k_", 0) == 0) {
    const std::string bare = s.substr(2);
    for (const SamplerSpec& r : rows()) {
      if (spelled(r, bare)) return &r;
    }
  }
  return nullptr;
}

nlohmann::json string_list(const std::vector<const char*>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (const char* s : v) out.push_back(s);
  return out;
}

}  // namespace

const std::vector<SamplerSpec>& sampler_catalog() { return rows(); }

const std::vector<ScheduleSpec>& schedule_catalog() {
  // A1111's modules/sd_schedulers.py list (name, label, default_rho, need_inner_model, aliases); our
  // names are A1111's but "default" (A1111 "automatic", accepted as an alias); ComfyUI's names as aliases.
  static const std::vector<ScheduleSpec> kSchedules = {
      {Schedule::kDefault, "default", "Default", "automatic", "Automatic", {}, -1.0, false, {"automatic"}},
      {Schedule::kUniform, "uniform", "Uniform", "uniform", "Uniform", {}, -1.0, true, {}},
      {Schedule::kKarras, "karras", "Karras", "karras", "Karras", {"Karras"}, 7.0, false, {}},
      {Schedule::kExponential, "exponential", "Exponential", "exponential", "Exponential", {}, -1.0, false, {}},
      {Schedule::kPolyexponential, "polyexponential", "Polyexponential", "polyexponential", "Polyexponential", {},
       1.0, false, {}},
      {Schedule::kSgmUniform, "sgm_uniform", "SGM Uniform", "sgm_uniform", "SGM Uniform", {"SGMUniform"}, -1.0, true,
       {"sgmuniform"}},
      {Schedule::kKlOptimal, "kl_optimal", "KL Optimal", "kl_optimal", "KL Optimal", {}, -1.0, false, {}},
      {Schedule::kAlignYourSteps, "align_your_steps", "Align Your Steps", "align_your_steps", "Align Your Steps", {},
       -1.0, false, {"ays"}},
      {Schedule::kSimple, "simple", "Simple", "simple", "Simple", {}, -1.0, true, {}},
      {Schedule::kNormal, "normal", "Normal", "normal", "Normal", {}, -1.0, true, {}},
      {Schedule::kDdim, "ddim", "DDIM", "ddim", "DDIM", {}, -1.0, true, {"ddim_uniform"}},
      {Schedule::kBeta, "beta", "Beta", "beta", "Beta", {}, -1.0, true, {}},
  };
  return kSchedules;
}

const SamplerSpec* find_sampler(std::string_view name) {
  for (const SamplerSpec& r : rows()) {
    if (name == r.name) return &r;
  }
  return nullptr;
}

const SamplerSpec& sampler_spec(std::string_view name) {
  if (const SamplerSpec* r = find_sampler(name)) return *r;
  throw_error(ErrorCode::kInvalidArgument,
              "unknown sampler '" + std::string(name) + "' (one of " + sampler_names_list() + ")");
}

const ScheduleSpec* find_schedule(std::string_view name) {
  for (const ScheduleSpec& s : schedule_catalog()) {
    if (same_ci(name, s.name) || same_ci(name, s.a1111_name) || same_ci(name, s.a1111_label)) return &s;
    for (const char* a : s.a1111_aliases) {
      if (same_ci(name, a)) return &s;
    }
    for (const char* a : s.aliases) {
      if (same_ci(name, a)) return &s;
    }
  }
  return nullptr;
}

std::string schedule_names_list() {
  std::string out;
  for (const ScheduleSpec& s : schedule_catalog()) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

const ScheduleSpec& schedule_spec(std::string_view name) {
  if (const ScheduleSpec* s = find_schedule(name)) return *s;
  throw_error(ErrorCode::kInvalidArgument,
              "unknown schedule '" + std::string(name) + "' (one of " + schedule_names_list() + ")");
}

const ScheduleSpec& schedule_spec(Schedule id) {
  for (const ScheduleSpec& s : schedule_catalog()) {
    if (s.id == id) return s;
  }
  throw_error(ErrorCode::kRuntime, "[schedule_spec] schedule without a catalogue row");
}

std::optional<SamplerChoice> resolve_sampler(std::string_view spelling) {
  const std::string s = lower(spelling);
  if (const SamplerSpec* r = by_spelling(s)) return SamplerChoice{r, std::nullopt};
  // A1111 before 1.9 named the schedule in the sampler: "DPM++ 2M Karras", "LMS Karras".
  const std::string suffix = " karras";
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const SamplerSpec* r = by_spelling(s.substr(0, s.size() - suffix.size()));
    if (r && r->supports(Schedule::kKarras)) return SamplerChoice{r, Schedule::kKarras};
  }
  return std::nullopt;
}

const SamplerSpec* sampler_for_diffusers_class(std::string_view class_name) {
  for (const SamplerSpec& r : rows()) {
    if (*r.diffusers_class && class_name == r.diffusers_class) return &r;
  }
  return nullptr;
}

std::string sampler_names_list() {
  std::string out;
  for (const SamplerSpec& r : rows()) out += (out.empty() ? "" : ", ") + std::string(r.name);
  return out;
}

std::string sampler_help_text() {
  size_t name_width = 0, a1111_width = 0;
  for (const SamplerSpec& r : rows()) {
    name_width = std::max(name_width, std::string(r.name).size());
    a1111_width = std::max(a1111_width, std::string(r.a1111_name).size());
  }
  auto pad = [](const std::string& s, size_t width) { return s + std::string(width + 2 - s.size(), ' '); };
  std::string out = "Samplers (--sampler; default: the model's own scheduler), with their A1111 names:\n";
  for (const SamplerSpec& r : rows()) {
    out += "  " + pad(r.name, name_width) + pad(r.a1111_name, a1111_width) + r.summary;
    out += r.supports(Schedule::kBeta) ? " [all]\n" : r.supports(Schedule::kKarras) ? " [karras]\n" : "\n";
  }
  out += "Schedules (--schedule; A1111's \"Schedule type\", ComfyUI's \"scheduler\" names also accepted): " +
         schedule_names_list() +
         ".\n  default (alias automatic): the model's scheduler config; the others for the samplers marked [all],"
         "\n  default and karras for those marked [karras], default only for the rest.\n";
  return out;
}

nlohmann::json sampler_catalog_json() {
  nlohmann::json samplers = nlohmann::json::array();
  for (const SamplerSpec& r : rows()) {
    nlohmann::json predictions = nlohmann::json::array(), schedules = nlohmann::json::array();
    for (Prediction p : {Prediction::kEpsilon, Prediction::kVPrediction, Prediction::kSample}) {
      if (r.supports(p)) predictions.push_back(prediction_name(p));
    }
    for (const ScheduleSpec& s : schedule_catalog()) {
      if (r.supports(s.id)) schedules.push_back(s.name);
    }
    samplers.push_back({{"name", r.name},
                        {"label", r.label},
                        {"summary", r.summary},
                        {"diffusers_class", r.diffusers_class},
                        {"a1111_name", r.a1111_name},
                        {"a1111_aliases", string_list(r.a1111_aliases)},
                        {"comfyui", r.comfyui},
                        {"aliases", string_list(r.aliases)},
                        {"ancestral", r.ancestral},
                        {"stochastic", r.stochastic},
                        {"noise", r.noise},
                        {"predictions", predictions},
                        {"schedules", schedules},
                        {"order", r.order},
                        {"evals_per_step", r.evals_per_step}});
  }
  nlohmann::json schedules = nlohmann::json::array();
  for (const ScheduleSpec& s : schedule_catalog()) {
    nlohmann::json aliases = string_list(s.aliases);
    for (const char* a : s.a1111_aliases) aliases.push_back(a);
    schedules.push_back({{"name", s.name}, {"label", s.label}, {"a1111_name", s.a1111_name},
                         {"a1111_label", s.a1111_label}, {"aliases", aliases}});
  }
  return {{"samplers", samplers}, {"schedules", schedules}};
}

nlohmann::json a1111_samplers_json() {
  nlohmann::json out = nlohmann::json::array();
  for (const SamplerSpec& r : rows()) {
    // A1111's option values are Python booleans, sent through a dict[str, str] model: "True".
    nlohmann::json options = nlohmann::json::object();
    if (r.ancestral) options["uses_ensd"] = "True";
    if (r.evals_per_step == 2) options["second_order"] = "True";
    if (std::string_view(r.noise) == "brownian") options["brownian_noise"] = "True";
    out.push_back({{"name", r.a1111_name}, {"aliases", string_list(r.a1111_aliases)}, {"options", options}});
  }
  return out;
}

nlohmann::json a1111_schedulers_json() {
  nlohmann::json out = nlohmann::json::array();
  for (const ScheduleSpec& s : schedule_catalog()) {
    out.push_back({{"name", s.a1111_name},
                   {"label", s.a1111_label},
                   {"aliases", s.a1111_aliases.empty() ? nlohmann::json(nullptr) : string_list(s.a1111_aliases)},
                   {"default_rho", s.default_rho},
                   {"need_inner_model", s.need_inner_model}});
  }
  return out;
}

}  // namespace diffuse
