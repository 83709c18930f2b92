// ControlNet preprocessors ("annotators") that need no network, named and
// parameterised as sd-webui-controlnet names them (docs/controlnet.md
// "Preprocessors"): none, canny, invert, tile_resample, blur_gaussian,
// shuffle, inpaint, inpaint_only. They follow the extension's
// scripts/preprocessor code (processor.py, model_free_preprocessors.py,
// annotator/shuffle) on OpenCV (Debian libopencv-imgproc), so an image gives
// the extension's control map:
//  - processor_res: the image is scaled so that its short side is the
//    resolution (cubic when growing, area when shrinking; sizes rounded half to
//    even as numpy's round), padded to a multiple of 64 by repeating the
//    edges, processed, and the padding cut off (resize_image_with_pad);
//  - canny: cv::Canny(low = threshold_a, high = threshold_b) on the RGB image
//    (the channel with the strongest gradient), as a 3-channel map;
//  - invert: 255 - v (for white-background line art); no resizing;
//  - tile_resample: area down-sampling by threshold_a (rates below 1.1 keep
//    the image), no processor_res;
//  - blur_gaussian: cv::GaussianBlur with sigma threshold_a after the resize;
//  - shuffle: the content shuffle of annotator/shuffle (a smooth random flow
//    field: numpy's legacy RandomState(seed) uniform noise on a coarse grid,
//    cubic-upsampled, normalised, used as cv::remap's coordinates);
//  - inpaint / inpaint_only: the image unchanged plus the mask (white =
//    repaint); the pipeline gives the ControlNet -1 at masked pixels
//    (control_v11p_sd15_inpaint's convention).
// Preprocessors that run networks (depth, openpose, lineart, softedge, ...)
// are listed with available = false and the reason; they are not run.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "image/image_ops.h"

namespace diffuse::image {

// One slider of sd-webui-controlnet's preprocessor_sliders_config.
struct PreprocessorSlider {
  std::string name;  // "Preprocessor Resolution", "Canny Low Threshold", ...
  double value = 0, min = 0, max = 0, step = 0;  // step 0: not given (an integer slider)
};

struct PreprocessorInfo {
  std::string name;   // the extension's module name: "canny", "tile_resample"
  std::string label;  // its UI label when it differs ("invert (from white bg & black line)"), else ""
  bool available = true;
  std::string reason;  // why not, for unavailable ones
  std::optional<PreprocessorSlider> resolution, threshold_a, threshold_b;
  bool needs_mask = false;  // inpaint preprocessors
};

// Every preprocessor, the usable ones first ("none" first of all).
const std::vector<PreprocessorInfo>& control_preprocessors();
// By name or label (case-insensitive; the extension's older names too, e.g.
// "inpaint_global_harmonious"); nullptr when unknown.
const PreprocessorInfo* find_control_preprocessor(const std::string& name);
// "none, canny, invert, ..." (the available ones), for error messages.
std::string control_preprocessor_list();

struct PreprocessOptions {
  // Values below 0 take the slider's default (the extension's bound_check_params);
  // others must lie in the slider's range. Ignored by a preprocessor without that slider.
  double resolution = -1, threshold_a = -1, threshold_b = -1;
  uint32_t seed = 0;  // shuffle: numpy's np.random.seed
  Gray mask;          // inpaint preprocessors: white (>127 after resizing) = repaint
};

struct ControlMap {
  Rgb image;
  Gray mask;  // inpaint preprocessors: the mask at the image's size; empty otherwise
};

// Runs the preprocessor `module` on `input`. Throws Error(kInvalidArgument)
// for an unknown module (listing the available ones), an unavailable one
// (with the reason), a value outside its slider's range (naming it and the
// range), an inpaint preprocessor without a mask or with a mask of another size.
ControlMap preprocess_control(const std::string& module, const Rgb& input, const PreprocessOptions& options);

// sd-webui-controlnet's pixel_perfect_resolution: the processor resolution
// that maps the image's short side 1:1 onto the output (resize and fill: the
// smaller scale of the two axes, otherwise the larger), rounded.
int pixel_perfect_resolution(int raw_width, int raw_height, int target_width, int target_height, ResizeMode mode);

// The picture the extension shows for an inpaint unit (its RGBA display with
// alpha 255 - mask / 2), flattened over black: masked pixels at half brightness.
Rgb inpaint_display(const Rgb& image, const Gray& mask);

}  // namespace diffuse::image
