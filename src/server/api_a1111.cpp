// AUTOMATIC1111-compatible API (modules/api/api.py), so Open WebUI,
// SillyTavern and webuiapi work unchanged:
//   POST /sdapi/v1/txt2img     GET /sdapi/v1/sd-models   GET /sdapi/v1/samplers
//   GET  /sdapi/v1/schedulers  GET|POST /sdapi/v1/options
//   GET  /sdapi/v1/progress    POST /sdapi/v1/interrupt  POST /sdapi/v1/refresh-checkpoints
// Field names, defaults and response shapes follow A1111: "info" is a JSON
// string, seeds are seed + i per image.
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "server/base64.h"
#include "server/client_watch.h"
#include "server/server_state.h"

namespace diffuse::server {
namespace {

constexpr int kMaxClipSkip = 12;  // GenerationParams::validate's bound, and A1111's "Clip skip" slider

// A1111's name of one of our samplers (its infotext "Sampler:" and sampler_name).
std::string a1111_name(const std::string& ours) {
  const SamplerSpec* r = find_sampler(ours);
  return r ? r->a1111_name : ours;
}

nlohmann::json sd_model_json(const ModelEntry& m) {
  return {{"title", m.hash.empty() ? m.id : m.id + " [" + m.hash + "]"},
          {"model_name", m.id},
          {"hash", m.hash.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.hash)},
          {"sha256", m.sha256.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.sha256)},
          {"filename", m.path},
          {"config", nullptr}};
}

}  // namespace

