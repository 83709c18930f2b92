// Model families and their variants: one table (family_spec.cpp) holding
// everything Diffuse knows about each family. The loader, probe(), the key
// tables, the server's model list, `diffuse models` and the benchmarks all read
// it; adding a family or a variant is adding one row.
//
// A row is a family as a pipeline runs it (its text encoders and how they
// condition the UNet, its published configs, defaults, how a single file shows
// it). Variants that only change the UNet's input channels (inpainting,
// InstructPix2Pix) apply to every row and sit in their own small table; the
// SDXL refiner, whose UNet and text encoders differ, is a row of its own.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "models/clip_text.h"
#include "models/family.h"
#include "models/unet.h"
#include "models/vae.h"

namespace diffuse {

// What sets a checkpoint apart from its family's text-to-image model.
enum class Variant { kBase, kInpaint, kPix2Pix, kRefiner };

struct VariantSpec {
  Variant variant;
  const char* name;       // "base", "inpaint", "pix2pix", "refiner"
  const char* label;      // what listings print: "inpaint (9-channel)"
  int unet_in_channels;   // the conv_in input channels that identify it; 0: not told by conv_in
  // Why text-to-image cannot run it (the Error(kUnsupported) a load gives), or
  // nullptr when it can.
  const char* txt2img_unsupported;
  // It loads all the same and edits: generate() refuses text-to-image with
  // the message above (the SDXL refiner: img2img, or a base model's second pass).
  bool edits_only = false;
};
const std::vector<VariantSpec>& variant_specs();
const VariantSpec& variant_spec(Variant v);

// How a single-file checkpoint stores a text encoder (keymap.h has the tables).
enum class ClipLayout { kTransformers, kOpenClip };

struct TextEncoderSpec {
  ClipTextConfig config;           // of the published model
  std::string folder;              // diffusers component ("text_encoder", "text_encoder_2")
  std::string tokenizer_folder;    // "tokenizer", "tokenizer_2"
  std::string single_file_prefix;  // "cond_stage_model.transformer."
  ClipLayout layout = ClipLayout::kTransformers;
  // OpenCLIP layers a single file holds beyond those the model runs: SD2 files
  // keep all 24 layers of ViT-H, and SD2 conditions on the penultimate one
  // (diffusers' text encoder has 23).
  int unused_final_layers = 0;
  bool penultimate = false;        // conditioning = hidden_states[-2] without the final LayerNorm (SDXL)
  std::string pad_token;           // with the bundled CLIP vocabulary: "" (its own) or "!" (OpenCLIP)
};

// Attention heads do not show in tensor shapes: configs inferred from a single
// file take them from the family's convention, a fixed count or a fixed width.
struct HeadRule {
  int count = 0;  // heads per attention (SD1's UNet: 8), or
  int width = 0;  // channels per head (SD2 / SDXL UNets, every CLIP: 64)
  // Heads for `channels`, or nullopt when they do not split that way.
  std::optional<int> heads(int channels) const;
};

// The config file AUTOMATIC1111 picks for a checkpoint (modules/sd_models_config.py).
struct A1111Config {
  Variant variant;
  std::optional<Prediction> prediction;  // nullopt: any
  const char* file;                      // "v1-inference.yaml"
};

struct FamilySpec {
  std::string name;                  // "sd1" (models/family.h family_name for base rows)
  std::vector<std::string> aliases;  // also accepted by name: "sd15", "sd1.x", ...
  std::string title;                 // "Stable Diffusion 1.x"
  Family family;                     // the pipeline layout the row shares (previews, key tables)
  Variant variant = Variant::kBase;  // kRefiner for the refiner row

  // The published model's configs, as diffusers ships them: single files
  // without --config start from these, and benchmarks build them.
  UNetConfig unet;
  std::vector<TextEncoderSpec> text_encoders;
  VaeConfig vae;
  nlohmann::json scheduler;          // its scheduler/scheduler_config.json
  Prediction prediction = Prediction::kEpsilon;
  // SD2 single files do not say whether they predict epsilon (512) or v (768):
  // the loader runs the UNet once to tell (model_loader.cpp).
  bool single_file_prediction_unknown = false;
  bool force_zeros_for_empty_prompt = false;
  // The pipeline decodes a half-precision model's VAE in f32 when the VAE
  // config says force_upcast (diffusers' StableDiffusionXLPipeline does; SD1/SD2's
  // StableDiffusionPipeline never upcasts).
  bool upcast_vae = false;
  int time_ids = 0;                  // add-embedding time ids (SDXL 6: sizes and crop; refiner 5: with aesthetic score)

  // Conventions for configs inferred from a single file's shapes (infer_config.h).
  HeadRule unet_heads;
  HeadRule text_heads{0, 64};

  // Defaults of generate() for this family.
  int default_size = 512;                // px
  int default_size_v_prediction = 512;   // px when the model predicts v (SD2 768-v)
  int default_steps = 50;
  float default_cfg = 7.5f;
  std::string license;

  std::vector<A1111Config> a1111_configs;

  // The width of `prediction`'s default images.
  int default_size_for(Prediction p) const {
    return p == Prediction::kVPrediction ? default_size_v_prediction : default_size;
  }
  // AUTOMATIC1111's config file name for a variant, or "" when it has none.
  std::string a1111_config(Variant v, Prediction p) const;
  // The dtype the VAE runs in for a model computing in `compute`.
  DType vae_dtype(DType compute, const VaeConfig& vae) const;
};

// Every row, in the order probe() tries them.
const std::vector<FamilySpec>& family_specs();
// The base row of a family.
const FamilySpec& family_spec(Family family);
// The row named or aliased `name` (case-sensitive), or nullptr.
const FamilySpec* find_family_spec(const std::string& name);
// The same, throwing Error(kInvalidArgument) that lists the names.
const FamilySpec& family_spec_named(const std::string& name);

}  // namespace diffuse
