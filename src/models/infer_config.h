// The configs of a single-file checkpoint, read from its tensor shapes, the way
// stable-diffusion.cpp and ComfyUI size a model from its weights. A single file
// carries no config.json; a distilled model (BK-SDM, segmind small-sd /
// tiny-sd, SSD-1B, Vega) does not have its family's published shapes, so the
// published configs alone would not load it.
//
// Read from shapes (LDM / SGM key layout):
//  - UNet: input/output channels and conv kernels; the blocks (input_blocks.N
//    resnets up to each downsampler) with their widths and layer counts; which
//    layers have attention and how many transformer blocks each has (up blocks
//    separately: asymmetric UNets); the mid block (resnet-attention-resnet, one
//    resnet, or none); cross-attention width; linear or 1x1-conv projections
//    (proj_in's rank); time-embedding width; the SDXL add embedding's input
//    width (label_emb) and from it the time-id embedding width.
//  - Text encoders: width, depth, MLP width, vocabulary, positions, projection.
//  - VAE: channels per level, layers per level, latent / image channels, the
//    quant convs and the mid attention.
// Not in any shape, so taken from the family's row (family_spec.h):
//  - attention heads: the family's convention (SD1's UNet: 8 heads; SD2 / SDXL
//    UNets and every CLIP text encoder: 64-wide heads); where a width does not
//    split that way the heads are unresolved and the model needs --config;
//  - group-norm groups (32), epsilons, activations (quick_gelu for OpenAI CLIP,
//    gelu for OpenCLIP), timestep embedding flags, sample_size, the VAE's
//    scaling factor and force_upcast;
//  - how many OpenCLIP layers run (SD2: all but the file's last);
//  - the number of SDXL time ids (6; the refiner's 5).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/family_spec.h"
#include "models/unet.h"
#include "models/vae.h"

namespace diffuse {

// A tensor as a checkpoint's header describes it.
struct TensorInfo {
  std::string stored;  // the element type as stored: "F16", "BF16", "F32", "F8_E4M3", ...
  Shape shape;
};
using TensorIndex = std::map<std::string, TensorInfo>;
// The index of tensors already loaded (stored = their dtype's safetensors name).
TensorIndex index_tensors(const TensorMap& tensors);

// A model's component configs; text_encoders in FamilySpec::text_encoders order.
struct ComponentConfigs {
  UNetConfig unet;
  std::vector<ClipTextConfig> text_encoders;
  VaeConfig vae;
};

struct InferredConfigs {
  ComponentConfigs configs;
  // What the shapes could not tell, one sentence each; when not empty the
  // configs are incomplete and a load needs --config.
  std::vector<std::string> unresolved;
};

// The UNet under "model.diffusion_model.", the VAE under "first_stage_model."
// and each of `family`'s text encoders under its prefix. A component whose
// inferred config builds the published network gets the published config
// (which also carries what shapes cannot show).
InferredConfigs infer_configs(const TensorIndex& index, const FamilySpec& family);

}  // namespace diffuse
