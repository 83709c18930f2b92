// CLIP text encoder forward pass (transformers CLIPTextTransformer).
#include "models/clip_text.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>


namespace diffuse {

// ---- config ---------------------------------------------------------------

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j, bool with_projection) {
  ClipTextConfig c;
  c.vocab_size = j.value("vocab_size", c.vocab_size);
  c.hidden_size = j.value("hidden_size", c.hidden_size);
  c.intermediate_size = j.value("intermediate_size", c.intermediate_size);
  c.num_hidden_layers = j.value("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = j.value("num_attention_heads", c.num_attention_heads);
  c.max_position_embeddings = j.value("max_position_embeddings", c.max_position_embeddings);
  c.projection_dim = j.value("projection_dim", c.projection_dim);
  c.hidden_act = j.value("hidden_act", c.hidden_act);
  c.layer_norm_eps = j.value("layer_norm_eps", c.layer_norm_eps);
  c.with_projection = with_projection;
  c.validate();
  return c;
}

ClipTextConfig ClipTextConfig::sd15() { return ClipTextConfig{}; }

ClipTextConfig ClipTextConfig::sd21() {
  ClipTextConfig c;
  c.hidden_size = 1024;
  c.intermediate_size = 4096;
  c.num_hidden_layers = 23;  // OpenCLIP-H has 24; SD2 uses the penultimate layer's output
  c.num_attention_heads = 16;
  c.projection_dim = 512;
  c.hidden_act = "gelu";
  return c;
}

ClipTextConfig ClipTextConfig::sdxl_te1() { return ClipTextConfig{}; }

ClipTextConfig ClipTextConfig::sdxl_te2() {
  ClipTextConfig c;
  c.hidden_size = 1280;
  c.intermediate_size = 5120;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 20;
  c.projection_dim = 1280;
  c.hidden_act = "gelu";
  c.with_projection = true;
  return c;
}

void ClipTextConfig::validate() const {
  DIFFUSE_CHECK_ARG(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_hidden_layers > 0 &&
                        max_position_embeddings > 0 && projection_dim > 0,
                    "[ClipTextConfig] sizes must be positive");
  DIFFUSE_CHECK_ARG(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
                    "[ClipTextConfig] hidden_size " + std::to_string(hidden_size) +
                        " is not divisible by num_attention_heads " + std::to_string(num_attention_heads));
  activation();  // throws on an unknown activation
}

Activation ClipTextConfig::activation() const {
  if (hidden_act == "quick_gelu") return Activation::kQuickGelu;
  if (hidden_act == "gelu") return Activation::kGelu;
  throw_error(ErrorCode::kUnsupported,
              "[ClipTextConfig] hidden_act '" + hidden_act + "' is not supported (quick_gelu or gelu)");
}

// ---- weights ---------------------------------------------------------------

namespace {

// The one list of tensors: names, shapes and the slot each loads into.
// expected_tensors(), the constructor and random_weights() all use it.
template <class Fn>
void visit_tensors(const ClipTextConfig& c, ClipTextModel::Weights& w, Fn&& fn) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  fn("text_model.embeddings.token_embedding.weight", Shape{c.vocab_size, d}, w.token_embedding);
  fn("text_model.embeddings.position_embedding.weight", Shape{c.max_position_embeddings, d},
     w.position_embedding);
  w.layers.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "text_model.encoder.layers." + std::to_string(i) + ".";
    ClipTextModel::Layer& l = w.layers[i];
    fn(p + "layer_norm1.weight", Shape{d}, l.ln1_w);
    fn(p + "layer_norm1.bias", Shape{d}, l.ln1_b);
    fn(p + "self_attn.q_proj.weight", Shape{d, d}, l.q_w);
    fn(p + "self_attn.q_proj.bias", Shape{d}, l.q_b);
    fn(p + "self_attn.k_proj.weight", Shape{d, d}, l.k_w);
    fn(p + "self_attn.k_proj.bias", Shape{d}, l.k_b);
    fn(p + "self_attn.v_proj.weight", Shape{d, d}, l.v_w);
    fn(p + "self_attn.v_proj.bias", Shape{d}, l.v_b);
    fn(p + "self_attn.out_proj.weight", Shape{d, d}, l.o_w);
    fn(p + "self_attn.out_proj.bias", Shape{d}, l.o_b);
    fn(p + "layer_norm2.weight", Shape{d}, l.ln2_w);
    fn(p + "layer_norm2.bias", Shape{d}, l.ln2_b);
    fn(p + "mlp.fc1.weight", Shape{f, d}, l.fc1_w);
    fn(p + "mlp.fc1.bias", Shape{f}, l.fc1_b);
    fn(p + "mlp.fc2.weight", Shape{d, f}, l.fc2_w);
    fn(p + "mlp.fc2.bias", Shape{d}, l.fc2_b);
  }
  fn("text_model.final_layer_norm.weight", Shape{d}, w.final_ln_w);
  fn("text_model.final_layer_norm.bias", Shape{d}, w.final_ln_b);
  if (c.with_projection) fn("text_projection.weight", Shape{c.projection_dim, d}, w.text_projection);
}

}  // namespace

