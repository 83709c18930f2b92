// TAESD: madebyollin's Tiny AutoEncoder for Stable Diffusion latents, decoder
// only (github.com/madebyollin/taesd taesd.py `Decoder`; diffusers
// models/autoencoders/autoencoder_tiny.py + vae.py `DecoderTiny`). Diffuse uses
// it for live previews: about 1.2M parameters instead of the VAE decoder's 49M.
//
// The decoder is one nn.Sequential; the index of each entry is its key prefix
// in taesd_decoder.pth / .safetensors ("the original layout"):
//    0  Clamp: tanh(z / 3) * 3
//    1  conv3x3(latent, C) + bias         2  ReLU
//    3..5   Block x3    6  Upsample x2 (nearest)    7  conv3x3(C, C), no bias
//    8..10  Block x3   11  Upsample                12  conv3x3(C, C), no bias
//   13..15  Block x3   16  Upsample                17  conv3x3(C, C), no bias
//   18      Block      19  conv3x3(C, 3) + bias
// Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x): keys "N.conv.0/2/4.weight|bias"
// (a 1x1 "N.skip.weight" replaces the identity only where widths differ: never here).
// The published decoder has C = 64; the width is read from the file's shapes.
//
// Latents in: the UNet's latents as they are (already x scaling_factor): no
// division, unlike the full VAE. Output: RGB [N, 3, 8h, 8w] in about [0, 1]
// (the original convention; diffusers' AutoencoderTiny returns 2x - 1).
//
// SD1/SD2 (taesd) and SDXL (taesdxl) decoders share the architecture and differ
// in their weights only: which file a family uses is one row of a table
// (taesd.cpp kTaesdVariants), as A1111 names them in models/VAE-approx.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/family.h"
#include "models/weights.h"

namespace diffuse {

struct TaesdConfig {
  int latent_channels = 4;
  int channels = 64;                    // C: the width of every block
  int out_channels = 3;
  std::vector<int> blocks{3, 3, 3, 1};  // Blocks per stage; Upsample + conv between stages

  static TaesdConfig taesd();  // the published decoder (taesd and taesdxl)
  // The published stage layout with the width and latent channels read from
  // a decoder's shapes ("1.weight" [C, latent, 3, 3], original layout).
  // Throws Error(kIo) naming the file when "1.weight" is missing or not 4-D.
  static TaesdConfig from_weights(const TensorMap& decoder, const std::string& file);
  void validate() const;  // throws kInvalidArgument
};

// A decoder's tensors under original-layout names, from any layout a file may
// use: the original ("1.weight", "3.conv.0.weight", ...), a whole TAESD
// module's state dict ("decoder.1.weight", ...) or diffusers' AutoencoderTiny
// ("decoder.layers.0.weight": diffusers' Sequential lacks the Clamp, so its
// index is one less). Encoder tensors are dropped. Throws Error(kIo) naming
// `file` when none of the layouts is there.
TensorMap taesd_decoder_tensors(const TensorMap& file_tensors, const std::string& file);

class TaesdDecoder {
 public:
  // `weights` in the original layout (taesd_decoder_tensors). Every tensor of
  // expected_tensors() must be there with its shape and nothing else: problems
  // are Error(kIo) naming each tensor (models/weights.h).
  TaesdDecoder(const TaesdConfig& config, const TensorMap& weights, DType dtype = DType::kF32,
               Device device = Device::kCPU);

  // A taesd_decoder.safetensors / .pth file, or a diffusers AutoencoderTiny
  // folder (diffusion_pytorch_model.safetensors in it). Error(kIo) naming the
  // path for a missing, unreadable or wrong file.
  static TaesdDecoder load(const std::string& path, DType dtype = DType::kF32, Device device = Device::kCPU);

  // z [N, latent, h, w] (UNet latents, any floating dtype, on device()) ->
  // [N, out, 8h, 8w] in the weights' dtype, about [0, 1] (not clamped).
  Tensor decode(const Tensor& z) const;

  const TaesdConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t parameter_count() const;

  static WeightSpecs expected_tensors(const TaesdConfig& config);
  // Deterministic pseudo-random weights (benchmarks, tests; models/weights.h).
  static TensorMap random_weights(const TaesdConfig& config, uint64_t seed, DType dtype = DType::kF32);

  struct Block {  // conv.0, conv.2, conv.4 (3x3 with bias)
    Tensor conv0_w, conv0_b, conv1_w, conv1_b, conv2_w, conv2_b;
  };
  struct Weights {
    Tensor in_w, in_b;                        // 1
    std::vector<std::vector<Block>> stages;   // Blocks of each stage
    std::vector<Tensor> up_w;                 // the bias-free conv after each Upsample
    Tensor out_w, out_b;                      // the last conv
  };

 private:
  Tensor block(const Tensor& x, const Block& b) const;  // [N, C, H, W] -> [N, C, H, W]
  TaesdConfig config_;
  DType dtype_;
  Device device_;
  WeightTable weights_;
  Weights w_;
};

// Decoder file stems a family's previews use ("taesd_decoder" for SD1/SD2,
// "taesdxl_decoder" for SDXL), and the diffusers folder names ("taesd", "taesdxl").
struct TaesdVariant {
  Family family;
  const char* decoder_stem;     // + .safetensors / .pth
  const char* diffusers_folder;  // madebyollin/taesd on the Hub
};
const TaesdVariant& taesd_variant(Family family);

// The first decoder for `family` found in `dirs`, in order: in each folder
// <stem>.safetensors, <stem>.pth, then the diffusers folder <name>/ holding
// diffusion_pytorch_model.safetensors. nullopt when there is none.
std::optional<std::string> find_taesd_decoder(const std::vector<std::string>& dirs, Family family);

}  // namespace diffuse
