// The SDXL refiner goldens (fixture set v2, sdxl/cases.json "refiner": a tiny
// refiner with the real architecture, diffusers' base -> refiner hand-off at
// 0.8 and the refiner as img2img at 0.3), shared by the CPU, CUDA and CLI
// tests: the refiner's model folder, its single file rebuilt from the recipe,
// and the runs as GenerationParams.
#pragma once
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "edit_runs.h"
#include "io/checkpoint.h"
#include "io/sha256.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse::testing {

inline std::string sdxl_base_dir() { return fixtures_dir() + "/sdxl/model"; }

// The refiner's folder with its links (stored as small files holding the
// target, relative to the folder) made real symlinks, in a temporary folder.
inline std::string refiner_dir() {
  namespace fs = std::filesystem;
  static std::string built;
  if (!built.empty()) return built;
  const fs::path src = fs::path(goldens_dir()) / "sdxl_refiner" / "model";
  const fs::path dst = fs::path(temp_dir()) / "sdxl_refiner";
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(src)) {
    fs::path target = entry.path();
    if (entry.is_regular_file() && entry.file_size() < 256 && entry.path().extension() != ".json") {
      std::string rel = read_file(entry.path().string());
      while (!rel.empty() && std::isspace(static_cast<unsigned char>(rel.back()))) rel.pop_back();
      target = src / rel;
    }
    fs::create_directory_symlink(fs::canonical(target), dst / entry.path().filename());
  }
  built = dst.string();
  return built;
}

// The refiner's single file (LDM keys, as diffusers' conversion wrote it),
// rebuilt from v2/sdxl_refiner/single_file_recipe.json over the folder's
// tensors, like the set's tools/rebuild_single_file.py: each tensor a copy, a
// concatenation (OpenCLIP's in_proj of q/k/v) or a transpose
// (text_projection) of folder tensors, checked against the sha256 the
// recipe records. The token table is exempt: the repository's text encoder
// fills the rows no test reaches (tests/data/README.md).
inline std::string refiner_single_file() {
  namespace fs = std::filesystem;
  static std::string built;
  if (!built.empty()) return built;
  const std::string folder = refiner_dir();
  const nlohmann::json recipe =
      nlohmann::json::parse(read_file(goldens_dir() + "/sdxl_refiner/single_file_recipe.json"));
  std::map<std::string, TensorMap> sources;
  auto source = [&](const std::string& rel) -> const TensorMap& {
    auto it = sources.find(rel);
    if (it == sources.end()) it = sources.emplace(rel, load_safetensors(folder + "/" + rel).tensors).first;
    return it->second;
  };
  TensorMap out;
  for (const auto& [name, e] : recipe["tensors"].items()) {
    std::vector<Tensor> parts;
    for (const auto& part : e["parts"]) {
      parts.push_back(source(part[0].get<std::string>()).at(part[1].get<std::string>()).contiguous());
    }
    const std::string op = e["op"].get<std::string>();
    Tensor t;
    if (op == "copy") {
      t = parts.at(0);
    } else if (op == "concat0") {
      t = concat(parts, 0);
    } else if (op == "transpose2d") {
      t = parts.at(0).permute({1, 0}).contiguous();
    } else {
      ADD_FAILURE() << "unknown recipe op " << op << " for " << name;
      continue;
    }
    Shape shape;
    for (const auto& d : e["shape"]) shape.push_back(d.get<int64_t>());
    t = t.reshape(shape).contiguous();
    const bool token_table = name.find("token_embedding") != std::string::npos;
    if (!token_table) {
      EXPECT_EQ(sha256_hex(t.raw_data(), t.nbytes()), e["sha256"].get<std::string>()) << name;
    }
    out.emplace(name, t);
  }
  const std::string path = temp_dir() + "/sd_xl_refiner_tiny.safetensors";
  save_safetensors(path, out);
  built = path;
  return built;
}

// One loaded pipeline per path (CPU, f32), shared so that a refiner can be
// handed to GenerationParams::refiner.
inline std::shared_ptr<Pipeline> shared_pipeline(const std::string& path, const LoadOptions& o = {}) {
  static std::map<std::string, std::shared_ptr<Pipeline>> cache;
  auto& p = cache[path];
  if (!p) p = std::shared_ptr<Pipeline>(Pipeline::load(path, o));
  return p;
}

inline const nlohmann::json& refiner_run(const std::string& name) {
  const EditFamily& f = edit_family("sdxl");
  for (const auto& run : f.cases["refiner"]["runs"])
    if (run["name"] == name) return run;
  static const nlohmann::json none;
  ADD_FAILURE() << "no refiner run " << name;
  return none;
}

// The base call of the hand-off run: the steps above denoising_end, latents out.
inline GenerationParams handoff_base_params() {
  const nlohmann::json& c = refiner_run("base_to_refiner")["base_call"];
  GenerationParams p = run_params(c);
  p.denoising_end = c["denoising_end"].get<double>();
  p.output_latents = true;
  return p;
}

// The refiner call of the hand-off run, continuing `latents`.
inline GenerationParams handoff_refiner_params(const Tensor& latents) {
  const nlohmann::json& c = refiner_run("base_to_refiner")["refiner_call"];
  GenerationParams p = run_params(c);
  p.init_latents = latents;
  p.denoising_start = c["denoising_start"].get<double>();
  p.refiner.aesthetic_score = c["aesthetic_score"].get<double>();
  p.refiner.negative_aesthetic_score = c["negative_aesthetic_score"].get<double>();
  return p;
}

// The refiner as img2img of the set's init image (the img2img section's).
inline GenerationParams refiner_img2img_params() {
  const EditFamily& f = edit_family("sdxl");
  const nlohmann::json& run = refiner_run("refiner_img2img_s0.3");
  GenerationParams p = run_params(run);
  p.edit.strength = run["strength"].get<double>();
  p.edit.init_image = load_rgb(f.dir + "/" + f.cases["img2img"]["init_image"].get<std::string>());
  return p;
}

// Mean and max |a - b| of an f32 NCHW image in [0, 1] and an 8-bit PNG, in 1/255.
inline PixelDiff image_vs_png(const Tensor& decoded, const std::string& png_path) {
  const image::Rgb png = load_rgb(png_path);
  const std::vector<float> got = to_nhwc(decoded);
  PixelDiff d;
  if (got.size() != png.px.size() || got.empty()) return {1e9, 1e9};
  double sum = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double v = std::fabs(got[i] * 255.0 - png.px[i]);
    sum += v;
    d.max = std::max(d.max, v);
  }
  d.mean = sum / got.size();
  return d;
}

}  // namespace diffuse::testing
