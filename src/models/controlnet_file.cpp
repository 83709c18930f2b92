// Reading ControlNet files and folders, and telling what they are
// (controlnet.h: read_controlnet_file, probe_controlnet).
//
// A1111 / lllyasviel layout -> diffusers names (cldm/cldm.py ControlNet):
//   input_hint_block.0                 controlnet_cond_embedding.conv_in
//   input_hint_block.{2 + 2k}          controlnet_cond_embedding.blocks.k
//   input_hint_block.{4N - 2}          controlnet_cond_embedding.conv_out   (N widths; 14 for the published 4)
//   zero_convs.k.0                     controlnet_down_blocks.k
//   middle_block_out.0                 controlnet_mid_block
//   time_embed / label_emb / input_blocks / middle_block: the LDM UNet's names (unet_keys.h)
// (the odd input_hint_block indices are the SiLUs between the convs).
#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/json_util.h"
#include "models/controlnet.h"
#include "models/probe.h"
#include "models/unet_keys.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// The control type a published file name carries: control_v11p_sd15_canny,
// diffusers/controlnet-depth-sdxl-1.0, t2i... First match wins.
std::string control_type_from_name(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
  static const char* kTypes[] = {"canny",  "depth",   "openpose", "pose",    "lineart_anime", "lineart", "softedge",
                                 "scribble", "sketch", "mlsd",    "normal",  "seg",     "inpaint", "tile",
                                 "shuffle", "ip2p",   "hed",      "qrcode",  "recolor", "blur"};
  for (const char* t : kTypes)
    if (name.find(t) != std::string::npos) return t == std::string("pose") ? "openpose" : t;
  return "";
}

std::string first_keys(const std::vector<std::string>& keys, size_t n) {
  std::string out;
  for (size_t i = 0; i < keys.size() && i < n; ++i) out += (out.empty() ? "'" : ", '") + keys[i] + "'";
  if (keys.size() > n) out += ", ...";
  return out.empty() ? "none" : out;
}

// Union models (xinsir controlnet-union: ControlNetUnionModel) and control-LoRAs have keys of their own.
bool union_key(const std::string& k) {
  return k.find("task_embedding") != std::string::npos || k.find("control_add_embedding") != std::string::npos ||
         k.find("transformer_layes") != std::string::npos || k.find("spatial_ch_projs") != std::string::npos;
}

std::string strip_control_prefix(const std::string& k) {
  static const std::string kPrefix = "control_model.";
  return starts_with(k, kPrefix) ? k.substr(kPrefix.size()) : k;
}

// How many widths the hint block has, from its largest conv index (4N - 2).
int hint_entries(const std::vector<std::pair<std::string, Shape>>& tensors) {
  int max_index = -1;
  for (const auto& [k0, s] : tensors) {
    const std::string k = strip_control_prefix(k0);
    if (!starts_with(k, "input_hint_block.")) continue;
    max_index = std::max(max_index, std::atoi(k.c_str() + std::string("input_hint_block.").size()));
  }
  return max_index < 2 ? 0 : (max_index + 2) / 4;
}

int cross_width(const std::vector<std::pair<std::string, Shape>>& tensors) {
  for (const auto& [k, s] : tensors)
    if (ends_with(k, "attn2.to_k.weight") && s.size() == 2) return static_cast<int>(s[1]);
  return 0;
}

UNetConfig published_unet(const std::string& family, const std::string& what) {
  if (family == "sd1") return UNetConfig::sd15();
  if (family == "sd2") return UNetConfig::sd21();
  if (family == "sdxl") return UNetConfig::sdxl_base();
  throw_error(ErrorCode::kInvalidArgument,
              what + ": a cross-attention width that names no family (768 SD1, 1024 SD2, 2048 SDXL); "
                     "put a config.json beside the file");
}

// Hint-block widths and input channels from the diffusers-named tensors.
void cond_embedding_from_shapes(const TensorMap& w, ControlNetConfig& c) {
  const std::string e = "controlnet_cond_embedding.";
  auto it = w.find(e + "conv_in.weight");
  if (it == w.end() || it->second.ndim() != 4) return;
  c.conditioning_channels = static_cast<int>(it->second.dim(1));
  std::vector<int> ch = {static_cast<int>(it->second.dim(0))};
  for (int k = 1;; k += 2) {
    auto b = w.find(e + "blocks." + std::to_string(k) + ".weight");
    if (b == w.end()) break;
    ch.push_back(static_cast<int>(b->second.dim(0)));
  }
  c.conditioning_embedding_out_channels = ch;
}

}  // namespace

