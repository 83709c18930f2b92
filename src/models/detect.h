// Model-family detection for single-file checkpoints, by the keys and shapes
// A1111 (modules/sd_models_config.py) and stable-diffusion.cpp
// (src/model_loader.cpp) look at:
//  - SDXL base: conditioner.embedders.1.model.ln_final.weight (an SDXL refiner,
//    which has only embedders.0.model, is rejected with kUnsupported);
//  - SD2: the OpenCLIP text encoder cond_stage_model.model.transformer.resblocks.*
//    (ViT-H, width 1024 in real files);
//  - SD1: the CLIP-L text encoder cond_stage_model.transformer.*;
//  - files without a text encoder fall back on the UNet's cross-attention width
//    (768 SD1, 1024 SD2, 2048 SDXL);
//  - inpaint / InstructPix2Pix: UNet input_blocks.0.0.weight with 9 / 8 input channels;
//  - SGM's "v_pred" marker key (and CosXL's edm_vpred.*) flag v-prediction.
//    SD2 768-v files carry no marker: the pipeline probes the UNet for that.
#pragma once
#include "io/checkpoint.h"
#include "models/family.h"

namespace diffuse {

struct Detected {
  Family family = Family::kSD1;
  bool inpaint = false;           // UNet in_channels == 9
  bool pix2pix = false;           // UNet in_channels == 8
  int unet_in_channels = 4;       // 0 when the file has no UNet input conv
  bool v_prediction_key = false;  // "v_pred" or "edm_vpred.*" present
};

// Throws kUnsupported (SDXL refiner) or kInvalidArgument (nothing recognisable).
Detected detect_single_file(const TensorMap& tensors);

}  // namespace diffuse
