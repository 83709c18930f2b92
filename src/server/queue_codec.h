// A job as it travels through Redis (docs/deploy.md, "How the queue works"):
// the JobRequest the API routes built (every API's parameters parsed once, on
// the front end, by the same code as a local server) as JSON, and back on the
// worker. Images of an edit travel as raw base64 pixels.
//
// Not carried (the front end refuses the job with kUnsupported, HTTP 501):
// ControlNet units, a loaded refiner pipeline (a refiner path is carried),
// hires-fix upscaler models (the latent modes, Lanczos, Nearest and None
// work), fixed initial latents and shared generators (multi-pass internals).
#pragma once
#include <nlohmann/json.hpp>

#include "server/job_queue.h"

namespace diffuse::server {

nlohmann::json encode_job_request(const JobRequest& request);
// Throws Error(kInvalidArgument) naming a missing or malformed field.
JobRequest decode_job_request(const nlohmann::json& j);

}  // namespace diffuse::server
