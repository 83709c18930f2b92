// The cost of an IP-Adapter (docs/ip-adapter.md), on full-size random weights
// (speed does not depend on values):
//  - Step/arch:0|1/tokens:N/cuda:0|1: one UNet evaluation of a CFG batch (2
//    latents) with the decoupled cross-attention on N image tokens per image
//    (0 = no adapter, 4 = base, 16 = plus; every cross-attention, scale 1);
//    arch 0 = SD1.5 at 512 px (64x64 latents), 1 = SDXL at 1024 px (128x128).
//  - Encode/enc:0|1/cuda:0|1: the CLIP vision encoder on one 224x224 image
//    (0 = ViT-H/14, 1 = ViT-bigG/14), image_embeds (the last layer included);
//    done once per generation.
#include <benchmark/benchmark.h>

#include <map>
#include <memory>

#include "core/ops.h"
#include "models/clip_vision.h"
#include "models/unet.h"
#include "models/weights.h"
#include "unet_step_bench.h"

using namespace diffuse;

namespace {

struct Models {
  std::unique_ptr<UNet> unet;
  std::vector<UNetImagePrompt::Layer> layers;
};

Models& models(int arch, Device device) {
  static std::map<std::pair<int, Device>, Models> cache;
  Models& m = cache[{arch, device}];
  if (!m.unet) {
    m.unet = random_bench_unet(arch, device);
    const UNetConfig& uc = m.unet->config();
    const DType dt = m.unet->dtype();
    WeightSpecs specs;
    const int64_t D = uc.cross_attention_dim[0];
    for (const auto& n : UNet::cross_attention_names(uc)) {
      specs.push_back({n.first + ".to_k_ip.weight", {n.second, D}});
      specs.push_back({n.first + ".to_v_ip.weight", {n.second, D}});
    }
    const TensorMap w = random_weights(specs, 2, dt);
    for (size_t i = 0; i < specs.size(); i += 2)
      m.layers.push_back({w.at(specs[i].first).to(device), w.at(specs[i + 1].first).to(device), 1.0f});
  }
  return m;
}

void Step(benchmark::State& state) {
  const int arch = static_cast<int>(state.range(0));
  const int tokens = static_cast<int>(state.range(1));
  const Device device = state.range(2) ? Device::kCUDA : Device::kCPU;
  if (!device_available(device)) {
    state.SkipWithError("device not available");
    return;
  }
  Models& m = models(arch, device);
  const DType dt = m.unet->dtype();
  const UNetStepInputs in = unet_step_inputs(*m.unet, arch, device);
  const int64_t B = in.x.dim(0), D = in.ctx.dim(2);
  UNetImagePrompt ip;
  if (tokens > 0) ip.sources.push_back({Tensor::full({B, tokens, D}, 0.02f).to(dt).to(device), m.layers});
  UNetResiduals r;
  r.image_prompt = tokens > 0 ? &ip : nullptr;
  auto step = [&] { return m.unet->forward(in.x, in.t, in.ctx, in.pooled, in.ids, nullptr, &r); };
  time_steps(state, device, step);
  state.counters["tokens"] = tokens;
}

void Encode(benchmark::State& state) {
  const int enc = static_cast<int>(state.range(0));
  const Device device = state.range(1) ? Device::kCUDA : Device::kCPU;
  if (!device_available(device)) {
    state.SkipWithError("device not available");
    return;
  }
  const ClipVisionConfig c = enc == 0 ? ClipVisionConfig::vit_h14() : ClipVisionConfig::vit_bigg14();
  const DType dt = device == Device::kCPU ? DType::kF32 : DType::kF16;
  const ClipVisionModel model(c, ClipVisionModel::random_weights(c, 3, dt), dt, device);
  const Tensor px = Tensor::full({1, 3, 224, 224}, 0.1f);
  model.forward(px);
  backend_for(device).synchronize();
  for (auto _ : state) {
    Tensor out = model.forward(px).image_embeds;
    backend_for(device).synchronize();
    benchmark::DoNotOptimize(out);
  }
}

}  // namespace

BENCHMARK(Step)
    ->ArgNames({"arch", "tokens", "cuda"})
    ->ArgsProduct({{0, 1}, {0, 4, 16}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);
BENCHMARK(Encode)->ArgNames({"enc", "cuda"})->ArgsProduct({{0, 1}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);

BENCHMARK_MAIN();
