// Diffuse's own JSON API, used by the web page:
//   GET  /api/models                     models with family, hash, licence, defaults
//   POST /api/jobs                       submit {model, prompt, negative_prompt, images, seed, steps,
//                                        cfg_scale, sampler, schedule, width, height, vae_tiling (auto|on|off);
//                                        to edit an image:
//                                        init_image, mask, strength, mask_blur, invert_mask, masked_content,
//                                        inpaint_area, padding, overlay, resize_mode, outpaint} -> 202 {id, position};
//                                        <lora:name:w> tags in the prompt apply LoRAs (api_adapters.cpp)
//   GET  /api/jobs                       queue (running, queued) and recent jobs
//   GET  /api/jobs/{id}                  status, progress, images
//   GET  /api/jobs/{id}/preview.png      latest live preview
//   GET  /api/jobs/{id}/events           Server-Sent Events: state, progress, preview, done, error
//   POST /api/jobs/{id}/cancel           cancel a queued or running job
//   GET  /api/devices                    devices + live telemetry (GPU via NVML, CPU, RAM)
//   GET  /api/history?limit=&offset=     persistent gallery, newest first
//   GET  /images/{file}.png              a stored PNG, byte for byte (metadata intact)
#include <fstream>
#include <regex>
#include <sstream>

#include "server/base64.h"
#include "server/controlnet_request.h"
#include "server/ip_adapter_request.h"
#include "server/edit_request.h"
#include "server/hires_request.h"
#include "server/refiner_request.h"
#include "server/server_state.h"
#include "sys/cpu_info.h"
#include "sys/cuda_devices.h"
#include "sys/devices.h"

namespace diffuse::server {
namespace {

nlohmann::json model_json(const ModelEntry& m) {
  return {{"id", m.id},
          {"name", m.id},
          {"title", m.hash.empty() ? m.id : m.id + " [" + m.hash + "]"},
          {"family", m.family},
          {"hash", m.hash},
          {"license", m.license},
          {"model_card", m.model_card},
          {"readme", m.readme_path.empty() ? "" : "/api/models/" + m.id + "/readme"},
          {"example_prompts", m.example_prompts},
          {"source", m.source},
          {"size_bytes", m.size_bytes},
          {"loaded", m.loaded},
          {"kind", m.kind.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.kind)},
          {"kind_guessed", m.kind_guessed},
          {"defaults",
           {{"width", m.default_width},
            {"height", m.default_height},
            {"steps", m.default_steps},
            {"cfg_scale", m.default_cfg},
            {"sampler", m.default_sampler}}}};
}

nlohmann::json image_json(const std::string& file, int64_t seed, int w, int h, const std::string& parameters) {
  return {{"url", "/images/" + file}, {"file", file}, {"seed", seed}, {"width", w}, {"height", h},
          {"parameters", parameters}};
}

nlohmann::json job_json(const JobSnapshot& j) {
  nlohmann::json phases = nlohmann::json::array();
  for (const auto& [phase, at] : j.phase_log) phases.push_back({{"phase", phase}, {"at_s", at}});
  nlohmann::json images = nlohmann::json::array();
  for (const JobImage& im : j.images) images.push_back(image_json(im.file, im.seed, im.width, im.height, im.parameters));
  return {{"id", j.id},
          {"state", job_state_name(j.state)},
          {"position", j.position},
          {"model", j.model},
          {"prompt", j.prompt},
          {"phase", j.phase},
          {"label", job_phase_label(j)},
          {"phases", phases},  // each phase entered, with its start (seconds into the run)
          {"step", j.step},
          {"total_steps", j.total_steps},
          {"it_per_s", j.it_per_s},
          {"eta_s", j.eta_s},
          {"elapsed_s", j.elapsed_s},
          {"error", j.error},
          {"warnings", j.warnings},
          {"seed", j.seed},
          {"stopped_at_step", j.stopped_at_step},  // > 0: stopped (interrupt) after this step, partial images
          {"images", images},
          {"has_preview", !j.preview_png.empty()},
          {"created", j.created}};
}

bool finished(JobState s) { return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled; }

}  // namespace

