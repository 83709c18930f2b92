// AUTOMATIC1111's hires fix (modules/processing.py,
// StableDiffusionProcessingTxt2Img: calculate_target_resolution, sample,
// sample_hr_pass) on the multi-pass hooks of GenerationParams: a first pass
// at the base size, an upscale of its latents (torch's interpolate, the
// "Latent ..." modes) or of its decoded image (a pixel upscaler), then an
// img2img pass at the target size. Where it departs from A1111 (the second
// pass's step rule and noise) is listed in docs/hires-fix.md.
#include "pipeline/hires.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "adapters/upscalers.h"
#include "core/error.h"
#include "core/ops.h"
#include "io/infotext.h"
#include "pipeline/pipeline_impl.h"
#include "sampling/rng.h"
#include "sampling/sampler_catalog.h"
#include "sampling/scheduler.h"

namespace diffuse {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMinSide = 64;
constexpr int kMaxSide = 4096;  // GenerationParams::validate's limit
constexpr int kMaxSteps = 1000;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// PIL's Image.resize(resample=NEAREST) (A1111's "Nearest" upscaler): output
// pixel x reads input floor((x + 0.5) * in / out).
image::Rgb resize_nearest(const image::Rgb& in, int width, int height) {
  image::Rgb out;
  out.width = width;
  out.height = height;
  out.px.resize(static_cast<size_t>(width) * height * 3);
  const double sx = static_cast<double>(in.width) / width, sy = static_cast<double>(in.height) / height;
  for (int y = 0; y < height; ++y) {
    const int iy = std::min(static_cast<int>((y + 0.5) * sy), in.height - 1);
    for (int x = 0; x < width; ++x) {
      const int ix = std::min(static_cast<int>((x + 0.5) * sx), in.width - 1);
      for (int c = 0; c < 3; ++c) {
        out.px[(static_cast<size_t>(y) * width + x) * 3 + c] = in.px[(static_cast<size_t>(iy) * in.width + ix) * 3 + c];
      }
    }
  }
  return out;
}

// The timestep indices a pass of `steps` steps walks (what its progress
// callback counts): all of them for text-to-image, the last ones that
// `strength` picks for img2img (pipeline.cpp's diffusers rule).
int pass_ticks(const Pipeline::Impl& m, const std::string& sampler, const std::string& schedule, int steps,
               double strength) {
  std::unique_ptr<Scheduler> s = make_scheduler(sampler, m.sampling_config(), schedule);
  s->set_timesteps(steps);
  const int total = static_cast<int>(s->timesteps().size());
  if (strength >= 1.0) return total;
  const int init = std::min(static_cast<int>(steps * strength), steps);
  return total - (steps - init) * s->order();
}

}  // namespace

std::vector<std::string> hires_upscaler_names(const HiresUpscalerModels& models) {
  std::vector<std::string> names = {"None", "Lanczos", "Nearest"};
  if (models.names) {
    for (const std::string& n : models.names()) names.push_back(n);
  }
  for (const image::LatentMode& m : image::latent_modes()) names.push_back(m.name);
  return names;
}

HiresUpscalerModels hires_models_from(std::shared_ptr<const UpscalerLibrary> lib) {
  HiresUpscalerModels m;
  if (!lib) return m;
  m.names = [lib] {
    std::vector<std::string> names;
    for (const UpscalerInfo& u : lib->list()) {
      if (u.kind == "esrgan") names.push_back(u.name);
    }
    return names;
  };
  m.upscale = [lib](const std::string& name, const image::Rgb& in, int w, int h, Device device) {
    return lib->upscale(name, in, w, h, device);
  };
  return m;
}

