// Configs from tensor shapes (infer_config.h). Key layouts: the LDM UNet
// (ldm/modules/diffusionmodules/openaimodel.py UNetModel: input_blocks,
// middle_block, output_blocks), the LDM AutoencoderKL (encoder.down.N.block.M),
// transformers' CLIPTextModel and OpenCLIP's TextTransformer (keymap.h).
#include "models/infer_config.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "io/stored_dtype.h"

namespace diffuse {
namespace {

constexpr const char* kUNetPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The keys of `index` under one prefix.
class Keys {
 public:
  Keys(const TensorIndex& index, std::string prefix) : index_(index), prefix_(std::move(prefix)) {}

  const Shape* shape(const std::string& key) const {
    auto it = index_.find(prefix_ + key);
    return it == index_.end() ? nullptr : &it->second.shape;
  }
  // Dimension d of `key`, or 0 when the key is absent or has fewer dimensions.
  int64_t dim(const std::string& key, size_t d) const {
    const Shape* s = shape(key);
    return s && s->size() > d ? (*s)[d] : 0;
  }
  bool has(const std::string& key) const { return shape(key) != nullptr; }
  // 1 + the largest N of keys "prefix + p + N." (0 when there is none).
  int count(const std::string& p) const {
    const std::string full = prefix_ + p;
    int n = 0;
    for (auto it = index_.lower_bound(full); it != index_.end() && it->first.compare(0, full.size(), full) == 0; ++it) {
      const size_t dot = it->first.find('.', full.size());
      const std::string num = it->first.substr(full.size(), dot == std::string::npos ? std::string::npos : dot - full.size());
      if (all_digits(num)) n = std::max(n, std::stoi(num) + 1);
    }
    return n;
  }
 private:
  const TensorIndex& index_;
  std::string prefix_;
};

// One Transformer2DModel (SpatialTransformer) of the LDM UNet at `p`.
struct Attention {
  int depth = 0;      // BasicTransformerBlocks; 0: the layer has no attention
  int context = 0;    // attn2.to_k input width
  int linear = -1;    // proj_in is a Linear (1) or a 1x1 conv (0); -1 unknown
};

Attention attention_at(const Keys& u, const std::string& p) {
  Attention a;
  const Shape* proj = u.shape(p + "proj_in.weight");
  if (!proj) return a;
  a.depth = u.count(p + "transformer_blocks.");
  a.context = static_cast<int>(u.dim(p + "transformer_blocks.0.attn2.to_k.weight", 1));
  a.linear = proj->size() == 2 ? 1 : 0;
  return a;
}

// A resnet's output width (ResBlock out_layers.3 = conv2), 0 when absent.
int resnet_width(const Keys& u, const std::string& p) { return static_cast<int>(u.dim(p + "out_layers.3.weight", 0)); }

struct UNetShapes {
  UNetConfig config;
  int add_input = 0;  // label_emb.0.0 input width (SDXL add embedding), 0 when absent
};

UNetShapes infer_unet(const TensorIndex& index, const FamilySpec& family, std::vector<std::string>& unresolved) {
  const Keys u(index, kUNetPrefix);
  UNetShapes out;
  UNetConfig& c = out.config;
  c = family.unet;  // what shapes do not show stays the published model's
  const Shape* conv_in = u.shape("input_blocks.0.0.weight");
  if (!conv_in || conv_in->size() != 4) {
    unresolved.push_back("no UNet (model.diffusion_model.input_blocks.0.0.weight)");
    return out;
  }
  const int c0 = static_cast<int>((*conv_in)[0]);
  c.in_channels = static_cast<int>((*conv_in)[1]);
  c.conv_in_kernel = static_cast<int>((*conv_in)[2]);
  if (const Shape* conv_out = u.shape("out.2.weight"); conv_out && conv_out->size() == 4) {
    c.out_channels = static_cast<int>((*conv_out)[0]);
    c.conv_out_kernel = static_cast<int>((*conv_out)[2]);
  }
  const int t = static_cast<int>(u.dim("time_embed.0.weight", 0));
  c.time_embedding_dim = t == 0 || t == 4 * c0 ? 0 : t;
  // LCM-distilled UNets: cond_proj [c0, time_cond_proj_dim], under its LDM-style name or the
  // diffusers name that the diffusers -> original conversion script leaves.
  c.time_cond_proj_dim = static_cast<int>(std::max(u.dim("time_embed.cond_proj.weight", 1),
                                                   u.dim("time_embedding.cond_proj.weight", 1)));
  out.add_input = static_cast<int>(u.dim("label_emb.0.0.weight", 1));
  if (out.add_input > 0) {
    c.addition_embed_type = "text_time";
    c.projection_class_embeddings_input_dim = out.add_input;
  } else {
    c.addition_embed_type.clear();
    c.addition_time_embed_dim = c.projection_class_embeddings_input_dim = 0;
  }

  int context = 0, linear = -1;
  auto note = [&](const Attention& a) {
    if (a.depth == 0) return;
    if (a.context) context = context ? context : a.context;
    if (a.linear >= 0) linear = a.linear;
  };

  // Down blocks: input_blocks 1.. hold resnets (+ attention as sub-module 1); a
  // downsampler (0.op) closes a block. The last block has none.
  std::vector<std::vector<int>> widths(1), depths(1);
  for (int n = 1;; ++n) {
    const std::string ib = "input_blocks." + std::to_string(n) + ".";
    if (u.has(ib + "0.op.weight")) {
      if (widths.back().empty()) {
        unresolved.push_back("UNet: downsampler " + ib + "0.op follows no resnet");
        return out;
      }
      widths.emplace_back();
      depths.emplace_back();
      continue;
    }
    const int w = resnet_width(u, ib + "0.");
    if (w == 0) break;
    const Attention a = attention_at(u, ib + "1.");
    note(a);
    widths.back().push_back(w);
    depths.back().push_back(a.depth);
  }
  if (widths.back().empty()) {
    unresolved.push_back("UNet: no resnets after the last downsampler (input_blocks)");
    return out;
  }
  const int n = static_cast<int>(widths.size());
  c.block_out_channels.assign(n, 0);
  c.layers_per_block.assign(n, 0);
  c.down_block_types.assign(n, "");
  c.transformer_layers_per_block.assign(n, {1});
  std::vector<bool> down_attn(n, false);
  for (int i = 0; i < n; ++i) {
    const std::vector<int>& w = widths[i];
    const std::vector<int>& d = depths[i];
    c.block_out_channels[i] = w[0];
    c.layers_per_block[i] = static_cast<int>(w.size());
    if (std::any_of(w.begin(), w.end(), [&](int x) { return x != w[0]; }))
      unresolved.push_back("UNet down block " + std::to_string(i) + ": resnets of different widths");
    const bool any = std::any_of(d.begin(), d.end(), [](int x) { return x > 0; });
    const bool all = std::all_of(d.begin(), d.end(), [](int x) { return x > 0; });
    if (any != all)
      unresolved.push_back("UNet down block " + std::to_string(i) + ": some layers have attention and some do not");
    down_attn[i] = all;
    c.down_block_types[i] = all ? "CrossAttnDownBlock2D" : "DownBlock2D";
    if (all) c.transformer_layers_per_block[i] = std::all_of(d.begin(), d.end(), [&](int x) { return x == d[0]; })
                                                     ? std::vector<int>{d[0]}
                                                     : d;
  }

  // Mid block: middle_block.0 resnet, .1 attention, .2 resnet (UNetMidBlock2DCrossAttn);
  // only .0 (UNetMidBlock2D, SSD-1B); nothing (BK-SDM).
  const bool m0 = resnet_width(u, "middle_block.0.") > 0, m2 = resnet_width(u, "middle_block.2.") > 0;
  const Attention mid = attention_at(u, "middle_block.1.");
  note(mid);
  if (m0 && mid.depth > 0 && m2) {
    c.mid_block_type = "UNetMidBlock2DCrossAttn";
    // diffusers gives the mid block the last down block's depth.
    if (!down_attn[n - 1])
      c.transformer_layers_per_block[n - 1] = {mid.depth};
    else if (c.transformer_layers_per_block[n - 1][0] != mid.depth)
      unresolved.push_back("UNet: the mid block's " + std::to_string(mid.depth) +
                           " transformer blocks differ from the last down block's (a diffusers config cannot say so)");
  } else if (m0 && mid.depth == 0 && !m2) {
    c.mid_block_type = "UNetMidBlock2D";
  } else if (!m0 && mid.depth == 0 && !m2) {
    c.mid_block_type = "";
  } else {
    unresolved.push_back("UNet: middle_block.* is neither resnet-attention-resnet, one resnet, nor empty");
  }

  // Up blocks: output_blocks in order, layers_per_block + 1 each, mirroring the down blocks.
  c.up_block_types.assign(n, "");
  std::vector<std::vector<int>> up_depths(n);
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const int r = n - 1 - i, layers = c.layers_per_block[r] + 1;
    for (int j = 0; j < layers; ++j, ++m) {
      const std::string ob = "output_blocks." + std::to_string(m) + ".";
      const int w = resnet_width(u, ob + "0.");
      if (w != c.block_out_channels[r]) {
        unresolved.push_back("UNet: " + ob + "0 is " + (w ? std::to_string(w) + " wide" : std::string("missing")) +
                             ", the mirror of down block " + std::to_string(r) + " (" +
                             std::to_string(c.block_out_channels[r]) + ")");
        return out;
      }
      const Attention a = attention_at(u, ob + "1.");
      note(a);
      up_depths[i].push_back(a.depth);
      if (i + 1 < n && j == layers - 1 && !u.has(ob + (a.depth ? "2" : "1") + ".conv.weight"))
        unresolved.push_back("UNet: up block " + std::to_string(i) + " has no upsampler at " + ob);
    }
    const std::vector<int>& d = up_depths[i];
    const bool any = std::any_of(d.begin(), d.end(), [](int x) { return x > 0; });
    const bool all = std::all_of(d.begin(), d.end(), [](int x) { return x > 0; });
    if (any != all)
      unresolved.push_back("UNet up block " + std::to_string(i) + ": some layers have attention and some do not");
    c.up_block_types[i] = all ? "CrossAttnUpBlock2D" : "UpBlock2D";
  }
  if (resnet_width(u, "output_blocks." + std::to_string(m) + ".0.") > 0)
    unresolved.push_back("UNet: more output_blocks than the input_blocks mirror");

