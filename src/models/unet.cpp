// UNet2DConditionModel port (diffusers unet_2d_condition.py, unet_2d_blocks.py,
// resnet.py, transformers/transformer_2d.py, attention.py, attention_processor.py,
// embeddings.py). The tensor list, the weight binding and forward() all walk
// the same Layout (unet_layout.h).
#include "models/unet.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "models/unet_blocks.h"
#include "models/unet_layout.h"

namespace diffuse {

using unet_detail::BlockLayout;
using unet_detail::Layout;
using unet_detail::layout_of;

namespace {

using TensorList = std::vector<std::pair<std::string, Shape>>;

// ---- declarations: name and shape of every tensor ---------------------------

void declare_linear(TensorList& out, const std::string& p, int64_t o, int64_t i, bool bias = true) {
  out.push_back({p + "weight", {o, i}});
  if (bias) out.push_back({p + "bias", {o}});
}
void declare_conv(TensorList& out, const std::string& p, int64_t o, int64_t i, int64_t k) {
  out.push_back({p + "weight", {o, i, k, k}});
  out.push_back({p + "bias", {o}});
}
void declare_norm(TensorList& out, const std::string& p, int64_t c) {
  out.push_back({p + "weight", {c}});
  out.push_back({p + "bias", {c}});
}

// ResnetBlock2D: norm1, conv1, time_emb_proj, norm2, conv2, [conv_shortcut].
void declare_resnet(TensorList& out, const std::string& p, int in, int o, int temb) {
  declare_norm(out, p + "norm1.", in);
  declare_conv(out, p + "conv1.", o, in, 3);
  declare_linear(out, p + "time_emb_proj.", o, temb);
  declare_norm(out, p + "norm2.", o);
  declare_conv(out, p + "conv2.", o, o, 3);
  if (in != o) declare_conv(out, p + "conv_shortcut.", o, in, 1);
}

// Transformer2DModel with BasicTransformerBlocks (self-attn, cross-attn, GEGLU FF).
void declare_transformer(TensorList& out, const std::string& p, int c, int layers, int cross, bool linear_proj) {
  auto proj = [&](const std::string& name) {
    if (linear_proj)
      declare_linear(out, p + name, c, c);
    else
      declare_conv(out, p + name, c, c, 1);
  };
  declare_norm(out, p + "norm.", c);
  proj("proj_in.");
  for (int l = 0; l < layers; ++l) {
    const std::string b = p + "transformer_blocks." + std::to_string(l) + ".";
    declare_norm(out, b + "norm1.", c);
    declare_linear(out, b + "attn1.to_q.", c, c, false);
    declare_linear(out, b + "attn1.to_k.", c, c, false);
    declare_linear(out, b + "attn1.to_v.", c, c, false);
    declare_linear(out, b + "attn1.to_out.0.", c, c);
    declare_norm(out, b + "norm2.", c);
    declare_linear(out, b + "attn2.to_q.", c, c, false);
    declare_linear(out, b + "attn2.to_k.", c, cross, false);
    declare_linear(out, b + "attn2.to_v.", c, cross, false);
    declare_linear(out, b + "attn2.to_out.0.", c, c);
    declare_norm(out, b + "norm3.", c);
    declare_linear(out, b + "ff.net.0.proj.", 8 * c, c);  // GEGLU: inner 4c, doubled for the gate
    declare_linear(out, b + "ff.net.2.", c, 4 * c);
  }
  proj("proj_out.");
}

void declare_block(TensorList& out, const BlockLayout& b, const UNetConfig& c) {
  const bool mid = b.prefix == "mid_block.";
  for (size_t j = 0; j < b.resnets.size(); ++j) {
    declare_resnet(out, b.prefix + "resnets." + std::to_string(j) + ".", b.resnets[j].first, b.resnets[j].second,
                   c.time_embed_dim());
    // The mid block interleaves resnet, attention, resnet; others pair resnet j with attention j.
    const int a = mid ? static_cast<int>(j) - 1 : static_cast<int>(j);
    if (a >= 0 && a < b.attentions)
      declare_transformer(out, b.prefix + "attentions." + std::to_string(a) + ".", b.channels,
                          b.transformer_layers[a], b.cross_dim, c.use_linear_projection);
  }
  if (b.downsample) declare_conv(out, b.prefix + "downsamplers.0.conv.", b.channels, b.channels, 3);
  if (b.upsample) declare_conv(out, b.prefix + "upsamplers.0.conv.", b.channels, b.channels, 3);
}

// ---- binding: look up placed tensors into the weight structs ----------------

class Binder {
 public:
  explicit Binder(const WeightTable& w) : w_(w) {}
  Tensor get(const std::string& name) const { return w_.get(name); }  // presence checked at load
  Tensor maybe(const std::string& name) const { return w_.find(name); }
  // proj_in / proj_out: a 1x1 conv [C, C, 1, 1] is the same map as a linear [C, C].
  Tensor as_matrix(const std::string& name) const {
    Tensor t = get(name);
    return t.reshape({t.dim(0), t.dim(1)});
  }

