// probe(path): what a checkpoint is, from its headers alone. The loader, the
// server's model list and `diffuse models` all ask it.
//
// What it reads, per format:
//  - a diffusers folder: model_index.json, the component config.json files,
//    scheduler/scheduler_config.json, and the UNet weights file's header;
//  - a .safetensors file: its JSON header (names, dtypes, shapes), never the
//    data (the data section may even be sparse or missing);
//  - a .ckpt / .pt file: the pickled index through the restricted unpickler
//    (io/checkpoint.h); storages of an uncompressed archive are mmap'd views
//    that are not read.
//
// What it tells: the family (a row of family_spec.h), the variant (base,
// inpaint 9-channel, InstructPix2Pix 8-channel, SDXL refiner), the prediction
// type where the checkpoint states it, the UNet weights' stored dtype, the
// format, and the component configs: a folder's own, or for a single file the
// ones its tensor shapes give (infer_config.h).
//
// How a single file shows its family: the text encoders each row lists, by
// key prefix (SD1 cond_stage_model.transformer.*, SD2 cond_stage_model.model.*,
// SDXL conditioner.embedders.0.transformer.* + .1.model.*, the SDXL refiner
// conditioner.embedders.0.model.* alone); a file without a text encoder by the
// UNet's cross-attention width (768, 1024, 2048, 1280). A folder: the text
// encoders model_index.json lists, and for SD1 / SD2 the encoder's activation
// (OpenAI CLIP quick_gelu, OpenCLIP gelu). The variant: the UNet's input
// channels (9 inpaint, 8 InstructPix2Pix) or the refiner row. SGM's "v_pred"
// key (and CosXL's edm_vpred.*) mark v-prediction.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "models/family_spec.h"
#include "models/infer_config.h"

namespace diffuse {

enum class CheckpointFormat { kDiffusersFolder, kSafetensors, kCkpt };
const char* format_name(CheckpointFormat f);  // "diffusers", "safetensors", "ckpt"

struct CheckpointInfo {
  std::string path;
  CheckpointFormat format = CheckpointFormat::kSafetensors;
  const FamilySpec* family = nullptr;  // never null in a returned value
  Variant variant = Variant::kBase;
  int unet_in_channels = 4;
  // As the checkpoint states it: a folder's scheduler config, a single file's
  // v_pred marker. nullopt: not stated (SD2 single files: the loader runs the
  // UNet to tell).
  std::optional<Prediction> prediction;
  std::string precision;               // stored dtype of most UNet weights: "f16", "bf16", "f32", "f8_e4m3"...
  ComponentConfigs configs;
  bool configs_inferred = false;       // single files: from tensor shapes
  // What the shapes could not tell (infer_config.h); a load without --config
  // then fails naming them. Empty for folders.
  std::vector<std::string> unresolved;

  const VariantSpec& variant_spec() const { return diffuse::variant_spec(variant); }
  // For listings: "sdxl", "sd1 inpaint (9-channel)".
  std::string label() const;
};

// Throws Error(kNotFound) for a missing path, kIo for an unreadable or
// malformed one, kInvalidArgument for a checkpoint of no known family and
// kUnsupported for a UNet of unknown input channels (or a config field this
// port does not build).
CheckpointInfo probe(const std::string& path);

// The same for a single file whose tensors are already listed (the loader
// probes the file it has loaded).
CheckpointInfo probe_single_file(const TensorIndex& index, CheckpointFormat format, const std::string& path = "");

// A single file's format by content: a torch archive (zip signature, or a
// legacy pickle) is kCkpt, anything else is read as safetensors.
CheckpointFormat single_file_format(const std::string& path);

// The names, stored types and shapes of a .safetensors file, from its header.
TensorIndex read_safetensors_index(const std::string& path);

// The family of a diffusers folder from model_index.json and its text
// encoders' configs alone (no weights needed: a --config folder).
const FamilySpec& probe_folder_family(const std::string& dir);

// The configs of a diffusers folder's components for `family`
// (unet/, vae/, and the row's text encoder folders).
ComponentConfigs read_folder_configs(const std::string& dir, const FamilySpec& family);

// The weights file of a diffusers component folder (unet/, vae/, ...):
// safetensors first, the fp16 variant only when no full-precision file
// exists, sharded index files and .bin after. Throws Error(kIo) naming the
// names it looked for.
std::string find_component_weights(const std::string& component_dir);

}  // namespace diffuse
