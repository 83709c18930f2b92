// OpenAI Images API: POST /v1/images/generations ({prompt, model, n, size,
// response_format: url|b64_json}), POST /v1/images/edits (multipart: image,
// mask, prompt, n, size, response_format, model) and GET /v1/models. Errors use OpenAI's
// shape: {"error": {"message", "type", "param", "code"}}. <lora:name:w> tags in
// the prompt apply LoRAs (api_adapters.cpp; an unknown one: 400, param "prompt").
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "server/base64.h"
#include "server/client_watch.h"
#include "server/edit_request.h"
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

// "WIDTHxHEIGHT".
bool parse_size(const std::string& size, int* width, int* height) {
  int w = 0, h = 0, used = 0;
  char x = 0;
  if (std::sscanf(size.c_str(), "%5d%c%5d%n", &w, &x, &h, &used) != 3 || x != 'x' ||
      used != static_cast<int>(size.size())) {
    return false;
  }
  *width = w;
  *height = h;
  return true;
}

// The prompt's <lora:...> tags and the embedding folders (api_adapters.cpp);
// false after answering 400 for an unknown LoRA or a bad tag.
bool apply_adapters(Server::State& s, GenerationParams& p, JobRequest* r, httplib::Response& res) {
  try {
    apply_prompt_adapters(s, p, &r->written_prompt, &r->warnings);
    return true;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    openai_error(res, 400, e.what(), "prompt", "invalid_value");
    return false;
  }
}

// Submits the job, waits for it and answers {created, data: [{url | b64_json, revised_prompt}]}.
void run_and_respond(Server::State& s, const httplib::Request& req, httplib::Response& res, JobRequest r,
                     const std::string& format) {
  const std::string prompt = r.written_prompt.empty() ? r.params.prompt : r.written_prompt;
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
      data.push_back({{"url", s.base_url(req) + "/images/" + im.file}, {"revised_prompt", prompt}});
    } else {
      std::ifstream f(s.history->images_dir() + "/" + im.file, std::ios::binary);
      std::ostringstream ss;
      ss << f.rdbuf();
      data.push_back({{"b64_json", base64_encode(ss.str())}, {"revised_prompt", prompt}});
    }
  }
  nlohmann::json out = {{"created", static_cast<int64_t>(std::time(nullptr))}, {"data", data}};
  if (!done.warnings.empty()) out["warnings"] = done.warnings;  // ours: e.g. the size rounded to multiples of 8
  res.set_content(out.dump(), "application/json");
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
  if (size != "auto" && !parse_size(size, &p.width, &p.height)) {
    return openai_error(res, 400, "size must be WIDTHxHEIGHT (e.g. 512x512) or auto", "size", "invalid_value");
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
  if (!apply_adapters(s, p, &r, res)) return;
  r.model = model;
  r.params = p;
  r.echo = body;
  run_and_respond(s, req, res, std::move(r), format);
}

// A form field of a multipart body as text ("" when absent).
std::string form_text(const httplib::Request& req, const char* name) {
  return req.has_file(name) ? req.get_file_value(name).content : std::string();
}

