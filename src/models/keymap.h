// Checkpoint key tables: how original (LDM/SGM) single-file checkpoints name
// the VAE and text-encoder tensors, and how they become diffusers names.
// The UNet's table lives in unet_keys.h; split_single_file() drives all of them,
// with the prefix and layout of each text encoder from the family's row
// (family_spec.h).
//
// Tables are data: one KeyRule row per tensor family, matched segment by
// segment (no substring rewriting), and no key may match two rows of a table.
// The same rows serve the name-level check (plan_single_file: names + shapes,
// no tensor allocation) and the tensor conversion (split_single_file).
//
// Facts ported (not code) from diffusers' single_file_utils.py /
// scripts/convert_original_stable_diffusion_to_diffusers.py:
//  - SD1 text encoder: cond_stage_model.transformer.text_model.* (= transformers names);
//  - SD2 text encoder: cond_stage_model.model.* in OpenCLIP layout, fused q|k|v
//    in_proj split into q_proj/k_proj/v_proj; diffusers keeps 23 of 24 layers
//    and drops logit_scale / text_projection (they go to `ignored`);
//  - SDXL: conditioner.embedders.0.transformer.* (CLIP-L) and
//    conditioner.embedders.1.model.* (OpenCLIP-bigG, text_projection stored
//    transposed: x @ P there, a Linear weight P^T here);
//  - VAE: first_stage_model.*, decoder.up.N is diffusers' up_blocks.(n-1-N),
//    mid attention q/k/v/proj_out are 1x1 convs [C,C,1,1] -> Linear [C,C].
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/family.h"
#include "models/family_spec.h"

namespace diffuse {

struct UNetConfig;  // models/unet.h

// ---- declarative rename tables ---------------------------------------------

enum class KeyTransform : uint8_t {
  kCopy,          // same tensor
  kConvToLinear,  // [O, I, 1, 1] -> [O, I] (1-D biases pass through)
  kTranspose,     // [A, B] -> [B, A] (OpenCLIP text_projection)
  kSplitQkv,      // fused [3D, ...] -> three rows, target "{qkv}" = q, k, v
};

// Pattern syntax, per dot-separated segment:
//   literal     must be equal
//   #           a decimal integer, captured
//   *           any one segment, captured
//   a|b|c       one of the alternatives, captured
//   **          (last segment only) the rest of the key, one or more segments, captured
// Target syntax: {0} inserts capture 0; {r0} inserts levels-1-capture0 (the
// VAE decoder's reversed block index); {qkv} is q, k or v for kSplitQkv.
struct KeyRule {
  const char* source;
  const char* target;
  KeyTransform transform = KeyTransform::kCopy;
};

// The tables (keys relative to the component prefix).
std::span<const KeyRule> clip_hf_rules();       // transformers CLIPTextModel layout (SD1, SDXL te1)
std::span<const KeyRule> clip_openclip_rules();  // OpenCLIP layout (SD2, SDXL te2)
std::span<const KeyRule> vae_ldm_rules();        // first_stage_model layout

struct RenamedKey {
  std::string name;
  KeyTransform transform = KeyTransform::kCopy;
  int part = 0;  // 0..2 for kSplitQkv
};
// All targets of `key` under `rules` (0 entries: no row matches; 3 for a split).
// Throws kRuntime when two rows match (a table bug). `levels` is for {r0}.
std::vector<RenamedKey> apply_key_rules(std::span<const KeyRule> rules, const std::string& key, int levels = 0);
Shape transform_shape(const Shape& shape, KeyTransform transform, int part);
Tensor transform_tensor(const Tensor& t, KeyTransform transform, int part);

// A VAE on its own in the LDM layout (vae-ft-mse-840000-ema-pruned.safetensors:
// "encoder.down.0.block.0.norm1.weight", ..., the first_stage_model.* keys of a
// single file with that prefix already removed), renamed by vae_ldm_rules() to
// diffusers names. Keys no row matches are listed in `ignored` (may be null).
TensorMap vae_weights_from_ldm(const TensorMap& ldm, std::vector<std::string>* ignored = nullptr);

// ---- single files ------------------------------------------------------------

enum class Component : uint8_t { kUNet, kVae, kTextEncoder, kTextEncoder2 };
const char* component_name(Component c);  // "unet", "vae", "text_encoder", "text_encoder_2" (diffusers folders)

struct SingleFileParts {
  TensorMap unet, vae, text_encoder, text_encoder_2;  // diffusers names per component
  std::vector<std::string> ignored;                   // single-file keys no component uses
};

// Splits a single-file checkpoint into diffusers-named components. Tensors
// keep their stored dtype (views where no transform is needed). Keys that map
// to no expected tensor (DDPM buffers, model_ema.*, SD2's 24th layer and
// logit_scale, position_ids...) are listed in `ignored`. `text_encoders` are
// the configs of family.text_encoders, in that order. Throws Error(kIo) naming
// missing text-encoder tensors (models/weights.h).
SingleFileParts split_single_file(const TensorMap& all, const FamilySpec& family, const UNetConfig& unet_config,
                                  const std::vector<ClipTextConfig>& text_encoders);
// The same for a family's base row (text_encoder, then text_encoder_2).
SingleFileParts split_single_file(const TensorMap& all, Family family, const UNetConfig& unet_config,
                                  const ClipTextConfig& te1, const std::optional<ClipTextConfig>& te2);

// Name-level version of split_single_file: (key, shape) in, per component the
// diffusers names and shapes out, nothing allocated. UNet names come from
// unet_ldm_to_diffusers (shapes unchanged).
struct SingleFilePlan {
  struct Target {
    Component component;
    std::string name;
    Shape shape;
  };
  std::vector<Target> targets;
  std::vector<std::string> ignored;
};
SingleFilePlan plan_single_file(const std::vector<std::pair<std::string, Shape>>& keys, const FamilySpec& family,
                                const UNetConfig& unet_config, const std::vector<ClipTextConfig>& text_encoders);
SingleFilePlan plan_single_file(const std::vector<std::pair<std::string, Shape>>& keys, Family family,
                                const UNetConfig& unet_config, const ClipTextConfig& te1,
                                const std::optional<ClipTextConfig>& te2);

}  // namespace diffuse
