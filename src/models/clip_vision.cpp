// CLIP vision encoder forward pass (transformers CLIPVisionTransformer +
// CLIPVisionModelWithProjection.visual_projection).
#include "models/clip_vision.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/json_util.h"

namespace diffuse {

namespace fs = std::filesystem;

// ---- config ---------------------------------------------------------------

ClipVisionConfig ClipVisionConfig::from_json(const nlohmann::json& in) {
  const nlohmann::json& j = in.contains("vision_config") && in["vision_config"].is_object() ? in["vision_config"] : in;
  ClipVisionConfig c;
  c.hidden_size = j.value("hidden_size", c.hidden_size);
  c.intermediate_size = j.value("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = j.value("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = j.value("num_attention_heads", c.num_attention_heads);
  c.image_size = j.value("image_size", c.image_size);
  c.patch_size = j.value("patch_size", c.patch_size);
  c.projection_dim = j.value("projection_dim", c.projection_dim);
  c.num_channels = j.value("num_channels", c.num_channels);
  c.hidden_act = j.value("hidden_act", c.hidden_act);
  c.layer_norm_eps = j.value("layer_norm_eps", c.layer_norm_eps);
  c.validate();
  return c;
}

ClipVisionConfig ClipVisionConfig::vit_h14() { return ClipVisionConfig{}; }

ClipVisionConfig ClipVisionConfig::vit_bigg14() {
  ClipVisionConfig c;
  c.hidden_size = 1664;
  c.intermediate_size = 8192;
  c.num_hidden_layers = 48;
  c.num_attention_heads = 16;
  c.projection_dim = 1280;
  return c;
}

namespace {

const char* kPrefix = "vision_model.";

// The shape of `name` in `w`, or an Error(kIo) naming it.
const Tensor& need(const TensorMap& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end())
    throw_error(ErrorCode::kIo, "[clip_vision] the weights have no '" + name + "': not a CLIP vision model "
                                "(transformers CLIPVisionModelWithProjection keys)");
  return it->second;
}

}  // namespace

ClipVisionConfig ClipVisionConfig::infer(const TensorMap& w) {
  ClipVisionConfig c;
  const Tensor& patch = need(w, "vision_model.embeddings.patch_embedding.weight");  // [D, 3, P, P]
  const Tensor& pos = need(w, "vision_model.embeddings.position_embedding.weight");  // [1 + N, D]
  const Tensor& fc1 = need(w, "vision_model.encoder.layers.0.mlp.fc1.weight");      // [F, D]
  const Tensor& proj = need(w, "visual_projection.weight");                          // [P, D]
  DIFFUSE_CHECK(patch.ndim() == 4 && pos.ndim() == 2 && fc1.ndim() == 2 && proj.ndim() == 2, ErrorCode::kIo,
                "[clip_vision] unexpected tensor ranks: not a CLIP vision model");
  c.hidden_size = static_cast<int>(patch.dim(0));
  c.num_channels = static_cast<int>(patch.dim(1));
  c.patch_size = static_cast<int>(patch.dim(2));
  const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(pos.dim(0) - 1))));
  c.image_size = side * c.patch_size;
  c.intermediate_size = static_cast<int>(fc1.dim(0));
  c.projection_dim = static_cast<int>(proj.dim(0));
  int layers = 0;
  while (w.count("vision_model.encoder.layers." + std::to_string(layers) + ".mlp.fc1.weight")) ++layers;
  c.num_hidden_layers = layers;
  // Widths of the published encoders: OpenCLIP ViT-H/14 and bigG/14 (16 heads,
  // erf GELU), OpenAI ViT-L/14 (16 heads, quick GELU), ViT-B (12 heads, quick GELU).
  switch (c.hidden_size) {
    case 1280: case 1664: c.num_attention_heads = 16, c.hidden_act = "gelu"; break;
    case 1024: c.num_attention_heads = 16, c.hidden_act = "quick_gelu"; break;
    case 768: c.num_attention_heads = 12, c.hidden_act = "quick_gelu"; break;
    default: c.num_attention_heads = std::max(1, c.hidden_size / 64), c.hidden_act = "gelu";
  }
  c.validate();
  return c;
}

void ClipVisionConfig::validate() const {
  DIFFUSE_CHECK_ARG(hidden_size > 0 && intermediate_size > 0 && num_hidden_layers >= 2 && projection_dim > 0 &&
                        num_channels > 0 && patch_size > 0 && image_size >= patch_size,
                    "[ClipVisionConfig] sizes must be positive, with at least 2 layers (hidden_states[-2])");
  DIFFUSE_CHECK_ARG(image_size % patch_size == 0, "[ClipVisionConfig] image_size " + std::to_string(image_size) +
                                                      " is not a multiple of patch_size " + std::to_string(patch_size));
  DIFFUSE_CHECK_ARG(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
                    "[ClipVisionConfig] hidden_size " + std::to_string(hidden_size) +
                        " is not divisible by num_attention_heads " + std::to_string(num_attention_heads));
  activation();
}