HiresPlan plan_hires(const HiresParams& h, int width, int height) {
  HiresPlan plan;
  DIFFUSE_CHECK_ARG(h.resize_x >= 0 && h.resize_y >= 0 && h.resize_x <= kMaxSide && h.resize_y <= kMaxSide,
                    "hires resize must be between 0 and " + std::to_string(kMaxSide) + " pixels a side, got " +
                        std::to_string(h.resize_x) + "x" + std::to_string(h.resize_y));
  const bool resize = h.resize_x > 0 || h.resize_y > 0;
  int to_x = 0, to_y = 0, crop_x = 0, crop_y = 0;  // crop in latent cells
  if (!resize) {
    DIFFUSE_CHECK_ARG(std::isfinite(h.scale) && h.scale > 1.0,
                      "hires scale must be above 1 (got " + infotext_number(h.scale) +
                          "), or set hires resize to a target size");
    DIFFUSE_CHECK_ARG(h.scale * std::max(width, height) <= kMaxSide + 8.0,
                      "hires scale " + infotext_number(h.scale) + " makes " + std::to_string(width) + "x" +
                          std::to_string(height) + " larger than " + std::to_string(kMaxSide) + " pixels a side");
    to_x = static_cast<int>(width * h.scale);
    to_y = static_cast<int>(height * h.scale);
  } else if (h.resize_y == 0) {
    to_x = h.resize_x;
    to_y = static_cast<int>(static_cast<int64_t>(h.resize_x) * height / width);
  } else if (h.resize_x == 0) {
    to_x = static_cast<int>(static_cast<int64_t>(h.resize_y) * width / height);
    to_y = h.resize_y;
  } else {  // cover both, then crop the overhang (whole latent cells)
    const double src_ratio = static_cast<double>(width) / height;
    const double dst_ratio = static_cast<double>(h.resize_x) / h.resize_y;
    if (src_ratio < dst_ratio) {
      to_x = h.resize_x;
      to_y = static_cast<int>(static_cast<int64_t>(h.resize_x) * height / width);
    } else {
      to_x = static_cast<int>(static_cast<int64_t>(h.resize_y) * width / height);
      to_y = h.resize_y;
    }
    crop_x = (to_x - h.resize_x) / 8;
    crop_y = (to_y - h.resize_y) / 8;
  }
  plan.upscale_width = to_x / 8 * 8;
  plan.upscale_height = to_y / 8 * 8;
  plan.width = plan.upscale_width - crop_x * 8;
  plan.height = plan.upscale_height - crop_y * 8;
  plan.crop_left = crop_x / 2 * 8;
  plan.crop_top = crop_y / 2 * 8;
  auto ok = [](int v) { return v >= kMinSide && v <= kMaxSide; };
  DIFFUSE_CHECK_ARG(ok(plan.upscale_width) && ok(plan.upscale_height) && ok(plan.width) && ok(plan.height),
                    "the hires target " + std::to_string(plan.width) + "x" + std::to_string(plan.height) +
                        " (upscaled to " + std::to_string(plan.upscale_width) + "x" +
                        std::to_string(plan.upscale_height) + " from " + std::to_string(width) + "x" +
                        std::to_string(height) + ") must be between " + std::to_string(kMinSide) + " and " +
                        std::to_string(kMaxSide) + " pixels a side");
  DIFFUSE_CHECK_ARG(plan.width != width || plan.height != height,
                    "the hires target " + std::to_string(plan.width) + "x" + std::to_string(plan.height) +
                        " is the first pass's size: nothing to upscale");

  // The upscaler: a latent mode, a built-in pixel resize, or a model.
  if (const image::LatentMode* m = image::find_latent_mode(h.upscaler)) {
    plan.latent = m;
    plan.upscaler = m->name;
    plan.kind = "latent";
  } else if (lower(h.upscaler) == "none" || lower(h.upscaler) == "lanczos" || lower(h.upscaler) == "nearest") {
    plan.kind = lower(h.upscaler);
    plan.upscaler = plan.kind == "none" ? "None" : plan.kind == "lanczos" ? "Lanczos" : "Nearest";
  } else {
    // A model, by its listed name (case-insensitive, as A1111 matches upscaler names).
    if (h.models.names && h.models.upscale) {
      for (const std::string& n : h.models.names()) {
        if (lower(n) == lower(h.upscaler)) {
          plan.upscaler = n;
          plan.kind = "model";
        }
      }
    }
    DIFFUSE_CHECK_ARG(!plan.upscaler.empty(), "unknown hires upscaler '" + h.upscaler + "' (available: " +
                                                  join(hires_upscaler_names(h.models)) + ")");
  }

  DIFFUSE_CHECK_ARG(h.second_pass_steps >= 0 && h.second_pass_steps <= kMaxSteps,
                    "hires steps must be between 0 (the first pass's) and " + std::to_string(kMaxSteps) + ", got " +
                        std::to_string(h.second_pass_steps));
  DIFFUSE_CHECK_ARG(std::isfinite(h.denoising_strength) && h.denoising_strength > 0.0 && h.denoising_strength <= 1.0,
                    "hires denoising strength must be above 0 and at most 1, got " +
                        infotext_number(h.denoising_strength));
  if (!h.sampler.empty()) {
    DIFFUSE_CHECK_ARG(find_sampler(h.sampler) != nullptr,
                      "unknown hires sampler '" + h.sampler + "' (available: " + sampler_names_list() + ")");
  }
  return plan;
}

