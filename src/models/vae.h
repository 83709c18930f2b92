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

// Tiled decode and encode (vae_tiling.cpp; the method, why, and its numbers
// are in docs/vae-tiling.md). The result equals decode()/encode() up to f32
// rounding: no colour shift, no seam.
//  - The work at latent resolution (the decoder's conv_in, mid block and first
//    up block; the encoder's mid block and conv_out) runs on the whole image,
//    as in decode()/encode(), global attention included.
//  - The rest runs in stages, one per resolution level. A stage's input is held
//    for the whole image (the decoder's last stage starts from the activations
//    at a quarter of the output's pixels; below full resolution the decoder
//    also keeps every resnet's output); the stage itself runs tile by tile,
//    each tile's core computed from `halo` latent pixels of context: at least
//    the stage's receptive field, so zero padding at the tile edge never
//    reaches the core.
//  - Every GroupNorm in a stage normalises with the statistics of the WHOLE
//    image: before it is applied, a sweep over the tiles runs the stage up to
//    it and sums its input per channel (x and x^2, f64, over each tile's core).
//    A stage with k GroupNorms costs k short sweeps and one full one: the SD
//    decoder takes about 3x the untiled decode's time (docs/performance.md).
// Activations at full resolution exist only for one tile at a time.
struct VaeTileOptions {
  int tile = 64;   // side of a tile's core in latent pixels (64: 512 image pixels for SD)
  int halo = -1;   // latent pixels of context around a core; -1: each stage's receptive field
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

  // Tiled decode and encode: see VaeTileOptions above. As decode(z) / encode(x),
  // B images one after the other. encode_tiled needs H and W to be multiples of
  // the downsampling factor (8 for SD).
  using TileOptions = VaeTileOptions;
  Tensor decode_tiled(const Tensor& z, const TileOptions& options = {}) const;
  Encoded encode_tiled(const Tensor& x, const TileOptions& options = {}) const;
  // Receptive field (latent pixels) of decoder stage i (1 .. levels-1) / encoder
  // stage i (0 .. levels-1) at its input: the default halo.
  static int decoder_stage_halo(const VaeConfig& config, int stage);
  static int encoder_stage_halo(const VaeConfig& config, int stage);
  // Estimated peak bytes (activations and the assembled output) of decode_tiled
  // / encode_tiled for one width x height image, to choose tiling before running.
  static uint64_t tiled_decode_peak_bytes(const VaeConfig& config, DType activation_dtype, int width, int height,
                                          const TileOptions& options);
  static uint64_t tiled_encode_peak_bytes(const VaeConfig& config, DType activation_dtype, int width, int height,
                                          const TileOptions& options);
  // The largest tile side (a multiple of 8 latent pixels, from 16 up to the
  // image's larger side) whose decode estimate fits `budget` bytes; 0 when none does.
  static int tile_for_budget(const VaeConfig& config, DType activation_dtype, int width, int height,
                             uint64_t budget);

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
  // Weights to host memory and back (WeightTable::park): the model must not run while parked.
  void park();
  void unpark();

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
  // A GroupNorm (+ optional SiLU) of the network: group_norm over x itself in
  // decode()/encode(); with whole-image statistics in the tiled paths.
  using NormFn = std::function<Tensor(const Tensor& x, const Tensor& gamma, const Tensor& beta, bool silu)>;
  NormFn exact_norm() const;
  Tensor resnet(const Tensor& x, const Resnet& r, const NormFn& norm) const;
  Tensor mid_block(const Tensor& x, const MidBlock& m) const;
  // decode(): decoder_head, then decoder_stage 1 .. levels-1. The head runs at
  // latent resolution (post_quant_conv, conv_in, mid block, up block 0's
  // resnets); stage i upsamples up block i-1's output and runs up block i's
  // resnets (the last stage also norm_out and conv_out).
  Tensor decoder_head(const Tensor& z) const;                                 // [N, L, h, w] -> [N, Ctop, h, w]
  Tensor decoder_stage(int i, const Tensor& x, const NormFn& norm) const;     // [N, C, s, s] -> [N, C', 2s, 2s]
  // encode(): encoder_stage 0 .. levels-1, then encoder_tail. Stage i runs down
  // block i (stage 0 conv_in first) and its downsampler; the tail the mid
  // block, norm_out, conv_out, quant_conv and the posterior.
  Tensor encoder_stage(int i, const Tensor& x, const NormFn& norm) const;     // [N, C, S, S] -> [N, C', S/2, S/2]
  Encoded encoder_tail(const Tensor& h) const;                                // [N, Ctop, h, w]
  Tensor decode_tiled_one(const Tensor& z, const TileOptions& options) const;   // z [1, L, h, w]
  Tensor encode_head_tiled(const Tensor& x, const TileOptions& options) const;  // x [1, in, H, W]

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
