#include "cli/refiner_flags.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "cli/cli.h"
#include "core/error.h"
#include "core/ops.h"
#include "models/family.h"

namespace diffuse::cli {

void add_refiner_flags(CLI::App* c, RefinerFlags& f) {
  const std::string group = "SDXL refiner";
  c->add_option("--refiner", f.refiner,
                "A refiner model (e.g. sd_xl_refiner_1.0.safetensors): the base runs the first part of the "
                "schedule, the refiner the rest on the same latents (diffusers' denoising_end / "
                "denoising_start, A1111's refiner_checkpoint)")
      ->group(group);
  c->add_option("--refiner-switch-at", f.switch_at,
                "Fraction of the schedule the base runs before the refiner takes over (default 0.8)")
      ->check(CLI::Range(0.0, 1.0))
      ->group(group);
  c->add_option("--aesthetic-score", f.aesthetic_score,
                "A refiner's aesthetic-score conditioning of the prompt (default 6.0, as diffusers)")
      ->group(group);
  c->add_option("--negative-aesthetic-score", f.negative_aesthetic_score,
                "A refiner's aesthetic-score conditioning of the negative prompt (default 2.5)")
      ->group(group);
}

void apply_refiner_flags(const RefinerFlags& f, GenerationParams& p) {
  DIFFUSE_CHECK_ARG(f.refiner.empty() ? !f.switch_at.has_value() : true, "--refiner-switch-at needs --refiner");
  DIFFUSE_CHECK_ARG(std::isfinite(f.aesthetic_score) && std::isfinite(f.negative_aesthetic_score),
                    "--aesthetic-score and --negative-aesthetic-score must be numbers");
  p.refiner.aesthetic_score = f.aesthetic_score;
  p.refiner.negative_aesthetic_score = f.negative_aesthetic_score;
  if (f.switch_at) {
    DIFFUSE_CHECK_ARG(*f.switch_at > 0.0 && *f.switch_at < 1.0,
                      "--refiner-switch-at must be between 0 and 1 (exclusive), got " + std::to_string(*f.switch_at));
    p.refiner.switch_at = *f.switch_at;
  }
}

namespace {

// The refiner from `load`, beside the base, or with the base moved to host
// memory when both do not fit on the device.
std::shared_ptr<Pipeline> load_beside(Pipeline& base, Device device, const std::function<Pipeline*()>& load) {
  try {
    return std::shared_ptr<Pipeline>(load());
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kOutOfMemory || device == Device::kCPU) throw;
  }
  const size_t freed = base.park_weights();
  std::fprintf(stderr, "refiner: no room beside the base on %s: its %.1f GiB of weights moved to host memory; the "
               "two models take turns on the device\n", device_name(device), freed / (1024.0 * 1024.0 * 1024.0));
  return std::shared_ptr<Pipeline>(load());
}

}  // namespace

void load_refiner(const RefinerFlags& f, Pipeline& base, const LoadOptions& base_load, GenerationParams& p) {
  if (f.refiner.empty()) return;
  const std::string path = resolve_model(f.refiner);
  LoadOptions o;  // its own configs: only where the base runs is shared
  o.device = base_load.device;
  o.precision = base_load.precision;
  const auto t0 = std::chrono::steady_clock::now();
  p.refiner.model = load_beside(base, o.device, [&] { return Pipeline::load(path, o).release(); });
  const ModelInfo& info = p.refiner.model->info();
  for (const std::string& w : info.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::fprintf(stderr, "refiner: %s (%s%s, [%s]) loaded in %.2fs on %s%s; switch at %g\n", info.name.c_str(),
               family_name(info.family), info.refiner ? " refiner" : "", info.short_hash.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               device_name(base_load.device), base.weights_parked() ? "" : ", both models kept there",
               p.refiner.switch_at);
}

}  // namespace diffuse::cli

namespace diffuse::cli {

RefinerBenchStats run_refiner_bench(Pipeline& base, const RefinerFlags& f, const LoadOptions& load,
                                    GenerationParams p) {
  RefinerBenchStats st;
  apply_refiner_flags(f, p);
  const auto t0 = std::chrono::steady_clock::now();
  if (f.refiner == "random") {  // the published refiner's architecture, random weights
    p.refiner.model = load_beside(base, load.device, [&] { return Pipeline::random("sdxl-refiner", load).release(); });
  } else {
    load_refiner(f, base, load, p);
  }
  st.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.refiner = p.refiner.model->info().name;
  st.switch_at = p.refiner.switch_at;
  Backend& backend = backend_for(load.device);
  auto once = [&] {
    GenerationResult r = base.generate(p, [&](const StepProgress& s) {
      std::fprintf(stderr, "\r  base + refiner: step %d/%d   ", s.step, s.total_steps);
      return interrupted();
    });
    std::fprintf(stderr, "\n");
    backend.synchronize();
    return r;
  };
  once();  // warm-up: both models' plans and primitives (the refiner's first call would time them)
  backend.reset_peak_memory_stats();
  const GenerationResult r = once();
  if (load.device != Device::kCPU) {
    st.peak_device_gib = static_cast<double>(backend.memory_stats().peak_in_use_bytes) / (1024.0 * 1024.0 * 1024.0);
  }
  st.steps = r.steps_run;
  st.unet_evals = r.timings.unet_evals;
  st.text_ms = r.timings.text_encode_s * 1e3;
  st.denoise_ms = r.timings.denoise_s * 1e3;
  st.decode_ms = r.timings.vae_decode_s * 1e3;
  st.total_s = r.timings.total_s;
  st.park_s = r.timings.park_s;
  return st;
}

}  // namespace diffuse::cli
