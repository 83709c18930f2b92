// Internals shared by the server's route files (not a public header).
#pragma once
#include <httplib.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "server/history.h"
#include "server/job_queue.h"
#include "server/model_registry.h"
#include "server/server.h"
#include "sys/telemetry.h"

namespace diffuse::server {

struct Server::State {
  ServerOptions options;
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<History> history;
  std::unique_ptr<JobQueue> jobs;
  std::unique_ptr<sys::Telemetry> telemetry;
  std::mutex telemetry_mu;
  httplib::Server http;
  int port = 0;
  std::mutex current_mu;
  std::string current_model;  // A1111 sd_model_checkpoint / OpenAI default

  std::string model_or_current(const std::string& requested);
  std::string base_url(const httplib::Request& req) const;
};

// Errors as JSON: {"error": kind, "detail": message} (A1111-style); OpenAI routes use their own shape.
void send_error(httplib::Response& res, int status, const std::string& message);
int http_status_for(const Error& e);
// Parses a JSON body or answers 400 and returns false.
bool parse_body(const httplib::Request& req, httplib::Response& res, nlohmann::json* out);
// Sampler name from any common spelling (A1111 "Euler a", "k_euler_a", ComfyUI "euler_ancestral", ours).
std::string canonical_sampler(const std::string& name);

void register_native_routes(Server::State& s);
void register_a1111_routes(Server::State& s);
void register_openai_routes(Server::State& s);

}  // namespace diffuse::server
