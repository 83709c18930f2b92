// Replaying the editing goldens (img2img, inpainting: tests/data/README.md,
// fixture set v2 and tests/pipeline/data/inpaint9) through Pipeline::generate;
// shared by the CPU and CUDA tests.
#pragma once
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image/image_ops.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse::testing {

// One loaded pipeline per model path for the whole test process (CPU, f32).
inline Pipeline& cached_pipeline(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[path];
  if (!p) p = Pipeline::load(path);
  return *p;
}

// The v2 goldens: $DIFFUSE_FIXTURES_V2 (a full set), else the part the repository carries.
inline std::string goldens_dir() {
  if (const char* env = std::getenv("DIFFUSE_FIXTURES_V2")) return env;
  return fixtures_dir() + "/v2";
}

inline image::Rgb load_rgb(const std::string& path) {
  const std::string bytes = testing::read_file(path);
  PngImage im = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return image::Rgb{im.width, im.height, std::move(im.rgb)};
}

inline image::Gray load_mask(const std::string& path) {
  const std::string bytes = testing::read_file(path);
  return image::decode_mask(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                            image::MaskConvention::kLuminance);
}

struct EditFamily {
  nlohmann::json cases;
  TensorMap tensors;
  std::string dir;
};

inline const EditFamily& edit_family(const std::string& name) {
  static std::map<std::string, EditFamily> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  EditFamily f;
  f.dir = goldens_dir() + "/" + name;
  std::ifstream in(f.dir + "/cases.json");
  EXPECT_TRUE(in.good()) << "missing " << f.dir << "/cases.json";
  if (in.good()) f.cases = nlohmann::json::parse(in);
  if (std::filesystem::exists(f.dir + "/tensors.safetensors")) {
    f.tensors = load_safetensors(f.dir + "/tensors.safetensors").tensors;
  }
  return cache.emplace(name, std::move(f)).first->second;
}

// inpaint9 takes its image and mask from the inpaint section (same files).
inline std::string section_input(const nlohmann::json& cases, const nlohmann::json& section, const char* key) {
  const nlohmann::json& s = section.contains(key) ? section : cases["inpaint"];
  return s.contains(key) ? s[key].get<std::string>() : "";
}

// The text-to-image part of a v2 golden run: prompts, CFG, steps, size,
// sampler ("dpmpp_2m_karras" = dpmpp_2m with the Karras schedule), seed of one
// CPU generator.
inline GenerationParams run_params(const nlohmann::json& run) {
  GenerationParams p;
  p.prompt = run["prompt"].get<std::string>();
  if (!run["negative_prompt"].is_null()) p.negative_prompt = run["negative_prompt"].get<std::string>();
  p.cfg_scale = run["guidance_scale"].get<float>();
  p.steps = run["num_inference_steps"].get<int>();
  if (run.contains("width")) p.width = run["width"].get<int>();
  if (run.contains("height")) p.height = run["height"].get<int>();
  std::string sched = run["scheduler"].get<std::string>();
  const std::string karras = "_karras";
  if (sched.size() > karras.size() && sched.compare(sched.size() - karras.size(), karras.size(), karras) == 0) {
    sched = sched.substr(0, sched.size() - karras.size());
    p.schedule = "karras";
  }
  p.sampler = sched;
  p.seed = run["generator"]["seed"].get<int64_t>();
  p.rng = RngKind::kCpu;
  return p;
}

// An img2img / inpaint golden run as GenerationParams (raw output, no overlay).
inline GenerationParams params_for(const nlohmann::json& cases, const nlohmann::json& section, const nlohmann::json& run,
                                   const std::string& dir) {
  GenerationParams p = run_params(run);
  p.edit.strength = run["strength"].get<double>();
  p.edit.init_image = load_rgb(dir + "/" + section_input(cases, section, "init_image"));
  if (run.contains("mask_image")) p.edit.mask = load_mask(dir + "/" + section_input(cases, section, "mask_image"));
  p.edit.mask_blur = 0;
  p.edit.overlay = false;  // the goldens hold diffusers' raw output
  return p;
}

// NCHW [1, 3, H, W] -> NHWC values, the goldens' layout.
inline std::vector<float> to_nhwc(const Tensor& t) {
  const std::vector<float> v = t.contiguous().to_f32_vector();
  const int64_t H = t.dim(2), W = t.dim(3);
  std::vector<float> out(v.size());
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < H * W; ++i) out[i * 3 + c] = v[c * H * W + i];
  return out;
}

// Mean and max |a - b| of two equal-size 8-bit images, in 1/255 units.
struct PixelDiff {
  double mean = 0, max = 0;
};
inline PixelDiff pixel_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  PixelDiff d;
  if (a.size() != b.size() || a.empty()) return {1e9, 1e9};
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double v = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    sum += v;
    d.max = std::max(d.max, v);
  }
  d.mean = sum / a.size();
  return d;
}

// The repository's 9-channel goldens (tools/reference/inpaint9_goldens.py).
inline std::string inpaint9_dir() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/pipeline/data/inpaint9"; }

// The model of those goldens for `fam`: the family's tiny base model with
// its UNet's conv_in widened to 9 input channels (the stored conv_in), built
// once per process in a temporary folder.
inline std::string inpaint9_model(const std::string& fam) {
  namespace fs = std::filesystem;
  static std::map<std::string, std::string> built;
  auto it = built.find(fam);
  if (it != built.end()) return it->second;
  const fs::path base = fs::path(fixtures_dir()) / fam / "model";
  const fs::path dst = fs::path(temp_dir()) / (fam + "_inpaint9");
  fs::create_directories(dst / "unet");
  for (const auto& e : fs::directory_iterator(base)) {
    if (e.path().filename() != "unet") fs::create_symlink(fs::canonical(e.path()), dst / e.path().filename());
  }
  nlohmann::json cfg = nlohmann::json::parse(read_file((base / "unet/config.json").string()));
  cfg["in_channels"] = 9;
  std::ofstream((dst / "unet/config.json").string()) << cfg.dump(1);
  TensorMap w = load_safetensors((base / "unet/diffusion_pytorch_model.safetensors").string()).tensors;
  w["conv_in.weight"] = load_safetensors(inpaint9_dir() + "/" + fam + "_conv_in.safetensors").tensors.at("conv_in.weight");
  save_safetensors((dst / "unet/diffusion_pytorch_model.safetensors").string(), w);
  return built.emplace(fam, dst.string()).first->second;
}

}  // namespace diffuse::testing
