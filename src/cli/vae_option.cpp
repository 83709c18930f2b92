// --vae (vae_option.h).
#include "cli/vae_option.h"

#include <filesystem>

#include "core/error.h"
#include "hub/hub_cache.h"
#include "hub/hub_options.h"
#include "server/vae_library.h"

namespace fs = std::filesystem;

namespace diffuse::cli {

const char* const kVaeHelp =
    "A VAE to decode with instead of the model's own (A1111's sd_vae): a .safetensors / .ckpt / .pt file (LDM "
    "keys as vae-ft-mse-840000-ema-pruned, with or without first_stage_model., or diffusers keys), a diffusers VAE "
    "folder (config.json + diffusion_pytorch_model.safetensors), a file name in --vae-dir (default models/VAE), or "
    "a Hugging Face repo id in the local cache (madebyollin/sdxl-vae-fp16-fix); Automatic/None: the model's own "
    "(docs/vae.md)";

std::string resolve_vae_option(const std::string& spec, const std::vector<std::string>& vae_dirs) {
  if (server::is_automatic_vae(spec)) return "";
  std::error_code ec;
  if (fs::exists(spec, ec)) return fs::absolute(spec).lexically_normal().string();
  server::VaeLibrary library(vae_dirs);
  try {
    return library.resolve(spec);
  } catch (const Error&) {
  }
  const size_t slash = spec.find('/');
  if (slash != std::string::npos && slash > 0 && spec.find('/', slash + 1) == std::string::npos) {
    if (std::optional<std::string> snap = hub::resolve_cached(spec, hub::HubOptions::from_env())) return *snap;
  }
  std::string dirs;
  for (const std::string& d : vae_dirs) dirs += (dirs.empty() ? "" : ", ") + d;
  throw_error(ErrorCode::kInvalidArgument,
              "--vae '" + spec + "': not a file or folder, not a VAE in " + (dirs.empty() ? "(no folder)" : dirs) +
                  ", and not a Hugging Face repo in the local cache");
}

}  // namespace diffuse::cli
