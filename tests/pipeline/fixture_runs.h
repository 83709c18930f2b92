// Reading a diffusers pipeline run of the fixtures (cases.json "pipeline_runs")
// into GenerationParams; shared by the CPU, bf16 and CUDA pipeline tests.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "pipeline/pipeline.h"

namespace diffuse::testing {

// `tensors` is the family's tensors.safetensors (for the initial latents).
inline GenerationParams params_for_run(const nlohmann::json& run, const TensorMap& tensors) {
  GenerationParams p;
  if (run["prompt"].is_array()) {
    for (const auto& s : run["prompt"]) p.prompts.push_back(s.get<std::string>());
    for (const auto& s : run["negative_prompt"]) p.negative_prompts.push_back(s.get<std::string>());
  } else {
    p.prompt = run["prompt"].get<std::string>();
    // null = diffusers' negative_prompt=None (SDXL then uses zero embeddings)
    if (!run["negative_prompt"].is_null()) p.negative_prompt = run["negative_prompt"].get<std::string>();
    p.images = 1;
  }
  p.cfg_scale = run["guidance_scale"].get<float>();
  p.steps = run["num_inference_steps"].get<int>();
  p.width = run["width"].get<int>();
  p.height = run["height"].get<int>();
  // "dpmpp_2m_karras" = sampler dpmpp_2m with the Karras schedule.
  const std::string sched = run["scheduler"].get<std::string>();
  const std::string suffix = "_karras";
  if (sched.size() > suffix.size() && sched.compare(sched.size() - suffix.size(), suffix.size(), suffix) == 0) {
    p.sampler = sched.substr(0, sched.size() - suffix.size());
    p.schedule = "karras";
  } else {
    p.sampler = sched;
  }
  p.initial_latents = tensors.at(run["initial_latents"].get<std::string>()).to(DType::kF32);
  // The run's generator seed feeds the ancestral noise (euler_a); latents are given.
  p.seed = run["generator"].is_null() ? 0 : run["generator"]["seed"].get<int64_t>();
  return p;
}

}  // namespace diffuse::testing
