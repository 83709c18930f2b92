// ControlNet models in folders (A1111's models/ControlNet, --controlnet-dir):
// the names the CLI, the A1111 API's /controlnet/model_list and the web page
// offer, and the lookup of a name or path.
#pragma once
#include <string>
#include <vector>

namespace diffuse {

struct ControlNetEntry {
  std::string name;   // file stem or folder name: "control_v11p_sd15_canny"
  std::string path;   // the file or folder
  std::string hash;   // sd-webui-controlnet's short hash (controlnet_short_hash)
  std::string title() const { return hash.empty() ? name : name + " [" + hash + "]"; }  // A1111's model_list entry
};

// Every ControlNet in `dirs` (not recursive): .safetensors / .pth / .ckpt / .bin
// files and diffusers folders (config.json with _class_name ControlNetModel),
// sorted by name. Folders that do not exist are skipped.
std::vector<ControlNetEntry> list_controlnets(const std::vector<std::string>& dirs);

// A path that exists, or a name of list_controlnets(dirs): the stem, the file
// name, or a title with its " [hash]" (as A1111 clients send it). "None" and ""
// are Error(kInvalidArgument); an unknown name is Error(kNotFound) listing what the folders hold.
std::string resolve_controlnet(const std::string& name_or_path, const std::vector<std::string>& dirs);

// sd-webui-controlnet's model hash: the first 8 hex digits of the sha256 of
// the 64 KiB at offset 1 MiB of the weights file (a folder: its weights file).
std::string controlnet_short_hash(const std::string& path);

}  // namespace diffuse