void register_native_routes(Server::State& s) {
  httplib::Server& http = s.http;

  http.Get("/api/models", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const ModelEntry& m : s.models->list()) out.push_back(model_json(m));
    res.set_content(out.dump(), "application/json");
  });

  // A model folder's README.md (the page's model card), as text.
  http.Get(R"(/api/models/([^/]+)/readme)", [&s](const httplib::Request& req, httplib::Response& res) {
    const std::optional<ModelEntry> m = s.models->find(req.matches[1]);
    if (!m) return send_error(res, 404, "no model '" + std::string(req.matches[1]) + "'");
    if (m->readme_path.empty()) return send_error(res, 404, "model '" + m->id + "' has no README.md");
    std::ifstream in(m->readme_path, std::ios::binary);
    if (!in) return send_error(res, 404, "cannot read " + m->readme_path);
    std::ostringstream text;
    text << in.rdbuf();
    res.set_content(text.str(), "text/markdown; charset=utf-8");
  });

  http.Post("/api/models/refresh", [&s](const httplib::Request&, httplib::Response& res) {
    s.models->refresh();
    res.set_content(R"({"ok":true})", "application/json");
  });

  http.Post("/api/jobs", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (req.body.size() > s.options.max_body_bytes) {
      // Beyond max_body_bytes only the images may go (server.cpp lets this route's bodies grow for them).
      if (json_nesting_depth(req.body, kMaxJsonDepth) <= kMaxJsonDepth) {
        body = nlohmann::json::parse(req.body, nullptr, false);
      }
      size_t images = 0;
      for (const char* k : {"init_image", "mask"}) {
        if (body.is_object() && body.contains(k) && body[k].is_string()) {
          images += body[k].get_ref<const std::string&>().size();
        }
      }
      images += native_controlnet_image_bytes(body);  // "controlnets": [{"image": ...}] (controlnet_request.h)
      images += native_ip_adapter_image_bytes(body);  // "ip_adapter": {"image(s)": ...} (ip_adapter_request.h)
      if (!body.is_object() || req.body.size() - images > s.options.max_body_bytes) {
        return send_error(res, 413, "the request body is larger than " + std::to_string(s.options.max_body_bytes) +
                                        " bytes besides its images (init_image, mask)");
      }
    } else if (!parse_body(req, res, &body)) {
      return;
    }
    JobRequest r;
    r.model = s.model_or_current(json_field<std::string>(body, "model", ""));
    GenerationParams& p = r.params;
    p.prompt = json_field<std::string>(body, "prompt", "");
    if (body.contains("negative_prompt") && !body["negative_prompt"].is_null()) {
      p.negative_prompt = json_field<std::string>(body, "negative_prompt", "");
    }
    p.images = json_field<int>(body, "images", 1);
    DIFFUSE_CHECK_ARG(p.images >= 1 && p.images <= 8, "images must be between 1 and 8");
    p.seed = json_field<int64_t>(body, "seed", -1);
    p.steps = json_field<int>(body, "steps", 0);
    p.cfg_scale = json_field<float>(body, "cfg_scale", -1.0f);
    std::string sampler = json_field<std::string>(body, "sampler", "");
    p.sampler = sampler.empty() ? "" : canonical_sampler(sampler);
    // Any spelling of a catalogue schedule (A1111's, ComfyUI's); unknown: 400 listing them.
    p.schedule = schedule_spec(json_field<std::string>(body, "schedule", "default")).name;
    p.width = json_field<int>(body, "width", 0);
    p.height = json_field<int>(body, "height", 0);
    p.clip_skip = json_field<int>(body, "clip_skip", 1);
    // TCD's gamma (0..1; validate() refuses others), unset: 0.3.
    if (body.contains("eta") && !body["eta"].is_null()) p.eta = json_field<double>(body, "eta", 0.3);
    p.vae_tiling = vae_tiling_from_name(json_field<std::string>(body, "vae_tiling", "auto"));
    // An sd_vae name ("Automatic", "None", a file of the VAE folders); resolved with the adapters below (400).
    p.vae = json_field<std::string>(body, "vae", "");
    p.seed_per_image = true;  // seed + i per image, as A1111 and the gallery show it
    // The page's Stop (POST /sdapi/v1/interrupt) keeps the image of the last
    // step taken, as A1111's; cancelling (DELETE) keeps nothing.
    p.decode_when_stopped = true;
    apply_native_refiner(s, body, p);  // "refiner": the SDXL refiner hand-off (refiner_request.h)
    if (!apply_native_hires(s, body, p, res)) return;  // "hires": the hires fix (hires_request.h)
    if (p.seed < 0) {
      p.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    }
    try {
      apply_prompt_adapters(s, p, &r.written_prompt, &r.warnings);  // <lora:name:w> tags, embeddings
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) throw;
      return send_error(res, 400, e.what());  // an unknown LoRA or a bad tag
    }
    r.echo = body;
    try {
      UploadLimits limits;
      limits.max_bytes = s.options.max_upload_bytes;
      limits.max_side = s.options.max_upload_side;
      parse_native_edit(body, limits, &p.edit, &r.echo);
    } catch (const Error& e) {
      return send_error(res, 400, e.what());  // a bad upload or edit field
    }
    // "controlnets": ControlNet units (controlnet_request.h); after the edit, whose init image a unit may use.
    if (!apply_native_controlnet(s, body, r.model, p, &r.echo, res)) return;
    // "ip_adapter": the IP-Adapter (ip_adapter_request.h), named in the ControlNet folders.
    if (!apply_native_ip_adapter(s, body, r.model,
                                 s.options.controlnet_dirs.empty() ? std::vector<std::string>{"models/ControlNet"}
                                                                   : s.options.controlnet_dirs,
                                 p, &r.echo, res))
      return;
    // An edit without a size (0) works at the init image's, rounded down to multiples of 8 (a warning says so).
    r.echo["seed"] = p.seed;
    r.echo["model"] = r.model;
    std::string id = s.jobs->submit(std::move(r));
    auto snap = s.jobs->get(id);
    res.status = 202;
    res.set_content(nlohmann::json({{"id", id}, {"position", snap ? snap->position : 0}, {"seed", p.seed}}).dump(),
                    "application/json");
  });

  http.Get("/api/jobs", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const JobSnapshot& j : s.jobs->list()) out.push_back(job_json(j));
    res.set_content(out.dump(), "application/json");
  });

  http.Get(R"(/api/jobs/([0-9a-f]+))", [&s](const httplib::Request& req, httplib::Response& res) {
    auto j = s.jobs->get(req.matches[1]);
    if (!j) return send_error(res, 404, "job not found");
    res.set_content(job_json(*j).dump(), "application/json");
  });

  http.Get(R"(/api/jobs/([0-9a-f]+)/preview\.png)", [&s](const httplib::Request& req, httplib::Response& res) {
    auto j = s.jobs->get(req.matches[1]);
    if (!j) return send_error(res, 404, "job not found");
    if (j->preview_png.empty()) return send_error(res, 404, "no preview yet");
    res.set_content(j->preview_png, "image/png");
  });

  auto cancel = [&s](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (!s.jobs->get(id)) return send_error(res, 404, "job not found");
    bool ok = s.jobs->cancel(id);
    res.set_content(nlohmann::json({{"cancelled", ok}}).dump(), "application/json");
  };
  http.Post(R"(/api/jobs/([0-9a-f]+)/cancel)", cancel);
  http.Delete(R"(/api/jobs/([0-9a-f]+))", cancel);

  http.Get(R"(/api/jobs/([0-9a-f]+)/events)", [&s](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (!s.jobs->get(id)) return send_error(res, 404, "job not found");
    res.set_header("Cache-Control", "no-cache");
    auto seen = std::make_shared<uint64_t>(0);
    auto last_step = std::make_shared<std::string>();  // the phase label of the last progress event
    auto last_preview = std::make_shared<int>(0);  // JobSnapshot::previews when the last preview was sent
    res.set_chunked_content_provider("text/event-stream", [&s, id, seen, last_step, last_preview](size_t,
                                                                                                 httplib::DataSink& sink) {
      auto j = s.jobs->wait_update(id, *seen, std::chrono::milliseconds(15000));
      if (!j) {
        sink.done();
        return true;
      }
      std::ostringstream ev;
      if (j->version == *seen) {
        ev << ": keep-alive\n\n";  // comment line keeps proxies from closing the stream
      } else {
        *seen = j->version;
        nlohmann::json state = job_json(*j);
        ev << "event: state\ndata: " << state.dump() << "\n\n";
        const std::string label = job_phase_label(*j);
        if (label != *last_step && j->state == JobState::kRunning) {
          *last_step = label;
          ev << "event: progress\ndata: "
             << nlohmann::json({{"phase", j->phase}, {"label", label}, {"step", j->step},
                                {"total_steps", j->total_steps}, {"it_per_s", j->it_per_s}, {"eta_s", j->eta_s}})
                    .dump()
             << "\n\n";
          // A new preview only: TAESD previews skip steps (docs/previews.md).
          if (!j->preview_png.empty() && j->previews != *last_preview) {
            *last_preview = j->previews;
            ev << "event: preview\ndata: "
               << nlohmann::json({{"step", j->preview_step},
                                  {"image", "data:image/png;base64," + base64_encode(j->preview_png)}})
                      .dump()
               << "\n\n";
          }
        }
        if (j->state == JobState::kDone) ev << "event: done\ndata: " << state.dump() << "\n\n";
        if (j->state == JobState::kFailed || j->state == JobState::kCancelled) {
          ev << "event: error\ndata: " << nlohmann::json({{"state", job_state_name(j->state)}, {"error", j->error}}).dump()
             << "\n\n";
        }
      }
      std::string text = ev.str();
      if (!sink.write(text.data(), text.size())) return false;  // client went away
      // A stopping server ends open streams (the page reconnects or reports the loss).
      if (finished(j->state) || s.jobs->stopping()) sink.done();
      return true;
    });
  });

  http.Get("/api/devices", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out;
    {
      std::lock_guard<std::mutex> lock(s.telemetry_mu);
      sys::CpuSample c = s.telemetry->sample_cpu();
      out["cpu"] = {{"util", c.cpu_util}, {"ram_used", c.ram_used}, {"ram_total", c.ram_total},
                    {"process_rss", c.process_rss}};
      out["gpus"] = nlohmann::json::array();
      for (const sys::GpuSample& g : s.telemetry->sample()) {
        auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
        out["gpus"].push_back({{"index", g.index},          {"name", g.name},
                               {"gpu_util", g.gpu_util},    {"mem_util", g.mem_util},
                               {"mem_used", g.mem_used},    {"mem_total", g.mem_total},
                               {"power_w", num(g.power_w)}, {"power_limit_w", num(g.power_limit_w)},
                               {"temperature_c", num(g.temperature_c)}, {"sm_clock_mhz", g.sm_clock_mhz}});
      }
      out["gpu_available"] = s.telemetry->gpu_available();
      out["gpu_status"] = s.telemetry->gpu_available() ? "ok" : s.telemetry->gpu_unavailable_reason();
    }
    static const nlohmann::json devices = sys::devices_json(sys::cpu_info(), sys::cuda_devices());
    out["devices"] = devices;
    out["queue"] = s.jobs->pending();
    res.set_content(out.dump(), "application/json");
  });

  http.Get("/api/history", [&s](const httplib::Request& req, httplib::Response& res) {
    int limit = 50, offset = 0;
    try {
      if (req.has_param("limit")) limit = std::stoi(req.get_param_value("limit"));
      if (req.has_param("offset")) offset = std::stoi(req.get_param_value("offset"));
    } catch (const std::exception&) {
      return send_error(res, 400, "limit and offset must be integers");
    }
    if (limit < 1 || limit > 500 || offset < 0) return send_error(res, 400, "limit must be 1..500, offset >= 0");
    nlohmann::json items = nlohmann::json::array();
    for (const HistoryEntry& e : s.history->list(limit, offset)) {
      nlohmann::json images = nlohmann::json::array();
      for (const HistoryImage& im : e.images) images.push_back(image_json(im.file, im.seed, im.width, im.height, im.parameters));
      items.push_back({{"id", e.id}, {"created", e.created}, {"model", e.model}, {"prompt", e.prompt},
                       {"params", e.params}, {"images", images}});
    }
    res.set_content(nlohmann::json({{"total", s.history->count()}, {"items", items}}).dump(), "application/json");
  });

  // Only plain file names (no separators, no dot-dot) are served, from the images dir alone.
  http.Get(R"(/images/(.+))", [&s](const httplib::Request& req, httplib::Response& res) {
    static const std::regex kSafe(R"([A-Za-z0-9_-]+\.png)");
    const std::string name = req.matches[1];
    if (!std::regex_match(name, kSafe)) return send_error(res, 404, "no such image");
    std::ifstream f(s.history->images_dir() + "/" + name, std::ios::binary);
    if (!f) return send_error(res, 404, "no such image");
    std::ostringstream ss;
    ss << f.rdbuf();
    // ?download=00012-1234.png: a download under that name (the page's A1111-style
    // names; Content-Disposition wins over the link's download attribute).
    const std::string as = req.get_param_value("download");
    if (!as.empty() && !std::regex_match(as, kSafe)) return send_error(res, 400, "download name must be letters, digits, '-' or '_' then .png");
    res.set_header("Content-Disposition", as.empty() ? "inline; filename=\"" + name + "\"" : "attachment; filename=\"" + as + "\"");
    res.set_content(ss.str(), "image/png");
  });
}

}  // namespace diffuse::server
