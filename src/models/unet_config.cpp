// UNetConfig: parsing diffusers' unet/config.json, validation and the
// published full-size configs. Defaults follow UNet2DConditionModel.__init__.
#include <nlohmann/json.hpp>

#include "models/unet.h"
#include "models/unet_layout.h"

namespace diffuse {
namespace {

bool has(const nlohmann::json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

// An int, or a list with one entry per down block: diffusers accepts both.
std::vector<int> per_block(const nlohmann::json& j, const char* key, int n, const std::vector<int>& fallback) {
  if (!has(j, key)) return fallback;
  const auto& v = j.at(key);
  if (v.is_number_integer()) return std::vector<int>(n, v.get<int>());
  DIFFUSE_CHECK(v.is_array(), ErrorCode::kInvalidArgument,
                std::string("unet config: '") + key + "' must be an int or a list, got " + v.dump());
  std::vector<int> out;
  for (const auto& e : v) {
    DIFFUSE_CHECK(e.is_number_integer(), ErrorCode::kInvalidArgument,
                  std::string("unet config: '") + key + "' must hold ints, got " + v.dump());
    out.push_back(e.get<int>());
  }
  DIFFUSE_CHECK(static_cast<int>(out.size()) == n, ErrorCode::kInvalidArgument,
                std::string("unet config: '") + key + "' has " + std::to_string(out.size()) + " entries for " +
                    std::to_string(n) + " blocks");
  return out;
}

// Transformer depths per block: an int for all blocks, or a list with one entry
// per block, each an int (all the block's layers) or a list (one per layer).
std::vector<std::vector<int>> depths_per_block(const nlohmann::json& j, const char* key, int n,
                                               const std::vector<std::vector<int>>& fallback) {
  if (!has(j, key)) return fallback;
  const auto& v = j.at(key);
  auto fail = [&]() {
    throw_error(ErrorCode::kInvalidArgument, std::string("unet config: '") + key +
                                                 "' must be an int or a list of ints / lists of ints, got " + v.dump());
  };
  if (v.is_number_integer()) return std::vector<std::vector<int>>(n, {v.get<int>()});
  if (!v.is_array()) fail();
  std::vector<std::vector<int>> out;
  for (const auto& e : v) {
    if (e.is_number_integer()) {
      out.push_back({e.get<int>()});
    } else if (e.is_array() && !e.empty()) {
      out.emplace_back();
      for (const auto& d : e) {
        if (!d.is_number_integer()) fail();
        out.back().push_back(d.get<int>());
      }
    } else {
      fail();
    }
  }
  DIFFUSE_CHECK(static_cast<int>(out.size()) == n, ErrorCode::kInvalidArgument,
                std::string("unet config: '") + key + "' has " + std::to_string(out.size()) + " entries for " +
                    std::to_string(n) + " blocks");
  return out;
}

// Fields whose non-default value changes the network in ways we do not port.
void reject_unsupported(const nlohmann::json& j) {
  auto unsupported = [](const std::string& key, const nlohmann::json& v) {
    throw_error(ErrorCode::kUnsupported, "unet config: " + key + "=" + v.dump() + " is not supported");
  };
  for (const char* key : {"class_embed_type", "num_class_embeds", "encoder_hid_dim",
                          "encoder_hid_dim_type", "time_embedding_act_fn", "timestep_post_act",
                          "cross_attention_norm"}) {
    if (has(j, key)) unsupported(key, j.at(key));
  }
  auto expect = [&](const char* key, const nlohmann::json& ok) {
    if (has(j, key) && j.at(key) != ok) unsupported(key, j.at(key));
  };
  expect("act_fn", "silu");
  expect("resnet_time_scale_shift", "default");
  expect("time_embedding_type", "positional");
  expect("attention_type", "default");
  expect("center_input_sample", false);
  expect("dual_cross_attention", false);
  expect("resnet_skip_time_act", false);
  expect("class_embeddings_concat", false);
  if (has(j, "only_cross_attention")) {
    const auto& v = j.at("only_cross_attention");
    bool any = v.is_boolean() ? v.get<bool>() : false;
    if (v.is_array())
      for (const auto& e : v) any = any || e.get<bool>();
    if (any) unsupported("only_cross_attention", v);
  }
  for (const char* key : {"resnet_out_scale_factor", "mid_block_scale_factor"}) {
    if (has(j, key) && j.at(key).get<double>() != 1.0) unsupported(key, j.at(key));
  }
}

std::vector<std::string> strings(const nlohmann::json& j, const char* key, const std::vector<std::string>& fallback) {
  if (!has(j, key)) return fallback;
  return j.at(key).get<std::vector<std::string>>();
}

}  // namespace

UNetConfig UNetConfig::from_json(const nlohmann::json& j) {
  try {
    reject_unsupported(j);
    UNetConfig c;
    if (has(j, "in_channels")) c.in_channels = j.at("in_channels").get<int>();
    if (has(j, "out_channels")) c.out_channels = j.at("out_channels").get<int>();
    if (has(j, "sample_size")) c.sample_size = j.at("sample_size").get<int>();
    c.down_block_types = strings(j, "down_block_types", c.down_block_types);
    c.up_block_types = strings(j, "up_block_types", c.up_block_types);
    // A null mid_block_type is a UNet without a mid block (diffusers get_mid_block -> None).
    if (j.contains("mid_block_type"))
      c.mid_block_type = j.at("mid_block_type").is_null() ? "" : j.at("mid_block_type").get<std::string>();
    if (has(j, "block_out_channels")) c.block_out_channels = j.at("block_out_channels").get<std::vector<int>>();
    const int n = static_cast<int>(c.block_out_channels.size());
    c.layers_per_block = per_block(j, "layers_per_block", n, std::vector<int>(n, 2));
    c.attention_head_dim = per_block(j, "attention_head_dim", n, std::vector<int>(n, 8));
    c.num_attention_heads = per_block(j, "num_attention_heads", n, {});
    c.cross_attention_dim = per_block(j, "cross_attention_dim", n, std::vector<int>(n, 1280));
    c.transformer_layers_per_block =
        depths_per_block(j, "transformer_layers_per_block", n, std::vector<std::vector<int>>(n, {1}));
    c.reverse_transformer_layers_per_block = depths_per_block(j, "reverse_transformer_layers_per_block", n, {});
    if (has(j, "use_linear_projection")) c.use_linear_projection = j.at("use_linear_projection").get<bool>();
    if (has(j, "upcast_attention")) c.upcast_attention = j.at("upcast_attention").get<bool>();
    DIFFUSE_CHECK(!j.contains("norm_num_groups") || has(j, "norm_num_groups"), ErrorCode::kUnsupported,
                  "unet config: norm_num_groups=null is not supported");
    if (has(j, "norm_num_groups")) c.norm_num_groups = j.at("norm_num_groups").get<int>();
    if (has(j, "norm_eps")) c.norm_eps = j.at("norm_eps").get<float>();
    if (has(j, "flip_sin_to_cos")) c.flip_sin_to_cos = j.at("flip_sin_to_cos").get<bool>();
    if (has(j, "freq_shift")) c.freq_shift = j.at("freq_shift").get<float>();
    if (has(j, "downsample_padding")) c.downsample_padding = j.at("downsample_padding").get<int>();
    if (has(j, "addition_embed_type")) c.addition_embed_type = j.at("addition_embed_type").get<std::string>();
    if (has(j, "addition_time_embed_dim")) c.addition_time_embed_dim = j.at("addition_time_embed_dim").get<int>();
    if (has(j, "projection_class_embeddings_input_dim"))
      c.projection_class_embeddings_input_dim = j.at("projection_class_embeddings_input_dim").get<int>();
    if (has(j, "time_embedding_dim")) c.time_embedding_dim = j.at("time_embedding_dim").get<int>();
    if (has(j, "time_cond_proj_dim")) c.time_cond_proj_dim = j.at("time_cond_proj_dim").get<int>();
    if (has(j, "conv_in_kernel")) c.conv_in_kernel = j.at("conv_in_kernel").get<int>();
    if (has(j, "conv_out_kernel")) c.conv_out_kernel = j.at("conv_out_kernel").get<int>();
    c.validate();
    return c;
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kInvalidArgument, std::string("unet config: ") + e.what());
  }
}

void UNetConfig::validate() const {
  const int n = num_blocks();
  auto arg = [](bool ok, const std::string& msg) { DIFFUSE_CHECK(ok, ErrorCode::kInvalidArgument, "unet config: " + msg); };
  auto sup = [](bool ok, const std::string& msg) { DIFFUSE_CHECK(ok, ErrorCode::kUnsupported, "unet config: " + msg); };
  arg(n > 0, "block_out_channels is empty");
  arg(static_cast<int>(down_block_types.size()) == n && static_cast<int>(up_block_types.size()) == n,
      "down_block_types, up_block_types and block_out_channels must have the same length");
  auto sized = [&](const std::vector<int>& v, const char* name, bool optional) {
    arg((optional && v.empty()) || static_cast<int>(v.size()) == n,
        std::string(name) + " needs one entry per block (" + std::to_string(n) + ")");
  };
  sized(layers_per_block, "layers_per_block", false);
  sized(attention_head_dim, "attention_head_dim", false);
  sized(num_attention_heads, "num_attention_heads", true);
  sized(cross_attention_dim, "cross_attention_dim", false);
  // Depth lists: one per block, each with one entry or one per layer.
  auto depths = [&](const std::vector<std::vector<int>>& v, const char* name, bool optional, int extra_layers) {
    if (optional && v.empty()) return;
    arg(static_cast<int>(v.size()) == n, std::string(name) + " needs one entry per block (" + std::to_string(n) + ")");
    for (int i = 0; i < n; ++i) {
      const int r = extra_layers ? n - 1 - i : i;  // up blocks mirror the down blocks' layer counts
      const int layers = layers_per_block[r] + extra_layers;
      arg(v[i].size() == 1 || static_cast<int>(v[i].size()) == layers,
          std::string(name) + "[" + std::to_string(i) + "] has " + std::to_string(v[i].size()) +
              " entries for a block of " + std::to_string(layers) + " layers");
      for (int d : v[i]) arg(d >= 1, std::string(name) + " entries must be >= 1");
    }
  };
  depths(transformer_layers_per_block, "transformer_layers_per_block", false, 0);
  depths(reverse_transformer_layers_per_block, "reverse_transformer_layers_per_block", true, 1);
  if (reverse_transformer_layers_per_block.empty()) {
    for (const auto& d : transformer_layers_per_block)
      arg(d.size() == 1, "per-layer transformer_layers_per_block needs reverse_transformer_layers_per_block "
                         "(diffusers: an asymmetric UNet names its up blocks' depths)");
  }
  for (const auto& t : down_block_types)
    sup(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", "down block type '" + t + "' is not supported");
  for (const auto& t : up_block_types)
    sup(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", "up block type '" + t + "' is not supported");
  sup(mid_block_type == "UNetMidBlock2DCrossAttn" || mid_block_type == "UNetMidBlock2D" || mid_block_type.empty(),
      "mid block type '" + mid_block_type + "' is not supported");
  sup(addition_embed_type.empty() || addition_embed_type == "text_time",
      "addition_embed_type '" + addition_embed_type + "' is not supported");
  if (has_text_time())
    arg(addition_time_embed_dim > 0 && projection_class_embeddings_input_dim > 0,
        "text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim");
  sup(downsample_padding == 1, "downsample_padding=" + std::to_string(downsample_padding) + " is not supported");
  arg(conv_in_kernel % 2 == 1 && conv_out_kernel % 2 == 1, "conv kernels must be odd");
  arg(time_cond_proj_dim == 0 || time_cond_proj_dim >= 4,
      "time_cond_proj_dim=" + std::to_string(time_cond_proj_dim) + " must be null or >= 4");
  for (int i = 0; i < n; ++i) {
    const int c = block_out_channels[i];
    arg(c > 0 && c % norm_num_groups == 0,
        "block_out_channels[" + std::to_string(i) + "]=" + std::to_string(c) + " is not a multiple of norm_num_groups=" +
            std::to_string(norm_num_groups));
    arg(heads(i) > 0 && c % heads(i) == 0, "block " + std::to_string(i) + ": " + std::to_string(c) +
                                               " channels do not split into " + std::to_string(heads(i)) + " heads");
  }
}

int UNetConfig::down_transformer_layers(int block, int layer) const {
  const std::vector<int>& d = transformer_layers_per_block.at(block);
  return d.size() == 1 ? d[0] : d.at(layer);
}

int UNetConfig::up_transformer_layers(int block, int layer) const {
  // diffusers: reverse_transformer_layers_per_block, else reversed(transformer_layers_per_block).
  if (reverse_transformer_layers_per_block.empty()) return transformer_layers_per_block.at(num_blocks() - 1 - block).at(0);
  const std::vector<int>& d = reverse_transformer_layers_per_block.at(block);
  return d.size() == 1 ? d[0] : d.at(layer);
}

std::vector<std::string> UNetConfig::architecture_differences(const UNetConfig& o) const {
  std::vector<std::string> out;
  auto cmp = [&](bool same, const char* field) {
    if (!same) out.push_back(field);
  };
  cmp(in_channels == o.in_channels, "in_channels");
  cmp(out_channels == o.out_channels, "out_channels");
  cmp(block_out_channels == o.block_out_channels, "block_out_channels");
  cmp(layers_per_block == o.layers_per_block, "layers_per_block");
  cmp(down_block_types == o.down_block_types, "down_block_types");
  cmp(up_block_types == o.up_block_types, "up_block_types");
  cmp(mid_block_type == o.mid_block_type, "mid_block_type");
  cmp(cross_attention_dim == o.cross_attention_dim, "cross_attention_dim");
  cmp(use_linear_projection == o.use_linear_projection, "use_linear_projection");
  cmp(norm_num_groups == o.norm_num_groups, "norm_num_groups");
  cmp(norm_eps == o.norm_eps, "norm_eps");
  cmp(flip_sin_to_cos == o.flip_sin_to_cos && freq_shift == o.freq_shift, "flip_sin_to_cos / freq_shift");
  cmp(addition_embed_type == o.addition_embed_type, "addition_embed_type");
  cmp(!has_text_time() || (addition_time_embed_dim == o.addition_time_embed_dim &&
                           projection_class_embeddings_input_dim == o.projection_class_embeddings_input_dim),
      "addition_time_embed_dim / projection_class_embeddings_input_dim");
  cmp(time_embed_dim() == o.time_embed_dim(), "time_embedding_dim");
  cmp(time_cond_proj_dim == o.time_cond_proj_dim, "time_cond_proj_dim");
  cmp(conv_in_kernel == o.conv_in_kernel && conv_out_kernel == o.conv_out_kernel, "conv_in_kernel / conv_out_kernel");
  if (!out.empty()) return out;  // the layouts below need the same block structure
  // Heads and depths only where a block has attention (the layout holds exactly those).
  const unet_detail::Layout a = unet_detail::layout_of(*this), b = unet_detail::layout_of(o);
  auto blocks = [](const unet_detail::Layout& l) {
    std::vector<const unet_detail::BlockLayout*> v;
    for (const auto& x : l.down) v.push_back(&x);
    v.push_back(&l.mid);
    for (const auto& x : l.up) v.push_back(&x);
    return v;
  };
  const auto ba = blocks(a), bb = blocks(b);
  bool heads_same = true, depth_same = true;
  for (size_t i = 0; i < ba.size(); ++i) {
    if (ba[i]->attentions == 0) continue;
    heads_same = heads_same && ba[i]->heads == bb[i]->heads;
    depth_same = depth_same && ba[i]->transformer_layers == bb[i]->transformer_layers;
  }
  cmp(heads_same, "attention heads (attention_head_dim / num_attention_heads)");
  cmp(depth_same, "transformer_layers_per_block / reverse_transformer_layers_per_block");
  return out;
}

int UNetConfig::heads(int down_block) const {
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
  return num_attention_heads.empty() ? attention_head_dim.at(down_block) : num_attention_heads.at(down_block);
}

UNetConfig UNetConfig::sd15() {
  UNetConfig c;  // the struct defaults are SD1's layout
  c.sample_size = 64;
  c.attention_head_dim = {8, 8, 8, 8};
  c.cross_attention_dim = {768, 768, 768, 768};
  return c;
}

UNetConfig UNetConfig::sd21() {
  UNetConfig c;
  c.sample_size = 96;
  c.attention_head_dim = {5, 10, 20, 20};
  c.cross_attention_dim = {1024, 1024, 1024, 1024};
  c.use_linear_projection = true;
  c.upcast_attention = true;
  return c;
}

UNetConfig UNetConfig::sdxl_base() {
  UNetConfig c;
  c.sample_size = 128;
  c.block_out_channels = {320, 640, 1280};
  c.layers_per_block = {2, 2, 2};
  c.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  c.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  c.attention_head_dim = {5, 10, 20};
  c.cross_attention_dim = {2048, 2048, 2048};
  c.transformer_layers_per_block = {{1}, {2}, {10}};
  c.use_linear_projection = true;
  c.addition_embed_type = "text_time";
  c.addition_time_embed_dim = 256;
  c.projection_class_embeddings_input_dim = 2816;
  return c;
}

UNetConfig UNetConfig::sdxl_refiner() {
  UNetConfig c;
  c.sample_size = 128;
  c.block_out_channels = {384, 768, 1536, 1536};
  c.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  c.attention_head_dim = {6, 12, 24, 24};
  c.cross_attention_dim = {1280, 1280, 1280, 1280};
  c.transformer_layers_per_block = {{4}, {4}, {4}, {4}};
  c.use_linear_projection = true;
  c.addition_embed_type = "text_time";
  c.addition_time_embed_dim = 256;
  c.projection_class_embeddings_input_dim = 2560;  // pooled 1280 + 5 time ids (sizes, crop, aesthetic score) * 256
  return c;
}

}  // namespace diffuse