  UNet::Resnet resnet(const std::string& p) const {
    UNet::Resnet r;
    r.norm1_w = get(p + "norm1.weight"), r.norm1_b = get(p + "norm1.bias");
    r.conv1_w = get(p + "conv1.weight"), r.conv1_b = get(p + "conv1.bias");
    r.temb_w = get(p + "time_emb_proj.weight"), r.temb_b = get(p + "time_emb_proj.bias");
    r.norm2_w = get(p + "norm2.weight"), r.norm2_b = get(p + "norm2.bias");
    r.conv2_w = get(p + "conv2.weight"), r.conv2_b = get(p + "conv2.bias");
    r.shortcut_w = maybe(p + "conv_shortcut.weight"), r.shortcut_b = maybe(p + "conv_shortcut.bias");
    return r;
  }
  UNet::Attention attention(const std::string& p) const {
    UNet::Attention a{get(p + "to_q.weight"), get(p + "to_k.weight"), get(p + "to_v.weight"),
                      get(p + "to_out.0.weight"), get(p + "to_out.0.bias"), Tensor(), Tensor()};
    if (a.q_w.dim(1) == a.k_w.dim(1)) a.qkv_w = stacked_rows({&a.q_w, &a.k_w, &a.v_w});  // self-attention
    else a.kv_w = stacked_rows({&a.k_w, &a.v_w});                                      // cross-attention
    return a;
  }

  // Row blocks that sit back to back in one storage, as one [rows, in] view; undefined otherwise.
  static Tensor stacked_rows(std::initializer_list<const Tensor*> ws) {
    const Tensor& first = **ws.begin();
    int64_t rows = 0, next = first.offset();
    for (const Tensor* w : ws) {
      if (w->storage() != first.storage() || w->ndim() != 2 || !w->is_contiguous() || w->dim(1) != first.dim(1) ||
          w->offset() != next)
        return Tensor();
      rows += w->dim(0);
      next += w->numel();
    }
    return make_view(first, {rows, first.dim(1)}, {first.dim(1), 1}, first.offset());
  }
  UNet::Transformer transformer(const std::string& p, int heads, int layers) const {
    UNet::Transformer t;
    t.heads = heads;
    t.norm_w = get(p + "norm.weight"), t.norm_b = get(p + "norm.bias");
    t.proj_in_w = as_matrix(p + "proj_in.weight"), t.proj_in_b = get(p + "proj_in.bias");
    t.proj_out_w = as_matrix(p + "proj_out.weight"), t.proj_out_b = get(p + "proj_out.bias");
    for (int l = 0; l < layers; ++l) {
      const std::string b = p + "transformer_blocks." + std::to_string(l) + ".";
      UNet::TransformerBlock k;
      k.norm1_w = get(b + "norm1.weight"), k.norm1_b = get(b + "norm1.bias");
      k.norm2_w = get(b + "norm2.weight"), k.norm2_b = get(b + "norm2.bias");
      k.norm3_w = get(b + "norm3.weight"), k.norm3_b = get(b + "norm3.bias");
      k.attn1 = attention(b + "attn1.");
      k.attn2 = attention(b + "attn2.");
      k.ff_in_w = get(b + "ff.net.0.proj.weight"), k.ff_in_b = get(b + "ff.net.0.proj.bias");
      k.ff_out_w = get(b + "ff.net.2.weight"), k.ff_out_b = get(b + "ff.net.2.bias");
      t.blocks.push_back(std::move(k));
    }
    return t;
  }
  UNet::Block block(const BlockLayout& b) const {
    UNet::Block out;
    for (size_t j = 0; j < b.resnets.size(); ++j) out.resnets.push_back(resnet(b.prefix + "resnets." + std::to_string(j) + "."));
    for (int a = 0; a < b.attentions; ++a)
      out.attentions.push_back(
          transformer(b.prefix + "attentions." + std::to_string(a) + ".", b.heads, b.transformer_layers[a]));
    const std::string s = b.downsample ? "downsamplers.0.conv." : "upsamplers.0.conv.";
    if (b.downsample || b.upsample) out.sample_w = get(b.prefix + s + "weight"), out.sample_b = get(b.prefix + s + "bias");
    return out;
  }

