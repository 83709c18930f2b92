// Few-step model kinds: the table and the detection (few_step.h).
#include "pipeline/few_step.h"

#include <cctype>

namespace diffuse {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Whether `word` occurs in `name` not inside a longer word of letters ("lcm" in
// "sd15-lcm-v7" yes, "hyper" in "hyperrealism" no).
bool has_word(const std::string& name, const std::string& word) {
  for (size_t at = name.find(word); at != std::string::npos; at = name.find(word, at + 1)) {
    const bool left = at == 0 || !std::isalpha(static_cast<unsigned char>(name[at - 1]));
    const size_t end = at + word.size();
    const bool right = end == name.size() || !std::isalpha(static_cast<unsigned char>(name[end]));
    if (left && right) return true;
  }
  return false;
}

// The N of "4step", "8steps", "2-step", "1_step" (0 when none, or not in 1..64).
int steps_in(const std::string& name) {
  for (size_t at = name.find("step"); at != std::string::npos; at = name.find("step", at + 1)) {
    size_t end = at;
    if (end > 0 && (name[end - 1] == '-' || name[end - 1] == '_' || name[end - 1] == ' ')) --end;
    size_t begin = end;
    while (begin > 0 && std::isdigit(static_cast<unsigned char>(name[begin - 1]))) --begin;
    if (begin == end || end - begin > 2) continue;
    const int n = std::stoi(name.substr(begin, end - begin));
    if (n >= 1 && n <= 64) return n;
  }
  return 0;
}

}  // namespace

const std::vector<FewStepKind>& few_step_kinds() {
  // Sources: the published scheduler configs and model cards (stabilityai/sd-turbo and
  // sdxl-turbo: 1-4 steps, guidance 0, 512; SimianLuo/LCM_Dreamshaper_v7 and latent-consistency/
  // lcm-sdxl: 4 steps, guidance 8; ByteDance/SDXL-Lightning: Euler, trailing, guidance 0, the
  // step count of the checkpoint; ByteDance/Hyper-SD: TCD, guidance 0, the step count of the
  // checkpoint).
  static const std::vector<FewStepKind> kKinds = {
      {"turbo", "SD/SDXL Turbo", 1, 0.0f, 0.0f, "euler_a", "trailing", 512},
      {"lcm", "LCM", 4, 8.0f, 1.0f, "lcm", "", 0},
      {"lightning", "SDXL-Lightning", 4, 0.0f, 0.0f, "euler", "trailing", 0},
      {"hyper", "Hyper-SD", 8, 0.0f, 0.0f, "tcd", "", 0},
  };
  return kKinds;
}

const FewStepKind* find_few_step_kind(const std::string& name) {
  for (const FewStepKind& k : few_step_kinds()) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

std::string few_step_kind_names() {
  std::string out;
  for (const FewStepKind& k : few_step_kinds()) out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

FewStepDetection detect_few_step(const std::string& name, const nlohmann::json& scheduler_config,
                                 const UNetConfig& unet) {
  FewStepDetection d;
  const std::string n = lower(name);
  d.steps_in_name = steps_in(n);
  const std::string cls = scheduler_config.is_object() ? scheduler_config.value("_class_name", std::string()) : "";
  std::string spacing;
  if (scheduler_config.is_object() && scheduler_config.contains("timestep_spacing") &&
      scheduler_config["timestep_spacing"].is_string())
    spacing = scheduler_config["timestep_spacing"].get<std::string>();
  auto pick = [&](const char* kind, bool guessed, std::string why) {
    d.kind = find_few_step_kind(kind);
    d.guessed = guessed;
    d.reason = std::move(why);
    return d;
  };
  // What the model's own configs say.
  if (unet.has_guidance_embedding())
    return pick("lcm", false, "the UNet has a guidance embedding (time_cond_proj_dim " +
                                  std::to_string(unet.time_cond_proj_dim) + ")");
  if (cls == "LCMScheduler") return pick("lcm", false, "its scheduler is LCMScheduler");
  // The name.
  for (const char* kind : {"turbo", "lightning", "hyper", "lcm"}) {
    if (has_word(n, kind) || (std::string(kind) == "hyper" && n.find("hyper-sd") != std::string::npos))
      return pick(kind, true, std::string("its name contains '") + kind + "'");
  }
  // The scheduler's shape.
  if (cls == "TCDScheduler") return pick("hyper", true, "its scheduler is TCDScheduler");
  if (spacing == "trailing" && cls == "EulerAncestralDiscreteScheduler")
    return pick("turbo", true, "its scheduler is Euler ancestral with trailing timesteps (as SD-Turbo's)");
  if (spacing == "trailing" && cls == "EulerDiscreteScheduler")
    return pick("lightning", true, "its scheduler is Euler with trailing timesteps (as SDXL-Lightning's)");
  return d;
}

void apply_few_step_defaults(ModelInfo& info, nlohmann::json& scheduler_config, const UNetConfig& unet,
                             bool own_scheduler) {
  info.guidance_embedding = unet.has_guidance_embedding();
  const FewStepDetection d = detect_few_step(info.name, scheduler_config, unet);
  if (!d.kind) return;
  const FewStepKind& k = *d.kind;
  info.kind = k.name;
  info.kind_guessed = d.guessed;
  info.kind_reason = d.reason;
  const bool counted = std::string(k.name) == "lightning" || std::string(k.name) == "hyper";
  info.default_steps = counted && d.steps_in_name > 0 ? d.steps_in_name : k.steps;
  info.default_cfg = unet.has_guidance_embedding() || std::string(k.name) != "lcm" ? k.cfg_scale : k.cfg_scale_plain;
  if (!own_scheduler || info.default_sampler.empty()) info.default_sampler = k.sampler;
  // The kind's timesteps: a Lightning UNet put in a folder with SDXL base's "leading"
  // scheduler config still needs "trailing" (its model card says so); a Turbo folder already has it.
  if (*k.timestep_spacing && scheduler_config.is_object()) scheduler_config["timestep_spacing"] = k.timestep_spacing;
  if (k.size > 0 && !own_scheduler) info.default_width = info.default_height = k.size;
}

}  // namespace diffuse
