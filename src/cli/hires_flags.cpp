#include "cli/hires_flags.h"

#include <strings.h>

#include <cstdio>

#include "adapters/upscalers.h"
#include "core/error.h"
#include "image/latent_resize.h"
#include "pipeline/hires.h"
#include "sampling/sampler_catalog.h"

namespace diffuse::cli {

void add_hires_flags(CLI::App* c, HiresFlags& f) {
  const std::string group = "Hires fix";
  c->add_option("--hires", f.hires,
                "Hires fix (A1111's enable_hr): a first pass at the base size, an upscale, then img2img at the "
                "target. 2x / 1.5x: a scale; WxH: a target size (Wx0 or 0xH keep the aspect ratio; both: crop)")
      ->group(group);
  c->add_option("--hires-steps", f.steps, "Steps of the second pass (default 0: the first pass's)")
      ->check(CLI::Range(0, 1000))
      ->group(group);
  c->add_option("--hires-denoise", f.denoise,
                "Denoising strength of the second pass (default 0.7): int(steps x strength) steps run")
      ->check(CLI::Range(0.0, 1.0))
      ->group(group);
  std::string names;
  for (const std::string& n : hires_upscaler_names({})) names += (names.empty() ? "" : ", ") + n;
  c->add_option("--hires-upscaler", f.upscaler,
                "Upscaler (default: Latent): " + names + ", or an ESRGAN model by name (--upscaler-dir)")
      ->group(group);
  c->add_option("--hires-prompt", f.prompt, "Prompt of the second pass (default: the prompt)")->group(group);
  c->add_option("--hires-negative-prompt", f.negative_prompt,
                "Negative prompt of the second pass (default: the negative prompt)")
      ->group(group);
  c->add_option("--hires-sampler", f.sampler, "Sampler of the second pass (default: --sampler)")->group(group);
  c->add_option("--upscaler-dir", f.upscaler_dirs,
                "Folder of ESRGAN / Real-ESRGAN models that --hires-upscaler names by file stem (default: "
                "models/ESRGAN); repeatable")
      ->allow_extra_args(false)
      ->group(group);
}

void apply_hires_flags(const HiresFlags& f, GenerationParams& p) {
  if (f.hires.empty()) {
    DIFFUSE_CHECK_ARG(f.steps == 0 && f.denoise == 0.7 && f.upscaler == "Latent" && !f.prompt &&
                          !f.negative_prompt && f.sampler.empty(),
                      "--hires-steps, --hires-denoise, --hires-upscaler, --hires-prompt, --hires-negative-prompt "
                      "and --hires-sampler need --hires");
    return;
  }
  HiresParams& h = p.hires;
  h.enabled = true;
  const std::string& s = f.hires;
  int w = 0, ht = 0;
  char x = 0, tail = 0;
  double scale = 0;
  if (std::sscanf(s.c_str(), "%d%c%d%c", &w, &x, &ht, &tail) == 3 && (x == 'x' || x == 'X')) {
    DIFFUSE_CHECK_ARG(w >= 0 && ht >= 0 && (w > 0 || ht > 0), "--hires WxH needs a positive size, got '" + s + "'");
    h.resize_x = w;
    h.resize_y = ht;
  } else if ((std::sscanf(s.c_str(), "%lf%c%c", &scale, &x, &tail) == 2 && (x == 'x' || x == 'X')) ||
             std::sscanf(s.c_str(), "%lf%c", &scale, &tail) == 1) {
    h.scale = scale;
  } else {
    throw_error(ErrorCode::kInvalidArgument, "--hires expects a scale (2x, 1.5x) or a size (1024x768), got '" + s + "'");
  }
  h.second_pass_steps = f.steps;
  h.denoising_strength = f.denoise;
  h.upscaler = f.upscaler;
  h.prompt = f.prompt;
  h.negative_prompt = f.negative_prompt;
  h.sampler = f.sampler;
  const std::string u = f.upscaler;
  auto is = [&u](const char* name) { return strcasecmp(u.c_str(), name) == 0; };
  if (!image::find_latent_mode(u) && !is("None") && !is("Lanczos") && !is("Nearest")) {
    h.models = hires_models_from(std::make_shared<const UpscalerLibrary>(f.upscaler_dirs));  // a model by name
  }
  DIFFUSE_CHECK_ARG(!p.edit.active(), "--hires is for text-to-image: it cannot be used with --init-image");
  // The fields' own checks now, before a model is loaded (the size is checked again at the model's).
  (void)plan_hires(h, p.width > 0 ? p.width : 512, p.height > 0 ? p.height : 512);
}

}  // namespace diffuse::cli
