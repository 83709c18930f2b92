// Switching LoRAs (docs/adapters.md): the time Pipeline::generate takes to
// merge a LoRA set into the weights when the set changes, and to restore the
// originals when it is removed, on a full-size architecture with random
// weights and a random kohya LoRA over every UNet linear and conv layer (LDM
// names, as LCM-LoRA and most Civitai LoCon files cover them).
//   bench_lora --benchmark_filter='Switch/arch:0'            (SD1.5, CPU)
//   bench_lora --benchmark_filter='Switch/arch:1' --device cuda (SDXL, GPU)
// Args: arch (0 sd15, 1 sdxl), rank. Each iteration: one 1-step 64x64
// generation with the LoRA (merge) and one without (restore); the counters
// merge_ms / restore_ms are Timings::lora_s of those calls, the iteration time
// their sum. The step itself is not counted.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "bench_device.h"
#include "core/ops.h"
#include "io/checkpoint.h"
#include "models/unet.h"
#include "models/unet_keys.h"
#include "pipeline/pipeline.h"

using namespace diffuse;

namespace {

Device g_device = Device::kCPU;

// n deterministic values in [-amp, amp] (a 32-bit LCG).
Tensor noise_tensor(const Shape& shape, uint32_t seed, float amp) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t s = seed * 2654435761u + 1;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = amp * (static_cast<float>(s >> 8) / 8388608.0f - 1.0f);
  }
  return Tensor::from_vector(v, shape).to(DType::kF16);
}

// A kohya file: lora_down [r, in(, kh, kw)], lora_up [out, r(, 1, 1)] and
// alpha = r for every 2-D and 4-D UNet weight, by its LDM module name.
std::string write_random_lora(const UNetConfig& cfg, int rank, const std::string& path) {
  TensorMap t;
  uint32_t seed = 1;
  for (const auto& [name, shape] : unet_ldm_tensors(cfg)) {
    const std::string suffix = ".weight";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    if (shape.size() != 2 && shape.size() != 4) continue;
    std::string module = name.substr(0, name.size() - suffix.size());
    for (char& c : module) c = c == '.' ? '_' : c;
    const std::string key = "lora_unet_" + module;
    const int64_t r = std::min<int64_t>(rank, std::min(shape[0], shape[1]));
    if (shape.size() == 2) {
      t[key + ".lora_down.weight"] = noise_tensor({r, shape[1]}, ++seed, 0.05f);
      t[key + ".lora_up.weight"] = noise_tensor({shape[0], r}, ++seed, 0.05f);
    } else {
      t[key + ".lora_down.weight"] = noise_tensor({r, shape[1], shape[2], shape[3]}, ++seed, 0.05f);
      t[key + ".lora_up.weight"] = noise_tensor({shape[0], r, 1, 1}, ++seed, 0.05f);
    }
    t[key + ".alpha"] = Tensor::from_vector({static_cast<float>(r)}, {});
  }
  save_safetensors(path, t);
  return path;
}

void BM_Switch(benchmark::State& state) {
  const bool xl = state.range(0) == 1;
  const int rank = static_cast<int>(state.range(1));
  LoadOptions load;
  load.device = g_device;
  std::unique_ptr<Pipeline> pipe = Pipeline::random(xl ? "sdxl" : "sd15", load);
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("diffuse_bench_lora_" + std::to_string(state.range(0)) + "_" + std::to_string(rank) +
                             ".safetensors"))
                               .string();
  write_random_lora(xl ? UNetConfig::sdxl_base() : UNetConfig::sd15(), rank, path);
  GenerationParams p;
  p.prompt = "a photograph of an astronaut riding a horse";
  p.width = p.height = 64;
  p.steps = 1;
  p.seed = 1;
  p.sampler = "euler";
  auto run = [&](bool with) {
    GenerationParams q = p;
    if (with) q.loras.push_back({path, 1.0f, 1.0f});
    GenerationResult r = pipe->generate(q);
    for (const std::string& w : r.warnings) {
      if (w.rfind("LoRA '", 0) == 0) {  // modules that match nothing, tensors of no known format
        state.SkipWithError(("the LoRA did not apply fully: " + w).c_str());
      }
    }
    return r.timings.lora_s;
  };
  run(false);  // warm-up: the model's first call
  double merge = 0, restore = 0;
  int n = 0;
  for (auto _ : state) {
    const double m = run(true), r = run(false);
    merge += m;
    restore += r;
    ++n;
    state.SetIterationTime(m + r);
  }
  state.counters["merge_ms"] = 1e3 * merge / std::max(n, 1);
  state.counters["restore_ms"] = 1e3 * restore / std::max(n, 1);
  std::filesystem::remove(path);
}
BENCHMARK(BM_Switch)
    ->ArgNames({"arch", "rank"})
    ->Args({0, 64})
    ->Args({1, 64})
    ->Iterations(2)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return diffuse::run_benchmarks_on_device(argc, argv, g_device); }
