// OpenAI Images API: POST /v1/images/generations ({prompt, model, n, size,
// response_format: url|b64_json}) and GET /v1/models. Errors use OpenAI's
// shape: {"error": {"message", "type", "param", "code"}}.
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "server/base64.h"
#include "server/client_watch.h"
#include "server/server_state.h"

namespace diffuse::server {
namespace {

void openai_error(httplib::Response& res, int status, const std::string& message, const std::string& param = "",
                  const std::string& code = "") {
  res.status = status;
  nlohmann::json e = {{"message", message},
                      {"type", status >= 500 ? "server_error" : "invalid_request_error"},
                      {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
                      {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)}};
  res.set_content(nlohmann::json({{"error", e}}).dump(), "application/json");
}

// POST /v1/images/generations.
void generate(Server::State& s, const httplib::Request& req, httplib::Response& res) {
  if (json_nesting_depth(req.body, kMaxJsonDepth) > kMaxJsonDepth) {
    return openai_error(res, 400, "the request body is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  const nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return openai_error(res, 400, "the request body must be a JSON object");
  auto has = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  if (!has("prompt") || !body["prompt"].is_string()) {
    return openai_error(res, 400, "prompt is required and must be a string", "prompt", "missing_required_parameter");
  }
  int n = 1;
  if (has("n")) {
    if (!body["n"].is_number_integer()) return openai_error(res, 400, "n must be an integer", "n", "invalid_value");
    const int64_t v = body["n"].get<int64_t>();
    if (body["n"].is_number_unsigned() && body["n"].get<uint64_t>() > 10) {
      return openai_error(res, 400, "n must be between 1 and 10", "n", "invalid_value");
    }
    if (v < 1 || v > 10) return openai_error(res, 400, "n must be between 1 and 10", "n", "invalid_value");
    n = static_cast<int>(v);
  }
  std::string format = "url";
  if (has("response_format")) {
    if (!body["response_format"].is_string()) {
      return openai_error(res, 400, "response_format must be a string", "response_format", "invalid_value");
    }
    format = body["response_format"].get<std::string>();
  }
  if (format != "url" && format != "b64_json") {
    return openai_error(res, 400, "response_format must be 'url' or 'b64_json'", "response_format", "invalid_value");
  }
  std::string model;
  try {
    std::string requested = has("model") && body["model"].is_string() ? body["model"].get<std::string>() : "";
    // OpenAI model names (dall-e-2, gpt-image-1...) mean "the current model".
    if (requested.rfind("dall-e", 0) == 0 || requested.rfind("gpt-image", 0) == 0) requested.clear();
    model = s.model_or_current(requested);
  } catch (const Error& e) {
    return openai_error(res, 404, e.what(), "model", "model_not_found");
  }
  GenerationParams p;
  p.prompt = body["prompt"].get<std::string>();
  if (has("negative_prompt") && body["negative_prompt"].is_string()) {
    p.negative_prompt = body["negative_prompt"].get<std::string>();
  }
  std::string size = "auto";
  if (has("size")) {
    if (!body["size"].is_string()) return openai_error(res, 400, "size must be a string", "size", "invalid_value");
    size = body["size"].get<std::string>();
  }
  if (size != "auto") {
    int w = 0, h = 0, used = 0;
    char x = 0;
    if (std::sscanf(size.c_str(), "%5d%c%5d%n", &w, &x, &h, &used) != 3 || x != 'x' ||
        used != static_cast<int>(size.size())) {
      return openai_error(res, 400, "size must be WIDTHxHEIGHT (e.g. 512x512) or auto", "size", "invalid_value");
    }
    p.width = w;
    p.height = h;
  }
  p.images = n;
  p.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  p.seed_per_image = true;
  if (has("steps")) p.steps = json_field<int>(body, "steps", 0);  // LocalAI-style extra
  try {
    p.validate();
  } catch (const Error& e) {
    const std::string msg = e.what();
    const bool about_size = msg.rfind("width", 0) == 0 || msg.rfind("height", 0) == 0;
    return openai_error(res, 400, msg, about_size ? "size" : "", "invalid_value");
  }
  JobRequest r;
  r.model = model;
  r.params = p;
  r.echo = body;
  std::string id = s.jobs->submit(std::move(r));
  ClientWatch watch(req, s.port);  // a client that hangs up stops its job
  JobSnapshot done = s.jobs->wait_finished(id, [&watch] { return watch.client_gone(); });
  if (done.state != JobState::kDone) {
    return openai_error(res, done.state == JobState::kCancelled ? 409 : 500,
                        done.error.empty() ? "generation was cancelled" : done.error);
  }
  nlohmann::json data = nlohmann::json::array();
  for (const JobImage& im : done.images) {
    if (format == "url") {
      data.push_back({{"url", s.base_url(req) + "/images/" + im.file}, {"revised_prompt", p.prompt}});
    } else {
      std::ifstream f(s.history->images_dir() + "/" + im.file, std::ios::binary);
      std::ostringstream ss;
      ss << f.rdbuf();
      data.push_back({{"b64_json", base64_encode(ss.str())}, {"revised_prompt", p.prompt}});
    }
  }
  res.set_content(nlohmann::json({{"created", static_cast<int64_t>(std::time(nullptr))}, {"data", data}}).dump(),
                  "application/json");
}

}  // namespace

void register_openai_routes(Server::State& s) {
  httplib::Server& http = s.http;

  http.Get("/v1/models", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json data = nlohmann::json::array();
    for (const ModelEntry& m : s.models->list()) {
      data.push_back({{"id", m.id}, {"object", "model"}, {"created", 0}, {"owned_by", "diffuse"}});
    }
    res.set_content(nlohmann::json({{"object", "list"}, {"data", data}}).dump(), "application/json");
  });

  http.Post("/v1/images/generations", [&s](const httplib::Request& req, httplib::Response& res) {
    // Every failure answers in OpenAI's error shape (SDKs parse error.message).
    try {
      generate(s, req, res);
    } catch (const Error& e) {
      openai_error(res, http_status_for(e) == 422 ? 400 : http_status_for(e), e.what());
    } catch (const std::exception& e) {
      openai_error(res, 500, e.what());
    }
  });
}

}  // namespace diffuse::server