Tensor hires_upscale_latents(const Tensor& latents, const HiresPlan& plan) {
  DIFFUSE_CHECK_ARG(plan.latent != nullptr, "[hires] '" + plan.upscaler + "' is not a latent upscale mode");
  const Tensor up = image::resize_latents(latents, plan.upscale_height / 8, plan.upscale_width / 8,
                                          plan.latent->interp, plan.latent->antialias);
  if (plan.width == plan.upscale_width && plan.height == plan.upscale_height) return up;
  const int64_t top = plan.crop_top / 8, left = plan.crop_left / 8;
  return up.slice(2, top, top + plan.height / 8).slice(3, left, left + plan.width / 8).contiguous();
}

image::Rgb hires_upscale_image(const image::Rgb& im, const HiresPlan& plan, const HiresParams& h, Device device) {
  DIFFUSE_CHECK_ARG(plan.latent == nullptr, "[hires] '" + plan.upscaler + "' is a latent mode, not a pixel upscaler");
  image::Rgb up;
  const int w = plan.upscale_width, ht = plan.upscale_height;
  if (plan.kind == "none" || plan.kind == "lanczos") {
    up = image::resize(im, w, ht);
  } else if (plan.kind == "nearest") {
    up = resize_nearest(im, w, ht);
  } else {
    DIFFUSE_CHECK_ARG(static_cast<bool>(h.models.upscale),
                      "[hires] the upscaler '" + plan.upscaler + "' needs an upscaler library");
    up = h.models.upscale(plan.upscaler, im, w, ht, device);
  }
  if (plan.width == w && plan.height == ht) return up;
  return image::crop(up, image::Rect{plan.crop_left, plan.crop_top, plan.width, plan.height});
}

std::vector<std::pair<std::string, std::string>> hires_infotext(const HiresParams& h, const HiresPlan& plan,
                                                                const std::string& first_sampler,
                                                                const std::string& prompt,
                                                                const std::string& negative_prompt) {
  std::vector<std::pair<std::string, std::string>> f;
  if (h.resize_x == 0 && h.resize_y == 0) {
    f.emplace_back("Hires upscale", infotext_number(h.scale));
  } else {
    f.emplace_back("Hires resize", std::to_string(h.resize_x) + "x" + std::to_string(h.resize_y));
  }
  if (h.second_pass_steps > 0) f.emplace_back("Hires steps", std::to_string(h.second_pass_steps));
  f.emplace_back("Hires upscaler", plan.upscaler);
  if (!h.sampler.empty()) {
    const SamplerSpec* s = find_sampler(h.sampler);
    const std::string name = s ? s->a1111_name : h.sampler;
    if (name != first_sampler) f.emplace_back("Hires sampler", name);
  }
  if (h.prompt && !h.prompt->empty() && *h.prompt != prompt) f.emplace_back("Hires prompt", *h.prompt);
  if (h.negative_prompt && !h.negative_prompt->empty() && *h.negative_prompt != negative_prompt) {
    f.emplace_back("Hires negative prompt", *h.negative_prompt);
  }
  return f;
}

