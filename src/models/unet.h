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
// Vega and BK-SDM), and LCM-distilled UNets' guidance condition
// (time_cond_proj_dim: TimestepEmbedding.cond_proj). Other config options that
// change the architecture (class embeddings, scale_shift resnets...) are
// rejected with Error(kUnsupported) naming the field.
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
  // LCM-distilled UNets (LCM_Dreamshaper_v7, lcm-sdxl: 256): the width of the guidance-scale
  // embedding (guidance_scale_embedding below) that TimestepEmbedding.cond_proj (a Linear
  // without bias) adds to the sinusoidal timestep embedding; 0 = none (the JSON's null).
  int time_cond_proj_dim = 0;
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
  bool has_guidance_embedding() const { return time_cond_proj_dim > 0; }
};

// diffusers' get_guidance_scale_embedding (LatentConsistencyModelPipeline and
// StableDiffusion(XL)Pipeline for UNets with time_cond_proj_dim; VDM's
// sinusoidal embedding): for each w, [sin(1000 w f_i), cos(1000 w f_i)] with
// f_i = exp(-i log(10000) / (dim/2 - 1)), i < dim/2, zero-padded to an odd
// dim, in float32 as torch computes it. The pipelines pass w = guidance_scale - 1.
// Returns [w.size(), dim] f32 on the CPU.
Tensor guidance_scale_embedding(const std::vector<float>& w, int dim);

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
struct UNetImagePrompt;  // below

struct UNetResiduals {
  std::vector<Tensor> down;
  Tensor mid;
  // IP-Adapter image tokens for the decoupled cross-attention (nullptr: none).
  // They ride here so that every caller that passes residuals can pass them.
  const UNetImagePrompt* image_prompt = nullptr;
};

// IP-Adapter's decoupled cross-attention (diffusers' IPAdapterAttnProcessor2_0):
// every cross-attention (attn2) of the UNet adds, before its to_out projection,
//   scale * attention(q, tokens @ to_k_ip^T, tokens @ to_v_ip^T)
// to its text attention, per source (one per adapter; a source's images are
// concatenated along the token axis). layers[i] belongs to the i-th
// cross-attention in diffusers' attn-processor order, which is the order of
// the adapter file's ip_adapter.<2i+1> keys: the down blocks, then the up
// blocks, then the mid block, each attention's transformer blocks in turn
// (UNet::cross_attention_names).
struct UNetImagePrompt {
  struct Layer {
    Tensor k_w, v_w;     // to_k_ip / to_v_ip [C, D], on the UNet's device
    float scale = 1.0f;  // 0 skips the layer (diffusers skips it too)
  };
  struct Source {
    Tensor tokens;              // [B, N, D] in the UNet's batch order (CFG: [negative x n, positive x n])
    std::vector<Layer> layers;  // one per cross-attention
  };
  std::vector<Source> sources;
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
  // time_cond_proj_dim > 0 (LCM): timestep_cond [B, time_cond_proj_dim] (guidance_scale_embedding;
  // diffusers' timestep_cond), required; other UNets take none.
  // Inputs may live on any device / floating dtype; they are converted to the
  // model's. The result [B, out_channels, h, w] has sample's dtype and device.
  Tensor forward(const Tensor& sample, const Tensor& timesteps, const Tensor& context,
                 const Tensor& text_embeds = {}, const Tensor& time_ids = {},
                 UNetIntermediates* intermediates = nullptr, const UNetResiduals* residuals = nullptr,
                 const Tensor& timestep_cond = {}) const;

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
  // The cross-attentions in diffusers' attn-processor order, as (processor
  // name without ".processor", e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
  // its width C): UNetImagePrompt's layer order.
  static std::vector<std::pair<std::string, int>> cross_attention_names(const UNetConfig& config);

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
  // Checks an image prompt against this UNet and the batch; returns it, or `local`
  // holding a copy moved to the UNet's device and activation dtype.
  const UNetImagePrompt* prepare_image_prompt(const UNetImagePrompt& ip, int64_t batch, UNetImagePrompt& local) const;
  static size_t cross_attention_count(const std::vector<Block>& blocks);
  static size_t cross_attention_count(const Block& block);

  UNetConfig config_;
  DType dtype_;
  DType act_dtype_;
  Device device_;
  WeightTable weights_;
  Tensor conv_in_w_, conv_in_b_;
  Tensor time_w1_, time_b1_, time_w2_, time_b2_;
  Tensor time_cond_w_;  // time_embedding.cond_proj (LCM); undefined when none
  Tensor add_w1_, add_b1_, add_w2_, add_b2_;  // SDXL add_embedding
  std::vector<Block> down_, up_;
  Block mid_;
  Tensor norm_out_w_, norm_out_b_, conv_out_w_, conv_out_b_;
};

}  // namespace diffuse
