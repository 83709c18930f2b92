// CLIP vision encoder, a port of transformers' CLIPVisionModelWithProjection
// (modeling_clip.py) as IP-Adapter uses it (diffusers' encode_image):
//  - patch embedding (a conv with kernel = stride = patch, no bias), the class
//    token and absolute position embeddings, then pre_layrnorm;
//  - pre-LN encoder layers with bidirectional (non-causal) self-attention;
//  - image_embeds = visual_projection(post_layernorm(class token of the last
//    layer)) for the base IP-Adapters, and hidden_states[-2] (the output of the
//    second-to-last layer, no LayerNorm) for the "plus" ones.
// Weights use transformers' names ("vision_model.encoder.layers.N...",
// "visual_projection.weight"), the diffusers image_encoder/model.safetensors layout.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/ops.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace diffuse {

struct ClipVisionConfig {
  int hidden_size = 1280;
  int intermediate_size = 5120;
  int num_hidden_layers = 32;
  int num_attention_heads = 16;
  int image_size = 224;
  int patch_size = 14;
  int projection_dim = 1024;
  int num_channels = 3;
  std::string hidden_act = "gelu";  // gelu (erf, OpenCLIP) | quick_gelu (OpenAI)
  float layer_norm_eps = 1e-5f;

  // From transformers' config.json (a CLIPVisionConfig, or a CLIPConfig's vision_config).
  static ClipVisionConfig from_json(const nlohmann::json& j);
  // The published encoders IP-Adapter uses (h94/IP-Adapter image_encoder/config.json):
  static ClipVisionConfig vit_h14();     // laion CLIP-ViT-H-14: hidden 1280, 32 layers, projection 1024
  static ClipVisionConfig vit_bigg14();  // laion CLIP-ViT-bigG-14: hidden 1664, 48 layers, projection 1280
  // A config from a bare weights file (no config.json): sizes from the shapes;
  // heads and activation from the known encoders of that width (else 64-wide
  // heads and erf GELU). Throws Error(kIo) when the tensors are not a CLIP vision model.
  static ClipVisionConfig infer(const TensorMap& weights);

  void validate() const;  // throws kInvalidArgument
  Activation activation() const;
  int num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  std::string describe() const;  // "ViT-H/14 (hidden 1280, 32 layers, projection 1024)"
};

class ClipVisionModel {
 public:
  // Every tensor of expected_tensors() must be present with its shape (Error(kIo)
  // naming each problem); extras (position_ids) are allowed.
  ClipVisionModel(const ClipVisionConfig& config, const TensorMap& weights, DType dtype = DType::kF32,
                  Device device = Device::kCPU);
  // A diffusers image_encoder folder (config.json + model.safetensors) or a
  // weights file (.safetensors, .bin; config inferred, or config.json beside it).
  static std::unique_ptr<ClipVisionModel> load(const std::string& path, DType dtype, Device device);

  struct Output {
    Tensor image_embeds;  // [B, projection_dim]
    Tensor penultimate;   // [B, 1 + patches, hidden] hidden_states[-2]
  };
  // pixel_values [B, 3, image_size, image_size] (normalised, any float dtype / device).
  // With want_embeds = false the last layer is skipped (only `penultimate` is set).
  Output forward(const Tensor& pixel_values, bool want_embeds = true) const;

  const ClipVisionConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  DType activation_dtype() const { return act_dtype_; }
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }
  Device device() const { return device_; }

  static TensorMap random_weights(const ClipVisionConfig& config, uint64_t seed, DType dtype = DType::kF32);
  static std::vector<std::pair<std::string, Shape>> expected_tensors(const ClipVisionConfig& config);

  struct Layer {
    Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct Weights {
    Tensor class_embedding, patch_w, position_embedding, pre_ln_w, pre_ln_b;
    std::vector<Layer> layers;
    Tensor post_ln_w, post_ln_b, projection;
  };

 private:
  ClipVisionConfig config_;
  DType dtype_, act_dtype_;
  Device device_;
  Activation act_;
  WeightTable weights_;
  Weights w_;
};

}  // namespace diffuse
