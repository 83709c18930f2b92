// Internal (pipeline): the ControlNet units of one generate() call, applied at
// each denoising step, as diffusers' StableDiffusion(XL)ControlNetPipeline
// does (pipelines/controlnet/pipeline_controlnet.py):
//  - the control image is resized to the output size (the unit's resize mode),
//    scaled to [0, 1] and placed on the device once;
//  - at step i (of the N the call runs) a unit acts unless
//    i / N < start or (i + 1) / N > end (diffusers' controlnet_keep);
//  - each acting unit runs its ControlNet on the UNet's input (both CFG halves,
//    with the same image), its residuals scaled by its weight; the residuals of
//    all units add up (MultiControlNetModel) and go into the UNet.
// On CUDA (DIFFUSE_CUDA_GRAPH, as the plain UNet step) the ControlNets and the
// UNet of a step are captured together in one CUDA graph, one per set of acting
// units (a unit's window changes the set), after one eager warm-up call per set.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/ops.h"
#include "models/controlnet.h"
#include "pipeline/controlnet_unit.h"

namespace diffuse {

class UNet;
struct UNetImagePrompt;

// The ControlNets a pipeline has read, by path: each file is read once and
// kept while calls ask for it (a call that asks for other files drops the
// ones it does not use). Thread-safe.
class ControlNetCache {
 public:
  struct Entry {
    std::shared_ptr<const ControlNet> model;
    std::string name, family, weights_path;
  };
  Entry get(const std::string& path, DType dtype, DType act_dtype, Device device);
  void keep_only(const std::vector<std::string>& paths);
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;  // by absolute path
};

struct ControlStepInputs {
  const UNet* unet = nullptr;
  std::string model_name, model_family;  // for the error messages
  DType dtype = DType::kF32, act_dtype = DType::kF32;
  Device device = Device::kCPU;
  int width = 0, height = 0;  // output size
  int images = 1;             // n; the UNet batch is 2n with CFG
  bool cfg = false;
  Tensor context, pooled, time_ids;  // the UNet's conditioning ([uncond, cond] with CFG)
  std::vector<float> timesteps;      // the scheduler's
  int begin = 0, end = 0;            // the steps this call runs
  Tensor timestep_cond;              // an LCM UNet's guidance embedding (UNet::forward), else undefined
  const UNetImagePrompt* image_prompt = nullptr;  // IP-Adapter tokens for every UNet call (ip_adapter_step.h)
};

class ControlStep {
 public:
  ControlStep(ControlNetCache& cache, const std::vector<ControlNetUnit>& units, const ControlStepInputs& in);
  bool active() const { return !units_.empty(); }
  // The UNet's output for step i on model_in [B, C, h, w] (the activation dtype, on the device).
  // With a graph the result is the graph's output buffer: valid until the next call.
  Tensor unet_forward(const Tensor& model_in, int step) const;
  int controlnet_evals() const { return evals_; }
  int graph_replays() const { return replays_; }
  // After the last step: the graphs and their memory pools go back to the allocator.
  void release() const;

 private:
  struct Unit {
    ControlNetUnit params;
    std::shared_ptr<const ControlNet> model;
    Tensor image;  // [1, C, H, W] in [0, 1], activation dtype, on the device
  };
  // The units acting at step i (bit k: unit k runs; a weight of 0 never does).
  uint32_t acting(int step) const;
  Tensor eager(const Tensor& model_in, const Tensor& t, uint32_t acting) const;

  std::vector<Unit> units_;
  ControlStepInputs in_;
  Tensor t_table_;  // [steps, B] f32 on the device
  mutable int evals_ = 0, replays_ = 0;
  // CUDA graphs by acting set; x_ / t_ are the captured input buffers.
  struct Captured {
    std::unique_ptr<DeviceGraph> graph;
    Tensor out;
    int calls = 0;
  };
  mutable bool use_graph_ = false;
  mutable Tensor x_, t_;
  mutable std::map<uint32_t, Captured> graphs_;
};

}  // namespace diffuse
