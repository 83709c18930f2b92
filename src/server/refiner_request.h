// The SDXL refiner fields of the HTTP APIs (docs/refiner.md), resolved to a
// model of the server's registry and loaded beside the base:
//   A1111 (/sdapi/v1/txt2img, img2img): refiner_checkpoint (a title or name of
//   /sdapi/v1/sd-models; "" or "None": none), refiner_switch_at (default 0.8),
//   and the settings sdxl_refiner_high_aesthetic_score /
//   sdxl_refiner_low_aesthetic_score in override_settings;
//   native (/api/jobs): "refiner": {"model", "switch_at", "aesthetic_score",
//   "negative_aesthetic_score"} (or "refiner": "name").
// An unknown model is Error(kNotFound) naming it (404); a bad value
// kInvalidArgument naming the field (422).
#pragma once
#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"
#include "server/server_state.h"

namespace diffuse::server {

void apply_a1111_refiner(Server::State& s, const nlohmann::json& body, const nlohmann::json& overrides,
                         GenerationParams& p);
void apply_native_refiner(Server::State& s, const nlohmann::json& body, GenerationParams& p);

}  // namespace diffuse::server
