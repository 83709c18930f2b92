// AutoencoderKL encode/decode (diffusers autoencoder_kl.py + vae.py).
#include "models/vae.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "models/keymap.h"

namespace diffuse {

namespace {

// ResnetBlock2D / Attention / mid block in the VAE use GroupNorm eps 1e-6
// (diffusers Encoder/Decoder pass eps=1e-6 everywhere).
constexpr float kNormEps = 1e-6f;

void check_types(const nlohmann::json& j, const char* key, const char* expected) {
  if (!j.contains(key) || !j[key].is_array()) return;
  for (const auto& t : j[key]) {
    DIFFUSE_CHECK(t.is_string() && t.get<std::string>() == expected, ErrorCode::kUnsupported,
                  std::string("[VaeConfig] ") + key + " entry " + t.dump() + " is not supported (only " + expected +
                      ")");
  }
}

}  // namespace

// ---- config ---------------------------------------------------------------

VaeConfig VaeConfig::from_json(const nlohmann::json& j) {
  VaeConfig c;
  const std::string act = j.value("act_fn", std::string("silu"));
  DIFFUSE_CHECK(act == "silu", ErrorCode::kUnsupported, "[VaeConfig] act_fn '" + act + "' is not supported (silu)");
  check_types(j, "down_block_types", "DownEncoderBlock2D");
  check_types(j, "up_block_types", "UpDecoderBlock2D");
  c.in_channels = j.value("in_channels", c.in_channels);
  c.out_channels = j.value("out_channels", c.out_channels);
  if (j.contains("block_out_channels")) c.block_out_channels = j["block_out_channels"].get<std::vector<int>>();
  c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
  c.latent_channels = j.value("latent_channels", c.latent_channels);
  c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
  c.scaling_factor = j.value("scaling_factor", c.scaling_factor);
  if (j.contains("shift_factor") && j["shift_factor"].is_number()) c.shift_factor = j["shift_factor"].get<float>();
  c.force_upcast = j.value("force_upcast", c.force_upcast);
  if (j.contains("use_quant_conv") && j["use_quant_conv"].is_boolean()) c.use_quant_conv = j["use_quant_conv"];
  if (j.contains("use_post_quant_conv") && j["use_post_quant_conv"].is_boolean())
    c.use_post_quant_conv = j["use_post_quant_conv"];
  if (j.contains("mid_block_add_attention") && j["mid_block_add_attention"].is_boolean())
    c.mid_block_add_attention = j["mid_block_add_attention"];
  if (j.contains("down_block_types") && j["down_block_types"].is_array()) {
    DIFFUSE_CHECK_ARG(j["down_block_types"].size() == c.block_out_channels.size(),
                      "[VaeConfig] down_block_types and block_out_channels differ in length");
  }
  c.validate();
  return c;
}

VaeConfig VaeConfig::sd() { return VaeConfig{}; }

VaeConfig VaeConfig::sdxl() {
  VaeConfig c;
  c.scaling_factor = 0.13025f;
  return c;
}

void VaeConfig::validate() const {
  DIFFUSE_CHECK_ARG(!block_out_channels.empty(), "[VaeConfig] block_out_channels is empty");
  for (int ch : block_out_channels)
    DIFFUSE_CHECK_ARG(ch > 0 && ch % norm_num_groups == 0,
                      "[VaeConfig] block_out_channels entry " + std::to_string(ch) +
                          " is not a positive multiple of norm_num_groups " + std::to_string(norm_num_groups));
  DIFFUSE_CHECK_ARG(in_channels > 0 && out_channels > 0 && latent_channels > 0 && layers_per_block > 0,
                    "[VaeConfig] channel counts and layers_per_block must be positive");
}

// ---- weights ---------------------------------------------------------------

namespace {

using Fn = std::function<void(const std::string&, const Shape&, Tensor&)>;

void visit_resnet(const std::string& p, int64_t in, int64_t out, Vae::Resnet& r, const Fn& fn) {
  fn(p + "norm1.weight", {in}, r.norm1_w);
  fn(p + "norm1.bias", {in}, r.norm1_b);
  fn(p + "conv1.weight", {out, in, 3, 3}, r.conv1_w);
  fn(p + "conv1.bias", {out}, r.conv1_b);
  fn(p + "norm2.weight", {out}, r.norm2_w);
  fn(p + "norm2.bias", {out}, r.norm2_b);
  fn(p + "conv2.weight", {out, out, 3, 3}, r.conv2_w);
  fn(p + "conv2.bias", {out}, r.conv2_b);
  if (in != out) {
    fn(p + "conv_shortcut.weight", {out, in, 1, 1}, r.shortcut_w);
    fn(p + "conv_shortcut.bias", {out}, r.shortcut_b);
  }
}

void visit_mid(const std::string& p, int64_t ch, bool attention, Vae::MidBlock& m, const Fn& fn) {
  visit_resnet(p + "resnets.0.", ch, ch, m.resnet0, fn);
  if (attention) {
    const std::string a = p + "attentions.0.";
    fn(a + "group_norm.weight", {ch}, m.attn.norm_w);
    fn(a + "group_norm.bias", {ch}, m.attn.norm_b);
    fn(a + "to_q.weight", {ch, ch}, m.attn.q_w);
    fn(a + "to_q.bias", {ch}, m.attn.q_b);
    fn(a + "to_k.weight", {ch, ch}, m.attn.k_w);
    fn(a + "to_k.bias", {ch}, m.attn.k_b);
    fn(a + "to_v.weight", {ch, ch}, m.attn.v_w);
    fn(a + "to_v.bias", {ch}, m.attn.v_b);
    fn(a + "to_out.0.weight", {ch, ch}, m.attn.out_w);
    fn(a + "to_out.0.bias", {ch}, m.attn.out_b);
  }
  visit_resnet(p + "resnets.1.", ch, ch, m.resnet1, fn);
}

// The one list of tensors (diffusers AutoencoderKL state_dict names).
void visit_tensors(const VaeConfig& c, Vae::Weights& w, const Fn& fn) {
  const std::vector<int>& ch = c.block_out_channels;
  const int n = static_cast<int>(ch.size());
  const int64_t lat = c.latent_channels, top = ch.back();

  // Encoder
  fn("encoder.conv_in.weight", {ch[0], c.in_channels, 3, 3}, w.enc_conv_in_w);
  fn("encoder.conv_in.bias", {ch[0]}, w.enc_conv_in_b);
  w.down.resize(n);
  int64_t prev = ch[0];
  for (int i = 0; i < n; ++i) {
    const std::string p = "encoder.down_blocks." + std::to_string(i) + ".";
    w.down[i].resnets.resize(c.layers_per_block);
    for (int j = 0; j < c.layers_per_block; ++j)
      visit_resnet(p + "resnets." + std::to_string(j) + ".", j == 0 ? prev : ch[i], ch[i], w.down[i].resnets[j], fn);
    if (i + 1 < n) {
      fn(p + "downsamplers.0.conv.weight", {ch[i], ch[i], 3, 3}, w.down[i].sample_w);
      fn(p + "downsamplers.0.conv.bias", {ch[i]}, w.down[i].sample_b);
    }
    prev = ch[i];
  }
  visit_mid("encoder.mid_block.", top, c.mid_block_add_attention, w.enc_mid, fn);
  fn("encoder.conv_norm_out.weight", {top}, w.enc_norm_out_w);
  fn("encoder.conv_norm_out.bias", {top}, w.enc_norm_out_b);
  fn("encoder.conv_out.weight", {2 * lat, top, 3, 3}, w.enc_conv_out_w);
  fn("encoder.conv_out.bias", {2 * lat}, w.enc_conv_out_b);
  if (c.use_quant_conv) {
    fn("quant_conv.weight", {2 * lat, 2 * lat, 1, 1}, w.quant_w);
    fn("quant_conv.bias", {2 * lat}, w.quant_b);
  }
  if (c.use_post_quant_conv) {
    fn("post_quant_conv.weight", {lat, lat, 1, 1}, w.post_quant_w);
    fn("post_quant_conv.bias", {lat}, w.post_quant_b);
  }

  // Decoder: blocks run from the deepest level up (reversed channels).
  fn("decoder.conv_in.weight", {top, lat, 3, 3}, w.dec_conv_in_w);
  fn("decoder.conv_in.bias", {top}, w.dec_conv_in_b);
  visit_mid("decoder.mid_block.", top, c.mid_block_add_attention, w.dec_mid, fn);
  w.up.resize(n);
  prev = top;
  for (int i = 0; i < n; ++i) {
    const int64_t out = ch[n - 1 - i];
    const std::string p = "decoder.up_blocks." + std::to_string(i) + ".";
    w.up[i].resnets.resize(c.layers_per_block + 1);
    for (int j = 0; j <= c.layers_per_block; ++j)
      visit_resnet(p + "resnets." + std::to_string(j) + ".", j == 0 ? prev : out, out, w.up[i].resnets[j], fn);
    if (i + 1 < n) {
      fn(p + "upsamplers.0.conv.weight", {out, out, 3, 3}, w.up[i].sample_w);
      fn(p + "upsamplers.0.conv.bias", {out}, w.up[i].sample_b);
    }
    prev = out;
  }
  fn("decoder.conv_norm_out.weight", {ch[0]}, w.dec_norm_out_w);
  fn("decoder.conv_norm_out.bias", {ch[0]}, w.dec_norm_out_b);
  fn("decoder.conv_out.weight", {c.out_channels, ch[0], 3, 3}, w.dec_conv_out_w);
  fn("decoder.conv_out.bias", {c.out_channels}, w.dec_conv_out_b);
}

// Older diffusers VAE files name the mid attention query/key/value/proj_attn;
// diffusers renames them at load (_convert_deprecated_attention_blocks).
constexpr KeyRule kLegacyAttentionRules[] = {
    {"encoder|decoder.mid_block.attentions.0.query.*", "{0}.mid_block.attentions.0.to_q.{1}", KeyTransform::kConvToLinear},
    {"encoder|decoder.mid_block.attentions.0.key.*", "{0}.mid_block.attentions.0.to_k.{1}", KeyTransform::kConvToLinear},
    {"encoder|decoder.mid_block.attentions.0.value.*", "{0}.mid_block.attentions.0.to_v.{1}", KeyTransform::kConvToLinear},
    {"encoder|decoder.mid_block.attentions.0.proj_attn.*", "{0}.mid_block.attentions.0.to_out.0.{1}",
     KeyTransform::kConvToLinear},
};

TensorMap rename_legacy_attention(const TensorMap& weights) {
  TensorMap out;
  for (const auto& [name, t] : weights) {
    const std::vector<RenamedKey> r = apply_key_rules(kLegacyAttentionRules, name);
    if (r.empty()) {
      out.emplace(name, t);
    } else {
      out.emplace(r[0].name, transform_tensor(t, r[0].transform, 0));
    }
  }
  return out;
}

// Downsample2D(padding=0) pads (left 0, right 1, top 0, bottom 1) before its
// stride-2 conv; conv2d only pads symmetrically, so append a zero column and row.
Tensor pad_right_bottom(const Tensor& x) {  // [N, C, H, W] -> [N, C, H+1, W+1]
  const Shape& s = x.shape();
  Tensor col = Tensor::zeros({s[0], s[1], s[2], 1}, x.dtype(), x.device());
  Tensor wide = concat({x, col}, 3);                                              // [N, C, H, W+1]
  Tensor row = Tensor::zeros({s[0], s[1], 1, s[3] + 1}, x.dtype(), x.device());
  return concat({wide, row}, 2);                                                 // [N, C, H+1, W+1]
}

}  // namespace

std::vector<std::pair<std::string, Shape>> Vae::expected_tensors(const VaeConfig& config) {
  config.validate();
  std::vector<std::pair<std::string, Shape>> out;
  Weights w;
  visit_tensors(config, w, [&](const std::string& name, const Shape& shape, Tensor&) { out.emplace_back(name, shape); });
  return out;
}

TensorMap Vae::random_weights(const VaeConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

Vae::Vae(const VaeConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), act_dtype_(dtype), device_(device) {
  config_.validate();
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[Vae] dtype must be floating, got ") + dtype_name(dtype));
  // Conv weights channels-last where the backend prefers it.
  weights_ = WeightTable("vae", expected_tensors(config_), rename_legacy_attention(weights), dtype_, device_,
                         ExtraWeights::kAllow);
  bind();
}

void Vae::bind() {
  visit_tensors(config_, w_, [&](const std::string& name, const Shape&, Tensor& slot) { slot = weights_.get(name); });
}

void Vae::park() {
  weights_.park();
  bind();  // the slots drop their views of the device allocation
}

void Vae::unpark() {
  AllowTf32 scope(tf32_);  // the layout the first placement chose
  weights_.unpark();
  bind();
}

void Vae::replace_weight(const std::string& name, const Tensor& value) {
  AllowTf32 scope(tf32_);  // placed in the layout the other weights have
  weights_.replace(name, value);
  bind();
}

void Vae::set_allow_tf32(bool on) {
  tf32_ = on;
  AllowTf32 scope(on);
  // Only turning TF32 on can change the preferred layout (f32 goes channels-last with it).
  if (!on || device_ == Device::kCPU || !backend_for(device_).prefers_channels_last(dtype_)) return;
  // A fresh arena in the new layout; the old one goes when its last view does.
  weights_.place_again();
  bind();
}

// ---- forward ---------------------------------------------------------------

Vae::NormFn Vae::exact_norm() const {
  const int g = config_.norm_num_groups;
  return [g](const Tensor& x, const Tensor& gamma, const Tensor& beta, bool silu) {
    return group_norm(x, g, gamma, beta, kNormEps, silu);
  };
}

// ResnetBlock2D (no temb, output_scale_factor 1): shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x)))))).
Tensor Vae::resnet(const Tensor& x, const Resnet& r, const NormFn& norm) const {
  Tensor h = norm(x, r.norm1_w, r.norm1_b, /*silu=*/true);                      // [N, Cin, H, W]
  h = conv2d(h, r.conv1_w, r.conv1_b, 1, 1);                                    // [N, Cout, H, W]
  h = norm(h, r.norm2_w, r.norm2_b, /*silu=*/true);                             // [N, Cout, H, W]
  const Tensor skip = r.shortcut_w.defined() ? conv2d(x, r.shortcut_w, r.shortcut_b) : x;  // [N, Cout, H, W]
  return conv2d(h, r.conv2_w, r.conv2_b, 1, 1, skip);                           // [N, Cout, H, W]
}

// UNetMidBlock2D: resnet, then (diffusers Attention, 1 head of width C,
// residual connection) over the H*W positions, then resnet. Always on the
// whole image (the attention is global), so always with exact GroupNorms.
Tensor Vae::mid_block(const Tensor& x, const MidBlock& m) const {
  const NormFn norm = exact_norm();
  Tensor h = resnet(x, m.resnet0, norm);  // [N, C, H, W]
  if (config_.mid_block_add_attention) {
    const int64_t n = h.dim(0), c = h.dim(1), hh = h.dim(2), ww = h.dim(3);
    Tensor t = group_norm(h, config_.norm_num_groups, m.attn.norm_w, m.attn.norm_b, kNormEps);  // [N, C, H, W]
    t = t.permute({0, 2, 3, 1}).reshape({n, hh * ww, c});                                        // [N, HW, C]
    Tensor q = linear(t, m.attn.q_w, m.attn.q_b);                                                // [N, HW, C]
    Tensor k = linear(t, m.attn.k_w, m.attn.k_b);                                                // [N, HW, C]
    Tensor v = linear(t, m.attn.v_w, m.attn.v_b);                                                // [N, HW, C]
    t = attention(q, k, v, /*heads=*/1, 1.0f / std::sqrt(static_cast<float>(c)));                 // [N, HW, C]
    t = linear(t, m.attn.out_w, m.attn.out_b);                                                   // [N, HW, C]
    h = add(h, t.reshape({n, hh, ww, c}).permute({0, 3, 1, 2}));                                 // [N, C, H, W]
  }
  return resnet(h, m.resnet1, norm);  // [N, C, H, W]
}

Tensor Vae::decoder_head(const Tensor& z) const {
  const NormFn norm = exact_norm();
  Tensor x = z;                                                                      // [N, L, h, w]
  if (config_.use_post_quant_conv) x = conv2d(x, w_.post_quant_w, w_.post_quant_b);  // [N, L, h, w]
  x = conv2d(x, w_.dec_conv_in_w, w_.dec_conv_in_b, 1, 1);                         // [N, Ctop, h, w]
  x = mid_block(x, w_.dec_mid);                                                    // [N, Ctop, h, w]
  for (const Resnet& r : w_.up[0].resnets) x = resnet(x, r, norm);                 // [N, Ctop, h, w]
  return x;
}

// UpDecoderBlock2D i-1's Upsample2D (nearest 2x + conv), then block i's resnets.
Tensor Vae::decoder_stage(int i, const Tensor& in, const NormFn& norm) const {
  const Block& prev = w_.up[i - 1];
  Tensor x = conv2d(upsample_nearest2x(in), prev.sample_w, prev.sample_b, 1, 1);   // [N, C, 2s, 2s]
  for (const Resnet& r : w_.up[i].resnets) x = resnet(x, r, norm);                 // [N, C', 2s, 2s]
  if (i + 1 == static_cast<int>(w_.up.size())) {
    x = norm(x, w_.dec_norm_out_w, w_.dec_norm_out_b, /*silu=*/true);              // [N, C0, 8h, 8w]
    x = conv2d(x, w_.dec_conv_out_w, w_.dec_conv_out_b, 1, 1).contiguous();        // [N, out, 8h, 8w]
  }
  return x;
}

Tensor Vae::decode(const Tensor& z) const {
  DIFFUSE_CHECK_ARG(z.ndim() == 4 && z.dim(1) == config_.latent_channels,
                    "[Vae::decode] expects latents [B, " + std::to_string(config_.latent_channels) + ", h, w], got " +
                        z.str());
  AllowTf32 scope(tf32_);
  Tensor x = decoder_head(to_preferred_layout(z.to(device_).to(act_dtype_)));     // [N, Ctop, h, w]
  const int levels = static_cast<int>(w_.up.size());
  if (levels == 1) {  // no upsampling: norm_out and conv_out at latent resolution
    x = group_norm(x, config_.norm_num_groups, w_.dec_norm_out_w, w_.dec_norm_out_b, kNormEps, /*silu=*/true);
    return conv2d(x, w_.dec_conv_out_w, w_.dec_conv_out_b, 1, 1).contiguous();
  }
  for (int i = 1; i < levels; ++i) x = decoder_stage(i, x, exact_norm());          // [N, .., 2^i h, 2^i w]
  return x;                                                                        // [N, out, 8h, 8w]
}

// DownEncoderBlock2D i (after conv_in for i = 0), with its Downsample2D.
Tensor Vae::encoder_stage(int i, const Tensor& in, const NormFn& norm) const {
  Tensor x = in;
  if (i == 0) x = conv2d(x, w_.enc_conv_in_w, w_.enc_conv_in_b, 1, 1);             // [N, C0, H, W]
  const Block& b = w_.down[i];
  for (const Resnet& r : b.resnets) x = resnet(x, r, norm);                        // [N, Ci, S, S]
  if (b.sample_w.defined())
    x = conv2d(pad_right_bottom(x), b.sample_w, b.sample_b, /*stride=*/2, /*padding=*/0);  // [N, Ci, S/2, S/2]
  return x;
}

Vae::Encoded Vae::encode(const Tensor& image) const {
  DIFFUSE_CHECK_ARG(image.ndim() == 4 && image.dim(1) == config_.in_channels,
                    "[Vae::encode] expects images [B, " + std::to_string(config_.in_channels) + ", H, W], got " +
                        image.str());
  AllowTf32 scope(tf32_);
  Tensor x = to_preferred_layout(image.to(device_).to(act_dtype_));                // [N, 3, H, W]
  for (int i = 0; i < static_cast<int>(w_.down.size()); ++i) x = encoder_stage(i, x, exact_norm());
  return encoder_tail(x);                                                          // x [N, Ctop, h, w]
}

Vae::Encoded Vae::encoder_tail(const Tensor& head) const {
  Tensor x = mid_block(head, w_.enc_mid);                                          // [N, Ctop, h, w]
  x = group_norm(x, config_.norm_num_groups, w_.enc_norm_out_w, w_.enc_norm_out_b, kNormEps, /*silu=*/true);
  x = conv2d(x, w_.enc_conv_out_w, w_.enc_conv_out_b, 1, 1);                       // [N, 2L, h, w]
  if (config_.use_quant_conv) x = conv2d(x, w_.quant_w, w_.quant_b);               // [N, 2L, h, w]

  // DiagonalGaussianDistribution. The clamp and exp run on the host: the
  // moments are small (latent-sized) and ops.h has no elementwise exp/clamp.
  const int64_t lat = config_.latent_channels;
  Encoded e;
  e.mean = copy(x.slice(1, 0, lat));                                               // [N, L, h, w]
  const Tensor logvar_raw = x.slice(1, lat, 2 * lat).to(Device::kCPU).to(DType::kF32).contiguous();
  std::vector<float> logvar = logvar_raw.to_f32_vector(), std(logvar.size());
  for (size_t i = 0; i < logvar.size(); ++i) {
    logvar[i] = std::clamp(logvar[i], -30.0f, 20.0f);
    std[i] = std::exp(0.5f * logvar[i]);
  }
  e.logvar = Tensor::from_vector(logvar, logvar_raw.shape()).to(act_dtype_).to(device_);
  e.std = Tensor::from_vector(std, logvar_raw.shape()).to(act_dtype_).to(device_);
  return e;
}

}  // namespace diffuse
