// Shared by the IP-Adapter tests: the repository's tiny IP-Adapter models and
// goldens (tests/adapters/data/ipadapter, tools/reference/ipadapter_goldens.py).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <nlohmann/json.hpp>

#include "adapters/ip_adapter.h"
#include "image/clip_preprocess.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/png.h"
#include "models/clip_vision.h"
#include "models/unet.h"
#include "test_util.h"

namespace diffuse::ipa_test {

inline std::string data_dir() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/adapters/data/ipadapter"; }

inline const TensorMap& goldens() {
  static const TensorMap t = load_safetensors(data_dir() + "/tensors.safetensors").tensors;
  return t;
}
inline bool has_golden(const std::string& key) { return goldens().count(key) > 0; }
inline Tensor golden_tensor(const std::string& key) {
  auto it = goldens().find(key);
  if (it == goldens().end()) {
    ADD_FAILURE() << "no golden " << key;
    return Tensor::zeros({1}, DType::kF32);
  }
  return it->second.to(DType::kF32).contiguous();
}
inline std::vector<float> golden(const std::string& key) { return golden_tensor(key).to_f32_vector(); }
// diffusers' feature extractor output where recorded, else this script's PIL one.
inline std::string pixel_values_key(const std::string& n) {
  return has_golden("preprocess/" + n + "/pixel_values") ? "preprocess/" + n + "/pixel_values" : "torch_ref/preprocess/" + n;
}
inline Tensor pixel_values_ab() {
  std::vector<float> ab = golden(pixel_values_key("a"));
  const std::vector<float> b = golden(pixel_values_key("b"));
  ab.insert(ab.end(), b.begin(), b.end());
  return Tensor::from_vector(ab, {2, 3, 32, 32});
}

inline image::Rgb read_rgb(const std::string& path) {
  const std::string bytes = testing::read_file(path);
  PngImage im = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return image::Rgb{im.width, im.height, std::move(im.rgb)};
}

inline UNetConfig fixture_unet_config(const std::string& fam) {
  return UNetConfig::from_json(read_python_json_file(testing::fixtures_dir() + "/" + fam + "/model/unet/config.json"));
}

// The adapter weights by full key. Two files are stored as image_proj.* only and
// completed with their sibling's ip_adapter.* (as the generator made them):
// sd1 plus with sd1_base.bin's, sdxl base with sdxl_plus's.
inline TensorMap adapter_tensors(const std::string& fam, const std::string& kind) {
  auto with_layers_of = [](TensorMap proj, const TensorMap& other) {
    for (const auto& kv : other)
      if (kv.first.rfind("ip_adapter.", 0) == 0) proj[kv.first] = kv.second;
    return proj;
  };
  if (fam == "sd1" && kind == "base") return IpAdapter::read_weights(data_dir() + "/sd1_base.bin");
  if (fam == "sdxl" && kind == "plus") return IpAdapter::read_weights(data_dir() + "/sdxl_plus.safetensors");
  if (fam == "sd1")
    return with_layers_of(IpAdapter::read_weights(data_dir() + "/sd1_plus_proj.safetensors"),
                          IpAdapter::read_weights(data_dir() + "/sd1_base.bin"));
  return with_layers_of(IpAdapter::read_weights(data_dir() + "/sdxl_base_proj.safetensors"),
                        IpAdapter::read_weights(data_dir() + "/sdxl_plus.safetensors"));
}

// A folder holding the adapter as the file diffusers read (sd1_base.bin,
// sd1_plus.safetensors, sdxl_base.safetensors, sdxl_plus.safetensors) and its
// image_encoder/ beside it: the layout the pipeline looks in.
inline std::string adapter_file(const std::string& fam, const std::string& kind) {
  static std::map<std::string, std::string> made;
  const std::string key = fam + "_" + kind;
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  namespace fs = std::filesystem;
  const std::string dir = testing::temp_dir();
  fs::copy(data_dir() + "/image_encoder", dir + "/image_encoder", fs::copy_options::recursive);
  std::string path;
  if (fam == "sd1" && kind == "base") {
    path = dir + "/sd1_base.bin";
    fs::copy_file(data_dir() + "/sd1_base.bin", path);
  } else {
    path = dir + "/" + key + ".safetensors";
    TensorMap t;
    for (const auto& kv : adapter_tensors(fam, kind)) t[kv.first] = kv.second.contiguous();
    save_safetensors(path, t);
  }
  made[key] = path;
  return path;
}

inline std::unique_ptr<IpAdapter> load_adapter(const std::string& fam, const std::string& kind) {
  return IpAdapter::load(adapter_file(fam, kind), DType::kF32, Device::kCPU);
}

}  // namespace diffuse::ipa_test
