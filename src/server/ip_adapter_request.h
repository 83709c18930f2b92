// The IP-Adapter part of the HTTP APIs (docs/ip-adapter.md):
//  - A1111: sd-webui-controlnet's IP-Adapter units inside
//    "alwayson_scripts": {"controlnet": {"args": [unit, ...]}}: a unit whose
//    "module" starts with "ip-adapter" (ip-adapter_clip_sd15, ip-adapter_clip_sdxl,
//    ip-adapter_clip_h, ip-adapter_clip_sdxl_plus_vith, ...) or whose "model" is
//    an ip-adapter file; "image" is the reference image (base64 PNG), "weight"
//    the scale. Several IP-Adapter units with the same model add their images
//    (the tokens are concatenated); controlnet_request.cpp hands them here.
//  - native /api/jobs: "ip_adapter": {"model", "image" or "images": [...],
//    "scale", "block_scales" (diffusers' set_ip_adapter_scale dict), "image_encoder"}.
// The models are looked up in the ControlNet folders (where A1111 keeps them).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"
#include "server/edit_request.h"
#include "server/server_state.h"

namespace diffuse::server {

// The preprocessor names the extension gives IP-Adapter units (for /controlnet/module_list).
const std::vector<std::string>& ip_adapter_modules();

// Whether a ControlNet unit is an IP-Adapter unit.
bool is_ip_adapter_unit(const nlohmann::json& unit);

// Adds the unit to p.ip_adapter; throws Error(kInvalidArgument / kNotFound)
// naming `who` and the field: no image, an unknown model, an adapter of another
// family than `model`'s (saying which), a weight outside [0, 2], a second
// adapter model in one request.
void parse_ip_adapter_unit(Server::State& s, const nlohmann::json& unit, const std::string& who,
                           const std::string& model, const std::vector<std::string>& dirs, const UploadLimits& limits,
                           GenerationParams& p);

// The native API's "ip_adapter" object; on a bad field answers 400 and returns false.
bool apply_native_ip_adapter(Server::State& s, const nlohmann::json& body, const std::string& model,
                             const std::vector<std::string>& dirs, GenerationParams& p, nlohmann::json* echo,
                             httplib::Response& res);
// Bytes of its base64 images (they may exceed max_body_bytes as images do).
size_t native_ip_adapter_image_bytes(const nlohmann::json& body);

}  // namespace diffuse::server