  // Up depths: the mirror of the down blocks' (diffusers' default) unless they differ.
  bool mirrored = true;
  for (int i = 0; i < n; ++i) {
    const auto& down = c.transformer_layers_per_block[n - 1 - i];
    if (down.size() != 1) mirrored = false;
    for (int d : up_depths[i]) mirrored = mirrored && (d == 0 || d == down[0]);
  }
  c.reverse_transformer_layers_per_block.clear();
  if (!mirrored) {
    for (const std::vector<int>& d : up_depths) {
      if (d.empty() || d[0] == 0)
        c.reverse_transformer_layers_per_block.push_back({1});
      else if (std::all_of(d.begin(), d.end(), [&](int x) { return x == d[0]; }))
        c.reverse_transformer_layers_per_block.push_back({d[0]});
      else
        c.reverse_transformer_layers_per_block.push_back(d);
    }
  }

  if (context) c.cross_attention_dim.assign(n, context);
  else c.cross_attention_dim.assign(n, c.cross_attention_dim.empty() ? 768 : c.cross_attention_dim[0]);
  if (linear >= 0) c.use_linear_projection = linear == 1;

  // Heads: the family's convention, needed only where a block has attention.
  c.num_attention_heads.clear();
  c.attention_head_dim.assign(n, 1);
  for (int i = 0; i < n; ++i) {
    const bool used = down_attn[i] || c.up_block_types[n - 1 - i] == "CrossAttnUpBlock2D" ||
                      (i == n - 1 && c.mid_block_type == "UNetMidBlock2DCrossAttn");
    const std::optional<int> h = family.unet_heads.heads(c.block_out_channels[i]);
    if (h) c.attention_head_dim[i] = *h;
    else if (used)
      unresolved.push_back("UNet block " + std::to_string(i) + ": attention heads are not in the shapes, and " +
                           std::to_string(c.block_out_channels[i]) + " channels do not follow " + family.name +
                           "'s convention (" +
                           (family.unet_heads.count ? std::to_string(family.unet_heads.count) + " heads"
                                                    : std::to_string(family.unet_heads.width) + "-wide heads") +
                           ")");
  }
  return out;
}

ClipTextConfig infer_text_encoder(const TensorIndex& index, const TextEncoderSpec& te, const FamilySpec& family,
                                  std::vector<std::string>& unresolved) {
  const Keys k(index, te.single_file_prefix);
  ClipTextConfig c = te.config;
  const std::string where = te.folder + " (" + te.single_file_prefix + "*)";
  int64_t vocab = 0, width = 0, positions = 0, ffn = 0, projection = 0;
  int layers = 0;
  if (te.layout == ClipLayout::kOpenClip) {
    vocab = k.dim("token_embedding.weight", 0), width = k.dim("token_embedding.weight", 1);
    positions = k.dim("positional_embedding", 0);
    layers = k.count("transformer.resblocks.");
    ffn = k.dim("transformer.resblocks.0.mlp.c_fc.weight", 0);
    projection = k.dim("text_projection", 1);  // stored [width, projection]: x @ P
    layers -= te.unused_final_layers;
  } else {
    // Very old SD1 files lack the "text_model." level.
    const std::string base = k.has("text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    vocab = k.dim(base + "embeddings.token_embedding.weight", 0);
    width = k.dim(base + "embeddings.token_embedding.weight", 1);
    positions = k.dim(base + "embeddings.position_embedding.weight", 0);
    layers = k.count(base + "encoder.layers.");
    ffn = k.dim(base + "encoder.layers.0.mlp.fc1.weight", 0);
    projection = k.dim("text_projection.weight", 0);
  }
  if (width == 0 || layers <= 0 || ffn == 0 || positions == 0) {
    unresolved.push_back("no complete text encoder " + where);
    return c;
  }
  c.vocab_size = static_cast<int>(vocab);
  c.hidden_size = static_cast<int>(width);
  c.max_position_embeddings = static_cast<int>(positions);
  c.num_hidden_layers = layers;
  c.intermediate_size = static_cast<int>(ffn);
  if (c.with_projection && projection) c.projection_dim = static_cast<int>(projection);
  if (const std::optional<int> h = family.text_heads.heads(c.hidden_size)) {
    c.num_attention_heads = *h;
  } else {
    unresolved.push_back(where + ": attention heads are not in the shapes, and width " + std::to_string(width) +
                         " does not split into " + std::to_string(family.text_heads.width) + "-wide heads");
  }
  return c;
}

VaeConfig infer_vae(const TensorIndex& index, const FamilySpec& family, std::vector<std::string>& unresolved) {
  const Keys k(index, kVaePrefix);
  VaeConfig c = family.vae;
  const Shape* conv_in = k.shape("encoder.conv_in.weight");
  const int levels = k.count("encoder.down.");
  if (!conv_in || conv_in->size() != 4 || levels == 0) {
    unresolved.push_back("no VAE (first_stage_model.encoder.*)");
    return c;
  }
  c.in_channels = static_cast<int>((*conv_in)[1]);
  c.block_out_channels.clear();
  for (int i = 0; i < levels; ++i)
    c.block_out_channels.push_back(
        static_cast<int>(k.dim("encoder.down." + std::to_string(i) + ".block.0.conv1.weight", 0)));
  c.layers_per_block = k.count("encoder.down.0.block.");
  if (const int64_t lat = k.dim("decoder.conv_in.weight", 1)) c.latent_channels = static_cast<int>(lat);
  if (const int64_t out = k.dim("decoder.conv_out.weight", 0)) c.out_channels = static_cast<int>(out);
  c.use_quant_conv = k.has("quant_conv.weight");
  c.use_post_quant_conv = k.has("post_quant_conv.weight");
  c.mid_block_add_attention = k.has("encoder.mid.attn_1.q.weight");
  return c;
}

}  // namespace

TensorIndex index_tensors(const TensorMap& tensors) {
  TensorIndex out;
  for (const auto& [name, t] : tensors) out[name] = {safetensors_dtype_name(t.dtype()), t.shape()};
  return out;
}

InferredConfigs infer_configs(const TensorIndex& index, const FamilySpec& family) {
  InferredConfigs r;
  ComponentConfigs& c = r.configs;
  UNetShapes unet = infer_unet(index, family, r.unresolved);
  for (const TextEncoderSpec& te : family.text_encoders)
    c.text_encoders.push_back(infer_text_encoder(index, te, family, r.unresolved));
  c.vae = infer_vae(index, family, r.unresolved);

  // SDXL: the add embedding takes the pooled text embedding and one sinusoidal
  // embedding per time id, so its width gives the time-id embedding's.
  UNetConfig& u = unet.config;
  if (unet.add_input > 0) {
    int pooled = 0;
    for (const ClipTextConfig& te : c.text_encoders)
      if (te.with_projection) pooled = te.projection_dim;
    const int ids = family.time_ids;
    if (ids > 0 && pooled > 0 && unet.add_input > pooled && (unet.add_input - pooled) % ids == 0)
      u.addition_time_embed_dim = (unet.add_input - pooled) / ids;
    else
      r.unresolved.push_back("UNet: the add embedding's input width " + std::to_string(unet.add_input) +
                             " is not the pooled text embedding plus " + std::to_string(ids) + " time ids");
  }
  c.unet = u;

  if (!r.unresolved.empty()) return r;
  // Anything the shapes allow that this port cannot build is said here, not at load.
  try {
    c.unet.validate();
    for (const ClipTextConfig& te : c.text_encoders) te.validate();
    c.vae.validate();
  } catch (const Error& e) {
    r.unresolved.push_back(e.what());
    return r;
  }
  if (c.unet.architecture_differences(family.unet).empty()) c.unet = family.unet;
  return r;
}

}  // namespace diffuse
