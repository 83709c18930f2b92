// The ControlNet part of the HTTP APIs (docs/controlnet.md), as
// sd-webui-controlnet defines it:
//   /sdapi/v1/txt2img and img2img: "alwayson_scripts": {"controlnet": {"args": [unit, ...]}}
//   with per unit "enabled", "image" (base64 PNG; or {"image": ..., "mask": ...};
//   img2img without one: the init image), "module" (a preprocessor of
//   /controlnet/module_list: none, canny, invert, tile_resample, blur_gaussian,
//   shuffle, inpaint, inpaint_only; controlnet_preprocess_api.h), "mask" (inpaint),
//   "model" (a name of /controlnet/model_list, with or without " [hash]"),
//   "weight", "guidance_start", "guidance_end", "control_mode" (0-2 or its label),
//   "resize_mode" (0-2 or "Just Resize" / "Crop and Resize" / "Resize and Fill";
//   default Crop and Resize, as the extension), "pixel_perfect", "guess_mode";
//   "processor_res", "threshold_a", "threshold_b" (the preprocessor's sliders; -1
//   or absent: its default); low_vram is accepted and unused;
//   GET /controlnet/model_list, /controlnet/module_list, /controlnet/version,
//   /controlnet/settings.
// The models are the files and folders of ServerOptions::controlnet_dirs.
#pragma once
#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"
#include "server/server_state.h"

namespace diffuse::server {

// Fills p.controlnets from the request; answers 400 naming the unit and field
// (unknown model, unknown or unavailable preprocessor, a slider out of range, an image that does not decode,
// a ControlNet of another family than `model`'s, bad numbers) and returns false.
bool apply_a1111_controlnet(Server::State& s, const nlohmann::json& body, const std::string& model,
                            GenerationParams& p, httplib::Response& res);

// The native API's "controlnets": [unit, ...] (/api/jobs; the same unit fields
// as the A1111 API's, default resize mode "just-resize" as diffusers). The echo
// (history) keeps a summary of each image instead of its base64.
bool apply_native_controlnet(Server::State& s, const nlohmann::json& body, const std::string& model,
                             GenerationParams& p, nlohmann::json* echo, httplib::Response& res);
// Bytes of the base64 control images of a native request (they may exceed max_body_bytes as images do).
size_t native_controlnet_image_bytes(const nlohmann::json& body);

void register_controlnet_routes(Server::State& s);

}  // namespace diffuse::server
