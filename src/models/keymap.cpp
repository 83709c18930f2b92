// Single-file key tables and the split into diffusers components.
#include "models/keymap.h"

#include <algorithm>
#include <map>
#include <set>

#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"

#if __has_include("models/unet_keys.h")
#include "models/unet_keys.h"
#define DIFFUSE_HAVE_UNET_KEYS 1
#endif

namespace diffuse {

namespace {

using K = KeyTransform;

// transformers CLIPTextModel names behind "cond_stage_model.transformer." /
// "conditioner.embedders.0.transformer.". Very old SD1 files lack the
// "text_model." level; the last three rows accept them.
constexpr KeyRule kClipHfRules[] = {
    {"text_model.**", "text_model.{0}"},
    {"embeddings.**", "text_model.embeddings.{0}"},
    {"encoder.**", "text_model.encoder.{0}"},
    {"final_layer_norm.**", "text_model.final_layer_norm.{0}"},
};

// OpenCLIP TextTransformer (open_clip/transformer.py) -> transformers CLIPTextModel.
constexpr KeyRule kOpenClipRules[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"transformer.resblocks.#.ln_1.*", "text_model.encoder.layers.{0}.layer_norm1.{1}"},
    {"transformer.resblocks.#.ln_2.*", "text_model.encoder.layers.{0}.layer_norm2.{1}"},
    {"transformer.resblocks.#.attn.in_proj_weight", "text_model.encoder.layers.{0}.self_attn.{qkv}_proj.weight",
     K::kSplitQkv},
    {"transformer.resblocks.#.attn.in_proj_bias", "text_model.encoder.layers.{0}.self_attn.{qkv}_proj.bias",
     K::kSplitQkv},
    {"transformer.resblocks.#.attn.out_proj.*", "text_model.encoder.layers.{0}.self_attn.out_proj.{1}"},
    {"transformer.resblocks.#.mlp.c_fc.*", "text_model.encoder.layers.{0}.mlp.fc1.{1}"},
    {"transformer.resblocks.#.mlp.c_proj.*", "text_model.encoder.layers.{0}.mlp.fc2.{1}"},
    {"ln_final.*", "text_model.final_layer_norm.{0}"},
    {"text_projection", "text_projection.weight", K::kTranspose},
};

// LDM ldm/modules/diffusionmodules/model.py Encoder/Decoder -> diffusers AutoencoderKL.
constexpr KeyRule kVaeRules[] = {
    {"encoder.conv_in.*", "encoder.conv_in.{0}"},
    {"encoder.down.#.block.#.norm1|conv1|norm2|conv2.*", "encoder.down_blocks.{0}.resnets.{1}.{2}.{3}"},
    {"encoder.down.#.block.#.nin_shortcut.*", "encoder.down_blocks.{0}.resnets.{1}.conv_shortcut.{2}"},
    {"encoder.down.#.downsample.conv.*", "encoder.down_blocks.{0}.downsamplers.0.conv.{1}"},
    {"encoder.mid.block_1.*.*", "encoder.mid_block.resnets.0.{0}.{1}"},
    {"encoder.mid.block_2.*.*", "encoder.mid_block.resnets.1.{0}.{1}"},
    {"encoder.mid.attn_1.norm.*", "encoder.mid_block.attentions.0.group_norm.{0}"},
    {"encoder.mid.attn_1.q.*", "encoder.mid_block.attentions.0.to_q.{0}", K::kConvToLinear},
    {"encoder.mid.attn_1.k.*", "encoder.mid_block.attentions.0.to_k.{0}", K::kConvToLinear},
    {"encoder.mid.attn_1.v.*", "encoder.mid_block.attentions.0.to_v.{0}", K::kConvToLinear},
    {"encoder.mid.attn_1.proj_out.*", "encoder.mid_block.attentions.0.to_out.0.{0}", K::kConvToLinear},
    {"encoder.norm_out.*", "encoder.conv_norm_out.{0}"},
    {"encoder.conv_out.*", "encoder.conv_out.{0}"},
    {"quant_conv.*", "quant_conv.{0}"},
    {"post_quant_conv.*", "post_quant_conv.{0}"},
    {"decoder.conv_in.*", "decoder.conv_in.{0}"},
    {"decoder.mid.block_1.*.*", "decoder.mid_block.resnets.0.{0}.{1}"},
    {"decoder.mid.block_2.*.*", "decoder.mid_block.resnets.1.{0}.{1}"},
    {"decoder.mid.attn_1.norm.*", "decoder.mid_block.attentions.0.group_norm.{0}"},
    {"decoder.mid.attn_1.q.*", "decoder.mid_block.attentions.0.to_q.{0}", K::kConvToLinear},
    {"decoder.mid.attn_1.k.*", "decoder.mid_block.attentions.0.to_k.{0}", K::kConvToLinear},
    {"decoder.mid.attn_1.v.*", "decoder.mid_block.attentions.0.to_v.{0}", K::kConvToLinear},
    {"decoder.mid.attn_1.proj_out.*", "decoder.mid_block.attentions.0.to_out.0.{0}", K::kConvToLinear},
    {"decoder.up.#.block.#.norm1|conv1|norm2|conv2.*", "decoder.up_blocks.{r0}.resnets.{1}.{2}.{3}"},
    {"decoder.up.#.block.#.nin_shortcut.*", "decoder.up_blocks.{r0}.resnets.{1}.conv_shortcut.{2}"},
    {"decoder.up.#.upsample.conv.*", "decoder.up_blocks.{r0}.upsamplers.0.conv.{1}"},
    {"decoder.norm_out.*", "decoder.conv_norm_out.{0}"},
    {"decoder.conv_out.*", "decoder.conv_out.{0}"},
};

// Where each component sits in a family's single file.
struct ComponentSource {
  const char* prefix;
  Component component;
  std::span<const KeyRule> rules;  // empty for the UNet (unet_keys.h)
};
constexpr const char* kUNetPrefix = "model.diffusion_model.";

// Text-encoder names the configured model uses (others, e.g. SD2's 24th layer, are ignored).
std::map<std::string, Shape> expected_names(const ClipTextConfig& c) {
  std::map<std::string, Shape> m;
  for (auto& [name, shape] : ClipTextModel::expected_tensors(c)) m.emplace(name, shape);
  return m;
}

// The diffusers component a text encoder of a family row loads into.
Component text_component(const TextEncoderSpec& te) {
  return te.folder == "text_encoder_2" ? Component::kTextEncoder2 : Component::kTextEncoder;
}

std::vector<ComponentSource> component_sources(const FamilySpec& family) {
  std::vector<ComponentSource> s = {{kUNetPrefix, Component::kUNet, {}},
                                    {"first_stage_model.", Component::kVae, kVaeRules}};
  for (const TextEncoderSpec& te : family.text_encoders) {
    s.push_back({te.single_file_prefix.c_str(), text_component(te),
                 te.layout == ClipLayout::kOpenClip ? std::span<const KeyRule>(kOpenClipRules)
                                                    : std::span<const KeyRule>(kClipHfRules)});
  }
  return s;
}

// Names and shapes each text-encoder component expects (others, e.g. SD2's 24th layer, are ignored).
std::map<Component, std::map<std::string, Shape>> wanted_text_names(const FamilySpec& family,
                                                                    const std::vector<ClipTextConfig>& configs) {
  DIFFUSE_CHECK_ARG(configs.size() == family.text_encoders.size(),
                    "[keymap] " + family.name + " has " + std::to_string(family.text_encoders.size()) +
                        " text encoders, got " + std::to_string(configs.size()) + " configs");
  std::map<Component, std::map<std::string, Shape>> wanted;
  for (size_t i = 0; i < configs.size(); ++i) wanted[text_component(family.text_encoders[i])] = expected_names(configs[i]);
  return wanted;
}

std::vector<ClipTextConfig> base_text_configs(const ClipTextConfig& te1, const std::optional<ClipTextConfig>& te2) {
  std::vector<ClipTextConfig> v = {te1};
  if (te2) v.push_back(*te2);
  return v;
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    out.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s)
    if (ch < '0' || ch > '9') return false;
  return true;
}