 private:
  const WeightTable& w_;
};

// ---- forward helpers ---------------------------------------------------------

// ResnetBlock2D (resnet.py, time_embedding_norm="default", output_scale_factor=1).
// temb_act is SiLU(emb), computed once per forward (every resnet applies the same SiLU).
Tensor resnet_forward(const Tensor& x, const Tensor& temb_act, const UNet::Resnet& r, int groups, float eps) {
  Tensor h = group_norm(x, groups, r.norm1_w, r.norm1_b, eps, /*silu=*/true);  // [B, Cin, H, W]
  Tensor t = linear(temb_act, r.temb_w, r.temb_b);                             // [B, C]
  h = conv2d(h, r.conv1_w, r.conv1_b, 1, 1, t.reshape({t.dim(0), t.dim(1), 1, 1}));  // [B, C, H, W] + time shift
  h = group_norm(h, groups, r.norm2_w, r.norm2_b, eps, /*silu=*/true);         // [B, C, H, W] (dropout = identity)
  Tensor skip = r.shortcut_w.defined() ? conv2d(x, r.shortcut_w, r.shortcut_b) : x;  // [B, C, H, W]
  return conv2d(h, r.conv2_w, r.conv2_b, 1, 1, skip);                          // [B, C, H, W]
}

// Attention (attention_processor.py): to_q/k/v without bias, scale dim_head^-0.5, to_out.0;
// returns x + attention(n, ctx), the residual riding in the output projection. An undefined ctx
// means self-attention (keys and values from n).
// With an image prompt, cross-attention layer `ip_layer` also attends to each source's image
// tokens through its own to_k_ip / to_v_ip (IP-Adapter), added with the layer's scale.
Tensor attention_residual(const Tensor& x, const Tensor& n, const Tensor& ctx_in, const UNet::Attention& a,
                          int heads, const UNetImagePrompt* ip = nullptr, size_t ip_layer = 0) {
  const bool self = !ctx_in.defined();
  const Tensor& ctx = self ? n : ctx_in;
  const int64_t c = a.q_w.dim(0);
  Tensor q, k, v;  // [B, L, C], [B, Lk, C], [B, Lk, C]
  if (a.qkv_w.defined() && self) {  // one GEMM; the three are column slices of its output
    const Tensor qkv = linear(n, a.qkv_w);  // [B, L, 3C]
    q = qkv.slice(2, 0, c), k = qkv.slice(2, c, 2 * c), v = qkv.slice(2, 2 * c, 3 * c);
  } else {
    q = linear(n, a.q_w);
    if (a.kv_w.defined()) {
      const Tensor kv = linear(ctx, a.kv_w);  // [B, Lk, 2C]
      k = kv.slice(2, 0, c), v = kv.slice(2, c, 2 * c);
    } else {
      k = linear(ctx, a.k_w);
      v = linear(ctx, a.v_w);
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.dim(-1) / heads));
  Tensor o = attention(q, k, v, heads, scale);                 // [B, L, C]
  if (ip && !self) {
    for (const UNetImagePrompt::Source& src : ip->sources) {
      const UNetImagePrompt::Layer& l = src.layers[ip_layer];
      if (l.scale == 0.0f) continue;
      const Tensor ki = linear(src.tokens, l.k_w);                 // [B, N, C]
      const Tensor vi = linear(src.tokens, l.v_w);                 // [B, N, C]
      o = axpby(o, 1.0f, attention(q, ki, vi, heads, scale), l.scale);  // text + scale * image
    }
  }
  return linear(o, a.out_w, a.out_b, Activation::kNone, x);    // [B, L, C]
}

// Transformer2DModel (continuous input): GroupNorm(eps 1e-6), proj_in,
// BasicTransformerBlocks (LayerNorm eps 1e-5), proj_out, residual.
// `ip` (optional): the image prompt, whose layer ip_first belongs to this transformer's first block.
Tensor transformer_forward(const Tensor& x, const Tensor& ctx, const UNet::Transformer& t, int groups,
                           const UNetImagePrompt* ip = nullptr, size_t ip_first = 0) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor h = group_norm(x, groups, t.norm_w, t.norm_b, 1e-6f);  // [B, C, H, W]
  h = h.permute({0, 2, 3, 1}).reshape({B, H * W, C});            // [B, HW, C] (a view when channels-last)
  h = linear(h, t.proj_in_w, t.proj_in_b);                       // [B, HW, C]
  for (size_t bi = 0; bi < t.blocks.size(); ++bi) {
    const auto& blk = t.blocks[bi];
    Tensor n = layer_norm(h, blk.norm1_w, blk.norm1_b, 1e-5f);               // [B, HW, C]
    h = attention_residual(h, n, Tensor(), blk.attn1, t.heads);               // self-attention
    n = layer_norm(h, blk.norm2_w, blk.norm2_b, 1e-5f);
    h = attention_residual(h, n, ctx, blk.attn2, t.heads, ip, ip_first + bi);  // cross-attention on [B, L, D]
    n = layer_norm(h, blk.norm3_w, blk.norm3_b, 1e-5f);
    Tensor f = geglu(linear(n, blk.ff_in_w, blk.ff_in_b));                    // [B, HW, 4C]
    h = linear(f, blk.ff_out_w, blk.ff_out_b, Activation::kNone, h);          // [B, HW, C]
  }
  if (x.is_channels_last()) {  // x as [B, HW, C] is a view: the residual rides in proj_out's epilogue
    const Tensor xs = x.permute({0, 2, 3, 1}).reshape({B, H * W, C});
    return linear(h, t.proj_out_w, t.proj_out_b, Activation::kNone, xs).reshape({B, H, W, C}).permute({0, 3, 1, 2});
  }
  h = linear(h, t.proj_out_w, t.proj_out_b);                       // [B, HW, C]
  return add(x, h.reshape({B, H, W, C}).permute({0, 3, 1, 2}));    // [B, C, H, W], in x's layout
}

// Timesteps + TimestepEmbedding (embeddings.py): linear_1, SiLU, linear_2.
Tensor mlp_embedding(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  return linear(linear(x, w1, b1, Activation::kSilu), w2, b2);
}

}  // namespace

