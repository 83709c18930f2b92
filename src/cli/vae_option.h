// --vae FILE|DIR|NAME|REPO on generate, serve and bench (docs/vae.md).
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace diffuse::cli {

// The default VAE folder, as A1111's models/VAE, under the working directory.
constexpr const char* kDefaultVaeDir = "models/VAE";

// What --vae names, as a path for GenerationParams::vae: "" (and "Automatic"
// / "None") is the model's own VAE; an existing file or folder is itself; a
// name in `vae_dirs` (server/vae_library.h rules: the file name, with or
// without its extension); a Hugging Face repo id ("madebyollin/sdxl-vae-fp16-fix")
// whose snapshot is in the local cache (hub/hub_cache.h; nothing is
// downloaded). Throws Error(kInvalidArgument) (exit 2) naming what was tried.
std::string resolve_vae_option(const std::string& spec, const std::vector<std::string>& vae_dirs);

// The --help text of --vae.
extern const char* const kVaeHelp;

}  // namespace diffuse::cli
