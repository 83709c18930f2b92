#include "server/server.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "hub/hub_cache.h"
#include "server/auth.h"
#include "server/controlnet_request.h"
#include "server/edit_request.h"
#include "server/redis_job_queue.h"
#include "server/server_state.h"

namespace fs = std::filesystem;

namespace diffuse::web {
struct Asset {
  std::string_view name;
  std::string_view data;
};
const Asset* find_asset(std::string_view name);
}  // namespace diffuse::web

namespace diffuse::server {
namespace {

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The routes that take images (init images, masks, PNG Info): their bodies may
// exceed ServerOptions::max_body_bytes by the upload limits.
bool uploads_allowed(const httplib::Request& req) {
  if (req.method != "POST") return false;
  return req.path == "/api/jobs" || req.path == "/sdapi/v1/img2img" || req.path == "/sdapi/v1/png-info" ||
         req.path == "/sdapi/v1/txt2img" ||  // ControlNet units carry images (controlnet_request.h)
         req.path == "/v1/images/edits" || req.path == "/sdapi/v1/extra-single-image" ||
         req.path == "/sdapi/v1/extra-batch-images" ||
         req.path == "/controlnet/detect";  // preprocessor input images (controlnet_preprocess_api.h)
}

const char* mime_for(const std::string& name) {
  auto ends = [&](const char* ext) {
    std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".png")) return "image/png";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

std::string default_data_dir() {
  if (const char* x = std::getenv("XDG_DATA_HOME")) return (fs::path(x) / "diffuse").string();
  if (const char* h = std::getenv("HOME")) return (fs::path(h) / ".local/share/diffuse").string();
  return "diffuse-data";
}

void ServerOptions::validate() const {
  DIFFUSE_CHECK_ARG(port >= 0 && port <= 65535, "port must be between 0 and 65535");
  DIFFUSE_CHECK_ARG(is_loopback(host) || !api_key.empty() || !api_auth.empty(),
                    "binding to " + host + " exposes the server beyond this machine: set --api-key or --api-auth");
  parse_api_auth(api_auth);  // throws on a malformed user:password list
  DIFFUSE_CHECK_ARG(max_loaded >= 1, "--max-loaded must be at least 1");
  for (const std::string& arch : random_models) {
    DIFFUSE_CHECK_ARG(arch == "sd15" || arch == "sd21" || arch == "sdxl",
                      "--random-model '" + arch + "': the architectures are sd15, sd21 and sdxl");
  }
}

int http_status_for(const Error& e) {
  switch (e.code()) {
    case ErrorCode::kInvalidArgument: return 422;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kUnsupported: return 501;
    case ErrorCode::kCancelled: return 409;
    case ErrorCode::kOutOfMemory: return 507;
    default: return 500;
  }
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  const char* kind = status == 404 ? "NotFound" : status == 401 ? "Unauthorized" : status < 500 ? "BadRequest" : "ServerError";
  nlohmann::json j = {{"error", kind}, {"detail", message}, {"errors", message}};
  res.set_content(j.dump(), "application/json");
}

int json_nesting_depth(const std::string& text, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') max_depth = std::max(max_depth, ++depth);
    else if (c == ']' || c == '}') --depth;
    if (max_depth > limit) break;
  }
  return max_depth;
}

nlohmann::json numeric_string_as_number(const nlohmann::json& v) {
  if (!v.is_string()) return v;
  const std::string& text = v.get_ref<const std::string&>();
  const size_t b = text.find_first_not_of(" \t\n\r");
  if (b == std::string::npos || text.size() > 64) return v;
  const std::string t = text.substr(b, text.find_last_not_of(" \t\n\r") - b + 1);
  // Only digits, one sign, one '.', one exponent: no "nan", "inf" or hex.
  if (t.find_first_not_of("0123456789+-.eE") != std::string::npos) return v;
  // nlohmann's own number grammar (JSON numbers, after an optional '+' that JSON lacks).
  nlohmann::json n = nlohmann::json::parse(t[0] == '+' ? t.substr(1) : t, nullptr, false);
  return n.is_number() ? n : v;
}

bool parse_body(const httplib::Request& req, httplib::Response& res, nlohmann::json* out) {
  if (req.body.empty()) {
    *out = nlohmann::json::object();
    return true;
  }
  if (json_nesting_depth(req.body, kMaxJsonDepth) > kMaxJsonDepth) {
    send_error(res, 400, "the request body is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return false;
  }
  *out = nlohmann::json::parse(req.body, nullptr, false);
  if (out->is_discarded() || !out->is_object()) {
    send_error(res, 400, "the request body must be a JSON object");
    return false;
  }
  return true;
}

SamplerChoice resolve_sampler_or_throw(const std::string& name) {
  if (std::optional<SamplerChoice> c = resolve_sampler(name)) return *c;
  throw_error(ErrorCode::kNotFound, "Sampler not found: " + name + " (one of " + sampler_names_list() + ")");
}

std::string canonical_sampler(const std::string& name) { return resolve_sampler_or_throw(name).sampler->name; }

std::string Server::State::model_or_current(const std::string& requested) {
  if (!requested.empty()) {
    auto e = models->find(requested);
    if (!e) throw_error(ErrorCode::kNotFound, "model '" + requested + "' not found");
    return e->id;
  }
  std::lock_guard<std::mutex> lock(current_mu);
  if (current_model.empty()) current_model = models->default_model();
  if (current_model.empty()) {
    throw_error(ErrorCode::kNotFound, "no models: start the server with --models DIR or pull one (diffuse pull sd15)");
  }
  return current_model;
}

std::string Server::State::base_url(const httplib::Request& req) const {
  std::string host = req.get_header_value("Host");
  if (host.empty()) host = options.host + ":" + std::to_string(port);
  return "http://" + host;
}

Server::Server(ServerOptions options) : state_(std::make_unique<State>()) {
  options.validate();
  if (options.data_dir.empty()) options.data_dir = default_data_dir();
  State& s = *state_;
  s.options = options;
  ModelRegistry::Options ro;
  ro.model_dirs = options.model_dirs;
  ro.model_files = options.model_files;
  ro.random_archs = options.random_models;
  ro.scan_hf_cache = options.scan_hf_cache;
  ro.max_loaded = options.max_loaded;
  ro.load = options.load;
  s.models = std::make_unique<ModelRegistry>(ro);
  s.history = std::make_unique<History>(options.data_dir);
  s.previews = std::make_shared<LivePreviewer>(options.preview);
  s.jobs = make_job_queue(*s.models, *s.history, s.previews,
                          QueueOptions{options.queue, options.queue_result_ttl_s});
  s.telemetry = sys::Telemetry::open();
  AdapterLibraryOptions ao;
  ao.lora_dirs = options.lora_dirs;
  ao.embedding_dirs = options.embedding_dirs;
  ao.allow_paths = false;  // a client names LoRAs of the folders, never other files of this machine
  if (options.scan_hf_cache) {
    ao.hf_snapshot = [](const std::string& repo) -> std::optional<std::string> {
      try {
        return hub::resolve_cached(repo, hub::HubOptions::from_env());
      } catch (const Error&) {
        return std::nullopt;
      }
    };
  }
  s.adapters = std::make_unique<AdapterLibrary>(std::move(ao));
  s.vaes = std::make_unique<VaeLibrary>(options.vae_dirs);
  s.upscalers = std::make_shared<UpscalerLibrary>(options.upscaler_dirs);
  s.upscalers->set_allow_paths(false);  // a client names listed models only
  set_sd_vae(s, options.default_vae, /*allow_path=*/true);  // an unknown default VAE stops the start

  httplib::Server& http = s.http;
  // Image uploads need large bodies on the routes that take them
  // (uploads_allowed); every other route keeps max_body_bytes (pre-routing below).
  UploadLimits upload;
  upload.max_bytes = options.max_upload_bytes;
  upload.max_side = options.max_upload_side;
  http.set_payload_max_length(max_body_with_images(upload, 2, options.max_body_bytes));
  http.new_task_queue = [] { return new httplib::ThreadPool(32); };
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const Error& e) {
      send_error(res, http_status_for(e), e.what());
    } catch (const nlohmann::json::exception& e) {
      send_error(res, 422, std::string("invalid field type or value: ") + e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
    } catch (...) {
      send_error(res, 500, "unknown error");
    }
  });
  auto auth = std::make_shared<const Authenticator>(options.api_key, options.api_auth);
  const size_t max_body = options.max_body_bytes;
  http.set_pre_routing_handler([auth, max_body](const httplib::Request& req, httplib::Response& res) {
    if (auth->allows(req.get_header_value("Authorization"), req.get_header_value("X-API-Key"))) {
      // A body too large for a route without uploads is refused before it is read.
      if (!uploads_allowed(req) && req.has_header("Content-Length") &&
          req.get_header_value<uint64_t>("Content-Length") > max_body) {
        send_error(res, 413, "the request body is larger than " + std::to_string(max_body) + " bytes");
        res.set_header("Connection", "close");  // its unread body must not be taken for the next request
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    // The Basic challenge makes a browser show its login prompt for the page;
    // it then sends the same credentials with the page's own fetches and
    // EventSource streams (same origin).
    res.set_header("WWW-Authenticate", "Basic realm=\"diffuse\", charset=\"UTF-8\"");
    send_error(res, 401,
               "missing or wrong API key or credentials (send Authorization: Bearer KEY, or Basic user:password)");
    return httplib::Server::HandlerResponse::Handled;
  });

  // The embedded page and its assets.
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const web::Asset* a = web::find_asset("index.html");
    if (!a) return send_error(res, 404, "web page not embedded");
    res.set_content(std::string(a->data), "text/html; charset=utf-8");
  });
  http.Get(R"(/static/([A-Za-z0-9_.-]+))", [](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    const web::Asset* a = web::find_asset(name);
    if (!a || name.find("..") != std::string::npos) return send_error(res, 404, "no such file: " + name);
    res.set_content(std::string(a->data), mime_for(name));
  });
  // The sampler catalogue (sampling/sampler_catalog.h): the web page builds its sampler list from it.
  http.Get("/api/samplers", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(sampler_catalog_json().dump(), "application/json");
  });
  // Prometheus text: queue depth, jobs by state, workers (JobQueue::metrics_text).
  http.Get("/metrics", [&s](const httplib::Request&, httplib::Response& res) {
    res.set_content(s.jobs->metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
  });
  register_native_routes(s);
  register_adapter_routes(s);
  register_extras_routes(s);
  register_vae_routes(s);
  register_hires_routes(s);
  register_a1111_routes(s);
  register_controlnet_routes(s);  // controlnet_request.h
  register_openai_routes(s);
}

Server::~Server() { stop(); }

int Server::bind() {
  State& s = *state_;
  if (s.options.port == 0) {
    s.port = s.http.bind_to_any_port(s.options.host);
  } else {
    s.port = s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1;
  }
  if (s.port <= 0) {
    throw_error(ErrorCode::kIo, "cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                                    " (is the port in use?)");
  }
  return s.port;
}

void Server::run() {
  State& s = *state_;
  s.run_phase = 1;
  if (!s.stop_requested) s.http.listen_after_bind();
  s.run_phase = 2;
}

void Server::stop() {
  if (!state_) return;
  // Jobs first: httplib's stop() joins its handler threads, and those may be
  // waiting on a job (A1111/OpenAI requests, SSE streams). Cancelling wakes
  // them; the running job stops at its next step and commits nothing.
  State& s = *state_;
  s.stop_requested = true;
  s.jobs->shutdown();
  // httplib's stop() does nothing until listen has started: a stop() racing a
  // just-started run() waits for that moment.
  while (s.run_phase == 1 && !s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.http.stop();
}

}  // namespace diffuse::server
