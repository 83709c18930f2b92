// The SD1.5 / SDXL VAE decode (one full-size architecture, deterministic
// random weights: speed and memory do not depend on values), untiled against
// tiled (models/vae.h VaeTileOptions), at 512 to 4096 pixels.
//   bench_vae_tiling --benchmark_filter='Decode/2048/1/'
//   bench_vae_tiling --device cuda     (GPU: fp16 as SD1.5 decodes, f32 as SDXL's force_upcast)
// Args: image side, tiled (0/1), tile side in latent pixels (tiled only),
// dtype bits (16: fp16, 32: f32; the CPU runs f32 only).
// Counters: peak_rss_GiB is the process's high-water mark (getrusage), so run
// one case per process to read it for that case; peak_in_use_GiB is the
// device's (the host allocator's on the CPU) peak during the decode alone,
// above what was in use before it (the weights).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "bench_device.h"
#include "core/host_allocator.h"
#include "core/ops.h"
#include "models/vae.h"

using namespace diffuse;

namespace {

Device g_device = Device::kCPU;

const Vae& sd_vae(DType dtype) {
  static std::map<DType, std::unique_ptr<Vae>> vaes;
  std::unique_ptr<Vae>& v = vaes[dtype];
  if (!v) {
    const VaeConfig cfg = VaeConfig::sd();
    v = std::make_unique<Vae>(cfg, Vae::random_weights(cfg, 1235), dtype, g_device);
  }
  return *v;
}

// A smooth latent [1, 4, n, n], a few low-frequency sinusoids per channel.
Tensor latent(int64_t n) {
  std::vector<float> v(static_cast<size_t>(4 * n * n));
  for (int64_t c = 0; c < 4; ++c) {
    for (int64_t y = 0; y < n; ++y) {
      for (int64_t x = 0; x < n; ++x) {
        v[(c * n + y) * n + x] = static_cast<float>(std::sin(0.1 * x + c) + std::cos(0.07 * y - c));
      }
    }
  }
  return Tensor::from_vector(v, {1, 4, n, n});
}

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

void BM_Decode(benchmark::State& state) {
  const int64_t side = state.range(0);
  const bool tiled = state.range(1) != 0;
  const DType dtype = state.range(3) == 16 ? DType::kF16 : DType::kF32;
  if (g_device == Device::kCPU && dtype != DType::kF32) {
    state.SkipWithError("fp16 decodes run on the GPU only");
    return;
  }
  if (g_device == Device::kCPU && side >= 4096 && !tiled) {
    state.SkipWithError("an untiled 4096 decode needs more host memory than a 24 GiB machine has");
    return;
  }
  const Vae& vae = sd_vae(dtype);
  const Tensor z = latent(side / 8).to(dtype).to(g_device);
  VaeTileOptions opt;
  if (state.range(2) > 0) opt.tile = static_cast<int>(state.range(2));
  Backend& backend = backend_for(g_device);
  host_empty_cache();
  backend.synchronize();
  const size_t before =
      g_device == Device::kCPU ? host_memory_stats().in_use_bytes : backend.memory_stats().in_use_bytes;
  host_reset_peak_memory_stats();
  backend.reset_peak_memory_stats();
  try {
    for (auto _ : state) {
      const Tensor img = tiled ? vae.decode_tiled(z, opt) : vae.decode(z);
      backend.synchronize();
      benchmark::DoNotOptimize(img.raw_data());
    }
  } catch (const Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_rss_GiB"] = gib(static_cast<double>(ru.ru_maxrss) * 1024.0);
  const size_t peak =
      g_device == Device::kCPU ? host_memory_stats().peak_in_use_bytes : backend.memory_stats().peak_in_use_bytes;
  state.counters["peak_in_use_GiB"] = gib(static_cast<double>(peak - before));
  const uint64_t est = tiled ? Vae::tiled_decode_peak_bytes(vae.config(), dtype, static_cast<int>(side),
                                                             static_cast<int>(side), opt)
                             : 0;
  state.counters["estimate_GiB"] = gib(static_cast<double>(est));
  state.SetLabel(tiled ? "tiled, tile " + std::to_string(opt.tile * 8) + " px" : "untiled");
}

void decode_args(benchmark::internal::Benchmark* b) {
  for (int bits : {32, 16}) {
    b->Args({512, 0, 0, bits})->Args({512, 1, 32, bits});
    for (int side : {1024, 2048, 4096}) b->Args({side, 0, 0, bits})->Args({side, 1, 64, bits});
  }
}

}  // namespace

BENCHMARK(BM_Decode)
    ->ArgNames({"side", "tiled", "tile", "bits"})
    ->Apply(decode_args)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

int main(int argc, char** argv) { return diffuse::run_benchmarks_on_device(argc, argv, g_device); }