std::vector<std::pair<std::string, Shape>> ClipTextModel::expected_tensors(const ClipTextConfig& config) {
  std::vector<std::pair<std::string, Shape>> out;
  Weights w;
  visit_tensors(config, w, [&](const std::string& name, const Shape& shape, Tensor&) {
    out.emplace_back(name, shape);
  });
  return out;
}

TensorMap ClipTextModel::random_weights(const ClipTextConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

ClipTextModel::ClipTextModel(const ClipTextConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), act_dtype_(dtype), device_(device), act_(config.activation()) {
  config_.validate();
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[ClipTextModel] dtype must be floating, got ") +
                                            dtype_name(dtype));
  // One allocation on a GPU.
  weights_ = WeightTable("text_encoder", expected_tensors(config_), weights, dtype, device, ExtraWeights::kAllow);
  bind();
}

void ClipTextModel::bind() {
  visit_tensors(config_, w_, [&](const std::string& name, const Shape&, Tensor& slot) { slot = weights_.get(name); });
}

void ClipTextModel::park() {
  weights_.park();
  bind();  // the slots drop their views of the device allocation
}

void ClipTextModel::unpark() {
  weights_.unpark();
  bind();
}

void ClipTextModel::replace_weight(const std::string& name, const Tensor& value) {
  weights_.replace(name, value);
  bind();
}

// ---- forward ---------------------------------------------------------------