bool one_of(const std::string& alternatives, const std::string& seg) {
  size_t start = 0;
  while (true) {
    size_t bar = alternatives.find('|', start);
    if (alternatives.compare(start, bar == std::string::npos ? std::string::npos : bar - start, seg) == 0 &&
        (bar == std::string::npos ? alternatives.size() - start : bar - start) == seg.size())
      return true;
    if (bar == std::string::npos) return false;
    start = bar + 1;
  }
}

// Matches `key` against `pattern`; fills the captures on success.
bool match_pattern(const std::vector<std::string>& pat, const std::vector<std::string>& key,
                   std::vector<std::string>& caps) {
  caps.clear();
  for (size_t i = 0; i < pat.size(); ++i) {
    const std::string& p = pat[i];
    if (p == "**") {
      if (i + 1 != pat.size() || i >= key.size()) return false;
      std::string rest = key[i];
      for (size_t j = i + 1; j < key.size(); ++j) rest += "." + key[j];
      caps.push_back(rest);
      return true;
    }
    if (i >= key.size()) return false;
    const std::string& k = key[i];
    if (p == "#") {
      if (!all_digits(k)) return false;
      caps.push_back(k);
    } else if (p == "*") {
      caps.push_back(k);
    } else if (p.find('|') != std::string::npos) {
      if (!one_of(p, k)) return false;
      caps.push_back(k);
    } else if (p != k) {
      return false;
    }
  }
  return pat.size() == key.size();
}

