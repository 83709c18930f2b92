// The Stable Diffusion denoiser: a port of diffusers' UNet2DConditionModel
// (src/diffusers/models/unets/unet_2d_condition.py) for SD1.x, SD2.x and SDXL.
//
// One class serves all three families. They differ only through UNetConfig
// fields (block widths, head counts, transformer depth, linear vs conv
// projections, SDXL's "text_time" additional embedding), never through
// version checks. Weights use diffusers' names (unet/diffusion_pytorch_model
// .safetensors); single-file (LDM) checkpoints are renamed by unet_keys.h.
//
// Supported block types: CrossAttnDownBlock2D, DownBlock2D, CrossAttnUpBlock2D,
// UpBlock2D; mid blocks UNetMidBlock2DCrossAttn, UNetMidBlock2D (one resnet) or
// none, and per-layer transformer depths (the distilled UNets of SSD-1B, Segmind
// Vega and BK-SDM). Other config options that change the
// architecture (class embeddings, time_cond_proj_dim, scale_shift resnets...)
// are rejected with Error(kUnsupported) naming the field.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace diffuse {

// The fields of diffusers' unet/config.json that matter. Per-block lists are
// stored expanded (an int in the JSON becomes one entry per down block).
struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  int sample_size = 64;  // latent side the model was trained at (pixels / 8)
  std::vector<int> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int> layers_per_block = {2, 2, 2, 2};
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  // "UNetMidBlock2DCrossAttn" (resnet, attention, resnet), "UNetMidBlock2D" (one
  // resnet, no attention: SSD-1B) or "" (no mid block, the JSON's null: BK-SDM).
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  // diffusers' naming quirk: when num_attention_heads is null, attention_head_dim
  // is used as the *number of heads* per block (SD1: 8; SD2.1: [5,10,20,20]).
  // The head dim is then channels / heads. See heads().
  std::vector<int> attention_head_dim = {8, 8, 8, 8};
  std::vector<int> num_attention_heads;  // empty = null in the JSON
  std::vector<int> cross_attention_dim = {1280, 1280, 1280, 1280};  // diffusers default; SD1: 768
  // BasicTransformerBlocks in each attention, per down block: one entry for all
  // the block's layers (diffusers' int per block) or one per layer (its list per
  // block, for asymmetric UNets such as SSD-1B). The mid block uses the last
  // block's first entry, as diffusers does.
  std::vector<std::vector<int>> transformer_layers_per_block = {{1}, {1}, {1}, {1}};
  // The same per up block (one entry, or one per layer: layers_per_block + 1),
  // diffusers' reverse_transformer_layers_per_block; empty = the down blocks'
  // mirrored, which needs one entry per down block.
  std::vector<std::vector<int>> reverse_transformer_layers_per_block;
  bool use_linear_projection = false;  // Transformer2DModel proj_in/out: Linear (SD2/SDXL) or 1x1 conv (SD1)
  bool upcast_attention = false;       // f32 scores; our attention op always accumulates in f32
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool flip_sin_to_cos = true;
  float freq_shift = 0.0f;
  int downsample_padding = 1;
  std::string addition_embed_type;  // "" (null) or "text_time" (SDXL)
  int addition_time_embed_dim = 0;  // SDXL: 256
  int projection_class_embeddings_input_dim = 0;  // SDXL: pooled 1280 + 6 * 256 = 2816
  int time_embedding_dim = 0;  // 0 = block_out_channels[0] * 4
  int conv_in_kernel = 3;
  int conv_out_kernel = 3;

  // Reads diffusers' config.json; throws kUnsupported naming any field whose
  // value changes the architecture in a way this port does not implement, and
  // kInvalidArgument for inconsistent lists.
  static UNetConfig from_json(const nlohmann::json& j);
  // Full-size published configs.
  static UNetConfig sd15();       // runwayml/stable-diffusion-v1-5
  static UNetConfig sd21();       // stabilityai/stable-diffusion-2-1 (768-v)
  static UNetConfig sdxl_base();  // stabilityai/stable-diffusion-xl-base-1.0
  static UNetConfig sdxl_refiner();  // stabilityai/stable-diffusion-xl-refiner-1.0

  void validate() const;                  // throws kInvalidArgument / kUnsupported
  int num_blocks() const { return static_cast<int>(block_out_channels.size()); }
  int heads(int down_block) const;        // attention heads of down block i (the mid block uses the last)
  // Transformer depth of layer j of down block i / up block i (the lists above, expanded).
  int down_transformer_layers(int block, int layer) const;
  int up_transformer_layers(int block, int layer) const;
  // The fields whose values differ between the networks the two configs build
  // (empty: the same architecture). Values that build nothing, such as the depth
  // of a block without attention, are not compared.
  std::vector<std::string> architecture_differences(const UNetConfig& other) const;
  int time_embed_dim() const { return time_embedding_dim > 0 ? time_embedding_dim : block_out_channels[0] * 4; }
  bool has_text_time() const { return addition_embed_type == "text_time"; }
};

