// The SDXL refiner hand-off (docs/refiner.md): diffusers' "ensemble of
// experts" (StableDiffusionXLPipeline(denoising_end=f, output_type="latent")
// then StableDiffusionXLImg2ImgPipeline(image=latents, denoising_start=f)) and
// A1111's refiner_checkpoint / refiner_switch_at, on the multi-pass hooks of
// GenerationParams: the base runs the steps above the cut-off and hands its
// latents over undecoded; the refiner continues them with its own text
// encoder and aesthetic-score time ids. One generator serves both passes, so
// an ancestral sampler's stream goes on where the base left it.
#include <chrono>
#include <random>

#include "core/error.h"
#include "io/infotext.h"
#include "pipeline/pipeline_impl.h"
#include "sampling/rng.h"
#include "sampling/scheduler.h"

namespace diffuse {
namespace {

using Clock = std::chrono::steady_clock;

double gib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

// Memory (docs/refiner.md): both models stay on the device when they fit.
// When one does not fit beside the other, the other's weights move to host
// memory (Pipeline::park_weights) for the pass, and the call's warnings say so.
struct Residency {
  std::vector<std::string> moved;  // "name (x.x GiB)" per model moved out, in order
  double seconds = 0;              // the copies' time

  // Brings `need` onto the device, moving `other` out first if it must.
  void make_room(Pipeline& need, Pipeline& other) {
    const auto t0 = Clock::now();
    try {
      need.unpark_weights();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kOutOfMemory || other.weights_parked()) throw;
      const size_t freed = other.park_weights();
      moved.push_back(other.info().name + " (" + infotext_number(std::round(gib(freed) * 10) / 10) + " GiB)");
      need.unpark_weights();
    }
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
};

std::shared_ptr<Pipeline> resolve_refiner(Pipeline& base, const Pipeline::Impl& base_impl, const RefinerParams& r,
                                          Residency& residency) {
  if (r.model) return r.model;
  LoadOptions o;  // as the base runs
  o.device = base_impl.device;
  o.precision = base_impl.precision;
  try {
    return std::shared_ptr<Pipeline>(Pipeline::load(r.path, o));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kOutOfMemory || base_impl.device == Device::kCPU) throw;
  }
  // No room beside the base: load it with the base's weights moved out.
  const size_t freed = base.park_weights();
  residency.moved.push_back(base_impl.info.name + " (" + infotext_number(std::round(gib(freed) * 10) / 10) +
                            " GiB)");
  try {
    return std::shared_ptr<Pipeline>(Pipeline::load(r.path, o));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kOutOfMemory) throw;
    throw_error(ErrorCode::kOutOfMemory, "the refiner " + r.path + " does not fit in " +
                                             device_name(base_impl.device) + " memory even with the base model " +
                                             base_impl.info.name + " moved to host memory: " + e.what());
  }
}

// The refiner's steps for the progress total before it runs: the timesteps
// below the cut-off (denoising_start's rule, pipeline.cpp), on the base's schedule.
int steps_after_switch(const Pipeline::Impl& base, const GenerationParams& p, double switch_at) {
  const SchedulerConfig config = base.sampling_config();
  std::unique_ptr<Scheduler> s = make_scheduler(p.sampler, config, p.schedule);
  s->set_timesteps(p.steps);
  const int train = config.num_train_timesteps.value_or(1000);
  const double cutoff = std::nearbyint(train - switch_at * train);
  int count = 0;
  for (float t : s->timesteps()) count += static_cast<double>(t) < cutoff ? 1 : 0;
  if (s->order() == 2 && count % 2 == 0) ++count;
  return count;
}

// The refiner pass's images carry the base model (A1111: "Model" is the
// checkpoint that started), with "Refiner: name [hash], Refiner switch at: f".
void label_images(GenerationResult& r, const ModelInfo& base, const ModelInfo& refiner, double switch_at) {
  for (Image& im : r.images) {
    InfotextFields f = parse_infotext(im.parameters);
    f.model = base.name;
    f.model_hash = base.short_hash;
    std::string name = refiner.name;
    if (!refiner.short_hash.empty()) name += " [" + refiner.short_hash + "]";
    // Before "Version" (parse_infotext keeps unknown keys in order; A1111 writes these after the RNG).
    f.extra.emplace_back("Refiner", name);
    f.extra.emplace_back("Refiner switch at", infotext_number(switch_at));
    im.parameters = format_infotext(f);
  }
}

}  // namespace

