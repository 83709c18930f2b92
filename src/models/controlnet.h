// ControlNet: a port of diffusers' ControlNetModel
// (src/diffusers/models/controlnets/controlnet.py) for SD1.x, SD2.x and SDXL.
//
// A ControlNet is a copy of the UNet's encoder half (conv_in, the time and
// SDXL add embeddings, the down blocks and the mid block: the UNet's own block
// code, models/unet_blocks.h) plus
//  - controlnet_cond_embedding: a small conv net that brings the control image
//    [B, 3, 8h, 8w] in [0, 1] down to conv_in's width at latent size (3x3
//    convs with SiLU, every second one stride 2; conditioning_embedding_out_channels),
//    added to conv_in's output;
//  - a "zero conv" (1x1) on every skip connection of the down path
//    (controlnet_down_blocks.k) and on the mid block's output (controlnet_mid_block).
// Its outputs, times the conditioning scale, are the UNet's extra residuals
// (models/unet.h UNetResiduals).
//
// Files (read_controlnet_file):
//  - a diffusers folder: config.json + diffusion_pytorch_model[.fp16].safetensors (or .bin);
//  - a single .safetensors / .pth / .ckpt (restricted unpickler) in A1111's
//    layout (sd-webui-controlnet / lllyasviel's ControlNet: keys under an optional
//    "control_model." prefix, the LDM UNet names for the encoder, input_hint_block.N,
//    zero_convs.N.0, middle_block_out.0), or in diffusers names. A single file
//    has no config: the encoder is its family's published UNet (the family from
//    the cross-attention width: 768 SD1, 1024 SD2, 2048 SDXL) and the hint
//    block's widths come from its shapes; a config.json beside a diffusers-named
//    file is used when present.
// Not supported (Error(kUnsupported) naming it): union models (xinsir
// controlnet-union: control_add_embedding / task_embedding), control-LoRAs,
// global_pool_conditions (shuffle) and class embeddings.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/unet.h"
#include "models/weights.h"

namespace diffuse {

struct ControlNetConfig {
  // The encoder's fields (in_channels, blocks, heads, cross-attention width,
  // text_time embedding...). Up-block fields are unused (mirrored from the down blocks).
  UNetConfig unet;
  int conditioning_channels = 3;
  std::vector<int> conditioning_embedding_out_channels = {16, 32, 96, 256};
  bool bgr = false;  // controlnet_conditioning_channel_order "bgr": the control image's channels are flipped

  // diffusers' ControlNetModel config.json; throws kUnsupported naming a field
  // this port does not build (global_pool_conditions, class embeddings, ...).
  static ControlNetConfig from_json(const nlohmann::json& j);
  // ControlNetModel.from_unet: the UNet's encoder fields.
  static ControlNetConfig from_unet(const UNetConfig& unet);
  void validate() const;
  // Skip connections of the down path = residuals it outputs (1 + per block: layers + downsampler).
  int num_down_residuals() const;
  // The pixel/latent ratio of the conditioning embedding (2^(entries - 1)); 8 for every published model.
  int cond_downscale() const { return 1 << (conditioning_embedding_out_channels.size() - 1); }
};

class ControlNet {
 public:
  // weights: diffusers names, checked by name and shape (models/weights.h),
  // converted once to `dtype` on `device`.
  ControlNet(const ControlNetConfig& config, const TensorMap& weights, DType dtype = DType::kF32,
             Device device = Device::kCPU);

  // sample [B, in, h, w], timesteps [B] or [1], context [B, L, D], cond [B or 1, C,
  // h * cond_downscale, w * cond_downscale] (the control image in [0, 1]); SDXL:
  // text_embeds [B, P], time_ids [B, n]. Returns the residuals times `scale`
  // (diffusers' conditioning_scale), or with guess_mode times
  // scale * logspace(-1, 0, K + 1) (the k-th down residual the k-th factor,
  // the mid one the last). Results are in the model's activation dtype on its device.
  UNetResiduals forward(const Tensor& sample, const Tensor& timesteps, const Tensor& context, const Tensor& cond,
                        const Tensor& text_embeds = {}, const Tensor& time_ids = {}, float scale = 1.0f,
                        bool guess_mode = false) const;

  const ControlNetConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  DType activation_dtype() const { return act_dtype_; }
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }
  Device device() const { return device_; }
  const WeightTable& weights() const { return weights_; }

  // Every (diffusers name, shape) the config expects, in placement order.
  static WeightSpecs expected_tensors(const ControlNetConfig& config);
  static TensorMap random_weights(const ControlNetConfig& config, uint64_t seed, DType dtype);

 private:
  void bind();

  ControlNetConfig config_;
  DType dtype_, act_dtype_;
  Device device_;
  WeightTable weights_;
  Tensor conv_in_w_, conv_in_b_, time_w1_, time_b1_, time_w2_, time_b2_;
  Tensor add_w1_, add_b1_, add_w2_, add_b2_;
  std::vector<Tensor> hint_w_, hint_b_;  // cond embedding: conv_in, blocks..., conv_out
  std::vector<UNet::Block> down_;
  UNet::Block mid_;
  std::vector<Tensor> zero_w_, zero_b_;  // controlnet_down_blocks.k as [C, C] matrices... kept 4-D
  Tensor mid_zero_w_, mid_zero_b_;
};

// A ControlNet file or folder as read (weights in diffusers names, stored dtypes).
struct ControlNetFile {
  std::string path;          // absolute
  std::string weights_path;  // the file the tensors come from (hashed for the infotext)
  std::string name;          // file stem or folder name: "control_v11p_sd15_canny"
  std::string layout;        // "diffusers" or "a1111"
  std::string family;        // "sd1", "sd2", "sdxl", or "" when the width is none of the published ones
  std::string control_type;  // from the name where it says ("canny", "depth", ...), else ""
  bool config_from_file = false;  // a config.json was read (else the published family's)
  ControlNetConfig config;
  TensorMap weights;
};

// Throws Error(kNotFound) for a missing path, kIo for an unreadable file or one
// that holds no ControlNet (naming a few keys), kUnsupported for the kinds above.
ControlNetFile read_controlnet_file(const std::string& path);

// What a file is, from its header / config alone (no tensor data): family,
// layout, control type, union or not. `probe` and the model lists use it.
struct ControlNetProbe {
  std::string layout, family, control_type;
  bool is_union = false;
  bool control_lora = false;
  int cross_attention_dim = 0;
};
// Returns nullopt-like empty layout when the tensors are not a ControlNet's.
ControlNetProbe probe_controlnet_keys(const std::vector<std::pair<std::string, Shape>>& tensors);
ControlNetProbe probe_controlnet(const std::string& path);

// The family a cross-attention width names ("sd1" 768, "sd2" 1024, "sdxl" 2048), else "".
std::string controlnet_family_of_width(int cross_attention_dim);

// The A1111 single-file name -> diffusers name map for a ControlNet's own
// parts (hint block with `cond_entries` widths, zero convs, middle_block_out),
// names without "control_model.". Keys of the encoder go through unet_keys.h.
std::string controlnet_a1111_to_diffusers(const std::string& key, int cond_entries);

}  // namespace diffuse