// Activations of top-level modules (diffusers forward-hook names), filled by
// forward() when asked for. down[i] is the hidden state of down_blocks.i.
struct UNetIntermediates {
  Tensor conv_in, time_embedding, add_embedding;  // time_embedding: before the add embedding is added
  std::vector<Tensor> down, up;
  Tensor mid, conv_norm_out;  // conv_norm_out: before the SiLU
};

// Extra inputs that a ControlNet adds (diffusers' down_block_additional_residuals /
// mid_block_additional_residual): down[k] is added to the k-th skip connection
// (conv_in's output, then every resnet(+attention) output and downsampler output
// of the down blocks, in order), mid to the mid block's output. Each has the
// shape of what it is added to, with the UNet's batch.
struct UNetResiduals {
  std::vector<Tensor> down;
  Tensor mid;
};

class UNet {
 public:
  // weights: diffusers names. Every expected tensor is checked by name and
  // shape (models/weights.h: missing, unexpected or misshapen tensors throw
  // Error(kIo) naming them). Weights are converted once to `dtype` and moved to
  // `device`.
  UNet(const UNetConfig& config, const TensorMap& weights, DType dtype = DType::kF32,
       Device device = Device::kCPU);

  // sample [B, in_channels, h, w] (h and w divisible by 2^(number of downsamplers)),
  // timesteps [B] or [1] (f32, fractional allowed), context [B, L, cross_attention_dim].
  // SDXL ("text_time"): text_embeds [B, P] (pooled) and time_ids [B, 6].
  // Inputs may live on any device / floating dtype; they are converted to the
  // model's. The result [B, out_channels, h, w] has sample's dtype and device.
  Tensor forward(const Tensor& sample, const Tensor& timesteps, const Tensor& context,
                 const Tensor& text_embeds = {}, const Tensor& time_ids = {},
                 UNetIntermediates* intermediates = nullptr, const UNetResiduals* residuals = nullptr) const;

  const UNetConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }  // weights
  // Activations default to the weight dtype. A CPU without bf16 arithmetic runs
  // "bf16" as bf16 weights with f32 activations (set_activation_dtype(kF32)):
  // half the memory, f32 numerics.
  DType activation_dtype() const { return act_dtype_; }
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }
  Device device() const { return device_; }

  // The placed weights by diffusers name, and one replaced (then bound again):
  // how adapters such as LoRA patch the model.
  const WeightTable& weights() const { return weights_; }
  void replace_weight(const std::string& name, const Tensor& value);
  // Weights to host memory and back (WeightTable::park): the model must not run while parked.
  void park();
  void unpark();

  // Random weights for benchmarks and tests (models/weights.h random_weights:
  // std 0.02, norm scales 1 +- 0.02), on the CPU in `dtype`.
  static TensorMap random_weights(const UNetConfig& config, uint64_t seed, DType dtype);
  // Every (diffusers name, shape) the config expects: the one list that serves
  // loading, random init and the key tests.
  static std::vector<std::pair<std::string, Shape>> expected_tensors(const UNetConfig& config);

  // Weight groups, resolved once at load (public only so the .cpp helpers can name them).
  struct Resnet {
    Tensor norm1_w, norm1_b, conv1_w, conv1_b, temb_w, temb_b, norm2_w, norm2_b, conv2_w, conv2_b;
    Tensor shortcut_w, shortcut_b;  // undefined when in == out channels
  };
  struct Attention {
    Tensor q_w, k_w, v_w, out_w, out_b;
    // q/k/v (self-attention) or k/v (cross-attention) weights as one matrix when they lie back to
    // back in memory (GPU weights are packed in declaration order): one GEMM instead of three or two.
    Tensor qkv_w, kv_w;
  };
  struct TransformerBlock {
    Tensor norm1_w, norm1_b, norm2_w, norm2_b, norm3_w, norm3_b;
    Attention attn1, attn2;
    Tensor ff_in_w, ff_in_b, ff_out_w, ff_out_b;
  };
  struct Transformer {  // Transformer2DModel
    int heads = 1;
    Tensor norm_w, norm_b, proj_in_w, proj_in_b, proj_out_w, proj_out_b;  // proj weights viewed as [C, C]
    std::vector<TransformerBlock> blocks;
  };
  struct Block {  // a down, mid or up block
    std::vector<Resnet> resnets;
    std::vector<Transformer> attentions;  // empty for DownBlock2D / UpBlock2D
    Tensor sample_w, sample_b;            // downsampler / upsampler conv; undefined if none
  };

 private:
  void bind();  // the slots below, from weights_

  UNetConfig config_;
  DType dtype_;
  DType act_dtype_;
  Device device_;
  WeightTable weights_;
  Tensor conv_in_w_, conv_in_b_;
  Tensor time_w1_, time_b1_, time_w2_, time_b2_;
  Tensor add_w1_, add_b1_, add_w2_, add_b2_;  // SDXL add_embedding
  std::vector<Block> down_, up_;
  Block mid_;
  Tensor norm_out_w_, norm_out_b_, conv_out_w_, conv_out_b_;
};

}  // namespace diffuse
