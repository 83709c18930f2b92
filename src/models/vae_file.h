// A VAE on its own, read for use in place of a model's VAE (docs/vae.md):
//  - a diffusers VAE folder: config.json + diffusion_pytorch_model[.fp16].safetensors
//    (or .bin), e.g. madebyollin/sdxl-vae-fp16-fix; a diffusers pipeline
//    folder stands for its vae/ subfolder;
//  - a single file, .safetensors or .ckpt/.pt (restricted unpickler; a
//    Lightning {"state_dict": ...} wrapper is unwrapped by the reader), in the
//    LDM layout ("encoder.down.0.block.0.norm1.weight", e.g.
//    vae-ft-mse-840000-ema-pruned), with or without the "first_stage_model."
//    prefix, or in diffusers names. LDM keys are renamed by the one VAE key
//    table (models/keymap.h vae_weights_from_ldm).
// Nothing is checked against an architecture here: Vae's constructor does that
// (Error(kIo) naming each missing or mis-shaped tensor).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/vae.h"

namespace diffuse {

struct VaeFile {
  std::string path;          // what was asked for, absolute
  std::string weights_path;  // the file the tensors come from (hashed for "VAE hash")
  // A1111's "VAE" infotext value and sd_vae name: the file name with its
  // extension ("vae-ft-mse-840000-ema-pruned.safetensors"); a folder's name; a
  // Hugging Face cache snapshot's repo id ("madebyollin/sdxl-vae-fp16-fix").
  std::string name;
  std::string layout;        // "diffusers" or "ldm"
  TensorMap weights;         // diffusers names, stored dtypes
  std::optional<VaeConfig> config;  // a folder's config.json; single files have none
  std::vector<std::string> ignored;  // keys that are no VAE tensor (LDM loss.* and the like)
};

// Throws Error(kNotFound) for a path that does not exist, Error(kIo) for an
// unreadable file or one that holds no VAE tensor (naming a few of its keys).
VaeFile read_vae_file(const std::string& path);

// The architecture a VAE file is used with in place of `model`'s VAE: its own
// config.json when it has one, else the model's. The latent scaling
// (scaling_factor, shift_factor) always stays the model's: the latents are the
// UNet's, whatever decodes them (as A1111 does). Throws Error(kInvalidArgument)
// when the file's latent channels differ from the model's.
VaeConfig vae_config_for(const VaeFile& file, const VaeConfig& model);

}  // namespace diffuse
