// A ControlNet folder built from a fixture family's tiny UNet, as diffusers'
// ControlNetModel.from_unet builds one (the encoder copied), with small
// deterministic conditioning-embedding and zero-conv weights so that the
// control has an effect. Shared by the ControlNet tests of several layers.
#pragma once
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "models/controlnet.h"
#include "test_util.h"

namespace diffuse::testing {

// <dir>/<name>/ with config.json + diffusion_pytorch_model.safetensors; `dir` "" = a fresh temp dir.
inline std::string make_controlnet_folder(const std::string& fam, uint32_t seed, std::string dir = "",
                                          const std::string& name = "") {
  namespace fs = std::filesystem;
  const std::string unet_dir = fixtures_dir() + "/" + fam + "/model/unet";
  nlohmann::json cfg = nlohmann::json::parse(read_file(unet_dir + "/config.json"));
  const TensorMap unet = load_safetensors(unet_dir + "/diffusion_pytorch_model.safetensors").tensors;
  cfg["_class_name"] = "ControlNetModel";
  cfg["conditioning_embedding_out_channels"] = {4, 8, 8, 16};
  cfg.erase("up_block_types");
  const ControlNetConfig cc = ControlNetConfig::from_json(cfg);
  TensorMap w;
  uint32_t s = seed;
  for (const auto& [key, shape] : ControlNet::expected_tensors(cc)) {
    auto u = unet.find(key);
    if (u != unet.end()) {
      w[key] = u->second;
    } else {
      const bool zero_conv = key.rfind("controlnet_down_blocks.", 0) == 0 || key.rfind("controlnet_mid_block.", 0) == 0;
      w[key] = Tensor::from_vector(noise(static_cast<size_t>(shape_numel(shape)), s++, zero_conv ? 0.05f : 0.3f), shape);
    }
  }
  if (dir.empty()) dir = temp_dir();
  const fs::path out = fs::path(dir) / (name.empty() ? "controlnet_" + fam : name);
  fs::create_directories(out);
  std::ofstream((out / "config.json").string()) << cfg.dump(1);
  save_safetensors((out / "diffusion_pytorch_model.safetensors").string(), w);
  return out.string();
}

}  // namespace diffuse::testing
