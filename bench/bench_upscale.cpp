// The full-size 4x RRDBNet (ESRGAN / RealESRGAN_x4plus / 4x-UltraSharp
// architecture: nf 64, nb 23, gc 32; deterministic random f32 weights: speed
// does not depend on values) on the CPU, whole image and tiled
// (models/rrdbnet.h), on 128x128 and 256x256 inputs.
//   bench_upscale --benchmark_filter='Upscale/side:128/tile:0'
// Args: input side, tile (0 = one pass; else tile edge in input pixels, 16 overlap).
// Counters: GFLOP/s counts the convolutions' multiply-adds (2 FLOPs each) of
// the work actually done (tiles include their overlap), MFLOP_per_out_px the
// network's cost per output pixel (no overlap), out_Mpx_per_s output pixels,
// GFLOP_per_cpu_s the FLOPs per second of CPU time the whole process used
// (getrusage; every thread): on a shared machine the wall-clock rate says
// what the other processes left, this one what the kernels do with a core.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <vector>
#include <memory>

#include "bench_device.h"
#include "models/rrdbnet.h"
#include "models/weights.h"

using namespace diffuse;

namespace {

Device g_device = Device::kCPU;

const rrdbnet::Model& x4plus() {
  static const std::unique_ptr<rrdbnet::Model> m = [] {
    rrdbnet::Detected d;
    d.config = rrdbnet::Config::realesrgan_x4plus();
    d.weights = random_weights(rrdbnet::expected_tensors(d.config), 4242, DType::kF32);
    // fp16 on the GPU, as the upscaler library places it there
    return std::make_unique<rrdbnet::Model>(d, g_device == Device::kCPU ? DType::kF32 : DType::kF16, g_device);
  }();
  return *m;
}

// Multiply-adds of one forward pass on an h x w input: every 3x3 conv's
// 9 * Cin * Cout per pixel at its resolution (the rest is memory-bound).
double forward_macs(const rrdbnet::Config& c, int64_t h, int64_t w) {
  const double nf = c.num_feat, gc = c.num_grow_ch, u = c.unshuffle;
  const double lr = double(h) * w / (u * u);  // trunk pixels
  double per_lr = 9.0 * c.in_channels * u * u * nf;                       // conv_first
  double rdb = 0;
  for (int j = 0; j < 4; ++j) rdb += 9.0 * (nf + j * gc) * gc;             // conv1..4
  rdb += 9.0 * (nf + 4 * gc) * nf;                                         // conv5
  per_lr += 3 * rdb * c.num_block + 9.0 * nf * nf;                         // RRDBs, conv_body
  double macs = per_lr * lr;
  for (int k = 1; k <= c.num_upsample; ++k) macs += 9.0 * nf * nf * lr * std::pow(4.0, k);  // conv_upK
  const double hr = lr * std::pow(4.0, c.num_upsample);
  macs += (9.0 * nf * nf + 9.0 * nf * c.out_channels) * hr;                // conv_hr, conv_last
  return macs;
}

// MACs of upscale() with tiles: each tile runs on its core plus overlap.
double tiled_macs(const rrdbnet::Config& c, int64_t side, int tile, int overlap) {
  if (tile == 0 || side <= tile) return forward_macs(c, side, side);
  double total = 0;
  for (int64_t y0 = 0; y0 < side; y0 += tile)
    for (int64_t x0 = 0; x0 < side; x0 += tile) {
      const int64_t h = std::min(side, y0 + tile + overlap) - std::max<int64_t>(0, y0 - overlap);
      const int64_t w = std::min(side, x0 + tile + overlap) - std::max<int64_t>(0, x0 - overlap);
      total += forward_macs(c, h, w);
    }
  return total;
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

Tensor image(int64_t side) {
  std::vector<float> v(static_cast<size_t>(3 * side * side));
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.5f + 0.4f * static_cast<float>(std::sin(0.013 * double(i)));
  return Tensor::from_vector(v, {1, 3, side, side});
}

void BM_Upscale(benchmark::State& state) {
  const int64_t side = state.range(0);
  const int tile = static_cast<int>(state.range(1));
  const rrdbnet::Model& m = x4plus();
  const Tensor x = image(side);
  const rrdbnet::TileOptions opt{tile, 16};
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    Tensor y = rrdbnet::upscale(m, x, opt);
    benchmark::DoNotOptimize(y.raw_data());
  }
  const double cpu_s = process_cpu_seconds() - cpu0;
  const double s = m.config.scale();
  const double out_px = double(side) * side * s * s;
  const double flops = 2.0 * tiled_macs(m.config, side, tile, opt.overlap);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["MFLOP_per_out_px"] = 2.0 * forward_macs(m.config, side, side) / out_px * 1e-6;
  state.counters["GFLOP_per_cpu_s"] = flops * 1e-9 * double(state.iterations()) / cpu_s;
  state.counters["out_Mpx_per_s"] = benchmark::Counter(out_px * 1e-6 * double(state.iterations()), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_Upscale)
    ->ArgNames({"side", "tile"})
    ->Args({128, 0})
    ->Args({256, 0})
    ->Args({256, 192})
    ->Args({256, 128})
    ->Args({512, 192})    // GPU sizes: a 2048 / 4096 output (on the CPU, minutes)
    ->Args({1024, 192})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return diffuse::run_benchmarks_on_device(argc, argv, g_device); }