void register_a1111_routes(Server::State& s) {
  httplib::Server& http = s.http;

  http.Get("/sdapi/v1/sd-models", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const ModelEntry& m : s.models->list()) out.push_back(sd_model_json(m));
    res.set_content(out.dump(), "application/json");
  });

  http.Post("/sdapi/v1/refresh-checkpoints", [&s](const httplib::Request&, httplib::Response& res) {
    s.models->refresh();
    res.set_content("null", "application/json");
  });

  http.Get("/sdapi/v1/samplers", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(a1111_samplers_json().dump(), "application/json");
  });

  http.Get("/sdapi/v1/schedulers", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(a1111_schedulers_json().dump(), "application/json");
  });

  http.Get("/sdapi/v1/options", [&s](const httplib::Request&, httplib::Response& res) {
    std::string current;
    try {
      current = s.model_or_current("");
    } catch (const Error&) {
    }
    int clip_skip = 1;
    {
      std::lock_guard<std::mutex> lock(s.current_mu);
      clip_skip = s.default_clip_skip;
    }
    std::string title = current;
    if (auto m = s.models->find(current); m && !m->hash.empty()) title = m->id + " [" + m->hash + "]";
    nlohmann::json out = {{"sd_model_checkpoint", title},
                          {"sd_checkpoint_hash", s.models->find(current) ? s.models->find(current)->sha256 : ""},
                          {"CLIP_stop_at_last_layers", clip_skip},
                          {"samples_format", "png"},
                          {"sd_checkpoints_limit", s.options.max_loaded}};
    res.set_content(out.dump(), "application/json");
  });

  http.Post("/sdapi/v1/options", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    // Every field is checked before any is applied. Options we do not have are ignored, as before.
    const int clip_skip = json_field<int>(body, "CLIP_stop_at_last_layers", 0);
    DIFFUSE_CHECK_ARG(!body.contains("CLIP_stop_at_last_layers") || (clip_skip >= 1 && clip_skip <= kMaxClipSkip),
                      "CLIP_stop_at_last_layers must be between 1 and " + std::to_string(kMaxClipSkip));
    if (body.contains("sd_model_checkpoint")) {
      std::string want = json_field<std::string>(body, "sd_model_checkpoint", "");
      auto m = s.models->find(want);
      if (!m) return send_error(res, 404, "model '" + want + "' not found");
      s.models->acquire(m->id);  // A1111 loads the checkpoint before answering
      std::lock_guard<std::mutex> lock(s.current_mu);
      s.current_model = m->id;
    }
    if (clip_skip > 0) {
      std::lock_guard<std::mutex> lock(s.current_mu);
      s.default_clip_skip = clip_skip;
    }
    res.set_content("null", "application/json");
  });

  // A1111 clients (webuiapi, SillyTavern, curl -X POST) send this with no body
  // and no Content-Length; httplib 0.11 would answer such a POST 400 before
  // routing while it looks for a body. A content-reader route is dispatched
  // before that: a request without Content-Length or chunked encoding has no
  // body (RFC 9112 6.3), and one with a body ({}) has it read and ignored.
  http.Post("/sdapi/v1/interrupt",
            [&s](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
              if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
                read([](const char*, size_t) { return true; });
              }
              s.jobs->cancel_running();
              res.set_content("null", "application/json");
            });

  http.Get("/sdapi/v1/progress", [&s](const httplib::Request& req, httplib::Response& res) {
    bool skip_image = req.get_param_value("skip_current_image") == "true";
    auto j = s.jobs->running();
    nlohmann::json state = {{"skipped", false}, {"interrupted", j && j->interrupted}, {"stopping_generation", false},
                            {"job", j ? "txt2img" : ""}, {"job_count", static_cast<int>(s.jobs->pending())},
                            {"job_timestamp", "0"}, {"job_no", 0},
                            {"sampling_step", j ? j->step : 0}, {"sampling_steps", j ? j->total_steps : 0}};
    double progress = j && j->total_steps > 0 ? static_cast<double>(j->step) / j->total_steps : 0.0;
    nlohmann::json out = {{"progress", progress},
                          {"eta_relative", j ? j->eta_s : 0.0},
                          {"state", state},
                          {"current_image", (!skip_image && j && !j->preview_png.empty())
                                                ? nlohmann::json(base64_encode(j->preview_png))
                                                : nlohmann::json(nullptr)},
                          {"textinfo", nullptr}};
    res.set_content(out.dump(), "application/json");
  });

  http.Post("/sdapi/v1/txt2img", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    nlohmann::json overrides = body.contains("override_settings") && !body["override_settings"].is_null()
                                   ? body["override_settings"]
                                   : nlohmann::json::object();
    if (!overrides.is_object()) return send_error(res, 422, "override_settings must be an object");
    std::string model = s.model_or_current(json_field<std::string>(overrides, "sd_model_checkpoint", ""));

    GenerationParams p;
    p.prompt = json_field<std::string>(body, "prompt", "");
    p.negative_prompt = json_field<std::string>(body, "negative_prompt", "");
    int64_t seed = json_field<int64_t>(body, "seed", -1);
    if (seed < 0) seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    std::string sampler = json_field<std::string>(body, "sampler_name", "");
    if (sampler.empty()) sampler = json_field<std::string>(body, "sampler_index", "Euler");
    const SamplerChoice choice = resolve_sampler_or_throw(sampler);
    p.sampler = choice.sampler->name;
    // "scheduler" (A1111 1.9+) or a legacy "... Karras" sampler name picks the schedule; the
    // schedules A1111 has and we do not (uniform, exponential, ...) run as "automatic".
    const ScheduleSpec* sched = find_schedule(json_field<std::string>(body, "scheduler", ""));
    const bool karras = choice.schedule == Schedule::kKarras || (sched && sched->id == Schedule::kKarras);
    p.schedule = schedule_spec(karras ? Schedule::kKarras : Schedule::kDefault).name;
    const int batch_size = json_field<int>(body, "batch_size", 1);
    const int n_iter = json_field<int>(body, "n_iter", 1);
    DIFFUSE_CHECK_ARG(batch_size >= 1 && batch_size <= 8, "batch_size must be between 1 and 8");
    DIFFUSE_CHECK_ARG(n_iter >= 1 && n_iter <= 16, "n_iter must be between 1 and 16");
    p.steps = json_field<int>(body, "steps", 50);
    p.cfg_scale = json_field<float>(body, "cfg_scale", 7.0f);
    p.width = json_field<int>(body, "width", 512);
    p.height = json_field<int>(body, "height", 512);
    {
      std::lock_guard<std::mutex> lock(s.current_mu);
      p.clip_skip = s.default_clip_skip;
    }
    p.clip_skip = json_field<int>(overrides, "CLIP_stop_at_last_layers", p.clip_skip);
    p.images = batch_size;
    p.seed_per_image = true;
    p.decode_when_stopped = true;  // /interrupt returns the partial images, as A1111
    p.validate();

    // A client that hangs up stops its job (and the remaining iterations).
    ClientWatch watch(req, s.port);
    std::vector<std::string> images_b64, infotexts;
    std::vector<int64_t> seeds;
    int interrupted_at_step = 0;  // A1111 /interrupt: the later iterations do not run
    for (int it = 0; it < n_iter && interrupted_at_step == 0; ++it) {
      JobRequest r;
      r.model = model;
      r.params = p;
      r.params.seed = seed + static_cast<int64_t>(it) * batch_size;
      r.echo = body;
      std::string id = s.jobs->submit(std::move(r));
      JobSnapshot done = s.jobs->wait_finished(id, [&watch] { return watch.client_gone(); });
      if (done.state == JobState::kCancelled) break;  // hang-up or shutdown: return what was made
      if (done.interrupted) interrupted_at_step = done.stopped_at_step > 0 ? done.stopped_at_step : p.steps;
      if (done.state == JobState::kFailed) {
        return send_error(res, done.error_code == static_cast<int>(ErrorCode::kInvalidArgument) ? 422 : 500,
                          done.error);
      }
      for (const JobImage& im : done.images) {
        std::ifstream f(s.history->images_dir() + "/" + im.file, std::ios::binary);
        std::ostringstream ss;
        ss << f.rdbuf();
        images_b64.push_back(base64_encode(ss.str()));
        infotexts.push_back(im.parameters);
        seeds.push_back(im.seed);
      }
    }
    auto entry = s.models->find(model);
    nlohmann::json info = {{"prompt", p.prompt},
                           {"all_prompts", std::vector<std::string>(seeds.size(), p.prompt)},
                           {"negative_prompt", *p.negative_prompt},
                           {"all_negative_prompts", std::vector<std::string>(seeds.size(), *p.negative_prompt)},
                           {"seed", seed},
                           {"all_seeds", seeds},
                           {"subseed", -1},
                           {"all_subseeds", std::vector<int64_t>(seeds.size(), -1)},
                           {"subseed_strength", 0},
                           {"width", p.width},
                           {"height", p.height},
                           {"sampler_name", a1111_name(p.sampler)},
                           {"cfg_scale", p.cfg_scale},
                           {"steps", p.steps},
                           {"batch_size", batch_size},
                           {"restore_faces", false},
                           {"face_restoration_model", nullptr},
                           {"sd_model_name", model},
                           {"sd_model_hash", entry ? entry->hash : ""},
                           {"sd_vae_name", nullptr},
                           {"sd_vae_hash", nullptr},
                           {"seed_resize_from_w", -1},
                           {"seed_resize_from_h", -1},
                           {"denoising_strength", nullptr},
                           {"extra_generation_params", nlohmann::json::object()},
                           {"index_of_first_image", 0},
                           {"infotexts", infotexts},
                           {"styles", nlohmann::json::array()},
                           {"job_timestamp", std::to_string(std::time(nullptr))},
                           {"clip_skip", p.clip_skip},
                           {"is_using_inpainting_conditioning", false},
                           {"version", "diffuse"},
                           // Ours: the run was stopped by /interrupt after this step (its images are partial).
                           {"interrupted", interrupted_at_step > 0},
                           {"interrupted_at_step", interrupted_at_step}};
    nlohmann::json parameters = body;
    parameters["seed"] = seed;
    parameters["steps"] = p.steps;
    parameters["cfg_scale"] = p.cfg_scale;
    parameters["width"] = p.width;
    parameters["height"] = p.height;
    parameters["batch_size"] = batch_size;
    parameters["n_iter"] = n_iter;
    parameters["sampler_name"] = a1111_name(p.sampler);
    nlohmann::json out = {{"images", images_b64}, {"parameters", parameters}, {"info", info.dump()}};
    res.set_content(out.dump(), "application/json");
  });
}

}  // namespace diffuse::server