// The encoder half's pieces, shared with the ControlNet (unet_blocks.h).
namespace unet_detail {
void declare_unet_block(WeightSpecs& out, const BlockLayout& b, const UNetConfig& c) { declare_block(out, b, c); }
UNet::Block bind_unet_block(const WeightTable& w, const BlockLayout& b) { return Binder(w).block(b); }
Tensor unet_resnet(const Tensor& x, const Tensor& temb_act, const UNet::Resnet& r, int groups, float eps) {
  return resnet_forward(x, temb_act, r, groups, eps);
}
Tensor unet_transformer(const Tensor& x, const Tensor& ctx, const UNet::Transformer& t, int groups) {
  return transformer_forward(x, ctx, t, groups);
}
Tensor unet_mlp_embedding(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2) {
  return mlp_embedding(x, w1, b1, w2, b2);
}
}  // namespace unet_detail

std::vector<std::pair<std::string, Shape>> UNet::expected_tensors(const UNetConfig& c) {
  const Layout l = layout_of(c);
  const int c0 = c.block_out_channels[0], T = c.time_embed_dim();
  TensorList out;
  declare_conv(out, "conv_in.", c0, c.in_channels, c.conv_in_kernel);
  if (c.has_guidance_embedding()) declare_linear(out, "time_embedding.cond_proj.", c0, c.time_cond_proj_dim, false);
  declare_linear(out, "time_embedding.linear_1.", T, c0);
  declare_linear(out, "time_embedding.linear_2.", T, T);
  if (c.has_text_time()) {
    declare_linear(out, "add_embedding.linear_1.", T, c.projection_class_embeddings_input_dim);
    declare_linear(out, "add_embedding.linear_2.", T, T);
  }
  for (const auto& b : l.down) declare_block(out, b, c);
  declare_block(out, l.mid, c);
  for (const auto& b : l.up) declare_block(out, b, c);
  declare_norm(out, "conv_norm_out.", c0);
  declare_conv(out, "conv_out.", c.out_channels, c0, c.conv_out_kernel);
  return out;
}

