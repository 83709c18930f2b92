// CLIP text encoder, a port of transformers' CLIPTextModel /
// CLIPTextModelWithProjection (modeling_clip.py) as Stable Diffusion uses it:
//  - causal self-attention and NO padding mask (SD configs pass none, so
//    padding positions are attended under the causal mask);
//  - pooled output at argmax(input_ids), i.e. the first <|endoftext|> (49407):
//    the legacy `eos_token_id: 2` behaviour every SD config keeps;
//  - activation from the config (quick_gelu for OpenAI CLIP-L, erf gelu for
//    OpenCLIP-H/bigG), never from the model width.
// Weights use the diffusers/transformers names ("text_model.encoder.layers.N...",
// "text_projection.weight"); src/models/keymap.h converts single-file layouts.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/ops.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace diffuse {

struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  int projection_dim = 768;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu (erf)
  float layer_norm_eps = 1e-5f;
  bool with_projection = false;  // CLIPTextModelWithProjection (adds text_projection.weight, no bias)

  // From a transformers config.json; throws kUnsupported for other activations.
  static ClipTextConfig from_json(const nlohmann::json& j, bool with_projection);
  // Full-size published configs.
  static ClipTextConfig sd15();      // openai/clip-vit-large-patch14 (CLIP-L), quick_gelu
  static ClipTextConfig sd21();      // OpenCLIP ViT-H, 23 of its 24 layers, gelu
  static ClipTextConfig sdxl_te1();  // CLIP-L (hidden_states[-2] used)
  static ClipTextConfig sdxl_te2();  // OpenCLIP ViT-bigG, 32 layers, gelu, with projection

  void validate() const;  // throws kInvalidArgument
  Activation activation() const;
};

class ClipTextModel {
 public:
  // Every tensor of expected_tensors() must be present with that shape
  // (models/weights.h: Error(kIo) naming each problem); extra names are allowed
  // (older files carry buffers such as position_ids). Weights are converted to
  // `dtype` on `device` once here.
  ClipTextModel(const ClipTextConfig& config, const TensorMap& weights, DType dtype = DType::kF32,
                Device device = Device::kCPU);

  struct Output {
    Tensor last_hidden_state;           // [B, L, D] after final_layer_norm
    std::vector<Tensor> hidden_states;  // L+1 entries of [B, L, D]; [0] = embeddings, last is BEFORE final LN
    Tensor pooled;                      // [B, D] last_hidden_state at argmax(input_ids)
    Tensor text_embeds;                 // [B, P] pooled @ text_projection^T (only with_projection)
  };
  // Textual inversion (adapters/embedding.h): rows that take the place of the
  // token embedding at some positions of input_ids, as the rows transformers
  // appends to the token table for added tokens (load_textual_inversion).
  struct TokenOverride {
    std::vector<int64_t> positions;  // flattened b * L + t, each at most once
    Tensor rows;                     // [positions.size(), hidden_size], any float dtype and device
  };
  // input_ids [B, L] i64 (or i32), L <= max_position_embeddings. With an
  // override, the ids at its positions are not looked up and may lie past the
  // vocabulary: pooling still takes argmax(input_ids), so ids past the
  // vocabulary pool where transformers' added tokens would.
  Output forward(const Tensor& input_ids, const TokenOverride* override_rows = nullptr) const;
  // The model's final LayerNorm on any hidden state [B, L, D] (A1111 clip skip
  // re-applies it to an earlier layer's output).
  Tensor final_layer_norm(const Tensor& hidden) const;

  const ClipTextConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }  // weights
  // Activations default to the weight dtype; see UNet::set_activation_dtype.
  DType activation_dtype() const { return act_dtype_; }
  void set_activation_dtype(DType dtype) { act_dtype_ = dtype; }
  Device device() const { return device_; }

  // The placed weights by name, and one replaced (then bound again): how
  // adapters such as LoRA patch the model.
  const WeightTable& weights() const { return weights_; }
  void replace_weight(const std::string& name, const Tensor& value);
  // Weights to host memory and back (WeightTable::park): the model must not run while parked.
  void park();
  void unpark();

  // Deterministic pseudo-random weights (benchmarks, tests; models/weights.h random_weights).
  static TensorMap random_weights(const ClipTextConfig& config, uint64_t seed, DType dtype = DType::kF32);
  // Every tensor the model needs, by diffusers name, with its shape.
  static std::vector<std::pair<std::string, Shape>> expected_tensors(const ClipTextConfig& config);

  // One slot per checkpoint tensor (see clip_text.cpp visit_tensors for names and shapes).
  struct Layer {
    Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct Weights {
    Tensor token_embedding, position_embedding;
    std::vector<Layer> layers;
    Tensor final_ln_w, final_ln_b;
    Tensor text_projection;  // undefined without projection
  };

 private:
  void bind();  // w_'s slots, from weights_

  ClipTextConfig config_;
  DType dtype_;
  DType act_dtype_;
  Device device_;
  Activation act_;
  WeightTable weights_;
  Weights w_;
};

}  // namespace diffuse
