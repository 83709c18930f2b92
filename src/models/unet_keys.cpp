// LDM -> diffusers UNet key table (see unet_keys.h). The table is built from the
// same Layout as the UNet itself, so a config with other block counts or depths
// gets its own table; nothing here is a string rewrite guessed from key shapes.
#include "models/unet_keys.h"

#include <sstream>

#include "models/unet_layout.h"

namespace diffuse {
namespace {

struct ModuleRename {
  std::string ldm;        // "input_blocks.4.0."
  std::string diffusers;  // "down_blocks.1.resnets.0."
  bool resnet = false;    // rename the resnet's inner layers too
};

// ResBlock (ldm/modules/diffusionmodules/openaimodel.py) -> ResnetBlock2D.
const std::pair<const char*, const char*> kResnetParts[] = {
    {"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
    {"norm2.", "out_layers.0."},  {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."},
};

std::vector<ModuleRename> module_table(const UNetConfig& config) {
  const unet_detail::Layout l = unet_detail::layout_of(config);
  std::vector<ModuleRename> t = {
      {"time_embed.0.", "time_embedding.linear_1."}, {"time_embed.2.", "time_embedding.linear_2."},
      {"time_embed.cond_proj.", "time_embedding.cond_proj."},
      {"label_emb.0.0.", "add_embedding.linear_1."}, {"label_emb.0.2.", "add_embedding.linear_2."},
      {"input_blocks.0.0.", "conv_in."},             {"out.0.", "conv_norm_out."},
      {"out.2.", "conv_out."},
  };
  // input_blocks: one entry per resnet (+ its attention as sub-module 1), then one per downsampler.
  int n = 1;
  for (const auto& b : l.down) {
    for (size_t j = 0; j < b.resnets.size(); ++j, ++n) {
      const std::string ib = "input_blocks." + std::to_string(n) + ".";
      t.push_back({ib + "0.", b.prefix + "resnets." + std::to_string(j) + ".", true});
      if (static_cast<int>(j) < b.attentions) t.push_back({ib + "1.", b.prefix + "attentions." + std::to_string(j) + "."});
    }
    if (b.downsample) t.push_back({"input_blocks." + std::to_string(n++) + ".0.op.", b.prefix + "downsamplers.0.conv."});
  }
  // middle_block: resnet, then (attention, resnet) pairs; nothing without a mid block.
  for (size_t j = 0; j < l.mid.resnets.size(); ++j) {
    if (j > 0) t.push_back({"middle_block." + std::to_string(2 * j - 1) + ".", "mid_block.attentions." + std::to_string(j - 1) + "."});
    t.push_back({"middle_block." + std::to_string(2 * j) + ".", "mid_block.resnets." + std::to_string(j) + ".", true});
  }
  // output_blocks: resnet, [attention], and the upsampler rides in the last entry of the block.
  n = 0;
  for (const auto& b : l.up) {
    for (size_t j = 0; j < b.resnets.size(); ++j, ++n) {
      const std::string ob = "output_blocks." + std::to_string(n) + ".";
      const bool attn = static_cast<int>(j) < b.attentions;
      t.push_back({ob + "0.", b.prefix + "resnets." + std::to_string(j) + ".", true});
      if (attn) t.push_back({ob + "1.", b.prefix + "attentions." + std::to_string(j) + "."});
      if (b.upsample && j + 1 == b.resnets.size())
        t.push_back({ob + (attn ? "2" : "1") + ".conv.", b.prefix + "upsamplers.0.conv."});
    }
  }
  return t;
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// diffusers name -> LDM name for every tensor the config expects.
std::map<std::string, std::string> diffusers_to_ldm(const UNetConfig& config) {
  const auto table = module_table(config);
  std::map<std::string, std::string> out;
  for (const auto& [name, shape] : UNet::expected_tensors(config)) {
    const ModuleRename* m = nullptr;
    for (const auto& e : table)
      if (starts_with(name, e.diffusers)) m = &e;
    DIFFUSE_CHECK(m != nullptr, ErrorCode::kRuntime, "unet keys: no LDM module for '" + name + "'");
    std::string rest = name.substr(m->diffusers.size());
    if (m->resnet) {
      for (const auto& [from, to] : kResnetParts)
        if (starts_with(rest, from)) {
          rest = to + rest.substr(std::string(from).size());
          break;
        }
    }
    out[name] = m->ldm + rest;
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> unet_ldm_to_diffusers(const std::vector<std::string>& ldm_keys,
                                                         const UNetConfig& config) {
  std::map<std::string, std::string> inverse;
  for (const auto& [diffusers, ldm] : diffusers_to_ldm(config)) inverse[ldm] = diffusers;
  // LCM: diffusers' convert_diffusers_to_original_stable_diffusion.py has no rule for
  // cond_proj and leaves its diffusers name under model.diffusion_model.
  if (config.has_guidance_embedding()) inverse[kLdmCondProjAlias] = "time_embedding.cond_proj.weight";
  std::map<std::string, std::string> out;
  std::vector<std::string> unknown;
  for (const auto& k : ldm_keys) {
    auto it = inverse.find(k);
    if (it == inverse.end())
      unknown.push_back(k);
    else
      out[k] = it->second;
  }
  if (!unknown.empty()) {
    std::ostringstream ss;
    ss << "unet: " << unknown.size() << " single-file key(s) do not belong to this UNet config:";
    for (size_t i = 0; i < unknown.size() && i < 8; ++i) ss << "\n  model.diffusion_model." << unknown[i];
    if (unknown.size() > 8) ss << "\n  ... and " << unknown.size() - 8 << " more";
    throw_error(ErrorCode::kIo, ss.str());
  }
  return out;
}

std::vector<std::pair<std::string, Shape>> unet_ldm_tensors(const UNetConfig& config) {
  const std::map<std::string, std::string> names = diffusers_to_ldm(config);
  std::vector<std::pair<std::string, Shape>> out;
  for (const auto& [name, shape] : UNet::expected_tensors(config)) out.emplace_back(names.at(name), shape);
  return out;
}

TensorMap unet_weights_from_ldm(const TensorMap& ldm_stripped, const UNetConfig& config) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : ldm_stripped) keys.push_back(k);
  const auto names = unet_ldm_to_diffusers(keys, config);
  std::map<std::string, Shape> shapes;
  for (const auto& [name, shape] : UNet::expected_tensors(config)) shapes[name] = shape;
  TensorMap out;
  for (const auto& [ldm, diffusers] : names) {
    Tensor t = ldm_stripped.at(ldm);
    const Shape& want = shapes.at(diffusers);
    // Transformer proj_in/proj_out: SD1-style checkpoints store 1x1 convs, SD2/SDXL
    // (use_linear_in_transformer) linears. Same numbers, other rank.
    const bool proj = diffusers.find(".proj_in.weight") != std::string::npos ||
                      diffusers.find(".proj_out.weight") != std::string::npos;
    if (proj && t.shape() != want && t.numel() == shape_numel(want)) t = t.reshape(want);
    out[diffusers] = t;
  }
  return out;
}

}  // namespace diffuse
