// The ControlNet preprocessors on the HTTP API (docs/controlnet.md
// "Preprocessors"), as sd-webui-controlnet's scripts/api.py defines them:
//   GET  /controlnet/module_list  {"module_list": [usable names], "module_detail":
//        {name: {"model_free", "sliders", "available", "reason"?}}} — every
//        preprocessor, the network ones with available false and the reason;
//   POST /controlnet/detect       {"controlnet_module", "controlnet_input_images": [b64],
//        "controlnet_processor_res", "controlnet_threshold_a", "controlnet_threshold_b",
//        "controlnet_masks": [b64] (inpaint), "controlnet_seed" (shuffle; Diffuse's
//        addition, default 0)} -> {"images": [b64 PNG], "info": "Success"};
// and the unit fields module / processor_res / threshold_a / threshold_b /
// pixel_perfect / mask of alwayson_scripts.controlnet.args (controlnet_request.cpp).
// Bad input answers 400 naming the field: an unknown module (listing the
// usable ones), an unavailable one (with the reason), a value outside its
// slider's range, an image that is not a PNG, a missing mask.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"
#include "server/edit_request.h"
#include "server/server_state.h"

namespace diffuse::server {

nlohmann::json controlnet_module_list_json();

// Runs the unit's preprocessor (u["module"]) on unit.image, in place: the
// control map replaces the image, unit.module records the name, and inpaint
// preprocessors set unit.mask (from u["mask"], {"image", "mask"}, or for a
// unit without its own image, the img2img inpainting mask). pixel_perfect
// picks the processor resolution from the output size p.width x p.height
// (0: the image's). `seed`: the shuffle's numpy seed. Throws kInvalidArgument naming `who`.
void preprocess_controlnet_unit(const nlohmann::json& u, const std::string& who, const GenerationParams& p,
                                uint32_t seed, const UploadLimits& limits, bool unit_has_image, ControlNetUnit& unit);

// sd-webui-controlnet's numpy seed for a generation: (seed + subseed) mod 2^32,
// the subseed being the seed when the request has none (A1111's -1).
uint32_t controlnet_numpy_seed(int64_t seed);

void register_controlnet_preprocess_routes(Server::State& s);

}  // namespace diffuse::server
