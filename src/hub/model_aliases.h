// Short names for the seed models (`diffuse pull sd15`), with the repository
// each one lives in today and the licence a user accepts by pulling it
// (ECOSYSTEM.md §5: runwayml and stabilityai/stable-diffusion-2-1 are gone,
// the community mirrors are used instead).
#pragma once
#include <string>
#include <vector>

namespace diffuse::hub {

struct ModelAlias {
  std::string name;            // "sd15"
  std::string repo;            // "stable-diffusion-v1-5/stable-diffusion-v1-5"
  std::string family;          // "sd1" | "sd2" | "sdxl" (models/family.h names)
  std::string title;           // "Stable Diffusion 1.5"
  std::string license;         // "CreativeML OpenRAIL-M"
  std::string license_url;
  bool gated = false;          // needs a token and a licence click-through on the hub
  std::string single_file;     // the repo's all-in-one checkpoint, "" when it has none
  int default_size = 512;      // native resolution (px)
};

const std::vector<ModelAlias>& model_aliases();

// Case-insensitive lookup by alias name; null when `name` is not an alias.
const ModelAlias* find_alias(const std::string& name);
// find_alias(name)->repo, or `name` unchanged (taken as a repo id).
std::string resolve_repo(const std::string& repo_or_alias);

}  // namespace diffuse::hub