UNet::UNet(const UNetConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), act_dtype_(dtype), device_(device) {
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("unet: dtype must be floating, got ") + dtype_name(dtype));
  // Every name and shape is checked first, so one error lists all the problems;
  // conv weights are placed channels-last where the backend prefers it.
  weights_ = WeightTable("unet", expected_tensors(config_), weights, dtype_, device_, ExtraWeights::kReject);
  bind();
}

void UNet::bind() {
  const Layout l = layout_of(config_);
  Binder b(weights_);
  conv_in_w_ = b.get("conv_in.weight"), conv_in_b_ = b.get("conv_in.bias");
  time_w1_ = b.get("time_embedding.linear_1.weight"), time_b1_ = b.get("time_embedding.linear_1.bias");
  time_w2_ = b.get("time_embedding.linear_2.weight"), time_b2_ = b.get("time_embedding.linear_2.bias");
  time_cond_w_ = b.maybe("time_embedding.cond_proj.weight");
  add_w1_ = b.maybe("add_embedding.linear_1.weight"), add_b1_ = b.maybe("add_embedding.linear_1.bias");
  add_w2_ = b.maybe("add_embedding.linear_2.weight"), add_b2_ = b.maybe("add_embedding.linear_2.bias");
  down_.clear();
  up_.clear();
  for (const auto& blk : l.down) down_.push_back(b.block(blk));
  mid_ = b.block(l.mid);
  for (const auto& blk : l.up) up_.push_back(b.block(blk));
  norm_out_w_ = b.get("conv_norm_out.weight"), norm_out_b_ = b.get("conv_norm_out.bias");
  conv_out_w_ = b.get("conv_out.weight"), conv_out_b_ = b.get("conv_out.bias");
}

void UNet::park() {
  weights_.park();
  bind();  // the slots drop their views of the device allocation
}

void UNet::unpark() {
  weights_.unpark();
  bind();
}

void UNet::replace_weight(const std::string& name, const Tensor& value) {
  weights_.replace(name, value);
  bind();  // q/k/v no longer adjacent fall back to separate GEMMs (Binder::stacked_rows)
}

