// VAEs over HTTP (server/vae_library.h, docs/vae.md), as A1111's
// modules/api/api.py and modules/sd_vae.py:
//   GET  /sdapi/v1/sd-vae       [{model_name, filename}] of the VAE folders
//   POST /sdapi/v1/refresh-vae  rescans them -> null
// The sd_vae option (GET/POST /sdapi/v1/options, override_settings of
// txt2img/img2img) and the native API's "vae" field name one of them,
// "Automatic" or "None" (the model's own VAE); an unknown name is answered 400.
#include <filesystem>

#include "server/server_state.h"

namespace fs = std::filesystem;

namespace diffuse::server {

std::string resolve_request_vae(Server::State& s, const std::string& requested) {
  if (requested.empty()) {
    std::lock_guard<std::mutex> lock(s.current_mu);
    return s.sd_vae_path;
  }
  return s.vaes->resolve(requested);
}

std::string current_sd_vae(Server::State& s) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(s.current_mu);
    path = s.sd_vae_path;
  }
  return s.vaes->name_of(path);
}

void set_sd_vae(Server::State& s, const std::string& name, bool allow_path) {
  std::string path;
  std::error_code ec;
  if (allow_path && !is_automatic_vae(name) && fs::exists(name, ec)) {
    path = fs::absolute(name).lexically_normal().string();
  } else {
    path = s.vaes->resolve(name);
  }
  std::lock_guard<std::mutex> lock(s.current_mu);
  s.sd_vae_path = path;
}

void register_vae_routes(Server::State& s) {
  httplib::Server& http = s.http;
  http.Get("/sdapi/v1/sd-vae", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const VaeEntry& e : s.vaes->list()) out.push_back({{"model_name", e.model_name}, {"filename", e.filename}});
    res.set_content(out.dump(), "application/json");
  });
  // A1111 clients POST this with no body (see /sdapi/v1/interrupt in api_a1111.cpp).
  http.Post("/sdapi/v1/refresh-vae",
            [&s](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
              if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
                read([](const char*, size_t) { return true; });
              }
              s.vaes->refresh();
              res.set_content("null", "application/json");
            });
}

}  // namespace diffuse::server