std::string controlnet_family_of_width(int cross_attention_dim) {
  switch (cross_attention_dim) {
    case 768: return "sd1";
    case 1024: return "sd2";
    case 2048: return "sdxl";
    default: return "";
  }
}

std::string controlnet_a1111_to_diffusers(const std::string& key, int cond_entries) {
  auto tail_after = [&](const std::string& prefix) { return key.substr(prefix.size()); };
  if (starts_with(key, "input_hint_block.")) {
    const std::string rest = tail_after("input_hint_block.");
    const size_t dot = rest.find('.');
    if (dot == std::string::npos) return "";
    const int idx = std::atoi(rest.substr(0, dot).c_str());
    const std::string param = rest.substr(dot + 1);
    const std::string e = "controlnet_cond_embedding.";
    if (idx == 0) return e + "conv_in." + param;
    if (idx == 4 * cond_entries - 2) return e + "conv_out." + param;
    if (idx % 2 == 0 && idx > 0 && idx < 4 * cond_entries - 2) return e + "blocks." + std::to_string(idx / 2 - 1) + "." + param;
    return "";
  }
  if (starts_with(key, "zero_convs.")) {
    const std::string rest = tail_after("zero_convs.");
    const size_t dot = rest.find('.');
    if (dot == std::string::npos || rest.compare(dot, 3, ".0.") != 0) return "";
    return "controlnet_down_blocks." + rest.substr(0, dot) + "." + rest.substr(dot + 3);
  }
  if (starts_with(key, "middle_block_out.0.")) return "controlnet_mid_block." + tail_after("middle_block_out.0.");
  return "";
}

ControlNetProbe probe_controlnet_keys(const std::vector<std::pair<std::string, Shape>>& tensors) {
  ControlNetProbe p;
  bool a1111 = false, diffusers = false;
  for (const auto& [k0, s] : tensors) {
    const std::string k = strip_control_prefix(k0);
    a1111 |= starts_with(k, "input_hint_block.") || starts_with(k, "zero_convs.");
    diffusers |= starts_with(k, "controlnet_cond_embedding.") || starts_with(k, "controlnet_down_blocks.");
    p.is_union |= union_key(k);
    p.control_lora |= k0.find("lora_controlnet") != std::string::npos;
  }
  if (!a1111 && !diffusers && !p.control_lora) return p;
  p.layout = a1111 ? "a1111" : "diffusers";
  p.cross_attention_dim = cross_width(tensors);
  p.family = controlnet_family_of_width(p.cross_attention_dim);
  return p;
}

ControlNetProbe probe_controlnet(const std::string& path) {
  const fs::path fp(path);
  if (!fs::exists(fp)) throw_error(ErrorCode::kNotFound, "ControlNet not found: " + path);
  ControlNetProbe p;
  std::vector<std::pair<std::string, Shape>> tensors;
  if (fs::is_directory(fp)) {
    DIFFUSE_CHECK(fs::exists(fp / "config.json"), ErrorCode::kIo,
                  path + ": a ControlNet folder needs config.json and diffusion_pytorch_model.safetensors");
    const nlohmann::json j = read_python_json_file((fp / "config.json").string());
    const std::string cls = j.value("_class_name", std::string("ControlNetModel"));
    p.layout = "diffusers";
    p.is_union = cls == "ControlNetUnionModel";
    if (cls != "ControlNetModel" && !p.is_union)
      throw_error(ErrorCode::kInvalidArgument, path + ": config.json describes a " + cls + ", not a ControlNetModel");
    const nlohmann::json cad = j.value("cross_attention_dim", nlohmann::json(1280));
    p.cross_attention_dim = cad.is_array() ? cad.at(0).get<int>() : cad.get<int>();
    p.family = controlnet_family_of_width(p.cross_attention_dim);
  } else {
    if (single_file_format(path) == CheckpointFormat::kSafetensors) {
      for (const auto& [k, info] : read_safetensors_index(path)) tensors.push_back({k, info.shape});
    } else {
      for (const auto& [k, t] : load_checkpoint(path).tensors) tensors.push_back({k, t.shape()});
    }
    p = probe_controlnet_keys(tensors);
    DIFFUSE_CHECK(!p.layout.empty(), ErrorCode::kInvalidArgument,
                  path + ": not a ControlNet (no input_hint_block / zero_convs or controlnet_cond_embedding keys)");
  }
  p.control_type = control_type_from_name(fp.filename().string());
  return p;
}

