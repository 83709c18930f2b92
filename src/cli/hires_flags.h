// The hires-fix flags of `diffuse generate` and `diffuse bench`
// (docs/hires-fix.md): --hires 2x|WxH, --hires-steps, --hires-denoise,
// --hires-upscaler, --hires-prompt, --hires-negative-prompt, --hires-sampler.
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "pipeline/pipeline.h"

namespace diffuse::cli {

struct HiresFlags {
  std::string hires;  // "2x", "1.5x", "1024x768", "1024x0"; "": off
  int steps = 0;
  double denoise = 0.7;
  std::string upscaler = "Latent";
  std::optional<std::string> prompt, negative_prompt;
  std::string sampler;
  std::vector<std::string> upscaler_dirs;  // ESRGAN models for --hires-upscaler (default models/ESRGAN)
};

void add_hires_flags(CLI::App* c, HiresFlags& f);
// Sets p.hires from the flags (nothing when --hires is absent). A bad --hires
// value, or a --hires-* flag without --hires, is Error(kInvalidArgument) (exit 2).
void apply_hires_flags(const HiresFlags& f, GenerationParams& p);

}  // namespace diffuse::cli