std::string expand_target(const std::string& tmpl, const std::vector<std::string>& caps, int levels, int part,
                          const std::string& key) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] != '{') {
      out += tmpl[i];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    const std::string field = tmpl.substr(i + 1, close - i - 1);
    i = close;
    if (field == "qkv") {
      out += "qkv"[part];
    } else if (field[0] == 'r') {
      const int index = std::stoi(caps.at(std::stoi(field.substr(1))));
      DIFFUSE_CHECK_ARG(index < levels, "[keymap] block index " + std::to_string(index) + " of '" + key +
                                            "' exceeds the " + std::to_string(levels) + " levels found");
      out += std::to_string(levels - 1 - index);
    } else {
      out += caps.at(std::stoi(field));
    }
  }
  return out;
}

// Number of VAE decoder levels: 1 + the largest N of "decoder.up.N." among the keys.
int vae_levels(const std::vector<std::string>& vae_keys) {
  int levels = 0;
  for (const std::string& k : vae_keys) {
    if (k.rfind("decoder.up.", 0) != 0) continue;
    const std::vector<std::string> seg = split_dots(k);
    if (seg.size() > 2 && all_digits(seg[2])) levels = std::max(levels, std::stoi(seg[2]) + 1);
  }
  return levels;
}

// One routed key: its component and the renamed targets (empty: ignored).
struct Routed {
  const ComponentSource* source = nullptr;
  std::string stripped;  // key without the component prefix
  std::vector<RenamedKey> targets;
};

