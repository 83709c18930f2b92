// diffuse probe PATH: what a model file or folder is, from its headers and
// configs alone (no weights are read):
//  - a ControlNet (models/controlnet.h probe_controlnet): "ControlNet", its
//    family (from the cross-attention width), layout (A1111 / diffusers),
//    control type when recorded (the file or folder name, or a "control_type"
//    entry of the safetensors metadata), union or not, control-LoRA or not;
//  - otherwise a checkpoint (models/probe.h): family, variant, format, precision.
// --json prints the same as one JSON object.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/controlnet.h"
#include "models/probe.h"
#include "pipeline/pipeline.h"

namespace diffuse::cli {
namespace {

namespace fs = std::filesystem;

// A ControlNet's description, or null when the path holds no ControlNet.
nlohmann::json probe_as_controlnet(const std::string& path) {
  ControlNetProbe p;
  try {
    p = probe_controlnet(path);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kNotFound) throw;
    return nullptr;  // not a ControlNet (or not one we can read): try a checkpoint
  }
  if (p.layout.empty()) return nullptr;
  std::string control_type = p.control_type, type_source = p.control_type.empty() ? "" : "name";
  if (control_type.empty() && fs::is_regular_file(path) && path.size() > 12 &&
      path.compare(path.size() - 12, 12, ".safetensors") == 0) {
    try {
      const Checkpoint c = load_safetensors(path);  // mmap: the header is parsed, the data not touched
      auto it = c.metadata.find("control_type");
      if (it != c.metadata.end()) control_type = it->second, type_source = "metadata";
    } catch (const Error&) {
    }
  }
  nlohmann::json j = {{"path", path},
                      {"kind", "ControlNet"},
                      {"family", p.family.empty() ? nlohmann::json(nullptr) : nlohmann::json(p.family)},
                      {"cross_attention_dim", p.cross_attention_dim},
                      {"layout", p.layout},
                      {"control_type", control_type.empty() ? nlohmann::json(nullptr) : nlohmann::json(control_type)},
                      {"union", p.is_union},
                      {"control_lora", p.control_lora}};
  if (!type_source.empty()) j["control_type_from"] = type_source;
  return j;
}

nlohmann::json probe_as_checkpoint(const std::string& path) {
  const CheckpointInfo info = probe(path);
  nlohmann::json j = {{"path", path},
                      {"kind", "checkpoint"},
                      {"family", info.family->name},
                      {"variant", info.variant_spec().name},
                      {"label", info.label()},
                      {"format", format_name(info.format)},
                      {"precision", info.precision},
                      {"few_step", nullptr}};
  // A few-step model (pipeline/few_step.h): its kind, whether it was guessed, why, and its defaults.
  try {
    const ModelInfo m = describe_model(path);
    if (!m.kind.empty()) {
      j["few_step"] = {{"kind", m.kind}, {"guessed", m.kind_guessed}, {"reason", m.kind_reason},
                       {"defaults", {{"steps", m.default_steps}, {"cfg_scale", m.default_cfg},
                                     {"sampler", m.default_sampler}, {"width", m.default_width},
                                     {"height", m.default_height}}}};
    }
  } catch (const Error&) {
    // Not describable as a text-to-image model (an inpainting-only variant...): no kind.
  }
  return j;
}

int run_probe(const std::string& path, bool json) {
  DIFFUSE_CHECK(fs::exists(path), ErrorCode::kNotFound, "probe: no such file or folder: " + path);
  nlohmann::json j = probe_as_controlnet(path);
  if (j.is_null()) j = probe_as_checkpoint(path);
  if (json) {
    std::cout << j.dump(2) << std::endl;
    return kExitOk;
  }
  auto text = [](const nlohmann::json& v) { return v.is_null() ? std::string("unknown") : v.get<std::string>(); };
  if (j["kind"] == "ControlNet") {
    std::printf("%s\n  ControlNet, family %s (cross-attention width %d), %s layout\n", path.c_str(),
                text(j["family"]).c_str(), j["cross_attention_dim"].get<int>(), j["layout"].get<std::string>().c_str());
    if (j["union"].get<bool>()) {
      std::printf("  union ControlNet (one model, the control type chosen per call): not supported for generation\n");
    } else {
      std::printf("  control type: %s\n", j["control_type"].is_null()
                                              ? "not recorded (neither the name nor the metadata says)"
                                              : (j["control_type"].get<std::string>() + " (from the " +
                                                 j["control_type_from"].get<std::string>() + ")").c_str());
      std::printf("  union: no\n");
    }
    if (j["control_lora"].get<bool>()) std::printf("  control-LoRA: not supported for generation\n");
  } else {
    std::printf("%s\n  checkpoint: %s, %s, %s\n", path.c_str(), j["label"].get<std::string>().c_str(),
                j["format"].get<std::string>().c_str(), j["precision"].get<std::string>().c_str());
    if (!j["few_step"].is_null()) {
      const nlohmann::json& f = j["few_step"];
      std::printf("  few-step: %s (%s%s); defaults %d steps, cfg %g, sampler %s, %dx%d\n",
                  f["kind"].get<std::string>().c_str(), f["guessed"].get<bool>() ? "guessed: " : "",
                  f["reason"].get<std::string>().c_str(), f["defaults"]["steps"].get<int>(),
                  f["defaults"]["cfg_scale"].get<double>(), f["defaults"]["sampler"].get<std::string>().c_str(),
                  f["defaults"]["width"].get<int>(), f["defaults"]["height"].get<int>());
    }
  }
  return kExitOk;
}

}  // namespace

Action add_probe(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand("probe", "Say what a model file or folder is (ControlNet or checkpoint), from its headers");
  c->footer(
      "Examples:\n"
      "  diffuse probe models/ControlNet/control_v11p_sd15_canny.pth\n"
      "  diffuse probe models/ControlNet/controlnet-union-sdxl-1.0 --json\n"
      "  diffuse probe v1-5-pruned-emaonly.safetensors");
  c->add_option("path", *path, "A model file (.safetensors, .pth, .ckpt, .bin) or diffusers folder")->required();
  c->add_flag("--json", *json, "Print one JSON object");
  return [path, json]() { return run_probe(*path, *json); };
}

}  // namespace diffuse::cli