GenerationResult generate_hires(Pipeline& pipe, const Pipeline::Impl& impl, const GenerationParams& params,
                                const ProgressCallback& progress) {
  const auto t_start = Clock::now();
  const HiresParams& h = params.hires;
  DIFFUSE_CHECK_ARG(!params.edit.active() && !params.init_latents.defined() && params.denoising_start == 0.0 &&
                        params.denoising_end == 1.0,
                    "the hires fix is for text-to-image: it cannot start from an init image or init latents");
  DIFFUSE_CHECK_ARG(!params.refiner.enabled(), "the hires fix and the SDXL refiner cannot be used together");

  // What both passes share: the seed's one generator, the first pass's settings resolved.
  GenerationParams shared = params;
  shared.hires = HiresParams{};
  const ModelInfo& info = impl.info;
  if (shared.width == 0) shared.width = info.default_width;
  if (shared.height == 0) shared.height = info.default_height;
  if (shared.steps == 0) shared.steps = info.default_steps;
  if (shared.sampler.empty()) shared.sampler = info.default_sampler;
  if (shared.cfg_scale < 0) shared.cfg_scale = info.default_cfg;
  if (shared.seed < 0) {
    std::random_device rd;
    shared.seed = static_cast<int64_t>((static_cast<uint64_t>(rd()) << 32 | rd()) & 0xffffffffULL);
  }
  if (!shared.generator) shared.generator = make_generator(shared.rng, static_cast<uint64_t>(shared.seed));
  const HiresPlan plan = plan_hires(h, shared.width, shared.height);
  const bool latent = plan.latent != nullptr;

  std::vector<std::string> prompts = shared.prompts;
  if (prompts.empty()) prompts.assign(static_cast<size_t>(shared.images), shared.prompt);
  const int n = static_cast<int>(prompts.size());
  std::vector<std::string> negatives = shared.negative_prompts;
  if (negatives.empty()) negatives.assign(static_cast<size_t>(n), shared.negative_prompt.value_or(""));

  // The second pass: img2img at the target size.
  GenerationParams second = shared;
  second.initial_latents = Tensor();
  second.width = second.height = 0;  // from its latents / image
  second.steps = h.second_pass_steps > 0 ? h.second_pass_steps : shared.steps;
  if (!h.sampler.empty()) second.sampler = h.sampler;
  second.edit = EditParams{};
  second.edit.strength = h.denoising_strength;
  if (h.prompt && !h.prompt->empty()) {
    second.prompt = *h.prompt;
    if (!second.prompts.empty()) second.prompts.assign(second.prompts.size(), *h.prompt);
  }
  if (h.negative_prompt && !h.negative_prompt->empty()) {
    second.negative_prompt = *h.negative_prompt;
    if (!second.negative_prompts.empty()) second.negative_prompts.assign(second.negative_prompts.size(), *h.negative_prompt);
  }
  // SDXL micro-conditioning: sizes the user set stay; the defaults follow each pass's size.
  // A pixel upscaler with several images runs the second pass once per image (each its own init image).
  const int second_calls = latent ? 1 : n;

  // Progress over the whole call: the second pass's tick k is reported as the first pass's ticks + k.
  const int ticks1 = pass_ticks(impl, shared.sampler, shared.schedule, shared.steps, 1.0);
  const int ticks2 = pass_ticks(impl, second.sampler, second.schedule, second.steps, h.denoising_strength);
  const int total_ticks = ticks1 + second_calls * ticks2;
  int done_ticks = 0;
  auto pass_progress = [&]() -> ProgressCallback {
    if (!progress) return {};
    return [&](const StepProgress& sp) {
      StepProgress q = sp;
      q.step = done_ticks + sp.step;
      q.total_steps = total_ticks;
      return progress(q);
    };
  };

  // 1. The first pass: latents out (decoded too for a pixel upscaler, or
  // where a stop must return the partial images, as A1111 returns the first
  // pass's images when interrupted there).
  GenerationParams first = shared;
  first.output_latents = latent && !shared.decode_when_stopped;
  GenerationResult r1 = pipe.generate(first, pass_progress());
  if (r1.stopped_at_step > 0) {
    r1.timings.total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
    return r1;
  }
  done_ticks = ticks1;

  // 2. Upscale, 3. the second pass.
  std::vector<GenerationResult> passes;
  if (latent) {
    second.init_latents = hires_upscale_latents(r1.final_latents, plan);
    passes.push_back(pipe.generate(second, pass_progress()));
  } else {
    for (int b = 0; b < n; ++b) {
      GenerationParams one = second;
      one.images = 1;
      one.prompts.clear();
      one.negative_prompts.clear();
      one.prompt = second.prompts.empty() ? second.prompt : second.prompts[static_cast<size_t>(b)];
      if (!second.negative_prompts.empty()) one.negative_prompt = second.negative_prompts[static_cast<size_t>(b)];
      if (shared.seed_per_image && b > 0) {  // image b's own stream, as its first pass had
        one.seed = shared.seed + b;
        one.generator = make_generator(shared.rng, static_cast<uint64_t>(one.seed));
      }
      const Image& im = r1.images[static_cast<size_t>(b)];
      image::Rgb rgb;
      rgb.width = im.width;
      rgb.height = im.height;
      rgb.px = im.rgb;
      one.edit.init_image = hires_upscale_image(rgb, plan, h, impl.device);
      passes.push_back(pipe.generate(one, pass_progress()));
      done_ticks += ticks2;
      if (passes.back().stopped_at_step > 0) break;
    }
  }

  // One result for the call: the second pass's images, labelled as A1111
  // labels a hires image (the first pass's size, steps and sampler).
  GenerationResult out = std::move(passes[0]);
  for (size_t i = 1; i < passes.size(); ++i) {
    GenerationResult& r = passes[i];
    for (Image& im : r.images) out.images.push_back(std::move(im));
    if (r.final_latents.defined()) out.final_latents = concat({out.final_latents, r.final_latents}, 0);
    if (r.decoded.defined()) out.decoded = concat({out.decoded, r.decoded}, 0);
    out.steps_run += r.steps_run;
    if (r.stopped_at_step > 0) out.stopped_at_step = r.stopped_at_step;
    out.warnings.insert(out.warnings.end(), r.warnings.begin(), r.warnings.end());
    out.timings.text_encode_s += r.timings.text_encode_s;
    out.timings.vae_encode_s += r.timings.vae_encode_s;
    out.timings.denoise_s += r.timings.denoise_s;
    out.timings.vae_decode_s += r.timings.vae_decode_s;
    out.timings.unet_evals += r.timings.unet_evals;
    out.timings.loop_transfers += r.timings.loop_transfers;
  }
  const SamplerSpec* s1 = find_sampler(shared.sampler);
  const std::string first_sampler = s1 ? s1->a1111_name : shared.sampler;
  for (size_t b = 0; b < out.images.size(); ++b) {
    Image& im = out.images[b];
    InfotextFields f = parse_infotext(im.parameters);
    f.prompt = prompts[b];
    f.negative_prompt = negatives[b];
    f.steps = shared.steps;
    f.sampler = first_sampler;
    f.width = shared.width;
    f.height = shared.height;
    im.seed = shared.seed_per_image ? shared.seed + static_cast<int64_t>(b) : shared.seed;
    f.seed = im.seed;
    f.denoising_strength = h.denoising_strength;
    std::vector<std::pair<std::string, std::string>> extra;
    if (!latent && n > 1 && !shared.seed_per_image) {  // the per-image second passes dropped these
      extra.emplace_back("Batch size", std::to_string(n));
      extra.emplace_back("Batch pos", std::to_string(b));
    }
    for (auto& kv : f.extra) extra.push_back(kv);
    for (auto& kv : hires_infotext(h, plan, first_sampler, prompts[b], negatives[b])) extra.push_back(kv);
    f.extra = std::move(extra);
    im.parameters = format_infotext(f);
  }
  out.seed = shared.seed;
  out.steps_run += r1.steps_run;
  if (out.stopped_at_step > 0) out.stopped_at_step += ticks1;
  out.warnings.insert(out.warnings.begin(), r1.warnings.begin(), r1.warnings.end());
  out.timings.add(r1.timings);
  out.timings.total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  return out;
}

}  // namespace diffuse