// Shared by plan_single_file and split_single_file: everything except the UNet.
std::vector<Routed> route_keys(const std::vector<std::string>& keys, const std::vector<ComponentSource>& sources) {
  std::vector<std::string> vae_keys;
  for (const std::string& k : keys)
    if (k.rfind("first_stage_model.", 0) == 0) vae_keys.push_back(k.substr(18));
  const int levels = vae_levels(vae_keys);
  std::vector<Routed> out;
  out.reserve(keys.size());
  for (const std::string& k : keys) {
    Routed r;
    for (const ComponentSource& s : sources) {
      if (k.rfind(s.prefix, 0) == 0) {
        r.source = &s;
        r.stripped = k.substr(std::string(s.prefix).size());
        break;
      }
    }
    if (r.source && r.source->component != Component::kUNet)
      r.targets = apply_key_rules(r.source->rules, r.stripped, levels);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

TensorMap vae_weights_from_ldm(const TensorMap& ldm, std::vector<std::string>* ignored) {
  std::vector<std::string> keys;
  for (const auto& [k, t] : ldm) keys.push_back(k);
  const int levels = vae_levels(keys);
  TensorMap out;
  for (const auto& [key, tensor] : ldm) {
    const std::vector<RenamedKey> r = apply_key_rules(kVaeRules, key, levels);
    if (r.empty()) {
      if (ignored) ignored->push_back(key);
      continue;
    }
    out.emplace(r[0].name, transform_tensor(tensor, r[0].transform, r[0].part));
  }
  return out;
}

std::span<const KeyRule> clip_hf_rules() { return kClipHfRules; }
std::span<const KeyRule> clip_openclip_rules() { return kOpenClipRules; }
std::span<const KeyRule> vae_ldm_rules() { return kVaeRules; }

const char* component_name(Component c) {
  switch (c) {
    case Component::kUNet: return "unet";
    case Component::kVae: return "vae";
    case Component::kTextEncoder: return "text_encoder";
    case Component::kTextEncoder2: return "text_encoder_2";
  }
  return "?";
}

std::vector<RenamedKey> apply_key_rules(std::span<const KeyRule> rules, const std::string& key, int levels) {
  const std::vector<std::string> segs = split_dots(key);
  std::vector<std::string> caps;
  const KeyRule* hit = nullptr;
  std::vector<std::string> hit_caps;
  for (const KeyRule& rule : rules) {
    if (!match_pattern(split_dots(rule.source), segs, caps)) continue;
    DIFFUSE_CHECK(hit == nullptr, ErrorCode::kRuntime,
                  "[keymap] key '" + key + "' matches two rows: '" + hit->source + "' and '" + rule.source + "'");
    hit = &rule;
    hit_caps = caps;
  }
  std::vector<RenamedKey> out;
  if (!hit) return out;
  const int parts = hit->transform == KeyTransform::kSplitQkv ? 3 : 1;
  for (int p = 0; p < parts; ++p) out.push_back({expand_target(hit->target, hit_caps, levels, p, key), hit->transform, p});
  return out;
}

Shape transform_shape(const Shape& s, KeyTransform transform, int part) {
  switch (transform) {
    case KeyTransform::kCopy: return s;
    case KeyTransform::kConvToLinear:
      if (s.size() == 4) {
        DIFFUSE_CHECK_ARG(s[2] == 1 && s[3] == 1, "[keymap] expected a 1x1 conv kernel, got " + shape_str(s));
        return {s[0], s[1]};
      }
      return s;
    case KeyTransform::kTranspose:
      DIFFUSE_CHECK_ARG(s.size() == 2, "[keymap] transpose expects a matrix, got " + shape_str(s));
      return {s[1], s[0]};
    case KeyTransform::kSplitQkv: {
      DIFFUSE_CHECK_ARG(!s.empty() && s[0] % 3 == 0, "[keymap] fused qkv dim 0 must divide by 3, got " + shape_str(s));
      Shape out = s;
      out[0] = s[0] / 3;
      return out;
    }
  }
  return s;
}

Tensor transform_tensor(const Tensor& t, KeyTransform transform, int part) {
  const Shape shape = transform_shape(t.shape(), transform, part);
  switch (transform) {
    case KeyTransform::kCopy: return t;
    case KeyTransform::kConvToLinear: return t.reshape(shape);
    case KeyTransform::kTranspose: return t.transpose(0, 1).contiguous();
    case KeyTransform::kSplitQkv: return t.slice(0, part * shape[0], (part + 1) * shape[0]).contiguous();
  }
  return t;
}

SingleFilePlan plan_single_file(const std::vector<std::pair<std::string, Shape>>& keys, Family family,
                                const UNetConfig& unet_config, const ClipTextConfig& te1,
                                const std::optional<ClipTextConfig>& te2) {
  return plan_single_file(keys, family_spec(family), unet_config, base_text_configs(te1, te2));
}

SingleFilePlan plan_single_file(const std::vector<std::pair<std::string, Shape>>& keys, const FamilySpec& family,
                                const UNetConfig& unet_config, const std::vector<ClipTextConfig>& text_encoders) {
  const std::vector<ComponentSource> sources = component_sources(family);
  std::vector<std::string> names;
  for (const auto& [k, s] : keys) names.push_back(k);
  const std::vector<Routed> routed = route_keys(names, sources);
  std::map<Component, std::map<std::string, Shape>> wanted = wanted_text_names(family, text_encoders);

  SingleFilePlan plan;
  std::vector<std::string> unet_keys;
  std::map<std::string, Shape> unet_shapes;
  for (size_t i = 0; i < keys.size(); ++i) {
    const Routed& r = routed[i];
    if (r.source && r.source->component == Component::kUNet) {
      unet_keys.push_back(r.stripped);
      unet_shapes[r.stripped] = keys[i].second;
      continue;
    }
    bool used = false;
    for (const RenamedKey& t : r.targets) {
      const Component c = r.source->component;
      if (wanted.count(c) && !wanted[c].count(t.name)) continue;  // e.g. SD2's 24th layer
      plan.targets.push_back({c, t.name, transform_shape(keys[i].second, t.transform, t.part)});
      used = true;
    }
    if (!used) plan.ignored.push_back(keys[i].first);
  }
#ifdef DIFFUSE_HAVE_UNET_KEYS
  const std::map<std::string, std::string> unet_names = unet_ldm_to_diffusers(unet_keys, unet_config);
  for (const std::string& k : unet_keys) {
    auto it = unet_names.find(k);
    if (it == unet_names.end()) {
      plan.ignored.push_back(kUNetPrefix + k);
    } else {
      plan.targets.push_back({Component::kUNet, it->second, unet_shapes[k]});
    }
  }
#else
  throw_error(ErrorCode::kUnsupported, "[plan_single_file] built without unet_keys.h");
#endif
  return plan;
}

SingleFileParts split_single_file(const TensorMap& all, Family family, const UNetConfig& unet_config,
                                  const ClipTextConfig& te1, const std::optional<ClipTextConfig>& te2) {
  return split_single_file(all, family_spec(family), unet_config, base_text_configs(te1, te2));
}

SingleFileParts split_single_file(const TensorMap& all, const FamilySpec& family, const UNetConfig& unet_config,
                                  const std::vector<ClipTextConfig>& text_encoders) {
  const std::vector<ComponentSource> sources = component_sources(family);
  std::vector<std::string> names;
  for (const auto& [k, t] : all) names.push_back(k);
  const std::vector<Routed> routed = route_keys(names, sources);
  std::map<Component, std::map<std::string, Shape>> wanted = wanted_text_names(family, text_encoders);

  SingleFileParts parts;
  TensorMap unet_ldm;
  auto slot = [&](Component c) -> TensorMap& {
    switch (c) {
      case Component::kVae: return parts.vae;
      case Component::kTextEncoder: return parts.text_encoder;
      case Component::kTextEncoder2: return parts.text_encoder_2;
      case Component::kUNet: break;
    }
    return parts.unet;
  };
  size_t i = 0;
  for (const auto& [key, tensor] : all) {
    const Routed& r = routed[i++];
    if (r.source && r.source->component == Component::kUNet) {
      unet_ldm.emplace(r.stripped, tensor);
      continue;
    }
    bool used = false;
    for (const RenamedKey& t : r.targets) {
      const Component c = r.source->component;
      if (wanted.count(c) && !wanted[c].count(t.name)) continue;
      slot(c).emplace(t.name, transform_tensor(tensor, t.transform, t.part));
      used = true;
    }
    if (!used) parts.ignored.push_back(key);
  }
#ifdef DIFFUSE_HAVE_UNET_KEYS
  {
    std::vector<std::string> unet_keys;
    for (const auto& [k, t] : unet_ldm) unet_keys.push_back(k);
    const std::map<std::string, std::string> unet_names = unet_ldm_to_diffusers(unet_keys, unet_config);
    for (const std::string& k : unet_keys)
      if (!unet_names.count(k)) parts.ignored.push_back(kUNetPrefix + k);
    parts.unet = unet_weights_from_ldm(unet_ldm, unet_config);
  }
#else
  throw_error(ErrorCode::kUnsupported, "[split_single_file] built without unet_keys.h");
#endif

  // Text encoders must be complete here: a wrong family or a truncated file
  // is reported with the single-file view of the problem.
  for (size_t i = 0; i < text_encoders.size(); ++i) {
    const TextEncoderSpec& te = family.text_encoders[i];
    check_weights(slot(text_component(te)), ClipTextModel::expected_tensors(text_encoders[i]),
                  te.folder + " (single file, " + te.single_file_prefix + "*)");
  }
  return parts;
}

}  // namespace diffuse
