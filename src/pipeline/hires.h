// AUTOMATIC1111's hires fix (docs/hires-fix.md): the parts a caller can run
// one at a time (the sizes, the upscale of either kind) and the whole
// two-pass call that Pipeline::generate dispatches to when
// GenerationParams::hires.enabled is set.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "image/latent_resize.h"
#include "pipeline/pipeline.h"

namespace diffuse {

class UpscalerLibrary;  // adapters/upscalers.h

// What a hires fix will do, from its fields and the first pass's size
// (A1111's StableDiffusionProcessingTxt2Img.calculate_target_resolution).
struct HiresPlan {
  // A1111's hr_upscale_to_x/y: int(size * scale), or from hr_resize_x/y with
  // the aspect ratio kept (the other side by floor division) or, both set,
  // the smallest size covering them. Floored to multiples of 8 here.
  int upscale_width = 0, upscale_height = 0;
  // The second pass's size: the upscale size less the crop (both resize
  // fields set: A1111's truncate_x/y, whole latent cells, centred; the odd
  // cell comes off the right / bottom).
  int width = 0, height = 0;
  int crop_left = 0, crop_top = 0;  // pixels (multiples of 8) cut from the left / top of the upscale
  const image::LatentMode* latent = nullptr;  // a latent mode, or nullptr: a pixel upscaler
  std::string upscaler;  // the canonical name ("Latent (bicubic)", "Lanczos", a model's stem)
  std::string kind;      // "latent" | "none" | "lanczos" | "nearest" | "model"
};

// Checks the fields (scale, resize, upscaler name, steps, strength, sampler)
// and works out the sizes for a first pass of width x height. Throws
// kInvalidArgument naming the field: a scale <= 1 with no resize, a target
// outside 64-4096 pixels a side, an unknown upscaler (listing the known ones).
HiresPlan plan_hires(const HiresParams& h, int width, int height);

// The upscaler names a hires fix accepts, in A1111's /sdapi/v1/upscalers
// order: None, Lanczos, Nearest, the upscaler models, then the latent modes.
std::vector<std::string> hires_upscaler_names(const HiresUpscalerModels& models);

// An upscaler library's models (ESRGAN files) as a hires fix uses them.
HiresUpscalerModels hires_models_from(std::shared_ptr<const UpscalerLibrary> lib);

// The first pass's latents [n, 4, h/8, w/8] resized by the plan's latent mode
// to the upscale size and cropped to the plan's size (f32, on their device).
Tensor hires_upscale_latents(const Tensor& latents, const HiresPlan& plan);
// The first pass's image upscaled by the plan's pixel upscaler to the
// upscale size and cropped to the plan's size. "None" and "Lanczos":
// image::resize (OpenCV's 4-lobe Lanczos growing, area averaging shrinking);
// "Nearest": PIL's NEAREST rule; a model: h.models.upscale() on `device`.
image::Rgb hires_upscale_image(const image::Rgb& im, const HiresPlan& plan, const HiresParams& h, Device device);

// The infotext fields A1111 adds for a hires fix ("Hires upscale: 2" or
// "Hires resize: 1024x768", "Hires steps", "Hires upscaler", "Hires sampler",
// "Hires prompt", "Hires negative prompt"), in its order.
std::vector<std::pair<std::string, std::string>> hires_infotext(const HiresParams& h, const HiresPlan& plan,
                                                                const std::string& first_sampler,
                                                                const std::string& prompt,
                                                                const std::string& negative_prompt);

// The two passes (Pipeline::generate with hires.enabled): one generator for
// the whole call, progress counted over both passes, the result of the second
// pass with the first pass's size, steps and sampler in its infotext.
GenerationResult generate_hires(Pipeline& pipe, const Pipeline::Impl& impl, const GenerationParams& params,
                                const ProgressCallback& progress);

}  // namespace diffuse
