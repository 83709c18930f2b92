// What the adapter benches (ControlNet, IP-Adapter) share to time one UNet
// evaluation of a CFG batch on full-size random weights (speed does not depend
// on values): the UNet, its inputs and the timing loop.
// arch 0 = SD1.5 at 512 px (64x64 latents), 1 = SDXL at 1024 px (128x128).
#pragma once
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>

#include "core/ops.h"
#include "models/unet.h"

namespace diffuse {

struct UNetStepInputs {
  Tensor x, t, ctx, pooled, ids;  // pooled / ids: SDXL's text_time inputs, else undefined
  int64_t side = 0;               // latent side
};

// The full-size UNet of `arch` with random weights (seed 1): f32 on the CPU, f16 on CUDA.
inline std::unique_ptr<UNet> random_bench_unet(int arch, Device device) {
  const UNetConfig uc = arch == 0 ? UNetConfig::sd15() : UNetConfig::sdxl_base();
  const DType dt = device == Device::kCPU ? DType::kF32 : DType::kF16;
  return std::make_unique<UNet>(uc, UNet::random_weights(uc, 1, dt), dt, device);
}

inline UNetStepInputs unet_step_inputs(const UNet& unet, int arch, Device device, int64_t batch = 2) {
  const DType dt = unet.dtype();
  UNetStepInputs in;
  in.side = arch == 0 ? 64 : 128;
  const int64_t D = unet.config().cross_attention_dim[0];
  in.x = Tensor::full({batch, 4, in.side, in.side}, 0.1f).to(dt).to(device);
  in.t = Tensor::full({batch}, 500.0f).to(device);
  in.ctx = Tensor::full({batch, 77, D}, 0.01f).to(dt).to(device);
  if (unet.config().has_text_time()) {
    in.pooled = Tensor::full({batch, 1280}, 0.01f).to(dt).to(device);
    std::vector<float> ids;
    for (int64_t b = 0; b < batch; ++b) ids.insert(ids.end(), {1024, 1024, 0, 0, 1024, 1024});
    in.ids = Tensor::from_vector(ids, {batch, 6}).to(device);
  }
  return in;
}

// Times step() (which returns the step's output) after one warm-up call
// (plans, workspaces), waiting for the device after each call.
template <class Step>
void time_steps(benchmark::State& state, Device device, Step&& step) {
  step();
  backend_for(device).synchronize();
  for (auto _ : state) {
    Tensor out = step();
    backend_for(device).synchronize();
    benchmark::DoNotOptimize(out);
  }
}

}  // namespace diffuse
