// ControlNetModel port (diffusers controlnets/controlnet.py: ControlNetModel,
// ControlNetConditioningEmbedding). The encoder blocks are the UNet's own
// (unet_blocks.h); this file adds the conditioning embedding, the zero convs and
// the forward pass that ties them together.
#include "models/controlnet.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "models/unet_blocks.h"
#include "models/unet_layout.h"

namespace diffuse {

using unet_detail::Layout;
using unet_detail::layout_of;

namespace {

bool has(const nlohmann::json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

void declare_conv(WeightSpecs& out, const std::string& p, int64_t o, int64_t i, int64_t k) {
  out.push_back({p + "weight", {o, i, k, k}});
  out.push_back({p + "bias", {o}});
}

// The up blocks a UNet with these down blocks would have: the ControlNet has
// none, but UNetConfig::validate wants a consistent list.
std::vector<std::string> mirrored_up_types(const std::vector<std::string>& down) {
  std::vector<std::string> up;
  for (auto it = down.rbegin(); it != down.rend(); ++it)
    up.push_back(*it == "CrossAttnDownBlock2D" ? "CrossAttnUpBlock2D" : "UpBlock2D");
  return up;
}

}  // namespace

ControlNetConfig ControlNetConfig::from_json(const nlohmann::json& j_in) {
  nlohmann::json j = j_in;
  auto unsupported = [](const std::string& what) {
    throw_error(ErrorCode::kUnsupported, "controlnet config: " + what + " is not supported");
  };
  const std::string cls = j.value("_class_name", std::string("ControlNetModel"));
  if (cls == "ControlNetUnionModel") unsupported("ControlNetUnionModel (union models such as controlnet-union-sdxl)");
  if (cls != "ControlNetModel") unsupported("_class_name " + cls + " (expected ControlNetModel)");
  if (has(j, "global_pool_conditions") && j.at("global_pool_conditions").get<bool>())
    unsupported("global_pool_conditions=true");
  ControlNetConfig c;
  try {
    if (has(j, "conditioning_channels")) c.conditioning_channels = j.at("conditioning_channels").get<int>();
    if (has(j, "conditioning_embedding_out_channels"))
      c.conditioning_embedding_out_channels = j.at("conditioning_embedding_out_channels").get<std::vector<int>>();
    if (has(j, "controlnet_conditioning_channel_order")) {
      const std::string order = j.at("controlnet_conditioning_channel_order").get<std::string>();
      if (order != "rgb" && order != "bgr") unsupported("controlnet_conditioning_channel_order=" + order);
      c.bgr = order == "bgr";
    }
    // The encoder: a UNet config without up blocks; time_embedding_dim and
    // conv_in_kernel are fixed by ControlNetModel (block_out_channels[0] * 4, 3).
    if (has(j, "down_block_types")) j["up_block_types"] = mirrored_up_types(j.at("down_block_types"));
    for (const char* key : {"time_embedding_dim", "conv_in_kernel", "conv_out_kernel"}) j.erase(key);
    if (has(j, "in_channels")) j["out_channels"] = j.at("in_channels");
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kInvalidArgument, std::string("controlnet config: ") + e.what());
  }
  c.unet = UNetConfig::from_json(j);
  c.validate();
  return c;
}

ControlNetConfig ControlNetConfig::from_unet(const UNetConfig& unet) {
  ControlNetConfig c;
  c.unet = unet;
  c.unet.time_embedding_dim = 0;
  c.unet.conv_in_kernel = 3;
  c.validate();
  return c;
}

void ControlNetConfig::validate() const {
  unet.validate();
  DIFFUSE_CHECK_ARG(conditioning_channels >= 1, "controlnet config: conditioning_channels must be >= 1, got " +
                                                    std::to_string(conditioning_channels));
  DIFFUSE_CHECK_ARG(!conditioning_embedding_out_channels.empty() && conditioning_embedding_out_channels.size() <= 8,
                    "controlnet config: conditioning_embedding_out_channels needs 1 to 8 entries");
  for (int ch : conditioning_embedding_out_channels)
    DIFFUSE_CHECK_ARG(ch >= 1, "controlnet config: conditioning_embedding_out_channels must be positive");
  DIFFUSE_CHECK(unet.mid_block_type == "UNetMidBlock2DCrossAttn" || unet.mid_block_type == "UNetMidBlock2D",
                ErrorCode::kUnsupported,
                "controlnet config: mid_block_type '" + unet.mid_block_type + "' is not supported");
  DIFFUSE_CHECK(unet.time_embedding_dim == 0 && unet.conv_in_kernel == 3, ErrorCode::kInvalidArgument,
                "controlnet config: the time embedding is block_out_channels[0] * 4 and conv_in 3x3");
}

int ControlNetConfig::num_down_residuals() const {
  int k = 1;  // conv_in
  for (int i = 0; i < unet.num_blocks(); ++i) k += unet.layers_per_block[i] + (i + 1 < unet.num_blocks() ? 1 : 0);
  return k;
}

WeightSpecs ControlNet::expected_tensors(const ControlNetConfig& cfg) {
  const UNetConfig& c = cfg.unet;
  const Layout l = layout_of(c);
  const int c0 = c.block_out_channels[0], T = c.time_embed_dim();
  WeightSpecs out;
  declare_conv(out, "conv_in.", c0, c.in_channels, 3);
  out.push_back({"time_embedding.linear_1.weight", {T, c0}});
  out.push_back({"time_embedding.linear_1.bias", {T}});
  out.push_back({"time_embedding.linear_2.weight", {T, T}});
  out.push_back({"time_embedding.linear_2.bias", {T}});
  if (c.has_text_time()) {
    out.push_back({"add_embedding.linear_1.weight", {T, c.projection_class_embeddings_input_dim}});
    out.push_back({"add_embedding.linear_1.bias", {T}});
    out.push_back({"add_embedding.linear_2.weight", {T, T}});
    out.push_back({"add_embedding.linear_2.bias", {T}});
  }
  // ControlNetConditioningEmbedding: conv_in, (conv, stride-2 conv) per width step, conv_out.
  const std::vector<int>& ch = cfg.conditioning_embedding_out_channels;
  const std::string e = "controlnet_cond_embedding.";
  declare_conv(out, e + "conv_in.", ch[0], cfg.conditioning_channels, 3);
  for (size_t i = 0; i + 1 < ch.size(); ++i) {
    declare_conv(out, e + "blocks." + std::to_string(2 * i) + ".", ch[i], ch[i], 3);
    declare_conv(out, e + "blocks." + std::to_string(2 * i + 1) + ".", ch[i + 1], ch[i], 3);
  }
  declare_conv(out, e + "conv_out.", c0, ch.back(), 3);
  for (const auto& b : l.down) unet_detail::declare_unet_block(out, b, c);
  unet_detail::declare_unet_block(out, l.mid, c);
  // Zero convs: one per skip connection (conv_in, each layer, each downsampler), then the mid block's.
  int k = 0;
  declare_conv(out, "controlnet_down_blocks." + std::to_string(k++) + ".", c0, c0, 1);
  for (int i = 0; i < c.num_blocks(); ++i) {
    const int w = c.block_out_channels[i];
    const int n = c.layers_per_block[i] + (i + 1 < c.num_blocks() ? 1 : 0);
    for (int j = 0; j < n; ++j) declare_conv(out, "controlnet_down_blocks." + std::to_string(k++) + ".", w, w, 1);
  }
  const int top = c.block_out_channels.back();
  declare_conv(out, "controlnet_mid_block.", top, top, 1);
  return out;
}

ControlNet::ControlNet(const ControlNetConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), act_dtype_(dtype), device_(device) {
  config_.validate();
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("controlnet: dtype must be floating, got ") + dtype_name(dtype));
  weights_ = WeightTable("controlnet", expected_tensors(config_), weights, dtype_, device_, ExtraWeights::kReject);
  bind();
}