ClipTextModel::Output ClipTextModel::forward(const Tensor& input_ids, const TokenOverride* override_rows) const {
  DIFFUSE_CHECK_ARG(input_ids.ndim() == 2 && (input_ids.dtype() == DType::kI64 || input_ids.dtype() == DType::kI32),
                    "[ClipTextModel] input_ids must be [B, L] i64/i32, got " + input_ids.str());
  const int64_t batch = input_ids.dim(0), len = input_ids.dim(1);
  DIFFUSE_CHECK_ARG(len >= 1 && len <= config_.max_position_embeddings,
                    "[ClipTextModel] sequence length " + std::to_string(len) + " exceeds max_position_embeddings " +
                        std::to_string(config_.max_position_embeddings));
  const int heads = config_.num_attention_heads;
  const float attn_scale = 1.0f / std::sqrt(static_cast<float>(config_.hidden_size / heads));
  Tensor ids = input_ids.to(device_);
  std::vector<int64_t> lookup_ids;  // with an override: the ids looked up (0 where a row replaces the lookup)
  if (override_rows) {
    const TokenOverride& o = *override_rows;
    const int64_t d = config_.hidden_size;
    DIFFUSE_CHECK_ARG(o.rows.defined() && o.rows.ndim() == 2 && o.rows.dim(0) == static_cast<int64_t>(o.positions.size()) &&
                          o.rows.dim(1) == d,
                      "[ClipTextModel] override rows must be [" + std::to_string(o.positions.size()) + ", " +
                          std::to_string(d) + "], got " + (o.rows.defined() ? o.rows.str() : std::string("none")));
    lookup_ids = input_ids.to_i64_vector();
    for (int64_t p : o.positions) {
      DIFFUSE_CHECK_ARG(p >= 0 && p < batch * len, "[ClipTextModel] override position " + std::to_string(p) +
                                                       " is outside input_ids " + input_ids.str());
      lookup_ids[p] = 0;
    }
    ids = Tensor::from_ids(lookup_ids, {batch, len}).to(device_);
  }

  Output out;
  // CLIPTextEmbeddings: token + absolute position (position_ids = arange(L)).
  Tensor x = embedding(ids, w_.token_embedding).to(act_dtype_);                  // [B, L, D]
  if (override_rows) {
    // A handful of rows of a [B, 77, D] tensor: replaced on the host in f32
    // (exact for every activation dtype). The rows are rounded to the weight
    // dtype first, as rows stored in the token table would be.
    const int64_t d = config_.hidden_size;
    std::vector<float> xs = x.to(Device::kCPU).to(DType::kF32).contiguous().to_f32_vector();
    const std::vector<float> rows =
        override_rows->rows.to(Device::kCPU).to(dtype_).to(DType::kF32).contiguous().to_f32_vector();
    for (size_t i = 0; i < override_rows->positions.size(); ++i)
      std::copy(rows.begin() + i * d, rows.begin() + (i + 1) * d, xs.begin() + override_rows->positions[i] * d);
    x = Tensor::from_vector(xs, x.shape()).to(act_dtype_).to(device_);  // [B, L, D]
  }
  x = add(x, w_.position_embedding.slice(0, 0, len));             // [B, L, D] + [L, D]
  out.hidden_states.push_back(x);

  // CLIPEncoderLayer (pre-LN): x += attn(ln1(x)); x += mlp(ln2(x)).
  for (const Layer& l : w_.layers) {
    Tensor h = layer_norm(x, l.ln1_w, l.ln1_b, config_.layer_norm_eps);  // [B, L, D]
    Tensor q = linear(h, l.q_w, l.q_b);                                  // [B, L, D] heads packed
    Tensor k = linear(h, l.k_w, l.k_b);                                  // [B, L, D]
    Tensor v = linear(h, l.v_w, l.v_b);                                  // [B, L, D]
    h = attention(q, k, v, heads, attn_scale, /*causal=*/true);          // [B, L, D]
    x = add(x, linear(h, l.o_w, l.o_b));                                 // [B, L, D]
    h = layer_norm(x, l.ln2_w, l.ln2_b, config_.layer_norm_eps);         // [B, L, D]
    h = linear(h, l.fc1_w, l.fc1_b, act_);                               // [B, L, F]
    x = add(x, linear(h, l.fc2_w, l.fc2_b));                             // [B, L, D]
    out.hidden_states.push_back(x);
  }
  out.last_hidden_state = layer_norm(x, w_.final_ln_w, w_.final_ln_b, config_.layer_norm_eps);  // [B, L, D]

  // Pooling at argmax(input_ids): the first occurrence of the largest id.
  const std::vector<int64_t> host_ids = input_ids.to_i64_vector();
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t best = 0;
    for (int64_t t = 1; t < len; ++t)
      if (host_ids[b * len + t] > host_ids[b * len + best]) best = t;
    rows.push_back(out.last_hidden_state.slice(0, b, b + 1).select(1, best));  // [1, D]
  }
  out.pooled = rows.size() == 1 ? copy(rows[0]) : concat(rows, 0);  // [B, D]
  if (config_.with_projection) out.text_embeds = linear(out.pooled, w_.text_projection);  // [B, P]
  return out;
}

Tensor ClipTextModel::final_layer_norm(const Tensor& hidden) const {
  DIFFUSE_CHECK_ARG(hidden.ndim() >= 1 && hidden.dim(-1) == config_.hidden_size,
                    "[ClipTextModel::final_layer_norm] last dim must be " + std::to_string(config_.hidden_size) +
                        ", got " + hidden.str());
  return layer_norm(hidden.to(device_).to(act_dtype_), w_.final_ln_w, w_.final_ln_b, config_.layer_norm_eps);
}

}  // namespace diffuse
