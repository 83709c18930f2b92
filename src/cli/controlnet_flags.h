// The ControlNet flags of `diffuse generate` (docs/controlnet.md):
//   --controlnet MODEL[:WEIGHT]   a ControlNet file / folder, or a name in --controlnet-dir (repeatable)
//   --control-image FILE          its control image, paired with the --controlnet of the same rank
//   --control-start / --control-end / --control-mode / --control-resize / --guess-mode
//   --preprocess NAME / --preprocess-res / --preprocess-a / --preprocess-b
//                                 one value for every unit, or one per unit
//   --controlnet-dir DIR          where names are looked up (default models/ControlNet, as A1111)
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace diffuse::cli {

struct ControlNetFlags {
  std::vector<std::string> models, images, modes, resizes, dirs;
  std::vector<double> starts, ends;
  // The preprocessor run on each control image (image/control_preprocess.h) and its sliders.
  std::vector<std::string> preprocess;
  std::vector<double> preprocess_res, preprocess_a, preprocess_b;
  bool guess_mode = false;
};

void add_controlnet_flags(CLI::App* c, ControlNetFlags& f);
// Fills p.controlnets (reads the images). Mismatched counts, an unknown model,
// an unreadable image or a bad value: Error(kInvalidArgument / kNotFound / kIo)
// naming the flag (exit 2 / 1).
void apply_controlnet_flags(const ControlNetFlags& f, GenerationParams& p);

}  // namespace diffuse::cli