// POST /v1/images/edits (multipart/form-data): `image` (PNG), optional `mask`
// (PNG; its transparent pixels are the area to edit, as OpenAI defines it;
// without one, the image's own transparent pixels are), `prompt`, `n`,
// `size`, `response_format`, `model`. Edits are inpainting at strength 1.0
// unless the non-standard `strength` field says otherwise, with no mask blur
// (the opaque area is kept exactly) unless `mask_blur` says otherwise;
// `negative_prompt`, `steps` and `seed` are extras of ours.
void edit(Server::State& s, const httplib::Request& req, httplib::Response& res) {
  if (!req.is_multipart_form_data()) {
    return openai_error(res, 400, "the request must be multipart/form-data (fields image, mask, prompt, n, size)");
  }
  // The SDKs send one image as "image", a list as "image[]" (the first is used).
  const char* image_field = req.has_file("image") ? "image" : req.has_file("image[]") ? "image[]" : nullptr;
  if (!image_field) {
    return openai_error(res, 400, "image is required: a PNG file", "image", "missing_required_parameter");
  }
  if (!req.has_file("prompt")) {
    return openai_error(res, 400, "prompt is required and must be a string", "prompt", "missing_required_parameter");
  }
  int n = 1;
  if (req.has_file("n")) {
    const std::string text = form_text(req, "n");
    char* end = nullptr;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v < 1 || v > 10) {
      return openai_error(res, 400, "n must be an integer between 1 and 10", "n", "invalid_value");
    }
    n = static_cast<int>(v);
  }
  const std::string format = req.has_file("response_format") ? form_text(req, "response_format") : "url";
  if (format != "url" && format != "b64_json") {
    return openai_error(res, 400, "response_format must be 'url' or 'b64_json'", "response_format", "invalid_value");
  }
  std::string model;
  try {
    std::string requested = form_text(req, "model");
    if (requested.rfind("dall-e", 0) == 0 || requested.rfind("gpt-image", 0) == 0) requested.clear();
    model = s.model_or_current(requested);
  } catch (const Error& e) {
    return openai_error(res, 404, e.what(), "model", "model_not_found");
  }
  UploadLimits limits;
  limits.max_bytes = s.options.max_upload_bytes;
  limits.max_side = s.options.max_upload_side;
  GenerationParams p;
  EditParams& e = p.edit;
  const std::string& image = req.get_file_value(image_field).content;
  try {
    e.init_image = decode_rgb_upload(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "image", limits);
  } catch (const Error& err) {
    return openai_error(res, 400, err.what(), "image", "invalid_image");
  }
  if (req.has_file("mask")) {
    const std::string& mask = req.get_file_value("mask").content;
    try {
      e.mask = decode_mask_upload(reinterpret_cast<const uint8_t*>(mask.data()), mask.size(), "mask", limits,
                                  image::MaskConvention::kTransparentIsEdit);
    } catch (const Error& err) {
      return openai_error(res, 400, err.what(), "mask", "invalid_mask");
    }
  } else {
    std::optional<image::Gray> alpha = image::alpha_edit_mask(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    if (!alpha) {
      return openai_error(res, 400,
                          "image has no transparent pixels and no mask was sent: nothing to edit (send a mask whose "
                          "transparent pixels mark the area to edit, or an image with transparency)",
                          "mask", "invalid_mask");
    }
    e.mask = std::move(*alpha);
  }
  e.strength = 1.0;  // OpenAI has no strength: an edit repaints the masked area from noise
  // The opaque area is kept exactly, as OpenAI defines the mask (A1111's
  // feathered overlay is the non-standard `mask_blur` field).
  e.mask_blur = 0;
  if (req.has_file("mask_blur")) {
    const std::string text = form_text(req, "mask_blur");
    char* end = nullptr;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || v < 0 || v > 256) {
      return openai_error(res, 400, "mask_blur must be an integer between 0 and 256", "mask_blur", "invalid_value");
    }
    e.mask_blur = static_cast<int>(v);
  }
  if (req.has_file("strength")) {
    const std::string text = form_text(req, "strength");
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(v >= 0.0 && v <= 1.0)) {
      return openai_error(res, 400, "strength must be a number between 0 and 1", "strength", "invalid_value");
    }
    e.strength = v;
  }
  p.prompt = form_text(req, "prompt");
  if (req.has_file("negative_prompt")) p.negative_prompt = form_text(req, "negative_prompt");
  const std::string size = req.has_file("size") ? form_text(req, "size") : "auto";
  if (size == "auto" || size.empty()) {  // 0: the image's own size (rounded down to multiples of 8 by the pipeline)
    p.width = 0;
    p.height = 0;
  } else if (!parse_size(size, &p.width, &p.height)) {
    return openai_error(res, 400, "size must be WIDTHxHEIGHT (e.g. 512x512) or auto", "size", "invalid_value");
  }
  p.images = n;
  p.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  p.seed_per_image = true;
  try {
    if (req.has_file("steps")) p.steps = std::stoi(form_text(req, "steps"));
    if (req.has_file("seed")) p.seed = std::stoll(form_text(req, "seed"));
  } catch (const std::exception&) {
    return openai_error(res, 400, "steps and seed must be integers", "", "invalid_value");
  }
  try {
    p.validate();
  } catch (const Error& err) {
    const std::string msg = err.what();
    const bool about_size = msg.rfind("width", 0) == 0 || msg.rfind("height", 0) == 0;
    return openai_error(res, 400, msg, about_size ? "size" : "", "invalid_value");
  }
  JobRequest r;
  if (!apply_adapters(s, p, &r, res)) return;
  r.model = model;
  r.params = std::move(p);
  r.echo = {{"prompt", r.written_prompt.empty() ? r.params.prompt : r.written_prompt}, {"n", n}, {"size", size}, {"response_format", format},
            {"model", form_text(req, "model")}, {"strength", e.strength},
            {"image", image_summary(r.params.edit.init_image.width, r.params.edit.init_image.height)}};
  if (!r.params.edit.mask.empty() && req.has_file("mask")) {
    r.echo["mask"] = image_summary(r.params.edit.mask.width, r.params.edit.mask.height);
  }
  run_and_respond(s, req, res, std::move(r), format);
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

  http.Post("/v1/images/edits", [&s](const httplib::Request& req, httplib::Response& res) {
    try {
      edit(s, req, res);
    } catch (const Error& e) {
      openai_error(res, http_status_for(e) == 422 ? 400 : http_status_for(e), e.what());
    } catch (const std::exception& e) {
      openai_error(res, 500, e.what());
    }
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