void ControlNet::bind() {
  const Layout l = layout_of(config_.unet);
  const WeightTable& w = weights_;
  conv_in_w_ = w.get("conv_in.weight"), conv_in_b_ = w.get("conv_in.bias");
  time_w1_ = w.get("time_embedding.linear_1.weight"), time_b1_ = w.get("time_embedding.linear_1.bias");
  time_w2_ = w.get("time_embedding.linear_2.weight"), time_b2_ = w.get("time_embedding.linear_2.bias");
  add_w1_ = w.find("add_embedding.linear_1.weight"), add_b1_ = w.find("add_embedding.linear_1.bias");
  add_w2_ = w.find("add_embedding.linear_2.weight"), add_b2_ = w.find("add_embedding.linear_2.bias");
  hint_w_.clear(), hint_b_.clear();
  const std::string e = "controlnet_cond_embedding.";
  std::vector<std::string> hint = {e + "conv_in."};
  for (size_t i = 0; i + 1 < config_.conditioning_embedding_out_channels.size(); ++i) {
    hint.push_back(e + "blocks." + std::to_string(2 * i) + ".");
    hint.push_back(e + "blocks." + std::to_string(2 * i + 1) + ".");
  }
  hint.push_back(e + "conv_out.");
  for (const auto& p : hint) hint_w_.push_back(w.get(p + "weight")), hint_b_.push_back(w.get(p + "bias"));
  down_.clear();
  for (const auto& b : l.down) down_.push_back(unet_detail::bind_unet_block(w, b));
  mid_ = unet_detail::bind_unet_block(w, l.mid);
  zero_w_.clear(), zero_b_.clear();
  for (int k = 0; k < config_.num_down_residuals(); ++k) {
    const std::string p = "controlnet_down_blocks." + std::to_string(k) + ".";
    zero_w_.push_back(w.get(p + "weight")), zero_b_.push_back(w.get(p + "bias"));
  }
  mid_zero_w_ = w.get("controlnet_mid_block.weight"), mid_zero_b_ = w.get("controlnet_mid_block.bias");
}

