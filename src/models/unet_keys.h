// Single-file (original LDM / SGM "model.diffusion_model.*") UNet key names ->
// diffusers names, as a declarative table generated from the UNetConfig (the
// role of diffusers' convert_ldm_unet_checkpoint, written as data):
//
//   time_embed.{0,2}            time_embedding.linear_{1,2}
//   time_embed.cond_proj        time_embedding.cond_proj            (LCM; also read under
//                               its diffusers name, kLdmCondProjAlias)
//   label_emb.0.{0,2}           add_embedding.linear_{1,2}          (SDXL)
//   input_blocks.0.0            conv_in
//   input_blocks.{n}.0 / .1     down_blocks.{i}.resnets.{j} / attentions.{j}
//   input_blocks.{n}.0.op       down_blocks.{i}.downsamplers.0.conv
//   middle_block.{0,1,2}        mid_block.resnets.0, attentions.0, resnets.1 (as many as the mid block has)
//   output_blocks.{n}.0 / .1    up_blocks.{i}.resnets.{j} / attentions.{j}
//   output_blocks.{n}.{1|2}.conv  up_blocks.{i}.upsamplers.0.conv
//   out.0 / out.2               conv_norm_out / conv_out
// and inside resnets in_layers.{0,2} / emb_layers.1 / out_layers.{0,3} /
// skip_connection = norm1, conv1 / time_emb_proj / norm2, conv2 / conv_shortcut.
// Transformer (attention) names are the same in both layouts.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/unet.h"

namespace diffuse {

// The other name single files give an LCM UNet's cond_proj: diffusers'
// convert_diffusers_to_original_stable_diffusion.py keeps the diffusers name.
inline constexpr const char* kLdmCondProjAlias = "time_embedding.cond_proj.weight";

// Maps LDM names (prefix "model.diffusion_model." already stripped) to
// diffusers names. Name-level only (no tensors). Throws Error(kIo) listing the
// keys the config does not know by name. Keys the config expects but that are
// absent are not an error here (UNet's constructor reports them).
std::map<std::string, std::string> unet_ldm_to_diffusers(const std::vector<std::string>& ldm_keys,
                                                         const UNetConfig& config);

// Every tensor of the config under its LDM name (prefix stripped), with its
// shape, in declaration order: the inverse of unet_ldm_to_diffusers (for writing
// single files).
std::vector<std::pair<std::string, Shape>> unet_ldm_tensors(const UNetConfig& config);

// Renames a whole (stripped) LDM UNet state dict. Tensors are shared, not
// copied; a 1x1-conv / linear projection stored in the other form ([C, C, 1, 1]
// vs [C, C]) is reshaped to what the config expects.
TensorMap unet_weights_from_ldm(const TensorMap& ldm_stripped, const UNetConfig& config);

}  // namespace diffuse