Tensor UNet::forward(const Tensor& sample, const Tensor& timesteps, const Tensor& context, const Tensor& text_embeds,
                     const Tensor& time_ids, UNetIntermediates* im, const UNetResiduals* residuals,
                     const Tensor& timestep_cond) const {
  const UNetConfig& c = config_;
  const int groups = c.norm_num_groups;
  const int64_t factor = int64_t{1} << (c.num_blocks() - 1);  // one downsampler per block but the last
  DIFFUSE_CHECK_ARG(sample.ndim() == 4 && sample.dim(1) == c.in_channels,
                    "[unet] sample must be [B, " + std::to_string(c.in_channels) + ", H, W], got " + shape_str(sample.shape()));
  const int64_t B = sample.dim(0);
  // Any size works: a stride-2 downsampler gives ceil(h / 2), and an
  // upsampler whose skip is odd-sized is cropped to it (diffusers'
  // forward_upsample_size: nearest interpolation to the skip's size, which for
  // 2h - 1 picks the same rows as 2x then crop). `factor` only names the fast case.
  (void)factor;
  DIFFUSE_CHECK_ARG(sample.dim(2) >= 1 && sample.dim(3) >= 1,
                    "[unet] sample " + shape_str(sample.shape()) + " has an empty spatial size");
  DIFFUSE_CHECK_ARG(context.ndim() == 3 && context.dim(0) == B && context.dim(2) == c.cross_attention_dim[0],
                    "[unet] context must be [" + std::to_string(B) + ", L, " + std::to_string(c.cross_attention_dim[0]) +
                        "], got " + shape_str(context.shape()));
  DIFFUSE_CHECK_ARG(timesteps.numel() == B || timesteps.numel() == 1,
                    "[unet] timesteps " + shape_str(timesteps.shape()) + " must have 1 or " + std::to_string(B) + " entries");

  // diffusers broadcasts one timestep to the batch (timesteps.expand(B)).
  // Per-image f32 timesteps already on the device are used as they are: no
  // host round trip, so the whole forward can be captured in a CUDA graph.
  Tensor t;
  if (timesteps.device() == device_ && timesteps.dtype() == DType::kF32 && timesteps.numel() == B) {
    t = timesteps.reshape({B});                                          // [B]
  } else {
    std::vector<float> tv = timesteps.to_f32_vector();
    if (tv.size() == 1) tv.assign(B, tv[0]);
    t = Tensor::from_vector(tv, {B}).to(device_);                        // [B]
  }
  const Tensor x = to_preferred_layout(sample.to(device_).to(act_dtype_));   // [B, Cin, H, W]
  const Tensor ctx = context.to(device_).to(act_dtype_);                     // [B, L, D]

  // Time embedding (Timesteps -> TimestepEmbedding).
  const int c0 = c.block_out_channels[0];
  Tensor t_emb = timestep_embedding(t, c0, c.flip_sin_to_cos, c.freq_shift).to(act_dtype_);  // [B, c0]
  if (time_cond_w_.defined()) {
    // LCM: TimestepEmbedding adds cond_proj(timestep_cond) before linear_1.
    DIFFUSE_CHECK_ARG(timestep_cond.ndim() == 2 && (timestep_cond.dim(0) == B || timestep_cond.dim(0) == 1) &&
                          timestep_cond.dim(1) == c.time_cond_proj_dim,
                      "[unet] this UNet (time_cond_proj_dim " + std::to_string(c.time_cond_proj_dim) +
                          ") needs timestep_cond [" + std::to_string(B) + ", " + std::to_string(c.time_cond_proj_dim) +
                          "] (the guidance-scale embedding), got " + shape_str(timestep_cond.shape()));
    Tensor cond = timestep_cond.to(device_).to(act_dtype_);                                  // [B or 1, D]
    if (cond.dim(0) != B) cond = concat(std::vector<Tensor>(static_cast<size_t>(B), cond), 0);  // [B, D]
    t_emb = linear(cond, time_cond_w_, Tensor(), Activation::kNone, t_emb);                 // [B, c0]: t_emb + W cond
  } else {
    DIFFUSE_CHECK_ARG(!timestep_cond.defined(), "[unet] timestep_cond " + shape_str(timestep_cond.shape()) +
                                                    " given to a UNet without time_cond_proj_dim");
  }
  Tensor emb = mlp_embedding(t_emb, time_w1_, time_b1_, time_w2_, time_b2_);             // [B, T]
  if (im) im->time_embedding = emb;
  if (add_w1_.defined()) {
    // SDXL "text_time": each time id gets its own sinusoidal embedding (add_time_proj),
    // flattened and appended to the pooled text embedding (add_embedding).
    DIFFUSE_CHECK_ARG(text_embeds.ndim() == 2 && text_embeds.dim(0) == B && time_ids.ndim() == 2 && time_ids.dim(0) == B,
                      "[unet] text_time needs text_embeds [B, P] and time_ids [B, n], got " +
                          shape_str(text_embeds.shape()) + " and " + shape_str(time_ids.shape()));
    DIFFUSE_CHECK_ARG(text_embeds.dim(1) + time_ids.dim(1) * c.addition_time_embed_dim ==
                          c.projection_class_embeddings_input_dim,
                      "[unet] text_embeds " + shape_str(text_embeds.shape()) + " and time_ids " +
                          shape_str(time_ids.shape()) + " do not add up to projection_class_embeddings_input_dim " +
                          std::to_string(c.projection_class_embeddings_input_dim));
    Tensor ids = time_ids.to(device_).to(DType::kF32).reshape({-1});                         // [B*n]
    Tensor id_emb = timestep_embedding(ids, c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
                        .to(act_dtype_)
                        .reshape({B, -1});                                                   // [B, n*dt]
    Tensor add_in = concat({text_embeds.to(device_).to(act_dtype_), id_emb}, 1);                 // [B, P + n*dt]
    Tensor aug = mlp_embedding(add_in, add_w1_, add_b1_, add_w2_, add_b2_);                  // [B, T]
    if (im) im->add_embedding = aug;
    emb = add(emb, aug);                                                                     // [B, T]
  }
  const Tensor temb = silu(emb);  // [B, T]: the SiLU every ResnetBlock2D applies before time_emb_proj

  // IP-Adapter: its layers are numbered in diffusers' processor order (down, up, mid).
  UNetImagePrompt ip_local;
  const UNetImagePrompt* ip = residuals ? residuals->image_prompt : nullptr;
  if (ip) ip = prepare_image_prompt(*ip, B, ip_local);
  size_t ip_down = 0, ip_up = cross_attention_count(down_), ip_mid = ip_up + cross_attention_count(up_);

  Tensor h = conv2d(x, conv_in_w_, conv_in_b_, 1, c.conv_in_kernel / 2);  // [B, c0, H, W]
  if (im) im->conv_in = h;
  std::vector<Tensor> skips = {h};

  // Down blocks (CrossAttnDownBlock2D / DownBlock2D): every resnet(+attention)
  // output and the downsampled map are kept for the up path.
  for (const Block& blk : down_) {
    for (size_t j = 0; j < blk.resnets.size(); ++j) {
      h = resnet_forward(h, temb, blk.resnets[j], groups, c.norm_eps);                   // [B, Ci, h, w]
      if (j < blk.attentions.size()) {
        h = transformer_forward(h, ctx, blk.attentions[j], groups, ip, ip_down);
        ip_down += blk.attentions[j].blocks.size();
      }
      skips.push_back(h);
    }
    if (blk.sample_w.defined()) {
      h = conv2d(h, blk.sample_w, blk.sample_b, 2, c.downsample_padding);                // [B, Ci, h/2, w/2]
      skips.push_back(h);
    }
    if (im) im->down.push_back(h);
  }
  // ControlNet residuals join the skips only: the mid block takes the down path's
  // own output (diffusers adds them to down_block_res_samples after the loop).
  if (residuals && !residuals->down.empty()) {
    DIFFUSE_CHECK_ARG(residuals->down.size() == skips.size(),
                      "[unet] " + std::to_string(residuals->down.size()) + " down residuals for " +
                          std::to_string(skips.size()) + " skip connections");
    for (size_t k = 0; k < skips.size(); ++k) {
      const Tensor& r = residuals->down[k];
      DIFFUSE_CHECK_ARG(r.shape() == skips[k].shape(), "[unet] down residual " + std::to_string(k) + " " +
                                                           shape_str(r.shape()) + " must match its skip " +
                                                           shape_str(skips[k].shape()));
      skips[k] = add(skips[k], r.to(device_).to(act_dtype_));
    }
  }

  // Mid block: resnet, then (attention, resnet) pairs (UNetMidBlock2DCrossAttn:
  // one pair; UNetMidBlock2D: none); a UNet without a mid block skips it.
  if (!mid_.resnets.empty()) {
    h = resnet_forward(h, temb, mid_.resnets[0], groups, c.norm_eps);  // [B, Cn, h, w]
    for (size_t a = 0; a < mid_.attentions.size(); ++a) {
      h = transformer_forward(h, ctx, mid_.attentions[a], groups, ip, ip_mid);
      ip_mid += mid_.attentions[a].blocks.size();
      h = resnet_forward(h, temb, mid_.resnets[a + 1], groups, c.norm_eps);
    }
  }
  if (residuals && residuals->mid.defined()) {
    DIFFUSE_CHECK_ARG(residuals->mid.shape() == h.shape(), "[unet] mid residual " + shape_str(residuals->mid.shape()) +
                                                               " must match the mid block's output " +
                                                               shape_str(h.shape()));
    h = add(h, residuals->mid.to(device_).to(act_dtype_));
  }
  if (im) im->mid = h;

  // Up blocks (CrossAttnUpBlock2D / UpBlock2D): each resnet eats the latest skip.
  for (const Block& blk : up_) {
    for (size_t j = 0; j < blk.resnets.size(); ++j) {
      h = concat({h, skips.back()}, 1);                                                  // [B, C + Cskip, h, w]
      skips.pop_back();
      h = resnet_forward(h, temb, blk.resnets[j], groups, c.norm_eps);                   // [B, Ci, h, w]
      if (j < blk.attentions.size()) {
        h = transformer_forward(h, ctx, blk.attentions[j], groups, ip, ip_up);
        ip_up += blk.attentions[j].blocks.size();
      }
    }
    if (blk.sample_w.defined()) {
      Tensor up = upsample_nearest2x(h);                                                 // [B, Ci, 2h, 2w]
      if (!skips.empty() && (up.dim(2) != skips.back().dim(2) || up.dim(3) != skips.back().dim(3))) {
        up = copy(up.slice(2, 0, skips.back().dim(2)).slice(3, 0, skips.back().dim(3)));  // odd-sized skip
      }
      h = conv2d(up, blk.sample_w, blk.sample_b, 1, 1);
    }
    if (im) im->up.push_back(h);
  }

  // Output: GroupNorm, SiLU, conv_out.
  if (im) {
    im->conv_norm_out = group_norm(h, groups, norm_out_w_, norm_out_b_, c.norm_eps);     // [B, c0, H, W]
    h = silu(im->conv_norm_out);
  } else {
    h = group_norm(h, groups, norm_out_w_, norm_out_b_, c.norm_eps, /*silu=*/true);     // [B, c0, H, W]
  }
  h = conv2d(h, conv_out_w_, conv_out_b_, 1, c.conv_out_kernel / 2);                     // [B, Cout, H, W]
  return h.contiguous().to(sample.dtype()).to(sample.device());
}

size_t UNet::cross_attention_count(const std::vector<Block>& blocks) {
  size_t n = 0;
  for (const Block& b : blocks) n += cross_attention_count(b);
  return n;
}

size_t UNet::cross_attention_count(const Block& block) {
  size_t n = 0;
  for (const Transformer& t : block.attentions) n += t.blocks.size();
  return n;
}

std::vector<std::pair<std::string, int>> UNet::cross_attention_names(const UNetConfig& config) {
  // diffusers' attn_processors walks named_children: down_blocks and up_blocks are
  // registered in __init__ before mid_block.
  const Layout l = layout_of(config);
  std::vector<std::pair<std::string, int>> out;
  auto add_block = [&](const BlockLayout& b) {
    for (int a = 0; a < b.attentions; ++a)
      for (int d = 0; d < b.transformer_layers[a]; ++d)
        out.emplace_back(b.prefix + "attentions." + std::to_string(a) + ".transformer_blocks." + std::to_string(d) +
                             ".attn2",
                         b.channels);
  };
  for (const auto& b : l.down) add_block(b);
  for (const auto& b : l.up) add_block(b);
  add_block(l.mid);
  return out;
}

const UNetImagePrompt* UNet::prepare_image_prompt(const UNetImagePrompt& ip, int64_t batch,
                                                  UNetImagePrompt& local) const {
  const size_t layers = cross_attention_count(down_) + cross_attention_count(up_) + cross_attention_count(mid_);
  const int64_t d = config_.cross_attention_dim[0];
  bool convert = false;
  for (size_t s = 0; s < ip.sources.size(); ++s) {
    const UNetImagePrompt::Source& src = ip.sources[s];
    const std::string what = "[unet] image prompt source " + std::to_string(s);
    DIFFUSE_CHECK_ARG(src.layers.size() == layers, what + " has " + std::to_string(src.layers.size()) +
                                                       " layers for this UNet's " + std::to_string(layers) +
                                                       " cross-attentions");
    DIFFUSE_CHECK_ARG(src.tokens.defined() && src.tokens.ndim() == 3 && src.tokens.dim(0) == batch &&
                          src.tokens.dim(2) == d,
                      what + ": tokens must be [" + std::to_string(batch) + ", N, " + std::to_string(d) + "], got " +
                          (src.tokens.defined() ? shape_str(src.tokens.shape()) : std::string("none")));
    convert = convert || src.tokens.device() != device_ || src.tokens.dtype() != act_dtype_;
    for (const auto& l : src.layers) convert = convert || l.k_w.device() != device_ || l.v_w.device() != device_;
  }
  if (!convert) return &ip;
  local = ip;
  for (auto& src : local.sources) {
    src.tokens = src.tokens.to(device_).to(act_dtype_);
    for (auto& l : src.layers) l.k_w = l.k_w.to(device_), l.v_w = l.v_w.to(device_);
  }
  return &local;
}

TensorMap UNet::random_weights(const UNetConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

}  // namespace diffuse
