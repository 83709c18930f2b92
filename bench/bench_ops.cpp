// Micro-benchmarks of the CPU ops at Stable Diffusion shapes (SD1.5 at 512x512:
// latents 64x64, 320..1280 channels, 8 heads of 40..160).
//   bench_ops --benchmark_filter=Gemm
// Counters: FLOP/s (2*M*N*K for GEMMs) so numbers compare with the peak.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <string>

#include "core/ops.h"
#include "core/thread_pool.h"

using namespace diffuse;

namespace {

Tensor random_tensor(const Shape& shape, DType dtype, float lo = -1, float hi = 1) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = dist(rng);
  return Tensor::from_vector(v, shape).to(dtype);
}

DType dtype_arg(int64_t v) { return v == 0 ? DType::kF32 : v == 1 ? DType::kBF16 : DType::kF16; }

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["FLOP/s"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

// linear: x [M, K] @ w[N, K]^T. Args: M, N, K, dtype (0 f32, 1 bf16, 2 f16).
void BM_Gemm(benchmark::State& state) {
  int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  DType dt = dtype_arg(state.range(3));
  Tensor x = random_tensor({m, k}, dt), w = random_tensor({n, k}, dt, -0.05f, 0.05f);
  for (auto _ : state) benchmark::DoNotOptimize(linear(x, w).raw_data());
  set_flops(state, 2.0 * m * n * k);
  state.SetLabel(dtype_name(dt));
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "N", "K", "dt"})
    ->Args({8192, 320, 1280, 0})
    ->Args({8192, 320, 1280, 1})
    ->Args({8192, 1280, 320, 0})
    ->Args({8192, 1280, 320, 1})
    ->Args({2048, 640, 640, 0})
    ->Args({154, 320, 768, 0})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// linear with f32 activations and weights stored as w_dt (0 f32; 1 bf16,
// widened per call into a reused buffer: the CPU bf16 mode on CPUs without
// bf16 instructions). Args: M, N, K, w_dt. M = 8192 is batch 2 x 64x64 tokens.
void BM_LinearWeightDtype(benchmark::State& state) {
  int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  DType wdt = dtype_arg(state.range(3));
  Tensor x = random_tensor({m, k}, DType::kF32), w = random_tensor({n, k}, wdt, -0.05f, 0.05f);
  for (auto _ : state) benchmark::DoNotOptimize(linear(x, w).raw_data());
  set_flops(state, 2.0 * m * n * k);
  state.SetLabel(std::string("weights ") + dtype_name(wdt));
}
BENCHMARK(BM_LinearWeightDtype)
    ->ArgNames({"M", "N", "K", "wdt"})
    ->Args({8192, 1280, 1280, 0})
    ->Args({8192, 1280, 1280, 1})
    ->Args({8192, 2560, 320, 0})
    ->Args({8192, 2560, 320, 1})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// conv2d 3x3 pad 1. Args: N, C, H(=W), O, dtype.
void BM_Conv3x3(benchmark::State& state) {
  int64_t n = state.range(0), c = state.range(1), h = state.range(2), o = state.range(3);
  DType dt = dtype_arg(state.range(4));
  Tensor x = random_tensor({n, c, h, h}, dt), w = random_tensor({o, c, 3, 3}, dt, -0.05f, 0.05f);
  Tensor b = random_tensor({o}, dt);
  for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, w, b, 1, 1).raw_data());
  set_flops(state, 2.0 * n * o * h * h * c * 9);
  state.SetLabel(dtype_name(dt));
}
BENCHMARK(BM_Conv3x3)
    ->ArgNames({"N", "C", "HW", "O", "dt"})
    ->Args({1, 320, 64, 320, 0})
    ->Args({1, 320, 64, 320, 1})
    ->Args({2, 640, 32, 640, 0})
    ->Args({1, 4, 64, 320, 0})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// conv2d 3x3 with f32 activations and weights stored as w_dt (0 f32: blocked
