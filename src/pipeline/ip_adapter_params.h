// The IP-Adapter of a generation (GenerationParams::ip_adapter; docs/ip-adapter.md):
// one adapter file, its CLIP image encoder, one or more reference images (their
// tokens are concatenated, as diffusers' multi-image input) and the scale, one
// number for every cross-attention or diffusers' per-block dict
// (set_ip_adapter_scale) for style- or composition-only use.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "image/image_ops.h"

namespace diffuse {

struct IpAdapterParams {
  std::string model;          // the adapter file (.safetensors / .bin); "" = none
  // The CLIP vision encoder: a diffusers image_encoder folder (config.json +
  // model.safetensors) or a weights file. "": the image_encoder folder beside
  // the adapter (h94/IP-Adapter's layout: models/image_encoder,
  // sdxl_models/image_encoder), or ../models/image_encoder for the SDXL
  // adapters that use ViT-H (ip-adapter_sdxl_vit-h, plus_sdxl_vit-h).
  std::string image_encoder;
  std::vector<image::Rgb> images;  // reference images, at least one
  float scale = 1.0f;              // 0 to 2, every cross-attention
  // diffusers' set_ip_adapter_scale dict as JSON, e.g. {"up": {"block_0": [0.0, 1.0, 0.0]}}
  // (style only); "" = `scale` everywhere. The dict's values are the scales.
  std::string block_scales;
  // For the infotext (A1111's ControlNet unit): the preprocessor name the
  // request used ("ip-adapter_clip_sd15", ...); "" = from the adapter's kind.
  std::string module;
  bool active() const { return !model.empty(); }
};

// Throws Error(kInvalidArgument) naming the field: no image, an empty image, a
// scale outside [0, 2], block_scales that are not JSON.
void validate_ip_adapter(const IpAdapterParams& p);

// The infotext field as sd-webui-controlnet writes an IP-Adapter unit:
// ("ControlNet <index>", "Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [hash], Weight: 0.6, ...").
std::pair<std::string, std::string> ip_adapter_infotext(const IpAdapterParams& p, int index);

}  // namespace diffuse
