// IP-Adapter (Ye et al. 2023, tencent-ailab/IP-Adapter; diffusers'
// IPAdapterMixin.load_ip_adapter): an image prompt for a Stable Diffusion UNet.
// A CLIP vision encoder (models/clip_vision.h) encodes the reference image;
// the adapter's image projection turns that into a few tokens of the UNet's
// cross-attention width, and its to_k_ip / to_v_ip per cross-attention let
// every cross-attention attend to them beside the text (the UNet side is
// UNetImagePrompt in models/unet.h). The projections, as diffusers builds them
// from the original state dicts (loaders/unet.py _convert_ip_adapter_image_proj_to_diffusers):
//  - base (ip-adapter_sd15, _sdxl, _sdxl_vit-h, light): ImageProjection,
//    Linear(image_embeds) -> 4 tokens, LayerNorm; input: the encoder's image_embeds;
//  - plus (ip-adapter-plus_*, plus-face_*): IPAdapterPlusImageProjection, the
//    perceiver Resampler (learned latents, proj_in, 4 x [PerceiverAttention
//    over concat(x, latents) with 64-wide heads + LayerNorm/GELU FeedForward],
//    proj_out, norm_out); input: hidden_states[-2];
//  - full (ip-adapter-full-face): IPAdapterFullImageProjection, Linear, GELU,
//    Linear, LayerNorm per token of hidden_states[-2].
// Files: .safetensors with image_proj.* and ip_adapter.<n>.to_{k,v}_ip.weight
// keys, or .bin/.pt as torch.save({"image_proj": {...}, "ip_adapter": {...}})
// through the restricted unpickler. FaceID adapters (insightface embeddings)
// are refused with Error(kUnsupported).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/clip_vision.h"
#include "models/unet.h"

namespace diffuse {

enum class IpAdapterKind { kBase, kPlus, kFull };
const char* ip_adapter_kind_name(IpAdapterKind k);  // "base", "plus", "full"

class IpAdapter {
 public:
  // Throws Error(kIo) for an unreadable file or keys that are not an
  // IP-Adapter (naming what is missing), kUnsupported for FaceID files.
  static std::unique_ptr<IpAdapter> load(const std::string& path, DType dtype, Device device);
  // The file's tensors by full key name (a .bin's nested dicts flattened to
  // "image_proj.<k>" / "ip_adapter.<k>"), as stored.
  static TensorMap read_weights(const std::string& path);
  // From full key names (image_proj.*, ip_adapter.*); `name` for messages.
  IpAdapter(const TensorMap& weights, DType dtype, Device device, std::string name);

  const std::string& name() const { return name_; }
  IpAdapterKind kind() const { return kind_; }
  int cross_attention_dim() const { return cross_dim_; }  // D of the tokens
  int tokens_per_image() const { return tokens_; }
  // What the projection eats: base: the encoder's projection_dim (image_embeds);
  // plus / full: the encoder's hidden_size (hidden_states[-2]).
  int input_dim() const { return input_dim_; }
  bool uses_hidden_states() const { return kind_ != IpAdapterKind::kBase; }
  size_t num_layers() const { return k_.size(); }
  // The family this adapter was made for, from its widths ("SD 1.x", "SD 2.x", "SDXL").
  std::string family_label() const;

  // Error(kInvalidArgument) saying which families do not match when this
  // adapter's layers or token width do not fit `unet` (model_label: "SDXL model 'x'").
  void check_unet(const UNetConfig& unet, const std::string& model_label) const;
  // Error(kInvalidArgument) when `encoder` does not produce this adapter's input.
  void check_encoder(const ClipVisionConfig& encoder, const std::string& encoder_path) const;
  // The encoder this adapter expects, for messages ("ViT-H/14 (image_embeds 1024)").
  std::string expected_encoder() const;

  // base: image_embeds [M, E] -> [M, 4, D]; plus / full: hidden [M, L, H] -> [M, T, D],
  // computed in the activation dtype (the weight dtype unless set; see UNet::set_activation_dtype).
  Tensor project(const Tensor& embeds) const;
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }

  // The UNet-side layers with one scale each (UNet::cross_attention_names order).
  std::vector<UNetImagePrompt::Layer> layers(const std::vector<float>& scales) const;

 private:
  struct ResamplerLayer {
    Tensor norm1_w, norm1_b, norm2_w, norm2_b, to_q, to_kv, to_out, ff_ln_w, ff_ln_b, ff1, ff2;
  };
  std::string name_;
  IpAdapterKind kind_ = IpAdapterKind::kBase;
  int cross_dim_ = 0, tokens_ = 0, input_dim_ = 0, heads_ = 1;
  DType dtype_, act_dtype_;
  Device device_;
  // base: proj / norm; full: proj0, proj2, norm; plus: the resampler.
  Tensor proj_w_, proj_b_, proj2_w_, proj2_b_, norm_w_, norm_b_;
  Tensor latents_, proj_in_w_, proj_in_b_, proj_out_w_, proj_out_b_;
  std::vector<ResamplerLayer> resampler_;
  std::vector<Tensor> k_, v_;  // to_k_ip / to_v_ip [C, D] per layer
};

// What an adapter file is, from its tensors' names and shapes alone (nothing
// converted): for the server's checks before a job is queued.
struct IpAdapterProbe {
  IpAdapterKind kind = IpAdapterKind::kBase;
  int cross_attention_dim = 0;  // 768 SD 1.x, 1024 SD 2.x, 2048 SDXL
  size_t layers = 0;
  std::string family;  // "sd1", "sd2", "sdxl" by the width; "" for another width
};
// Throws Error(kIo) like IpAdapter's constructor when the file is no IP-Adapter.
IpAdapterProbe probe_ip_adapter(const std::string& path);

// diffusers' set_ip_adapter_scale for one adapter on `unet`: a number sets every
// cross-attention; an object {"down": ..., "mid": ..., "up": ...} sets blocks
// (a number for all of a side's blocks with attention, or {"block_i": number
// or a list of one number per attention}) and leaves the rest at 0, as
// diffusers does. One scale per UNet::cross_attention_names entry. Scales must
// be finite and in [0, 2]; unknown keys, blocks without attention and lists of
// the wrong length are Error(kInvalidArgument) naming them.
std::vector<float> ip_adapter_layer_scales(const nlohmann::json& spec, const UNetConfig& unet);

}  // namespace diffuse