ControlNetFile read_controlnet_file(const std::string& path_in) {
  const fs::path path(path_in);
  if (!fs::exists(path)) throw_error(ErrorCode::kNotFound, "ControlNet not found: " + path_in);
  ControlNetFile f;
  f.path = fs::absolute(path).lexically_normal().string();
  f.name = fs::is_directory(path) ? fs::path(f.path).filename().string() : path.stem().string();
  f.control_type = control_type_from_name(f.name);
  if (fs::is_directory(path)) {
    DIFFUSE_CHECK(fs::exists(path / "config.json"), ErrorCode::kIo,
                  path_in + ": a ControlNet folder needs config.json and diffusion_pytorch_model.safetensors "
                            "(diffusers ControlNetModel)");
    f.config = ControlNetConfig::from_json(read_python_json_file((path / "config.json").string()));
    f.config_from_file = true;
    f.weights_path = find_component_weights(path.string());
    f.layout = "diffusers";
    f.weights = load_checkpoint(f.weights_path).tensors;
    f.family = controlnet_family_of_width(f.config.unet.cross_attention_dim[0]);
    return f;
  }
  f.weights_path = f.path;
  TensorMap all = load_checkpoint(f.path).tensors;
  std::vector<std::pair<std::string, Shape>> index;
  std::vector<std::string> keys;
  for (const auto& [k, t] : all) index.push_back({k, t.shape()}), keys.push_back(k);
  const ControlNetProbe p = probe_controlnet_keys(index);
  DIFFUSE_CHECK(!p.is_union, ErrorCode::kUnsupported,
                path_in + ": a union ControlNet (controlnet-union: task / control-type embedding) is not supported");
  DIFFUSE_CHECK(!p.control_lora, ErrorCode::kUnsupported, path_in + ": a control-LoRA is not supported");
  DIFFUSE_CHECK(!p.layout.empty(), ErrorCode::kIo,
                path_in + ": no ControlNet tensors (input_hint_block / zero_convs or controlnet_cond_embedding); "
                          "its keys: " + first_keys(keys, 4));
  f.layout = p.layout;
  f.family = p.family;
  const fs::path beside = path.parent_path() / "config.json";
  if (p.layout == "diffusers") {
    f.weights = std::move(all);
    if (fs::exists(beside)) {
      f.config = ControlNetConfig::from_json(read_python_json_file(beside.string()));
      f.config_from_file = true;
    } else {
      f.config = ControlNetConfig::from_unet(published_unet(p.family, path_in));
      cond_embedding_from_shapes(f.weights, f.config);
    }
    f.family = controlnet_family_of_width(f.config.unet.cross_attention_dim[0]);
    return f;
  }
  // A1111: the ControlNet's own parts by the table above, the encoder by the LDM UNet table.
  const int entries = hint_entries(index);
  DIFFUSE_CHECK(entries >= 1, ErrorCode::kIo, path_in + ": input_hint_block has no conv_out");
  if (fs::exists(beside)) {
    f.config = ControlNetConfig::from_json(read_python_json_file(beside.string()));
    f.config_from_file = true;
  } else {
    f.config = ControlNetConfig::from_unet(published_unet(p.family, path_in));
  }
  TensorMap own, encoder;
  for (auto& [k0, t] : all) {
    if (starts_with(k0, "model.diffusion_model.") || starts_with(k0, "first_stage_model.") ||
        starts_with(k0, "cond_stage_model.") || starts_with(k0, "conditioner."))
      continue;  // a whole-model merge (ControlNet 1.0's control_sd15_*.pth): only the control part
    const std::string k = strip_control_prefix(k0);
    const std::string d = controlnet_a1111_to_diffusers(k, entries);
    if (!d.empty()) {
      own[d] = t;
    } else if (starts_with(k, "input_hint_block.") || starts_with(k, "zero_convs.") ||
               starts_with(k, "middle_block_out.")) {
      throw_error(ErrorCode::kIo, path_in + ": unexpected ControlNet key '" + k0 + "'");
    } else {
      encoder[k] = t;
    }
  }
  f.weights = unet_weights_from_ldm(encoder, f.config.unet);
  for (auto& [k, t] : own) f.weights[k] = t;
  if (!f.config_from_file) cond_embedding_from_shapes(f.weights, f.config);
  f.family = controlnet_family_of_width(f.config.unet.cross_attention_dim[0]);
  f.config.validate();
  return f;
}

}  // namespace diffuse