GenerationResult generate_with_refiner(Pipeline& base, const Pipeline::Impl& base_impl,
                                       const GenerationParams& params, const ProgressCallback& progress) {
  const auto t_start = Clock::now();
  const RefinerParams& rp = params.refiner;
  DIFFUSE_CHECK_ARG(!params.init_latents.defined() && params.denoising_start == 0.0 && params.denoising_end == 1.0,
                    "a call with a refiner sets denoising_start / denoising_end itself: leave them and "
                    "init_latents unset");
  DIFFUSE_CHECK_ARG(params.edit.mask.empty() && !params.edit.outpaint.any(),
                    "the refiner hand-off runs after text-to-image or img2img, not inpainting or outpainting");
  DIFFUSE_CHECK_ARG(!base_impl.info.refiner, base_impl.info.name +
                                                 " is itself an SDXL refiner: the first pass needs a base model");

  Residency residency;
  std::shared_ptr<Pipeline> refiner = resolve_refiner(base, base_impl, rp, residency);
  const ModelInfo& ri = refiner->info();
  DIFFUSE_CHECK_ARG(ri.family == base_impl.info.family,
                    "the refiner " + ri.name + " is a " + family_name(ri.family) + " model and the base " +
                        base_impl.info.name + " a " + family_name(base_impl.info.family) +
                        " model: their latents differ");

  // What both passes share: the seed's one generator, steps, sampler, CFG.
  GenerationParams shared = params;
  shared.refiner.model.reset();
  shared.refiner.path.clear();
  if (shared.seed < 0) {
    std::random_device rd;
    shared.seed = static_cast<int64_t>((static_cast<uint64_t>(rd()) << 32 | rd()) & 0xffffffffULL);
  }
  if (!shared.generator) shared.generator = make_generator(shared.rng, static_cast<uint64_t>(shared.seed));
  if (shared.steps == 0) shared.steps = base_impl.info.default_steps;
  if (shared.sampler.empty()) shared.sampler = base_impl.info.default_sampler;
  if (shared.cfg_scale < 0) shared.cfg_scale = base_impl.info.default_cfg;

  // Progress over the whole call: the refiner's step k is reported as the base's steps + k.
  const int refiner_estimate = steps_after_switch(base_impl, shared, rp.switch_at);
  int base_steps = 0;
  auto pass_progress = [&](bool second) -> ProgressCallback {
    if (!progress) return {};
    return [&, second](const StepProgress& sp) {
      StepProgress q = sp;
      if (second) {
        q.step = base_steps + sp.step;
        q.total_steps = base_steps + sp.total_steps;
      } else {
        q.total_steps = sp.total_steps + refiner_estimate;
      }
      return progress(q);
    };
  };

  // 1. The base: the steps down to the switch, latents out.
  GenerationParams p1 = shared;
  p1.denoising_end = rp.switch_at;
  p1.output_latents = true;
  residency.make_room(base, *refiner);
  GenerationResult r1 = base.generate(p1, pass_progress(false));
  base_steps = r1.steps_run;
  if (r1.stopped_at_step > 0 || !r1.images.empty()) {  // stopped (decode_when_stopped), or an edit of strength 0
    r1.timings.total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
    return r1;
  }

  // 2. The refiner: the same latents from the switch on (no image, no LoRA:
  // LoRAs are the base's; the prompts and embeddings are encoded again by
  // its own text encoder).
  GenerationParams p2 = shared;
  p2.edit = EditParams{};
  p2.width = p2.height = 0;
  p2.loras.clear();
  p2.init_latents = r1.final_latents;
  p2.denoising_start = rp.switch_at;
  p2.output_latents = params.output_latents;
  residency.make_room(*refiner, base);
  GenerationResult r2 = refiner->generate(p2, pass_progress(true));

  // One result for the call.
  GenerationResult out = std::move(r2);
  label_images(out, base_impl.info, ri, rp.switch_at);
  out.seed = shared.seed;
  out.steps_run = r1.steps_run + out.steps_run;
  if (out.stopped_at_step > 0) out.stopped_at_step += r1.steps_run;
  out.warnings.insert(out.warnings.begin(), r1.warnings.begin(), r1.warnings.end());
  if (!residency.moved.empty()) {
    std::string names;
    for (const std::string& n : residency.moved) names += (names.empty() ? "" : ", ") + n;
    out.warnings.push_back("the base model and the refiner do not both fit in " + std::string(device_name(base_impl.device)) +
                           " memory: moved to host memory between the passes: " + names + " (" +
                           infotext_number(std::round(residency.seconds * 100) / 100) + " s of copies)");
  }
  out.timings.park_s = residency.seconds;
  out.timings.add(r1.timings);
  out.timings.total_s = std::chrono::duration<double>(Clock::now() - t_start).count();
  return out;
}

}  // namespace diffuse
