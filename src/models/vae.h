// The Stable Diffusion VAE, a port of diffusers' AutoencoderKL
// (models/autoencoders/autoencoder_kl.py, vae.py Encoder/Decoder,
// resnet.py ResnetBlock2D without time embedding, UNetMidBlock2D with one
// single-head attention, Downsample2D with asymmetric (0,1,0,1) padding,
// Upsample2D nearest + conv). SD1, SD2 and SDXL share the architecture; only
// scaling_factor differs (0.18215 vs 0.13025 for SDXL).
// Weights use diffusers names ("decoder.up_blocks.N.resnets.M.conv1.weight");
// src/models/keymap.h converts the LDM single-file layout (first_stage_model.*).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace diffuse {

struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  std::vector<int> block_out_channels{128, 256, 512, 512};
  int layers_per_block = 2;  // encoder blocks have this many resnets, decoder blocks one more
  int latent_channels = 4;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  std::optional<float> shift_factor;  // null for SD VAEs
  bool force_upcast = true;           // diffusers upcasts the VAE to fp32 when the pipeline is fp16
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  // From a diffusers vae/config.json (AutoencoderKL); throws kUnsupported for
  // other block types or activations.
  static VaeConfig from_json(const nlohmann::json& j);
  static VaeConfig sd();    // SD1.x / SD2.x (scaling 0.18215)
  static VaeConfig sdxl();  // same architecture, scaling 0.13025

  void validate() const;  // throws kInvalidArgument
};

class Vae {
 public:
  // Every tensor of expected_tensors() must be present with its shape (1x1
  // attention convs must already be linears: keymap.h does that); problems are
  // Error(kIo) naming each tensor (models/weights.h). Extra names are allowed.
  Vae(const VaeConfig& config, const TensorMap& weights, DType dtype = DType::kF32, Device device = Device::kCPU);

  // z [B, latent, h, w], already divided by scaling_factor (and shifted) ->
  // raw decode().sample [B, out, 8h, 8w] (no clamping).
  Tensor decode(const Tensor& z) const;

  // x [B, in, H, W] in [-1, 1] -> the DiagonalGaussianDistribution's
  // mean, logvar (clamped to [-30, 20]) and std = exp(0.5 logvar), each [B, latent, H/8, W/8].
  struct Encoded {
    Tensor mean, logvar, std;
  };
  Encoded encode(const Tensor& x) const;

  const VaeConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }  // weights
  // Activations default to the weight dtype; see UNet::set_activation_dtype.
  DType activation_dtype() const { return act_dtype_; }
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }
  Device device() const { return device_; }
  // An f32 VAE inside a half-precision pipeline (SDXL's force_upcast) may run its
  // convolutions in TF32, as diffusers does under PyTorch's defaults (ops.h AllowTf32).
  // Re-lays its conv weights for the backend's preference under that mode.
  void set_allow_tf32(bool on);
  bool allow_tf32() const { return tf32_; }

  // The placed weights by name, and one replaced (then bound again).
  const WeightTable& weights() const { return weights_; }
  void replace_weight(const std::string& name, const Tensor& value);

  // Deterministic pseudo-random weights (benchmarks, tests; models/weights.h random_weights).
  static TensorMap random_weights(const VaeConfig& config, uint64_t seed, DType dtype = DType::kF32);
  static std::vector<std::pair<std::string, Shape>> expected_tensors(const VaeConfig& config);

  // One slot per checkpoint tensor (see vae.cpp visit_tensors for names and shapes).
  struct Resnet {  // ResnetBlock2D, temb_channels=None
    Tensor norm1_w, norm1_b, conv1_w, conv1_b, norm2_w, norm2_b, conv2_w, conv2_b;
    Tensor shortcut_w, shortcut_b;  // 1x1 conv_shortcut when in != out channels
  };
  struct Attention {  // diffusers Attention with group_norm, 1 head, linear to_q/k/v/out
    Tensor norm_w, norm_b, q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b;
  };
  struct MidBlock {  // UNetMidBlock2D: resnet, attention, resnet
    Resnet resnet0;
    Attention attn;  // undefined slots when !mid_block_add_attention
    Resnet resnet1;
  };
  struct Block {  // DownEncoderBlock2D / UpDecoderBlock2D
    std::vector<Resnet> resnets;
    Tensor sample_w, sample_b;  // downsampler / upsampler conv; undefined on the last block
  };
  struct Weights {
    Tensor enc_conv_in_w, enc_conv_in_b;
    std::vector<Block> down;
    MidBlock enc_mid;
    Tensor enc_norm_out_w, enc_norm_out_b, enc_conv_out_w, enc_conv_out_b;
    Tensor quant_w, quant_b, post_quant_w, post_quant_b;
    Tensor dec_conv_in_w, dec_conv_in_b;
    MidBlock dec_mid;
    std::vector<Block> up;  // diffusers order: up[0] works at the lowest resolution
    Tensor dec_norm_out_w, dec_norm_out_b, dec_conv_out_w, dec_conv_out_b;
  };

 private:
  Tensor resnet(const Tensor& x, const Resnet& r) const;
  Tensor mid_block(const Tensor& x, const MidBlock& m) const;

  VaeConfig config_;
  DType dtype_;
  DType act_dtype_;
  Device device_;
  bool tf32_ = false;
  void bind();  // w_'s slots, from weights_
  WeightTable weights_;
  Weights w_;
};

}  // namespace diffuse