Activation ClipVisionConfig::activation() const {
  if (hidden_act == "quick_gelu") return Activation::kQuickGelu;
  if (hidden_act == "gelu") return Activation::kGelu;
  throw_error(ErrorCode::kUnsupported,
              "[ClipVisionConfig] hidden_act '" + hidden_act + "' is not supported (quick_gelu or gelu)");
}

std::string ClipVisionConfig::describe() const {
  std::string name = hidden_size == 1280 && num_hidden_layers == 32   ? "ViT-H/14 "
                     : hidden_size == 1664 && num_hidden_layers == 48 ? "ViT-bigG/14 "
                     : hidden_size == 1024 && num_hidden_layers == 24 ? "ViT-L/14 "
                                                                      : "";
  return name + "(hidden " + std::to_string(hidden_size) + ", " + std::to_string(num_hidden_layers) +
         " layers, projection " + std::to_string(projection_dim) + ")";
}

// ---- weights ---------------------------------------------------------------

namespace {

template <class Fn>
void visit_tensors(const ClipVisionConfig& c, ClipVisionModel::Weights& w, Fn&& fn) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, p = c.patch_size;
  const std::string e = std::string(kPrefix) + "embeddings.";
  fn(e + "class_embedding", Shape{d}, w.class_embedding);
  fn(e + "patch_embedding.weight", Shape{d, c.num_channels, p, p}, w.patch_w);
  fn(e + "position_embedding.weight", Shape{c.num_patches() + 1, d}, w.position_embedding);
  fn(std::string(kPrefix) + "pre_layrnorm.weight", Shape{d}, w.pre_ln_w);  // transformers' spelling
  fn(std::string(kPrefix) + "pre_layrnorm.bias", Shape{d}, w.pre_ln_b);
  w.layers.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string q = std::string(kPrefix) + "encoder.layers." + std::to_string(i) + ".";
    ClipVisionModel::Layer& l = w.layers[i];
    fn(q + "layer_norm1.weight", Shape{d}, l.ln1_w);
    fn(q + "layer_norm1.bias", Shape{d}, l.ln1_b);
    fn(q + "self_attn.q_proj.weight", Shape{d, d}, l.q_w);
    fn(q + "self_attn.q_proj.bias", Shape{d}, l.q_b);
    fn(q + "self_attn.k_proj.weight", Shape{d, d}, l.k_w);
    fn(q + "self_attn.k_proj.bias", Shape{d}, l.k_b);
    fn(q + "self_attn.v_proj.weight", Shape{d, d}, l.v_w);
    fn(q + "self_attn.v_proj.bias", Shape{d}, l.v_b);
    fn(q + "self_attn.out_proj.weight", Shape{d, d}, l.o_w);
    fn(q + "self_attn.out_proj.bias", Shape{d}, l.o_b);
    fn(q + "layer_norm2.weight", Shape{d}, l.ln2_w);
    fn(q + "layer_norm2.bias", Shape{d}, l.ln2_b);
    fn(q + "mlp.fc1.weight", Shape{f, d}, l.fc1_w);
    fn(q + "mlp.fc1.bias", Shape{f}, l.fc1_b);
    fn(q + "mlp.fc2.weight", Shape{d, f}, l.fc2_w);
    fn(q + "mlp.fc2.bias", Shape{d}, l.fc2_b);
  }
  fn(std::string(kPrefix) + "post_layernorm.weight", Shape{d}, w.post_ln_w);
  fn(std::string(kPrefix) + "post_layernorm.bias", Shape{d}, w.post_ln_b);
  fn("visual_projection.weight", Shape{c.projection_dim, d}, w.projection);
}

}  // namespace

std::vector<std::pair<std::string, Shape>> ClipVisionModel::expected_tensors(const ClipVisionConfig& config) {
  std::vector<std::pair<std::string, Shape>> out;
  Weights w;
  visit_tensors(config, w, [&](const std::string& name, const Shape& shape, Tensor&) { out.emplace_back(name, shape); });
  return out;
}

