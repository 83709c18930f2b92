// The cost of one live preview (docs/previews.md): the full-size TAESD decoder
// (64 channels, 1.2M parameters, deterministic random f32 weights: speed does
// not depend on values) against the cheap latent -> RGB approximation, for
// 512x512 (64x64 latents) and 1024x1024 (128x128) images.
//   bench_taesd --benchmark_filter='Taesd'
//   bench_taesd --device cuda       (the decoder on the GPU, as a CUDA generation previews)
// Arg: the image side. BM_TaesdDecode is the network alone; BM_TaesdPreview
// what a job pays per preview (decode, RGB bytes, PNG encode); BM_CheapPreview
// the same for the approximation.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <vector>
#include <memory>

#include "bench_device.h"
#include "core/ops.h"
#include "io/png.h"
#include "models/taesd.h"
#include "pipeline/live_preview.h"
#include "pipeline/pipeline.h"

using namespace diffuse;

namespace {

Device g_device = Device::kCPU;

const TaesdDecoder& decoder() {
  static const std::unique_ptr<TaesdDecoder> dec = [] {
    const TaesdConfig cfg = TaesdConfig::taesd();
    return std::make_unique<TaesdDecoder>(cfg, TaesdDecoder::random_weights(cfg, 1236), DType::kF32, g_device);
  }();
  return *dec;
}

// A smooth latent [1, 4, n, n], a few low-frequency sinusoids per channel.
Tensor latent(int64_t n) {
  std::vector<float> v(static_cast<size_t>(4 * n * n));
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t y = 0; y < n; ++y)
      for (int64_t x = 0; x < n; ++x)
        v[(c * n + y) * n + x] = static_cast<float>(std::sin(0.1 * x + c) + std::cos(0.07 * y - c));
  return Tensor::from_vector(v, {1, 4, n, n}).to(g_device);
}

// Multiply-adds x 2 of the decoder's convolutions for an n x n latent (the
// ReLUs, adds and upsamples are noise next to them).
double decode_flops(const TaesdConfig& c, int64_t n) {
  const double k = 2.0 * 9.0 * c.channels;  // per output pixel and channel of a 3x3 conv from C channels
  double px = static_cast<double>(n * n);
  double f = 2.0 * 9.0 * c.latent_channels * c.channels * px;  // the first conv
  for (size_t s = 0; s < c.blocks.size(); ++s) {
    f += 3.0 * c.blocks[s] * k * c.channels * px;
    if (s + 1 < c.blocks.size()) {
      px *= 4;
      f += k * c.channels * px;  // the conv after the upsample
    }
  }
  return f + k * c.out_channels * px;  // the last conv
}

void BM_TaesdDecode(benchmark::State& state) {
  const Tensor z = latent(state.range(0) / 8);
  for (auto _ : state) {
    const Tensor img = decoder().decode(z);
    backend_for(g_device).synchronize();
    benchmark::DoNotOptimize(img.raw_data());
  }
  const double flops = decode_flops(decoder().config(), state.range(0) / 8);
  state.counters["params_M"] = static_cast<double>(decoder().parameter_count()) / 1e6;
  state.counters["GFLOP"] = flops / 1e9;
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9 * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_TaesdPreview(benchmark::State& state) {
  const Tensor z = latent(state.range(0) / 8);
  for (auto _ : state) {
    int w = 0, h = 0;
    const std::vector<uint8_t> rgb = LivePreviewer::taesd_rgb(decoder(), z, 0, &w, &h);
    const std::vector<uint8_t> png = encode_png(w, h, rgb.data());
    benchmark::DoNotOptimize(png.data());
  }
}

void BM_CheapPreview(benchmark::State& state) {
  const Tensor z = latent(state.range(0) / 8);
  for (auto _ : state) {
    int w = 0, h = 0;
    const std::vector<uint8_t> rgb = Pipeline::preview_rgb(z, 0, Family::kSD1, &w, &h);
    const std::vector<uint8_t> png = encode_png(w, h, rgb.data());
    benchmark::DoNotOptimize(png.data());
  }
}

}  // namespace

BENCHMARK(BM_TaesdDecode)->ArgName("side")->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TaesdPreview)->ArgName("side")->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CheapPreview)->ArgName("side")->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) { return diffuse::run_benchmarks_on_device(argc, argv, g_device); }
