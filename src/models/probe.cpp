// probe(): family, variant, prediction, precision, format and configs of a
// checkpoint from its headers (probe.h).
#include "models/probe.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/stored_dtype.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

constexpr const char* kUNetPrefix = "model.diffusion_model.";
// The reference implementation refuses headers over 100 MB; a real SDXL header is ~200 KB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

bool has_prefix(const TensorIndex& index, const std::string& prefix) {
  auto it = index.lower_bound(prefix);
  return it != index.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The stored type most of the tensors under `prefix` (all when none) have,
// counting floating types only: "f16", "bf16", "f32", "f8_e4m3", ...
std::string precision_of(const TensorIndex& index, const std::string& prefix) {
  std::map<std::string, size_t> counts;
  auto count = [&](const std::string& p) {
    for (auto it = index.lower_bound(p); it != index.end() && it->first.compare(0, p.size(), p) == 0; ++it) {
      const StoredType* t = find_safetensors_type(it->second.stored);
      if (t && is_floating(t->dtype)) counts[lower(it->second.stored)]++;
    }
  };
  count(prefix);
  if (counts.empty()) count("");
  std::string best = "?";
  size_t most = 0;
  for (const auto& [dt, n] : counts) {
    if (n > most) most = n, best = dt;
  }
  return best;
}

// The variant a UNet's input channels give (a row's own variant wins).
Variant variant_for(const FamilySpec& family, int in_channels, const std::string& where) {
  if (family.variant != Variant::kBase) return family.variant;
  for (const VariantSpec& v : variant_specs())
    if (v.unet_in_channels == in_channels) return v.variant;
  throw_error(ErrorCode::kUnsupported, where + ": a " + family.name + " UNet with " + std::to_string(in_channels) +
                                           " input channels is not a model Diffuse knows (4: text-to-image, "
                                           "9: inpainting, 8: InstructPix2Pix)");
}

// Cross-attention context width of a single file's UNet (attn2.to_k input), 0 if none.
int unet_context_width(const TensorIndex& index) {
  const std::string suffix = ".attn2.to_k.weight";
  const std::string prefix = kUNetPrefix;
  for (auto it = index.lower_bound(prefix); it != index.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it) {
    const std::string& k = it->first;
    if (k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        it->second.shape.size() == 2)
      return static_cast<int>(it->second.shape[1]);
  }
  return 0;
}

// The row whose text encoders a single file holds (the one with most of them
// present), else the one whose published UNet has the file's context width.
const FamilySpec& single_file_family(const TensorIndex& index, const std::string& where) {
  const FamilySpec* best = nullptr;
  for (const FamilySpec& f : family_specs()) {
    const bool all = std::all_of(f.text_encoders.begin(), f.text_encoders.end(), [&](const TextEncoderSpec& te) {
      return has_prefix(index, te.single_file_prefix);
    });
    if (all && (!best || f.text_encoders.size() > best->text_encoders.size())) best = &f;
  }
  if (best) return *best;
  const int context = unet_context_width(index);
  for (const FamilySpec& f : family_specs())
    if (context > 0 && f.unet.cross_attention_dim.at(0) == context) return f;
  std::string expected;
  for (const FamilySpec& f : family_specs()) {
    expected += (expected.empty() ? "" : ", ") + f.name + ": ";
    for (size_t i = 0; i < f.text_encoders.size(); ++i)
      expected += (i ? " + " : "") + f.text_encoders[i].single_file_prefix + "*";
    expected += " or a UNet context of " + std::to_string(f.unet.cross_attention_dim.at(0));
  }
  throw_error(ErrorCode::kInvalidArgument, where + " is not a checkpoint of a known family (" + expected + "; " +
                                               std::to_string(index.size()) + " tensors)");
}

nlohmann::json read_json(const fs::path& p) { return read_python_json_file(p.string()); }

// A component a diffusers folder lists: model_index.json names it with a
// non-null [library, class] pair; without model_index entry, its folder exists.
bool lists_component(const fs::path& dir, const nlohmann::json& index, const std::string& name) {
  if (index.is_object() && index.contains(name)) {
    const nlohmann::json& v = index.at(name);
    return v.is_array() && !v.empty() && !v[0].is_null();
  }
  std::error_code ec;
  return fs::is_directory(dir / name, ec);
}

const FamilySpec& folder_family(const fs::path& dir, const nlohmann::json& index) {
  std::vector<const FamilySpec*> candidates;
  for (const FamilySpec& f : family_specs()) {
    std::set<std::string> wanted;
    for (const TextEncoderSpec& te : f.text_encoders) wanted.insert(te.folder);
    bool same = true;
    for (const char* name : {"text_encoder", "text_encoder_2"})
      same = same && lists_component(dir, index, name) == (wanted.count(name) > 0);
    if (same) candidates.push_back(&f);
  }
  if (candidates.empty())
    throw_error(ErrorCode::kInvalidArgument,
                dir.string() + ": its text encoders (model_index.json) match no known family");
  if (candidates.size() == 1) return *candidates[0];
  // Rows with the same encoder folders differ in the encoders themselves (SD1's
  // OpenAI CLIP uses quick_gelu, SD2's OpenCLIP gelu).
  std::map<std::string, nlohmann::json> configs;
  for (const FamilySpec* f : candidates) {
    bool match = true;
    for (const TextEncoderSpec& te : f->text_encoders) {
      if (!configs.count(te.folder)) configs[te.folder] = read_json(dir / te.folder / "config.json");
      match = match && configs[te.folder].value("hidden_act", std::string("quick_gelu")) == te.config.hidden_act;
    }
    if (match) return *f;
  }
  throw_error(ErrorCode::kInvalidArgument,
              dir.string() + ": its text encoder's activation (text_encoder/config.json hidden_act) matches no known family");
}

std::string label_of(const FamilySpec& f, Variant v) {
  if (v == Variant::kBase || v == f.variant) return f.name;
  return f.name + " " + variant_spec(v).label;
}

CheckpointInfo probe_folder(const fs::path& dir) {
  if (!fs::exists(dir / "model_index.json"))
    throw_error(ErrorCode::kIo, dir.string() + " is a folder without model_index.json: not a diffusers pipeline");
  const nlohmann::json index = read_json(dir / "model_index.json");
  CheckpointInfo info;
  info.path = dir.string();
  info.format = CheckpointFormat::kDiffusersFolder;
  info.family = &folder_family(dir, index);
  info.configs = read_folder_configs(dir.string(), *info.family);
  info.unet_in_channels = info.configs.unet.in_channels;
  info.variant = variant_for(*info.family, info.unet_in_channels, dir.string());
  const fs::path sched = dir / "scheduler" / "scheduler_config.json";
  if (fs::exists(sched)) {
    info.prediction = read_json(sched).value("prediction_type", std::string("epsilon")) == "v_prediction"
                          ? Prediction::kVPrediction
                          : Prediction::kEpsilon;
  }
  const std::string weights = find_component_weights((dir / "unet").string());
  if (weights.size() > 12 && weights.compare(weights.size() - 12, 12, ".safetensors") == 0) {
    info.precision = precision_of(read_safetensors_index(weights), "");
  } else if (weights.size() > 11 && weights.compare(weights.size() - 11, 11, ".index.json") == 0) {
    // A sharded UNet: the first shard stands for all.
    const nlohmann::json map = read_json(weights).value("weight_map", nlohmann::json::object());
    DIFFUSE_CHECK(map.is_object() && !map.empty() && map.begin()->is_string(), ErrorCode::kIo,
                  weights + ": no weight_map of tensor -> shard file");
    info.precision = precision_of(read_safetensors_index((fs::path(weights).parent_path() / map.begin()->get<std::string>()).string()), "");
  } else {
    info.precision = precision_of(index_tensors(load_checkpoint(weights).tensors), "");
  }
  return info;
}

}  // namespace

