// The cost of ControlNets per denoising step: one UNet evaluation of a CFG
// batch (2 latents) with 0, 1 or 2 ControlNets adding their residuals, as
// pipeline/controlnet_step.cpp runs it (eager), on full-size random weights
// (speed does not depend on values). Step/arch:0|1/nets:N/cuda:0|1;
// arch 0 = SD1.5 at 512 px (64x64 latents), 1 = SDXL at 1024 px (128x128).
// Two ControlNets are the same model run twice (the work of two).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>

#include "core/ops.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "unet_step_bench.h"

using namespace diffuse;

namespace {

struct Models {
  std::unique_ptr<UNet> unet;
  std::unique_ptr<ControlNet> cn;
};

Models& models(int arch, Device device) {
  static std::map<std::pair<int, Device>, Models> cache;
  Models& m = cache[{arch, device}];
  if (!m.unet) {
    m.unet = random_bench_unet(arch, device);
    const UNetConfig& uc = m.unet->config();
    const DType dt = m.unet->dtype();
    const ControlNetConfig cc = ControlNetConfig::from_unet(uc);
    m.cn = std::make_unique<ControlNet>(cc, ControlNet::random_weights(cc, 2, dt), dt, device);
  }
  return m;
}

void Step(benchmark::State& state) {
  const int arch = static_cast<int>(state.range(0));
  const int nets = static_cast<int>(state.range(1));
  const Device device = state.range(2) ? Device::kCUDA : Device::kCPU;
  if (!device_available(device)) {
    state.SkipWithError("device not available");
    return;
  }
  Models& m = models(arch, device);
  const DType dt = m.unet->dtype();
  const UNetStepInputs in = unet_step_inputs(*m.unet, arch, device);
  const Tensor &x = in.x, &t = in.t, &ctx = in.ctx, &pooled = in.pooled, &ids = in.ids;
  const Tensor cond = Tensor::full({1, 3, in.side * 8, in.side * 8}, 0.5f).to(dt).to(device);
  auto step = [&] {
    if (nets == 0) return m.unet->forward(x, t, ctx, pooled, ids);
    UNetResiduals sum = m.cn->forward(x, t, ctx, cond, pooled, ids, 1.0f);
    for (int k = 1; k < nets; ++k) {
      UNetResiduals r = m.cn->forward(x, t, ctx, cond, pooled, ids, 1.0f);
      for (size_t j = 0; j < sum.down.size(); ++j) sum.down[j] = add(sum.down[j], r.down[j]);
      sum.mid = add(sum.mid, r.mid);
    }
    return m.unet->forward(x, t, ctx, pooled, ids, nullptr, &sum);
  };
  time_steps(state, device, step);
  state.counters["nets"] = nets;
}

}  // namespace

BENCHMARK(Step)  // CPU: one step per case (tens of seconds each)
    ->ArgNames({"arch", "nets", "cuda"})
    ->Args({0, 0, 0})->Args({0, 1, 0})->Args({0, 2, 0})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK(Step)
    ->ArgNames({"arch", "nets", "cuda"})
    ->Args({0, 0, 1})->Args({0, 1, 1})->Args({0, 2, 1})
    ->Args({1, 0, 1})->Args({1, 1, 1})->Args({1, 2, 1})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10)
    ->UseRealTime();

BENCHMARK_MAIN();
