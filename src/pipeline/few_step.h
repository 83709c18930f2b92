// Few-step (distilled) models: which kind a checkpoint is, and the defaults
// that kind runs with (docs/few-step.md).
//
//   kind       how it is made                              defaults
//   turbo      SD-Turbo / SDXL-Turbo (adversarial          1 step, CFG off, euler_a, trailing, 512
//              diffusion distillation)
//   lcm        LCM-distilled UNets (time_cond_proj_dim)    4 steps, guidance 8 as the w-embedding, lcm
//              or folders shipping LCMScheduler
//   lightning  SDXL-Lightning (progressive adversarial)    4 steps (or the N in "Nstep"), CFG off, euler, trailing
//   hyper      Hyper-SD (trajectory segmented consistency)  the N in "Nstep(s)" (else 8), CFG off, tcd
//
// The table (few_step_kinds()) is the one place these numbers live; the model
// loader applies a row over the family's defaults and under a folder's own
// model_index.json "_diffuse_defaults", and every request may override each.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/unet.h"
#include "pipeline/pipeline.h"

namespace diffuse {

struct FewStepKind {
  const char* name;       // "turbo", "lcm", "lightning", "hyper"
  const char* label;      // "SD/SDXL Turbo"
  int steps;              // default steps (a name's "4step" wins for lightning / hyper)
  float cfg_scale;        // default CFG (lcm: the guidance scale of the w-embedding)
  float cfg_scale_plain;  // the same for a UNet without a guidance embedding (an LCM-LoRA merge: CFG 1)
  const char* sampler;    // catalogue name
  const char* timestep_spacing;  // written into a scheduler config that lacks it ("" = leave)
  int size;               // default width and height (0 = the family's / the folder's)
};

const std::vector<FewStepKind>& few_step_kinds();
const FewStepKind* find_few_step_kind(const std::string& name);
// "turbo, lcm, lightning, hyper" (for messages).
std::string few_step_kind_names();

struct FewStepDetection {
  const FewStepKind* kind = nullptr;  // nullptr: a regular model
  bool guessed = false;               // from the name or a scheduler's shape, not from the model's configs
  std::string reason;                 // "unet config has time_cond_proj_dim 256", "name contains 'turbo'"
  int steps_in_name = 0;              // the N of "...4step..." / "...8steps..." (0: none)
};

// What kind `name` (a folder name or file stem) is, from (in this order) the
// UNet config's time_cond_proj_dim, the scheduler class (LCMScheduler,
// TCDScheduler), the name ("turbo", "lcm", "lightning", "hyper"), then the
// scheduler's shape (trailing Euler ancestral: turbo; trailing Euler:
// lightning). scheduler_config may be null (single files).
FewStepDetection detect_few_step(const std::string& name, const nlohmann::json& scheduler_config,
                                 const UNetConfig& unet);

// Detects the kind of a model being loaded or described and applies its row
// to info (kind, steps, CFG, sampler; size for single files) and, where the
// row names a timestep spacing, to the scheduler config (the kind needs it:
// a Lightning UNet in a folder with SDXL base's "leading" config too).
// own_scheduler: the scheduler config came with the model (a diffusers
// folder); its class then keeps choosing the sampler.
void apply_few_step_defaults(ModelInfo& info, nlohmann::json& scheduler_config, const UNetConfig& unet,
                             bool own_scheduler);

}  // namespace diffuse