const char* format_name(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kDiffusersFolder: return "diffusers";
    case CheckpointFormat::kSafetensors: return "safetensors";
    case CheckpointFormat::kCkpt: return "ckpt";
  }
  return "?";
}

const FamilySpec& probe_folder_family(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d / "model_index.json"))
    throw_error(ErrorCode::kIo, dir + " is a folder without model_index.json: not a diffusers pipeline");
  return folder_family(d, read_json(d / "model_index.json"));
}

std::string CheckpointInfo::label() const { return family ? label_of(*family, variant) : "?"; }

TensorIndex read_safetensors_index(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kIo, "cannot open " + path);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  unsigned char len_bytes[8] = {};
  if (ec || !f.read(reinterpret_cast<char*>(len_bytes), 8))
    throw_error(ErrorCode::kIo, path + ": too short for the 8-byte header length of a safetensors file");
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | len_bytes[i];
  if (len > kMaxHeaderBytes || len > size - 8)
    throw_error(ErrorCode::kIo, path + ": header length " + std::to_string(len) + " at byte 0 exceeds the file (" +
                                    std::to_string(size) + " bytes) or the 100 MB limit");
  std::string text(len, '\0');
  if (!f.read(text.data(), static_cast<std::streamsize>(len))) throw_error(ErrorCode::kIo, path + ": truncated header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_error(ErrorCode::kIo, path + ": header (bytes 8.." + std::to_string(8 + len) + ") is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw_error(ErrorCode::kIo, path + ": header is JSON but not an object");
  TensorIndex out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const nlohmann::json& e = *it;
    auto fail = [&](const std::string& what) { throw_error(ErrorCode::kIo, path + ": tensor '" + it.key() + "' " + what); };
    if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string()) fail("has no \"dtype\" string");
    if (!find_safetensors_type(e["dtype"].get<std::string>())) fail("has unknown dtype " + e["dtype"].dump());
    if (!e.contains("shape") || !e["shape"].is_array()) fail("has no \"shape\" array");
    TensorInfo t;
    t.stored = e["dtype"].get<std::string>();
    for (const nlohmann::json& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail("shape " + e["shape"].dump() + " must hold non-negative integers");
      t.shape.push_back(d.get<int64_t>());
    }
    out.emplace(it.key(), std::move(t));
  }
  return out;
}

