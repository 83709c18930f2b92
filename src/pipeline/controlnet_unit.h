// ControlNet units of a generation (GenerationParams::controlnets; docs/controlnet.md).
// Each unit is one ControlNet with its own control image, weight (diffusers'
// controlnet_conditioning_scale) and the fraction of the schedule it acts in
// (control_guidance_start / end); several units add their residuals, as
// diffusers' MultiControlNetModel does. The pipeline loads each file once and
// keeps it while calls ask for it (pipeline/controlnet_step.cpp).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "image/image_ops.h"

namespace diffuse {

// sd-webui-controlnet's control_mode: balanced (diffusers' behaviour); "my
// prompt is more important" (soft injection: the k-th of the K + 1 residuals
// scaled by 0.825^(K - k)); "ControlNet is more important" (the same soft
// scales, and the control on the conditional half of the CFG batch only).
enum class ControlMode { kBalanced = 0, kPrompt = 1, kControlNet = 2 };
// "balanced" | "prompt" | "controlnet", 0 | 1 | 2, or the extension's labels
// ("Balanced", "My prompt is more important", "ControlNet is more important").
// Throws Error(kInvalidArgument) naming the choices.
ControlMode control_mode_from_name(const std::string& s);
const char* control_mode_name(ControlMode m);        // "balanced", "prompt", "controlnet"
const char* control_mode_a1111_label(ControlMode m);  // the extension's label

struct ControlNetUnit {
  std::string path;       // a ControlNet file or folder (models/controlnet.h)
  image::Rgb image;       // the control image (already preprocessed: canny edges, depth map, ...)
  float weight = 1.0f;    // conditioning scale, 0 to 2
  double guidance_start = 0.0, guidance_end = 1.0;  // fractions of the schedule, start < end
  ControlMode control_mode = ControlMode::kBalanced;
  // The control image to the output size: just resize (diffusers), crop and resize, resize and fill.
  image::ResizeMode resize_mode = image::ResizeMode::kJustResize;
  bool guess_mode = false;  // diffusers' guess_mode: log-spaced scales 0.1..1, conditional half only
  // Inpaint units (the inpaint / inpaint_only preprocessors, image/control_preprocess.h):
  // white (> 127 after resizing with the image) = masked; the ControlNet sees -1
  // there (control_v11p_sd15_inpaint's convention). Empty: no mask.
  image::Gray mask;
  // For the infotext (A1111's "ControlNet N" field): the preprocessor that made
  // the image, and whether pixel-perfect sizing was asked for.
  std::string module = "none";
  bool pixel_perfect = false;
};

// Throws Error(kInvalidArgument) naming the unit and the field: an empty path
// or image, a weight outside [0, 2] or not finite, start/end outside [0, 1] or start >= end.
void validate_controlnet_units(const std::vector<ControlNetUnit>& units);

// The infotext fields of the units, as sd-webui-controlnet writes them:
// ("ControlNet 0", "Module: none, Model: control_v11p_sd15_canny [d14c016b], Weight: 1, ...").
// The hash is sd-webui-controlnet's short hash (controlnet_library.h).
std::vector<std::pair<std::string, std::string>> controlnet_infotext(const std::vector<ControlNetUnit>& units);

}  // namespace diffuse
