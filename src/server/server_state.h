// Internals shared by the server's route files (not a public header).
#pragma once
#include <httplib.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters/library.h"
#include "adapters/upscalers.h"
#include "sampling/sampler_catalog.h"
#include "server/history.h"
#include "server/job_queue.h"
#include "server/model_registry.h"
#include "server/server.h"
#include "server/vae_library.h"
#include "sys/telemetry.h"

namespace diffuse::server {

struct Server::State {
  ServerOptions options;
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<History> history;
  std::unique_ptr<JobQueue> jobs;
  std::unique_ptr<sys::Telemetry> telemetry;
  std::unique_ptr<AdapterLibrary> adapters;  // the LoRA and embedding folders
  std::mutex extras_mu;                       // one /sdapi/v1/extra-* upscale at a time (A1111's queue_lock)
  std::unique_ptr<VaeLibrary> vaes;          // the VAE folders (api_vae.cpp)
  std::shared_ptr<LivePreviewer> previews;   // the job queue's live previews (options.preview at start)
  std::shared_ptr<UpscalerLibrary> upscalers;  // the upscaler folders: hires fix, /sdapi/v1/upscalers (hires_request.h)
  std::mutex telemetry_mu;
  httplib::Server http;
  int port = 0;
  std::atomic<bool> stop_requested{false};
  std::atomic<int> run_phase{0};  // 0 before run(), 1 inside, 2 returned
  std::mutex current_mu;
  std::string current_model;  // A1111 sd_model_checkpoint / OpenAI default
  int default_clip_skip = 1;  // A1111 CLIP_stop_at_last_layers (POST /sdapi/v1/options)
  std::string sd_vae_path;    // A1111 sd_vae resolved: the default VAE's path, "" = the model's own

  std::string model_or_current(const std::string& requested);
  std::string base_url(const httplib::Request& req) const;
};

// Errors as JSON: {"error": kind, "detail": message} (A1111-style); OpenAI routes use their own shape.
void send_error(httplib::Response& res, int status, const std::string& message);
int http_status_for(const Error& e);
// Parses a JSON body or answers 400 and returns false.
bool parse_body(const httplib::Request& req, httplib::Response& res, nlohmann::json* out);
// Request bodies nested deeper than this are refused before parsing: nlohmann's
// recursive parse/dump/destroy would otherwise overflow the stack (a remote crash).
constexpr int kMaxJsonDepth = 64;
// The nesting depth of JSON text ([ and { outside strings), stopping early past `limit`.
int json_nesting_depth(const std::string& text, int limit);
// A numeric string as a JSON number, as A1111's pydantic (v1) coerces one:
// "20" -> 20, " -1 " -> -1, "7.5" -> 7.5 (surrounding whitespace allowed).
// Anything else (including "", "nan", "inf", "20abc") is returned unchanged,
// so the caller's type check rejects it.
nlohmann::json numeric_string_as_number(const nlohmann::json& v);

// A request field converted with range checks: integers must be JSON integers
// that fit T (nlohmann's get<int> would silently wrap 1e10), floats finite
// numbers, strings strings. Numbers may come as numeric strings ("20"), as
// A1111 accepts them. Absent or null gives `fallback`; anything else
// throws kInvalidArgument naming the field (answered as 422).
template <class T>
T json_field(const nlohmann::json& j, const char* name, T fallback) {
  if (!j.is_object() || !j.contains(name) || j[name].is_null()) return fallback;
  const nlohmann::json& raw = j[name];
  const nlohmann::json v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool> && raw.is_string()
                               ? numeric_string_as_number(raw)
                               : raw;
  auto fail = [&](const char* what) {
    throw_error(ErrorCode::kInvalidArgument, std::string("field '") + name + "' must be " + what + ", got " +
                                                 v.dump().substr(0, 64));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) fail("true or false");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) fail("a smaller integer");
      return static_cast<T>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) fail("an integer");
    const int64_t x = v.get<int64_t>();
    if (x < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        x > static_cast<int64_t>(std::numeric_limits<T>::max())) {
      fail("an integer in range");
    }
    return static_cast<T>(x);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) fail("a number");
    const double x = v.get<double>();
    if (!std::isfinite(x) || std::abs(x) > static_cast<double>(std::numeric_limits<T>::max())) fail("a finite number");
    return static_cast<T>(x);
  } else {
    if (!v.is_string()) fail("a string");
    return v.get<std::string>();
  }
}

// The sampler of any spelling the catalogue knows (A1111 "Euler a", "k_euler_a",
// "DPM++ 2M Karras", ComfyUI "euler_ancestral", ours; sampling/sampler_catalog.h
// resolve_sampler); throws kNotFound "Sampler not found: ..." otherwise.
SamplerChoice resolve_sampler_or_throw(const std::string& name);
// Its catalogue name.
std::string canonical_sampler(const std::string& name);

// LoRA and embeddings for one request (api_adapters.cpp): the <lora:...> tags
// of p.prompt resolved in the LoRA folders into p.loras and removed from the
// prompt the model sees (A1111 reads the positive prompt's tags only), and
// the embedding folders set. *written_prompt gets the prompt as written when
// tags were removed ("" otherwise: JobRequest::written_prompt), *warnings a
// note for each tag or argument that is not applied. Throws
// Error(kInvalidArgument) naming an unknown LoRA or a bad tag: the routes
// answer it 400.
void apply_prompt_adapters(Server::State& s, GenerationParams& p, std::string* written_prompt,
                           std::vector<std::string>* warnings);

// The VAE of one request (api_vae.cpp): `requested` is an sd_vae value
// ("Automatic", "None", a name in the VAE folders) or "" for the server's
// current sd_vae; returns the path for GenerationParams::vae ("" = the model's
// own). Throws Error(kInvalidArgument) naming an unknown VAE (answered 400).
// apply_prompt_adapters resolves p.vae with it, so routes put the requested
// name there.
std::string resolve_request_vae(Server::State& s, const std::string& requested);
// A1111's sd_vae option: the current value ("Automatic" or a name), and
// setting it (throws as resolve_request_vae). Only the server's own start
// (--vae) may name a path outside the VAE folders (allow_path).
std::string current_sd_vae(Server::State& s);
void set_sd_vae(Server::State& s, const std::string& name, bool allow_path = false);

void register_native_routes(Server::State& s);
void register_vae_routes(Server::State& s);
void register_hires_routes(Server::State& s);  // hires_request.cpp
void register_adapter_routes(Server::State& s);
void register_extras_routes(Server::State& s);  // api_extras.cpp: /sdapi/v1/extra-single-image, extra-batch-images
void register_a1111_routes(Server::State& s);
void register_openai_routes(Server::State& s);

}  // namespace diffuse::server
