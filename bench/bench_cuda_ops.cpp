// CUDA op micro-benchmarks at Stable Diffusion shapes (Google Benchmark).
// Times come from CUDA events around each op on the backend stream (manual
// time), after a warm-up that builds cuBLASLt/cuDNN plans and fills the
// caching allocator. Counters: TFLOP/s for GEMM / conv / attention (dense
// FLOPs: 2*M*N*K; attention 4*B*H*Lq*Lk*D), GB/s for group norm (bytes read
// once + written once). Run with DIFFUSE_CUDA_CONV=gemm to time the
// im2col + cuBLASLt conv path instead of cuDNN.
#include <benchmark/benchmark.h>

#if defined(DIFFUSE_HAVE_CUDA)
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_context.h"
#include "core/ops.h"

using namespace diffuse;

namespace {

Tensor rand_dev(const Shape& s, DType t, float amp = 1.0f, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-amp, amp);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (auto& x : v) x = dist(rng);
  return Tensor::from_vector(v, s).to(t).to(Device::kCUDA);
}

// Runs `op` once per iteration between two events; reports the event time.
template <class F>
void time_op(benchmark::State& state, F&& op) {
  if (!device_available(Device::kCUDA)) {
    state.SkipWithError("no CUDA device");
    return;
  }
  cudaStream_t s = cuda_context().stream;
  for (int i = 0; i < 3; ++i) op();
  cuda_synchronize();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (auto _ : state) {
    cudaEventRecord(start, s);
    op();
    cudaEventRecord(stop, s);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_LinearF16(benchmark::State& state) {
  int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({m, k}, DType::kF16), w = rand_dev({n, k}, DType::kF16, 0.05f, 2);
  Tensor b = rand_dev({n}, DType::kF16, 1.0f, 3);
  time_op(state, [&] { benchmark::DoNotOptimize(linear(x, w, b)); });
  set_flops(state, 2.0 * m * n * k);
}
BENCHMARK(BM_LinearF16)->Args({8192, 320, 1280})->Args({2048, 640, 2560})->Args({8192, 1280, 320})
    ->Args({512, 1280, 5120})->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_LinearBF16(benchmark::State& state) {
  int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({m, k}, DType::kBF16), w = rand_dev({n, k}, DType::kBF16, 0.05f, 2);
  time_op(state, [&] { benchmark::DoNotOptimize(linear(x, w)); });
  set_flops(state, 2.0 * m * n * k);
}
BENCHMARK(BM_LinearBF16)->Args({8192, 320, 1280})->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_LinearF32(benchmark::State& state) {
  int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({m, k}, DType::kF32), w = rand_dev({n, k}, DType::kF32, 0.05f, 2);
  time_op(state, [&] { benchmark::DoNotOptimize(linear(x, w)); });
  set_flops(state, 2.0 * m * n * k);
}
BENCHMARK(BM_LinearF32)->Args({8192, 320, 1280})->UseManualTime()->Unit(benchmark::kMicrosecond);

// conv 3x3, c -> c channels, batch n at h x w (SD1 UNet down block 1: 320 ch at 64x64, batch 2 for CFG).
void BM_Conv3x3(benchmark::State& state) {
  int64_t c = state.range(0), hw = state.range(1), n = state.range(2);
  DType t = state.range(3) == 0 ? DType::kF16 : DType::kF32;
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({n, c, hw, hw}, t), w = rand_dev({c, c, 3, 3}, t, 0.03f, 2), b = rand_dev({c}, t, 1.0f, 3);
  time_op(state, [&] { benchmark::DoNotOptimize(conv2d(x, w, b, 1, 1)); });
  set_flops(state, 2.0 * n * c * hw * hw * c * 9);
}
BENCHMARK(BM_Conv3x3)->Args({320, 64, 2, 0})->Args({640, 32, 2, 0})->Args({1280, 16, 2, 0})->Args({320, 64, 2, 1})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);

// attention: batch, tokens (q and k), heads, head dim, causal
void BM_Attention(benchmark::State& state) {
  int64_t b = state.range(0), lq = state.range(1), lk = state.range(2), h = state.range(3), d = state.range(4);
  DType t = state.range(5) == 0 ? DType::kF16 : state.range(5) == 1 ? DType::kBF16 : DType::kF32;
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor q = rand_dev({b, lq, h * d}, t), k = rand_dev({b, lk, h * d}, t, 1.0f, 2), v = rand_dev({b, lk, h * d}, t, 1.0f, 3);
  float scale = 1.0f / std::sqrt(static_cast<float>(d));
  time_op(state, [&] { benchmark::DoNotOptimize(attention(q, k, v, static_cast<int>(h), scale)); });
  set_flops(state, 4.0 * b * h * lq * lk * d);
}
BENCHMARK(BM_Attention)
    ->Args({2, 4096, 4096, 8, 40, 0})   // SD1 64x64 self-attention
    ->Args({2, 4096, 4096, 5, 64, 0})   // SD2 head dim 64
    ->Args({2, 1024, 1024, 8, 80, 0})   // SD1 32x32
    ->Args({2, 256, 256, 8, 160, 0})    // SD1 16x16
    ->Args({2, 4096, 4096, 8, 160, 0})  // d=160 at scale
    ->Args({2, 4096, 77, 8, 40, 0})     // cross-attention
    ->Args({2, 4096, 4096, 8, 40, 1})   // bf16
    ->Args({1, 4096, 4096, 1, 512, 0})  // VAE mid-block (scalar path)
    ->Args({2, 4096, 4096, 8, 40, 2})   // f32 (scalar path)
    ->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_GroupNormSilu(benchmark::State& state) {
  int64_t n = state.range(0), c = state.range(1), hw = state.range(2);
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({n, c, hw, hw}, DType::kF16), g = rand_dev({c}, DType::kF16, 1.0f, 2);
  time_op(state, [&] { benchmark::DoNotOptimize(group_norm(x, 32, g, g, 1e-5f, true)); });
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * x.nbytes() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GroupNormSilu)->Args({2, 320, 64})->Args({1, 128, 512})->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_AddF16(benchmark::State& state) {
  int64_t n = state.range(0);
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor a = rand_dev({n}, DType::kF16), b = rand_dev({n}, DType::kF16, 1.0f, 2);
  time_op(state, [&] { benchmark::DoNotOptimize(add(a, b)); });
  state.counters["GB/s"] = benchmark::Counter(3.0 * a.nbytes() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AddF16)->Arg(2 * 320 * 64 * 64)->UseManualTime()->Unit(benchmark::kMicrosecond);

// 40 small launches (the 8x8 UNet middle): eager vs one CUDA-graph replay.
void BM_SmallOps(benchmark::State& state) {
  bool graph = state.range(0) == 1;
  if (!device_available(Device::kCUDA)) return state.SkipWithError("no CUDA device");
  Tensor x = rand_dev({2, 1280, 8, 8}, DType::kF16);
  auto step = [&] {
    Tensor h = x;
    for (int i = 0; i < 20; ++i) h = add(silu(h), x);
    return h;
  };
  Tensor out;
  CudaGraph g;
  if (graph) {
    step();  // plans and kernels loaded outside the capture
    g.capture([&] { out = step(); });
  }
  time_op(state, [&] {
    if (graph)
      g.replay();
    else
      benchmark::DoNotOptimize(step());
  });
  state.counters["launches"] = 40;
}
BENCHMARK(BM_SmallOps)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

#endif  // DIFFUSE_HAVE_CUDA (without it the binary runs no benchmarks)

BENCHMARK_MAIN();
