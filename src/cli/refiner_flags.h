// The SDXL refiner flags of `diffuse generate` and `diffuse bench`
// (docs/refiner.md): --refiner MODEL, --refiner-switch-at, --aesthetic-score,
// --negative-aesthetic-score.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "pipeline/pipeline.h"

namespace diffuse::cli {

struct RefinerFlags {
  std::string refiner;  // a model (path, alias or hub id, as --model); "": none
  std::optional<double> switch_at;
  double aesthetic_score = 6.0, negative_aesthetic_score = 2.5;
};

void add_refiner_flags(CLI::App* c, RefinerFlags& f);
// Sets p.refiner's switch point and aesthetic scores (the scores also serve a
// refiner model run alone as img2img). --refiner-switch-at without --refiner
// is Error(kInvalidArgument) (exit 2).
void apply_refiner_flags(const RefinerFlags& f, GenerationParams& p);
// Loads --refiner beside the base (same device and precision; the user is
// told on stderr) into p.refiner.model; nothing without --refiner.
// Loads --refiner beside `base`; when it does not fit there, with the base's
// weights moved to host memory (they take turns per pass: docs/refiner.md).
void load_refiner(const RefinerFlags& f, Pipeline& base, const LoadOptions& base_load, GenerationParams& p);

}  // namespace diffuse::cli

namespace diffuse::cli {

// `diffuse bench --refiner MODEL|random`: one base + refiner call of `p`
// (the bench's prompt, size, steps), after a warm-up call.
struct RefinerBenchStats {
  std::string refiner;           // its name
  double switch_at = 0.8;
  int steps = 0, unet_evals = 0;  // over both passes
  double load_s = 0, text_ms = 0, denoise_ms = 0, decode_ms = 0, total_s = 0;
  double peak_device_gib = 0;    // CUDA: the allocator's high-water mark over the call (0 on the CPU)
  double park_s = 0;             // moving weights between host and device when both do not fit (0 when they do)
};
RefinerBenchStats run_refiner_bench(Pipeline& base, const RefinerFlags& f, const LoadOptions& load,
                                    GenerationParams p);

}  // namespace diffuse::cli
