// UNetConfig: parsing diffusers' unet/config.json, validation and the
// published full-size configs. Defaults follow UNet2DConditionModel.__init__.
#include <nlohmann/json.hpp>

#include "models/unet.h"

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

// Fields whose non-default value changes the network in ways we do not port.
void reject_unsupported(const nlohmann::json& j) {
  auto unsupported = [](const std::string& key, const nlohmann::json& v) {
    throw_error(ErrorCode::kUnsupported, "unet config: " + key + "=" + v.dump() + " is not supported");
  };
  for (const char* key : {"class_embed_type", "num_class_embeds", "time_cond_proj_dim", "encoder_hid_dim",
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
    DIFFUSE_CHECK(has(j, "mid_block_type") || !j.contains("mid_block_type"), ErrorCode::kUnsupported,
                  "unet config: mid_block_type=null is not supported");
    if (has(j, "mid_block_type")) c.mid_block_type = j.at("mid_block_type").get<std::string>();
    if (has(j, "block_out_channels")) c.block_out_channels = j.at("block_out_channels").get<std::vector<int>>();
    const int n = static_cast<int>(c.block_out_channels.size());
    c.layers_per_block = per_block(j, "layers_per_block", n, std::vector<int>(n, 2));
    c.attention_head_dim = per_block(j, "attention_head_dim", n, std::vector<int>(n, 8));
    c.num_attention_heads = per_block(j, "num_attention_heads", n, {});
    c.cross_attention_dim = per_block(j, "cross_attention_dim", n, std::vector<int>(n, 1280));
    c.transformer_layers_per_block = per_block(j, "transformer_layers_per_block", n, std::vector<int>(n, 1));
    c.reverse_transformer_layers_per_block = per_block(j, "reverse_transformer_layers_per_block", n, {});
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
  sized(transformer_layers_per_block, "transformer_layers_per_block", false);
  sized(reverse_transformer_layers_per_block, "reverse_transformer_layers_per_block", true);
  for (const auto& t : down_block_types)
    sup(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", "down block type '" + t + "' is not supported");
  for (const auto& t : up_block_types)
    sup(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", "up block type '" + t + "' is not supported");
  sup(mid_block_type == "UNetMidBlock2DCrossAttn", "mid block type '" + mid_block_type + "' is not supported");
  sup(addition_embed_type.empty() || addition_embed_type == "text_time",
      "addition_embed_type '" + addition_embed_type + "' is not supported");
  if (has_text_time())
    arg(addition_time_embed_dim > 0 && projection_class_embeddings_input_dim > 0,
        "text_time needs addition_time_embed_dim and projection_class_embeddings_input_dim");
  sup(downsample_padding == 1, "downsample_padding=" + std::to_string(downsample_padding) + " is not supported");
  arg(conv_in_kernel % 2 == 1 && conv_out_kernel % 2 == 1, "conv kernels must be odd");
  for (int i = 0; i < n; ++i) {
    const int c = block_out_channels[i];
    arg(c > 0 && c % norm_num_groups == 0,
        "block_out_channels[" + std::to_string(i) + "]=" + std::to_string(c) + " is not a multiple of norm_num_groups=" +
            std::to_string(norm_num_groups));
    arg(heads(i) > 0 && c % heads(i) == 0, "block " + std::to_string(i) + ": " + std::to_string(c) +
                                               " channels do not split into " + std::to_string(heads(i)) + " heads");
  }
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
  c.transformer_layers_per_block = {1, 2, 10};
  c.use_linear_projection = true;
  c.addition_embed_type = "text_time";
  c.addition_time_embed_dim = 256;
  c.projection_class_embeddings_input_dim = 2816;
  return c;
}

}  // namespace diffuse