ComponentConfigs read_folder_configs(const std::string& dir_str, const FamilySpec& family) {
  const fs::path dir(dir_str);
  ComponentConfigs c;
  c.unet = UNetConfig::from_json(read_json(dir / "unet" / "config.json"));
  c.vae = VaeConfig::from_json(read_json(dir / "vae" / "config.json"));
  for (const TextEncoderSpec& te : family.text_encoders)
    c.text_encoders.push_back(ClipTextConfig::from_json(read_json(dir / te.folder / "config.json"), te.config.with_projection));
  return c;
}

std::string find_component_weights(const std::string& component_dir) {
  static const char* kNames[] = {
      "diffusion_pytorch_model.safetensors",        "model.safetensors",
      "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
      "diffusion_pytorch_model.fp16.safetensors",   "model.fp16.safetensors",
      "diffusion_pytorch_model.fp16.safetensors.index.json", "model.fp16.safetensors.index.json",
      "diffusion_pytorch_model.bin",                "pytorch_model.bin",
      "diffusion_pytorch_model.fp16.bin",           "pytorch_model.fp16.bin"};
  const fs::path dir(component_dir);
  for (const char* name : kNames) {
    if (fs::exists(dir / name)) return (dir / name).string();
  }
  throw_error(ErrorCode::kIo, "no weights file (diffusion_pytorch_model.safetensors, model.safetensors, "
                              "*.bin, or an fp16 variant) in " + component_dir);
}

CheckpointInfo probe_single_file(const TensorIndex& index, CheckpointFormat format, const std::string& path) {
  const std::string where = path.empty() ? "checkpoint" : path;
  CheckpointInfo info;
  info.path = path;
  info.format = format;
  info.family = &single_file_family(index, where);
  auto conv_in = index.find(std::string(kUNetPrefix) + "input_blocks.0.0.weight");
  info.unet_in_channels =
      conv_in != index.end() && conv_in->second.shape.size() == 4 ? static_cast<int>(conv_in->second.shape[1]) : 4;
  info.variant = variant_for(*info.family, info.unet_in_channels, where);
  if (index.count("v_pred") || has_prefix(index, "edm_vpred.")) {
    info.prediction = Prediction::kVPrediction;
  } else if (!info.family->single_file_prediction_unknown) {
    info.prediction = Prediction::kEpsilon;
  }
  info.precision = precision_of(index, kUNetPrefix);
  InferredConfigs inferred = infer_configs(index, *info.family);
  info.configs = std::move(inferred.configs);
  info.unresolved = std::move(inferred.unresolved);
  info.configs_inferred = true;
  return info;
}

CheckpointInfo probe(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw_error(ErrorCode::kNotFound, "model not found: " + path);
  if (fs::is_directory(path, ec)) return probe_folder(path);
  if (single_file_format(path) == CheckpointFormat::kCkpt)
    return probe_single_file(index_tensors(load_checkpoint(path).tensors), CheckpointFormat::kCkpt, path);
  return probe_single_file(read_safetensors_index(path), CheckpointFormat::kSafetensors, path);
}

CheckpointFormat single_file_format(const std::string& path) {
  // A safetensors file begins with its header's length, a torch archive with a
  // zip signature, a pre-1.6 torch file with a pickle protocol opcode (0x80).
  std::ifstream f(path, std::ios::binary);
  char magic[2] = {};
  f.read(magic, 2);
  const bool torch = (magic[0] == 'P' && magic[1] == 'K') || static_cast<unsigned char>(magic[0]) == 0x80;
  return torch ? CheckpointFormat::kCkpt : CheckpointFormat::kSafetensors;
}

}  // namespace diffuse
