// Reading a VAE on its own (vae_file.h).
#include "models/vae_file.h"

#include <filesystem>

#include "io/json_util.h"
#include "models/keymap.h"
#include "models/probe.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

constexpr const char* kLdmPrefix = "first_stage_model.";

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// LDM names: "encoder.down.N...", "decoder.up.N...", "encoder.mid.block_1..." (no
// diffusers key has a "down"/"up"/"mid" segment there).
bool is_ldm_key(const std::string& k) {
  return starts_with(k, "encoder.down.") || starts_with(k, "decoder.up.") || starts_with(k, "encoder.mid.") ||
         starts_with(k, "decoder.mid.") || starts_with(k, "encoder.norm_out.") || starts_with(k, "decoder.norm_out.");
}

std::string first_keys(const TensorMap& m, size_t n) {
  std::string out;
  size_t i = 0;
  for (const auto& [k, t] : m) {
    if (i++ == n) return out + ", ...";
    out += (out.empty() ? "'" : ", '") + k + "'";
  }
  return out.empty() ? "none" : out;
}

// A folder's name; for a Hugging Face cache snapshot
// (.../models--org--name/snapshots/<commit>[/vae]) the repo id "org/name".
std::string folder_name(const fs::path& folder) {
  fs::path p = folder;
  if (p.filename() == "vae" && p.parent_path().parent_path().filename() == "snapshots") p = p.parent_path();
  const std::string repo = p.parent_path().parent_path().filename().string();
  if (p.parent_path().filename() == "snapshots" && repo.rfind("models--", 0) == 0) {
    std::string id = repo.substr(8);
    const size_t sep = id.find("--");
    if (sep != std::string::npos) return id.substr(0, sep) + "/" + id.substr(sep + 2);
  }
  return folder.filename().string();
}

}  // namespace

VaeFile read_vae_file(const std::string& path_in) {
  const fs::path path(path_in);
  if (!fs::exists(path)) throw_error(ErrorCode::kNotFound, "VAE not found: " + path_in);
  VaeFile f;
  f.path = fs::absolute(path).lexically_normal().string();
  if (fs::is_directory(path)) {
    fs::path dir = path;
    // A diffusers pipeline folder: its VAE.
    if (!fs::exists(dir / "config.json") && fs::exists(dir / "vae" / "config.json")) dir /= "vae";
    DIFFUSE_CHECK(fs::exists(dir / "config.json"), ErrorCode::kIo,
                  path_in + ": a VAE folder needs config.json and diffusion_pytorch_model.safetensors (diffusers "
                            "AutoencoderKL)");
    const nlohmann::json j = read_python_json_file((dir / "config.json").string());
    const std::string cls = j.value("_class_name", std::string("AutoencoderKL"));
    DIFFUSE_CHECK(cls == "AutoencoderKL", ErrorCode::kUnsupported,
                  path_in + ": config.json describes a " + cls + ", not an AutoencoderKL");
    f.config = VaeConfig::from_json(j);
    f.weights_path = find_component_weights(dir.string());
    f.name = folder_name(fs::path(f.path));
    f.layout = "diffusers";
    f.weights = load_checkpoint(f.weights_path).tensors;
    return f;
  }
  f.weights_path = f.path;
  f.name = path.filename().string();
  TensorMap all = load_checkpoint(f.path).tensors;
  // A whole single-file model given as a VAE: its first_stage_model.* part.
  bool prefixed = false;
  for (const auto& [k, t] : all) prefixed |= starts_with(k, kLdmPrefix);
  TensorMap stripped;
  for (auto& [k, t] : all) {
    if (!prefixed) {
      stripped.emplace(k, t);
    } else if (starts_with(k, kLdmPrefix)) {
      stripped.emplace(k.substr(std::string(kLdmPrefix).size()), t);
    } else {
      f.ignored.push_back(k);
    }
  }
  bool ldm = false;
  for (const auto& [k, t] : stripped) ldm |= is_ldm_key(k);
  if (ldm) {
    f.layout = "ldm";
    f.weights = vae_weights_from_ldm(stripped, &f.ignored);
  } else {
    f.layout = "diffusers";
    f.weights = std::move(stripped);
  }
  bool any = false;
  for (const auto& [k, t] : f.weights) any |= starts_with(k, "decoder.") || starts_with(k, "encoder.");
  DIFFUSE_CHECK(any, ErrorCode::kIo,
                path_in + ": holds no VAE tensors (expected encoder.* / decoder.* keys in the LDM or diffusers "
                          "layout, optionally under first_stage_model.; found " + first_keys(all, 4) + ")");
  return f;
}

VaeConfig vae_config_for(const VaeFile& file, const VaeConfig& model) {
  VaeConfig c = file.config.value_or(model);
  DIFFUSE_CHECK_ARG(c.latent_channels == model.latent_channels,
                    "VAE " + file.name + " has " + std::to_string(c.latent_channels) +
                        " latent channels; the model's latents have " + std::to_string(model.latent_channels));
  c.scaling_factor = model.scaling_factor;
  c.shift_factor = model.shift_factor;
  return c;
}

}  // namespace diffuse