UNetResiduals ControlNet::forward(const Tensor& sample, const Tensor& timesteps, const Tensor& context,
                                  const Tensor& cond, const Tensor& text_embeds, const Tensor& time_ids, float scale_in,
                                  bool guess_mode) const {
  const UNetConfig& c = config_.unet;
  const int groups = c.norm_num_groups;
  DIFFUSE_CHECK_ARG(sample.ndim() == 4 && sample.dim(1) == c.in_channels,
                    "[controlnet] sample must be [B, " + std::to_string(c.in_channels) + ", h, w], got " +
                        shape_str(sample.shape()));
  const int64_t B = sample.dim(0), h = sample.dim(2), w = sample.dim(3);
  const int64_t f = config_.cond_downscale();
  DIFFUSE_CHECK_ARG(cond.ndim() == 4 && (cond.dim(0) == B || cond.dim(0) == 1) &&
                        cond.dim(1) == config_.conditioning_channels && cond.dim(2) == h * f && cond.dim(3) == w * f,
                    "[controlnet] control image must be [" + std::to_string(B) + " or 1, " +
                        std::to_string(config_.conditioning_channels) + ", " + std::to_string(h * f) + ", " +
                        std::to_string(w * f) + "] for latents " + shape_str(sample.shape()) + ", got " +
                        shape_str(cond.shape()));
  DIFFUSE_CHECK_ARG(context.ndim() == 3 && context.dim(0) == B && context.dim(2) == c.cross_attention_dim[0],
                    "[controlnet] context must be [" + std::to_string(B) + ", L, " +
                        std::to_string(c.cross_attention_dim[0]) + "], got " + shape_str(context.shape()));
  DIFFUSE_CHECK_ARG(timesteps.numel() == B || timesteps.numel() == 1,
                    "[controlnet] timesteps " + shape_str(timesteps.shape()) + " must have 1 or " +
                        std::to_string(B) + " entries");
  DIFFUSE_CHECK_ARG(std::isfinite(scale_in), "[controlnet] conditioning scale must be finite");

  Tensor t;  // [B] f32 on the device (diffusers: timesteps.expand(B))
  if (timesteps.device() == device_ && timesteps.dtype() == DType::kF32 && timesteps.numel() == B) {
    t = timesteps.reshape({B});
  } else {
    std::vector<float> tv = timesteps.to_f32_vector();
    if (tv.size() == 1) tv.assign(static_cast<size_t>(B), tv[0]);
    t = Tensor::from_vector(tv, {B}).to(device_);
  }
  const Tensor x = to_preferred_layout(sample.to(device_).to(act_dtype_));  // [B, Cin, h, w]
  const Tensor ctx = context.to(device_).to(act_dtype_);                    // [B, L, D]

  // Time (and SDXL text_time) embedding, as the UNet's.
  const int c0 = c.block_out_channels[0];
  Tensor t_emb = timestep_embedding(t, c0, c.flip_sin_to_cos, c.freq_shift).to(act_dtype_);  // [B, c0]
  Tensor emb = unet_detail::unet_mlp_embedding(t_emb, time_w1_, time_b1_, time_w2_, time_b2_);  // [B, T]
  if (add_w1_.defined()) {
    DIFFUSE_CHECK_ARG(text_embeds.ndim() == 2 && text_embeds.dim(0) == B && time_ids.ndim() == 2 &&
                          time_ids.dim(0) == B &&
                          text_embeds.dim(1) + time_ids.dim(1) * c.addition_time_embed_dim ==
                              c.projection_class_embeddings_input_dim,
                      "[controlnet] text_time needs text_embeds [B, P] and time_ids [B, n] adding up to " +
                          std::to_string(c.projection_class_embeddings_input_dim) + ", got " +
                          shape_str(text_embeds.shape()) + " and " + shape_str(time_ids.shape()));
    Tensor ids = time_ids.to(device_).to(DType::kF32).reshape({-1});  // [B*n]
    Tensor id_emb = timestep_embedding(ids, c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
                        .to(act_dtype_)
                        .reshape({B, -1});                                            // [B, n*dt]
    Tensor add_in = concat({text_embeds.to(device_).to(act_dtype_), id_emb}, 1);   // [B, P + n*dt]
    emb = add(emb, unet_detail::unet_mlp_embedding(add_in, add_w1_, add_b1_, add_w2_, add_b2_));
  }
  const Tensor temb = silu(emb);  // [B, T]

  // The control image through the conditioning embedding: [B|1, C0, h, w].
  Tensor g = to_preferred_layout(cond.to(device_).to(act_dtype_));  // [B|1, Cc, fh, fw]
  if (config_.bgr) g = concat({g.slice(1, 2, 3), g.slice(1, 1, 2), g.slice(1, 0, 1)}, 1);
  g = silu(conv2d(g, hint_w_[0], hint_b_[0], 1, 1));
  for (size_t i = 1; i + 1 < hint_w_.size(); ++i) {
    const int stride = (i % 2 == 0) ? 2 : 1;  // blocks.(2k) keep the size, blocks.(2k+1) halve it
    g = silu(conv2d(g, hint_w_[i], hint_b_[i], stride, 1));
  }
  g = conv2d(g, hint_w_.back(), hint_b_.back(), 1, 1);  // [B|1, c0, h, w]

  // conv_in(sample) + the embedded control: the first skip.
  Tensor hs = conv2d(x, conv_in_w_, conv_in_b_, 1, 1);   // [B, c0, h, w]
  hs = add(hs, g);
  std::vector<Tensor> skips = {hs};
  for (const UNet::Block& blk : down_) {
    for (size_t j = 0; j < blk.resnets.size(); ++j) {
      hs = unet_detail::unet_resnet(hs, temb, blk.resnets[j], groups, c.norm_eps);
      if (j < blk.attentions.size()) hs = unet_detail::unet_transformer(hs, ctx, blk.attentions[j], groups);
      skips.push_back(hs);
    }
    if (blk.sample_w.defined()) {
      hs = conv2d(hs, blk.sample_w, blk.sample_b, 2, c.downsample_padding);
      skips.push_back(hs);
    }
  }
  hs = unet_detail::unet_resnet(hs, temb, mid_.resnets[0], groups, c.norm_eps);
  for (size_t a = 0; a < mid_.attentions.size(); ++a) {
    hs = unet_detail::unet_transformer(hs, ctx, mid_.attentions[a], groups);
    hs = unet_detail::unet_resnet(hs, temb, mid_.resnets[a + 1], groups, c.norm_eps);
  }

  // Zero convs, times the conditioning scale (guess mode: 0.1 .. 1 over the residuals, log-spaced).
  const size_t K = skips.size();
  auto factor = [&](size_t k) {
    if (!guess_mode) return scale_in;
    const double e = -1.0 + static_cast<double>(k) / static_cast<double>(K);  // torch.logspace(-1, 0, K + 1)
    return static_cast<float>(std::pow(10.0, e)) * scale_in;
  };
  UNetResiduals r;
  for (size_t k = 0; k < K; ++k) {
    Tensor z = conv2d(skips[k], zero_w_[k], zero_b_[k]);
    const float s = factor(k);
    r.down.push_back(s == 1.0f ? z : scale(z, s));
  }
  Tensor m = conv2d(hs, mid_zero_w_, mid_zero_b_);
  const float sm = factor(K);
  r.mid = sm == 1.0f ? m : scale(m, sm);
  return r;
}

TensorMap ControlNet::random_weights(const ControlNetConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

}  // namespace diffuse