// copy cached at first use; 1 bf16: widened and blocked per call into a
// scratch buffer, the CPU bf16 mode). The gap between the two is the per-call
// packing cost. Args: N, C, H(=W), O, w_dt. SD1.5 UNet shapes at 512x512, CFG.
void BM_ConvWeightDtype(benchmark::State& state) {
  int64_t n = state.range(0), c = state.range(1), h = state.range(2), o = state.range(3);
  DType wdt = dtype_arg(state.range(4));
  Tensor x = random_tensor({n, c, h, h}, DType::kF32), w = random_tensor({o, c, 3, 3}, wdt, -0.05f, 0.05f);
  Tensor b = random_tensor({o}, DType::kF32);
  for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, w, b, 1, 1).raw_data());
  set_flops(state, 2.0 * n * o * h * h * c * 9);
  state.SetLabel(std::string("weights ") + dtype_name(wdt));
}
BENCHMARK(BM_ConvWeightDtype)
    ->ArgNames({"N", "C", "HW", "O", "wdt"})
    ->Args({2, 320, 64, 320, 0})
    ->Args({2, 320, 64, 320, 1})
    ->Args({2, 1280, 8, 1280, 0})
    ->Args({2, 1280, 8, 1280, 1})
    ->Args({2, 2560, 16, 1280, 0})
    ->Args({2, 2560, 16, 1280, 1})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

// attention with heads packed in the last dim. Args: B, Lq, Lk, heads, head_dim, dtype.
void BM_Attention(benchmark::State& state) {
  int64_t b = state.range(0), lq = state.range(1), lk = state.range(2), h = state.range(3), d = state.range(4);
  DType dt = dtype_arg(state.range(5));
  Tensor q = random_tensor({b, lq, h * d}, dt), k = random_tensor({b, lk, h * d}, dt), v = random_tensor({b, lk, h * d}, dt);
  for (auto _ : state) benchmark::DoNotOptimize(attention(q, k, v, static_cast<int>(h), 0.15f).raw_data());
  set_flops(state, 4.0 * b * h * lq * lk * d);
  state.SetLabel(dtype_name(dt));
}
BENCHMARK(BM_Attention)
    ->ArgNames({"B", "Lq", "Lk", "H", "D", "dt"})
    ->Args({1, 4096, 4096, 8, 40, 0})
    ->Args({1, 4096, 77, 8, 40, 0})
    ->Args({1, 1024, 1024, 8, 80, 0})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime()
    ->UseRealTime();

void BM_GroupNormSilu(benchmark::State& state) {
  DType dt = dtype_arg(state.range(0));
  Tensor x = random_tensor({2, 320, 64, 64}, dt), g = random_tensor({320}, dt), b = random_tensor({320}, dt);
  for (auto _ : state) benchmark::DoNotOptimize(group_norm(x, 32, g, b, 1e-5f, true).raw_data());
  state.SetBytesProcessed(state.iterations() * x.nbytes() * 2);
  state.SetLabel(dtype_name(dt));
}
BENCHMARK(BM_GroupNormSilu)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime();

void BM_Add(benchmark::State& state) {
  Tensor a = random_tensor({2, 320, 64, 64}, DType::kF32), b = random_tensor({2, 320, 64, 64}, DType::kF32);
  for (auto _ : state) benchmark::DoNotOptimize(add(a, b).raw_data());
  state.SetBytesProcessed(state.iterations() * a.nbytes() * 3);
}
BENCHMARK(BM_Add)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime();

void BM_Geglu(benchmark::State& state) {
  Tensor x = random_tensor({2, 4096, 2560}, DType::kF32);
  for (auto _ : state) benchmark::DoNotOptimize(geglu(x).raw_data());
  state.SetBytesProcessed(state.iterations() * x.nbytes() * 3 / 2);
}
BENCHMARK(BM_Geglu)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()->UseRealTime();

}  // namespace

// DIFFUSE_THREADS=n pins the op thread count (oneDNN follows it).
int main(int argc, char** argv) {
  if (const char* t = std::getenv("DIFFUSE_THREADS")) set_num_threads(std::atoi(t));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("threads", std::to_string(num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
