// The VAE folders a server offers (A1111's models/VAE and --vae-dir;
// docs/vae.md): what /sdapi/v1/sd-vae lists and which file an sd_vae name
// means.
//
// As A1111's modules/sd_vae.py refresh_vae_list: every .safetensors, .ckpt
// and .pt file under a folder (recursively, links followed) is known by its
// file name with the extension ("vae-ft-mse-840000-ema-pruned.safetensors");
// when two share a name, the one listed last wins. Diffuse also lists diffusers
// VAE folders (a folder holding config.json) by the folder's name. A name may
// also be given without its extension. "Automatic" and "None" (A1111's
// special values) mean the model's own VAE. A name that matches nothing
// rescans once before failing, so a file copied in is found without a refresh.
#pragma once
#include <mutex>
#include <string>
#include <vector>

namespace diffuse::server {

struct VaeEntry {
  std::string model_name;  // A1111's name: the file name, or a diffusers folder's name
  std::string filename;    // absolute path
};

// Thread-safe.
class VaeLibrary {
 public:
  explicit VaeLibrary(std::vector<std::string> dirs);
  const std::vector<std::string>& dirs() const { return dirs_; }
  void refresh();                   // POST /sdapi/v1/refresh-vae
  std::vector<VaeEntry> list();     // sorted by name (scanned on first use)
  // The path a name means, "" for "Automatic", "None" and "". Throws
  // Error(kInvalidArgument) "VAE 'x' not found in /abs/models/VAE (available: a, b)".
  std::string resolve(const std::string& name);
  // The sd_vae value of a resolved path: its listed name, or its file name.
  std::string name_of(const std::string& path);

 private:
  void scan_locked();
  const VaeEntry* find_locked(const std::string& name) const;
  std::vector<std::string> dirs_;
  std::mutex mu_;
  bool scanned_ = false;
  std::vector<VaeEntry> entries_;
};

// A1111's special sd_vae values.
bool is_automatic_vae(const std::string& name);  // "Automatic", "None", "" (any case)

}  // namespace diffuse::server
