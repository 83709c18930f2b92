// The hires fix on the HTTP APIs (docs/hires-fix.md):
//   A1111 /sdapi/v1/txt2img: enable_hr (default false), hr_scale (2.0),
//   hr_resize_x / hr_resize_y (0), hr_upscaler ("Latent"),
//   hr_second_pass_steps (0: the first pass's), denoising_strength (0.7),
//   hr_prompt / hr_negative_prompt ("": the first pass's), hr_sampler_name
//   ("" or "Use same sampler": the first pass's);
//   native /api/jobs: "hires": {"scale", "resize_x", "resize_y", "upscaler",
//   "steps", "denoise", "prompt", "negative_prompt", "sampler"} (absent or
//   null: off; {} : A1111's defaults);
//   GET /sdapi/v1/upscalers (A1111's [{name, model_name, model_path,
//   model_url, scale}]: None, Lanczos, Nearest, the ESRGAN models of the
//   server's upscaler folders, then the latent modes) and
//   GET /sdapi/v1/latent-upscale-modes ([{name}]).
// A bad field (an unknown upscaler, a scale <= 1 with no resize, a target
// over 4096 pixels a side, ...) is answered 400 naming it.
#pragma once
#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"
#include "server/server_state.h"

namespace diffuse::server {

// Sets p.hires from the request; false after answering 400 for a bad field.
bool apply_a1111_hires(Server::State& s, const nlohmann::json& body, GenerationParams& p, httplib::Response& res);
bool apply_native_hires(Server::State& s, const nlohmann::json& body, GenerationParams& p, httplib::Response& res);

void register_hires_routes(Server::State& s);

}  // namespace diffuse::server
