// The SD1.5 VAE decode (full-size architecture, deterministic random f32
// weights: speed and memory do not depend on values), untiled against tiled
// (models/vae.h VaeTileOptions), at 512, 1024 and 2048 pixels.
//   bench_vae_tiling --benchmark_filter='Decode/2048/1$'
// Args: image side, tiled (0/1), tile side in latent pixels (tiled only).
// Counters: peak_rss_GiB is the process's high-water mark (getrusage), so run
// one case per process to read it for that case; peak_in_use_GiB is the host
// allocator's peak during the decode alone (core/host_allocator.h), above what
// was in use before it (the weights).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <memory>

#include "core/host_allocator.h"
#include "core/ops.h"
#include "models/vae.h"

using namespace diffuse;

namespace {

const Vae& sd15_vae() {
  static const std::unique_ptr<Vae> vae = [] {
    const VaeConfig cfg = VaeConfig::sd();
    return std::make_unique<Vae>(cfg, Vae::random_weights(cfg, 1235));
  }();
  return *vae;
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
  const Vae& vae = sd15_vae();
  const Tensor z = latent(side / 8);
  VaeTileOptions opt;
  if (state.range(2) > 0) opt.tile = static_cast<int>(state.range(2));
  host_empty_cache();
  const size_t before = host_memory_stats().in_use_bytes;
  host_reset_peak_memory_stats();
  for (auto _ : state) {
    const Tensor img = tiled ? vae.decode_tiled(z, opt) : vae.decode(z);
    benchmark::DoNotOptimize(img.raw_data());
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_rss_GiB"] = gib(static_cast<double>(ru.ru_maxrss) * 1024.0);
  state.counters["peak_in_use_GiB"] = gib(static_cast<double>(host_memory_stats().peak_in_use_bytes - before));
  const uint64_t est = tiled ? Vae::tiled_decode_peak_bytes(vae.config(), DType::kF32, static_cast<int>(side),
                                                             static_cast<int>(side), opt)
                             : 0;
  state.counters["estimate_GiB"] = gib(static_cast<double>(est));
  state.SetLabel(tiled ? "tiled, tile " + std::to_string(opt.tile * 8) + " px" : "untiled");
}

}  // namespace

BENCHMARK(BM_Decode)
    ->ArgNames({"side", "tiled", "tile"})
    ->Args({512, 0, 0})
    ->Args({512, 1, 32})
    ->Args({1024, 0, 0})
    ->Args({1024, 1, 64})
    ->Args({2048, 0, 0})
    ->Args({2048, 1, 64})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

BENCHMARK_MAIN();