TensorMap ClipVisionModel::random_weights(const ClipVisionConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

ClipVisionModel::ClipVisionModel(const ClipVisionConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), act_dtype_(dtype), device_(device), act_(config.activation()) {
  config_.validate();
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[ClipVisionModel] dtype must be floating, got ") + dtype_name(dtype));
  weights_ = WeightTable("image_encoder", expected_tensors(config_), weights, dtype, device, ExtraWeights::kAllow);
  visit_tensors(config_, w_, [&](const std::string& name, const Shape&, Tensor& slot) { slot = weights_.get(name); });
}

std::unique_ptr<ClipVisionModel> ClipVisionModel::load(const std::string& path, DType dtype, Device device) {
  std::error_code ec;
  std::string weights_path = path, config_path;
  if (fs::is_directory(path, ec)) {
    config_path = (fs::path(path) / "config.json").string();
    for (const char* n : {"model.safetensors", "model.fp16.safetensors", "pytorch_model.bin"}) {
      const fs::path f = fs::path(path) / n;
      if (fs::is_regular_file(f, ec)) {
        weights_path = f.string();
        break;
      }
    }
    DIFFUSE_CHECK(weights_path != path, ErrorCode::kIo,
                  "[clip_vision] image encoder folder " + path + " has no model.safetensors (diffusers layout: "
                  "config.json + model.safetensors)");
  } else {
    DIFFUSE_CHECK(fs::is_regular_file(path, ec), ErrorCode::kNotFound, "[clip_vision] image encoder " + path + " does not exist");
    const fs::path beside = fs::path(path).parent_path() / "config.json";
    if (fs::is_regular_file(beside, ec)) config_path = beside.string();
  }
  Checkpoint ck = load_checkpoint(weights_path);
  ClipVisionConfig config;
  if (!config_path.empty() && fs::is_regular_file(config_path, ec)) {
    config = ClipVisionConfig::from_json(read_python_json_file(config_path));
  } else {
    config = ClipVisionConfig::infer(ck.tensors);
  }
  convert_weights(ck.tensors, dtype);
  return std::make_unique<ClipVisionModel>(config, ck.tensors, dtype, device);
}

// ---- forward ---------------------------------------------------------------

ClipVisionModel::Output ClipVisionModel::forward(const Tensor& pixel_values, bool want_embeds) const {
  const ClipVisionConfig& c = config_;
  DIFFUSE_CHECK_ARG(pixel_values.ndim() == 4 && pixel_values.dim(1) == c.num_channels &&
                        pixel_values.dim(2) == c.image_size && pixel_values.dim(3) == c.image_size,
                    "[ClipVisionModel] pixel_values must be [B, " + std::to_string(c.num_channels) + ", " +
                        std::to_string(c.image_size) + ", " + std::to_string(c.image_size) + "], got " +
                        pixel_values.str());
  const int64_t B = pixel_values.dim(0), d = c.hidden_size, n = c.num_patches();
  const int heads = c.num_attention_heads;
  const float attn_scale = 1.0f / std::sqrt(static_cast<float>(d / heads));
  const Tensor x = pixel_values.to(device_).to(act_dtype_);                             // [B, 3, S, S]
  // CLIPVisionEmbeddings: patches (conv, stride = kernel), class token first, positions.
  Tensor patches = conv2d(x, w_.patch_w, Tensor(), c.patch_size, 0);                   // [B, D, S/p, S/p]
  patches = patches.reshape({B, d, n}).permute({0, 2, 1});                              // [B, N, D]
  const Tensor cls = w_.class_embedding.reshape({1, 1, d}).to(act_dtype_);            // [1, 1, D]
  Tensor h = concat({concat(std::vector<Tensor>(static_cast<size_t>(B), cls), 0), copy(patches)}, 1);  // [B, 1+N, D]
  h = add(h, w_.position_embedding);                                                    // [B, 1+N, D] + [1+N, D]
  h = layer_norm(h, w_.pre_ln_w, w_.pre_ln_b, c.layer_norm_eps);                       // pre_layrnorm

  Output out;
  const size_t last = w_.layers.size() - 1;
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    if (i == last) {
      out.penultimate = h;  // hidden_states[-2]: the input of the last layer
      if (!want_embeds) return out;
    }
    const Layer& l = w_.layers[i];
    Tensor a = layer_norm(h, l.ln1_w, l.ln1_b, c.layer_norm_eps);       // [B, L, D]
    Tensor q = linear(a, l.q_w, l.q_b);
    Tensor k = linear(a, l.k_w, l.k_b);
    Tensor v = linear(a, l.v_w, l.v_b);
    a = attention(q, k, v, heads, attn_scale, /*causal=*/false);        // [B, L, D]
    h = linear(a, l.o_w, l.o_b, Activation::kNone, h);                  // residual
    a = layer_norm(h, l.ln2_w, l.ln2_b, c.layer_norm_eps);
    a = linear(a, l.fc1_w, l.fc1_b, act_);                              // [B, L, F]
    h = linear(a, l.fc2_w, l.fc2_b, Activation::kNone, h);              // [B, L, D]
  }
  // Pooled: the class token of the last layer, post_layernorm, then the projection (no bias).
  const Tensor pooled = layer_norm(copy(h.select(1, 0)), w_.post_ln_w, w_.post_ln_b, c.layer_norm_eps);  // [B, D]
  out.image_embeds = linear(pooled, w_.projection);                                     // [B, P]
  return out;
}

}  // namespace diffuse
