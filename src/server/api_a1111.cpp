// AUTOMATIC1111-compatible API (modules/api/api.py), so Open WebUI,
// SillyTavern and webuiapi work unchanged:
//   POST /sdapi/v1/txt2img     POST /sdapi/v1/img2img    POST /sdapi/v1/png-info
//   GET  /sdapi/v1/sd-models   GET  /sdapi/v1/samplers
//   GET  /sdapi/v1/schedulers  GET|POST /sdapi/v1/options
//   GET  /sdapi/v1/progress    POST /sdapi/v1/interrupt  POST /sdapi/v1/refresh-checkpoints
// (/sdapi/v1/sd-vae, refresh-vae and the sd_vae option's values: api_vae.cpp.)
// (/sdapi/v1/loras, /embeddings and their refresh routes: api_adapters.cpp.)
// <lora:name:w> tags in the prompt apply LoRAs from the server's LoRA folder,
// as A1111's Lora extension does; an unknown name or a bad weight is answered
// 400 (A1111 skips it with a log line).
// Field names, defaults and response shapes follow A1111: "info" is a JSON
// string, seeds are seed + i per image. img2img takes A1111's own field names
// (init_images, mask, denoising_strength, mask_blur, inpainting_fill,
// inpaint_full_res[_padding], inpainting_mask_invert, resize_mode,
// include_init_images); a bad upload or edit field is answered 400.
#include <algorithm>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "io/infotext.h"
#include "io/png.h"
#include "server/base64.h"
#include "server/client_watch.h"
#include "server/controlnet_request.h"
#include "server/edit_request.h"
#include "server/hires_request.h"
#include "server/preview_options.h"
#include "server/refiner_request.h"
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

bool has_field(const nlohmann::json& body, const char* key) { return body.contains(key) && !body[key].is_null(); }

// What txt2img and img2img share: the model, the generation parameters of
// StableDiffusionProcessing and A1111's batch_size x n_iter.
struct A1111Request {
  std::string model;
  GenerationParams p;
  std::string written_prompt;         // with its <lora:...> tags, when p.prompt has them removed
  std::vector<std::string> warnings;  // tags not applied
  int64_t seed = 0;  // of the first image (random when the request said -1)
  int batch_size = 1, n_iter = 1;
  // Ours, in "info": what the request left out and the model's defaults filled
  // in ("steps: 20, the model's default (the request gave none)").
  std::vector<std::string> notes;
};

// The fields of StableDiffusionProcessing we honour (unknown ones are ignored,
// as A1111 does); type errors throw kInvalidArgument (422). Not validated yet:
// img2img sets the size first.
A1111Request parse_a1111_request(Server::State& s, const nlohmann::json& body) {
  nlohmann::json overrides = has_field(body, "override_settings") ? body["override_settings"] : nlohmann::json::object();
  DIFFUSE_CHECK_ARG(overrides.is_object(), "override_settings must be an object");
  A1111Request a;
  a.model = s.model_or_current(json_field<std::string>(overrides, "sd_model_checkpoint", ""));
  GenerationParams& p = a.p;
  p.prompt = json_field<std::string>(body, "prompt", "");
  p.negative_prompt = json_field<std::string>(body, "negative_prompt", "");
  a.seed = json_field<int64_t>(body, "seed", -1);
  if (a.seed < 0) a.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  // A few-step model (pipeline/few_step.h) fills what the request leaves out with its own
  // defaults (sampler, steps, CFG, size); other models with A1111's.
  const std::optional<ModelEntry> entry = s.models->find(a.model);
  const bool few_step = entry && !entry->kind.empty();
  std::string sampler = json_field<std::string>(body, "sampler_name", "");
  if (sampler.empty()) sampler = json_field<std::string>(body, "sampler_index", "");
  if (sampler.empty() && few_step && !entry->default_sampler.empty()) {
    sampler = entry->default_sampler;
    a.notes.push_back("sampler: " + sampler + ", the " + entry->kind + " model's default (the request gave none)");
  }
  if (sampler.empty()) sampler = "Euler";
  const SamplerChoice choice = resolve_sampler_or_throw(sampler);
  p.sampler = choice.sampler->name;
  // "scheduler" (A1111 1.9+: a name, label or alias of /sdapi/v1/schedulers; ComfyUI's names too)
  // or a legacy "... Karras" sampler name picks the schedule. An unknown one, or one the sampler
  // does not run with, is a 400 naming the valid ones.
  const std::string scheduler = json_field<std::string>(body, "scheduler", "");
  Schedule sched_id = choice.schedule.value_or(Schedule::kDefault);
  if (!scheduler.empty() && !(choice.schedule && schedule_spec(scheduler).id == Schedule::kDefault))
    sched_id = schedule_spec(scheduler).id;
  if (!choice.sampler->supports(sched_id)) {
    std::string allowed;
    for (const ScheduleSpec& sc : schedule_catalog())
      if (choice.sampler->supports(sc.id)) allowed += (allowed.empty() ? "" : ", ") + std::string(sc.a1111_name);
    throw_error(ErrorCode::kInvalidArgument, "scheduler '" + std::string(schedule_spec(sched_id).a1111_name) +
                                                 "' is not available for sampler '" + choice.sampler->a1111_name +
                                                 "' (it runs with " + allowed + ")");
  }
  p.schedule = schedule_spec(sched_id).name;
  a.batch_size = json_field<int>(body, "batch_size", 1);
  a.n_iter = json_field<int>(body, "n_iter", 1);
  DIFFUSE_CHECK_ARG(a.batch_size >= 1 && a.batch_size <= 8, "batch_size must be between 1 and 8");
  DIFFUSE_CHECK_ARG(a.n_iter >= 1 && a.n_iter <= 16, "n_iter must be between 1 and 16");
  // No steps: the model's own default (the demo model's 20; 50 for SD1 folders,
  // A1111's default), so that a client's plain request on a small model takes seconds.
  if (has_field(body, "steps")) {
    p.steps = json_field<int>(body, "steps", 50);
  } else {
    p.steps = entry ? entry->default_steps : 50;
    a.notes.push_back("steps: " + std::to_string(p.steps) + ", the model's default (the request gave none)");
  }
  p.cfg_scale = json_field<float>(body, "cfg_scale", few_step ? entry->default_cfg : 7.0f);
  p.width = json_field<int>(body, "width", few_step ? entry->default_width : 512);
  p.height = json_field<int>(body, "height", few_step ? entry->default_height : 512);
  if (few_step && !has_field(body, "cfg_scale"))
    a.notes.push_back("cfg_scale: " + nlohmann::json(p.cfg_scale).dump() + ", the " + entry->kind + " model's default");
  // eta: TCD's gamma (A1111's DDIM / ancestral eta field; only the tcd sampler reads it).
  if (has_field(body, "eta") && !body["eta"].is_null()) p.eta = json_field<double>(body, "eta", 0.3);
  {
    std::lock_guard<std::mutex> lock(s.current_mu);
    p.clip_skip = s.default_clip_skip;
  }
  p.clip_skip = json_field<int>(overrides, "CLIP_stop_at_last_layers", p.clip_skip);
  // sd_vae: a name of the VAE folders, "Automatic" or "None"; "" the server's
  // current one. apply_adapters resolves it (an unknown name: 400).
  p.vae = json_field<std::string>(overrides, "sd_vae", "");
  // tiled_vae (as the "Tiled VAE" extension calls it): true always tiles,
  // false never; absent or "auto" tiles only when the decode would not fit.
  if (has_field(body, "tiled_vae")) {
    const nlohmann::json& t = body["tiled_vae"];
    DIFFUSE_CHECK_ARG(t.is_boolean() || t.is_string(), "tiled_vae must be true, false or \"auto\"");
    p.vae_tiling = t.is_boolean() ? (t.get<bool>() ? VaeTiling::kOn : VaeTiling::kOff)
                                  : vae_tiling_from_name(t.get<std::string>());
  }
  p.images = a.batch_size;
  p.seed_per_image = true;
  p.decode_when_stopped = true;  // /interrupt returns the partial images, as A1111
  apply_a1111_refiner(s, body, overrides, p);  // refiner_checkpoint / refiner_switch_at (refiner_request.h)
  return a;
}

// The prompt's <lora:...> tags and the embedding folders (api_adapters.cpp);
// false after answering 400 for an unknown LoRA or a bad tag.
bool apply_adapters(Server::State& s, A1111Request& a, httplib::Response& res) {
  try {
    apply_prompt_adapters(s, a.p, &a.written_prompt, &a.warnings);
    return true;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

UploadLimits upload_limits(const Server::State& s) {
  UploadLimits l;
  l.max_bytes = s.options.max_upload_bytes;
  l.max_side = s.options.max_upload_side;
  return l;
}

// A1111 sends some flags as 0/1 (inpainting_mask_invert) and clients send
// others either way (inpaint_full_res).
bool flag_field(const nlohmann::json& body, const char* key, bool fallback) {
  if (!has_field(body, key)) return fallback;
  if (body[key].is_boolean()) return body[key].get<bool>();
  const int v = json_field<int>(body, key, 0);
  DIFFUSE_CHECK_ARG(v == 0 || v == 1, std::string(key) + ": must be 0, 1, true or false");
  return v == 1;
}

// img2img's own fields into `edit`; returns the init images as base64
// without a data: prefix (for include_init_images). Throws kInvalidArgument
// naming the field (answered 400).
std::vector<std::string> parse_a1111_edit(const nlohmann::json& body, const UploadLimits& limits, EditParams* edit) {
  DIFFUSE_CHECK_ARG(has_field(body, "init_images") && body["init_images"].is_array() && !body["init_images"].empty(),
                    "init_images: a list of at least one base64 PNG is required");
  std::vector<std::string> init_b64;
  for (size_t i = 0; i < body["init_images"].size(); ++i) {
    const nlohmann::json& v = body["init_images"][i];
    const std::string field = "init_images[" + std::to_string(i) + "]";
    DIFFUSE_CHECK_ARG(v.is_string(), field + ": must be a base64 PNG string");
    const std::string& text = v.get_ref<const std::string&>();
    DIFFUSE_CHECK_ARG(text.rfind("http://", 0) != 0 && text.rfind("https://", 0) != 0,
                      field + ": URLs are not fetched; send the image as base64");
    if (i == 0) {
      edit->init_image = json_rgb_upload(v, field, limits);  // the first is used, as A1111's batch of one
    } else {
      const std::vector<uint8_t> bytes = decode_base64_upload(text, field, limits);
      check_png_upload(bytes.data(), bytes.size(), field, limits);
    }
    const size_t comma = text.rfind("data:", 0) == 0 ? text.find(',') : std::string::npos;
    init_b64.push_back(comma == std::string::npos ? text : text.substr(comma + 1));
  }
  if (has_field(body, "mask")) edit->mask = json_mask_upload(body["mask"], "mask", limits);
  edit->strength = check_strength(json_field<double>(body, "denoising_strength", 0.75), "denoising_strength");
  edit->mask_blur = json_field<int>(body, "mask_blur", 4);
  DIFFUSE_CHECK_ARG(edit->mask_blur >= 0 && edit->mask_blur <= 256, "mask_blur: must be between 0 and 256 pixels");
  const int fill = json_field<int>(body, "inpainting_fill", 1);
  DIFFUSE_CHECK_ARG(fill >= 0 && fill <= 3,
                    "inpainting_fill: must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing)");
  edit->masked_content = static_cast<MaskedContent>(fill);
  edit->only_masked = flag_field(body, "inpaint_full_res", false);
  edit->only_masked_padding = json_field<int>(body, "inpaint_full_res_padding", 32);
  DIFFUSE_CHECK_ARG(edit->only_masked_padding >= 0 && edit->only_masked_padding <= 1024,
                    "inpaint_full_res_padding: must be between 0 and 1024 pixels");
  edit->invert_mask = flag_field(body, "inpainting_mask_invert", false);
  // 3 is A1111's "just resize (latent upscale)": resized in pixel space here.
  const int mode = json_field<int>(body, "resize_mode", 0);
  DIFFUSE_CHECK_ARG(mode >= 0 && mode <= 3, "resize_mode: must be 0 (just resize), 1 (crop and resize) or 2 (resize and fill)");
  edit->resize_mode = mode == 3 ? image::ResizeMode::kJustResize : static_cast<image::ResizeMode>(mode);
  edit->overlay = json_field<bool>(body, "inpaint_overlay", true);  // ours: false = diffusers' raw output
  return init_b64;
}

// Runs the n_iter jobs of a validated request and answers A1111's
// {images, parameters, info}; `appended` (include_init_images) follow the
// generated images.
void run_a1111(Server::State& s, const httplib::Request& req, httplib::Response& res, const nlohmann::json& body,
               const A1111Request& a, const std::vector<std::string>& appended) {
  const GenerationParams& p = a.p;
  const bool edit = p.edit.active();
  // A client that hangs up stops its job (and the remaining iterations).
  ClientWatch watch(req, s.port);
  std::vector<std::string> images_b64, infotexts, warnings;
  std::vector<int64_t> seeds;
  int interrupted_at_step = 0;  // A1111 /interrupt: the later iterations do not run
  int width = p.width, height = p.height;
  for (int it = 0; it < a.n_iter && interrupted_at_step == 0; ++it) {
    JobRequest r;
    r.model = a.model;
    r.params = p;
    r.params.seed = a.seed + static_cast<int64_t>(it) * a.batch_size;
    r.echo = body;
    r.written_prompt = a.written_prompt;
    r.warnings = a.warnings;
    if (edit) {  // history keeps a summary, not megabytes of base64
      r.echo["init_images"] = {image_summary(p.edit.init_image.width, p.edit.init_image.height)};
      if (!p.edit.mask.empty()) r.echo["mask"] = image_summary(p.edit.mask.width, p.edit.mask.height);
    }
    std::string id = s.jobs->submit(std::move(r));
    JobSnapshot done = s.jobs->wait_finished(id, [&watch] { return watch.client_gone(); });
    if (done.state == JobState::kCancelled) break;  // hang-up or shutdown: return what was made
    if (done.interrupted) interrupted_at_step = done.stopped_at_step > 0 ? done.stopped_at_step : p.steps;
    if (done.state == JobState::kFailed) {
      return send_error(res, done.error_code == static_cast<int>(ErrorCode::kInvalidArgument) ? 422 : 500,
                        done.error);
    }
    for (const std::string& w : done.warnings) {
      if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) warnings.push_back(w);
    }
    for (const JobImage& im : done.images) {
      std::ifstream f(s.history->images_dir() + "/" + im.file, std::ios::binary);
      std::ostringstream ss;
      ss << f.rdbuf();
      images_b64.push_back(base64_encode(ss.str()));
      infotexts.push_back(im.parameters);
      seeds.push_back(im.seed);
      width = im.width;  // the size made (img2img may round the requested one)
      height = im.height;
    }
  }
  nlohmann::json extra = nlohmann::json::object();
  if (edit && !p.edit.mask.empty()) extra["Mask blur"] = p.edit.mask_blur;
  if (!infotexts.empty()) {  // A1111 lists its extra networks' hashes here too
    for (const auto& [k, v] : parse_infotext(infotexts[0]).extra) {
      if (k == "Lora hashes" || k == "TI hashes") extra[k] = v;
    }
  }
  std::string vae_name, vae_hash;  // A1111's sd_vae_name / sd_vae_hash: the infotext's "VAE" / "VAE hash"
  if (!infotexts.empty()) {
    const InfotextFields f = parse_infotext(infotexts[0]);
    vae_name = f.vae;
    vae_hash = f.vae_hash;
  }
  auto entry = s.models->find(a.model);
  const std::string prompt = a.written_prompt.empty() ? p.prompt : a.written_prompt;  // A1111 keeps the tags
  nlohmann::json info = {{"prompt", prompt},
                         {"all_prompts", std::vector<std::string>(seeds.size(), prompt)},
                         {"negative_prompt", *p.negative_prompt},
                         {"all_negative_prompts", std::vector<std::string>(seeds.size(), *p.negative_prompt)},
                         {"seed", a.seed},
                         {"all_seeds", seeds},
                         {"subseed", -1},
                         {"all_subseeds", std::vector<int64_t>(seeds.size(), -1)},
                         {"subseed_strength", 0},
                         {"width", width},
                         {"height", height},
                         {"sampler_name", a1111_name(p.sampler)},
                         {"cfg_scale", p.cfg_scale},
                         {"steps", p.steps},
                         {"batch_size", a.batch_size},
                         {"restore_faces", false},
                         {"face_restoration_model", nullptr},
                         {"sd_model_name", a.model},
                         {"sd_model_hash", entry ? entry->hash : ""},
                         {"sd_vae_name", vae_name.empty() ? nlohmann::json(nullptr) : nlohmann::json(vae_name)},
                         {"sd_vae_hash", vae_hash.empty() ? nlohmann::json(nullptr) : nlohmann::json(vae_hash)},
                         {"seed_resize_from_w", -1},
                         {"seed_resize_from_h", -1},
                         {"denoising_strength", edit ? nlohmann::json(p.edit.strength)
                                                : p.hires.enabled ? nlohmann::json(p.hires.denoising_strength)
                                                                  : nlohmann::json(nullptr)},
                         {"extra_generation_params", extra},
                         {"index_of_first_image", 0},
                         {"infotexts", infotexts},
                         {"styles", nlohmann::json::array()},
                         {"job_timestamp", std::to_string(std::time(nullptr))},
                         {"clip_skip", p.clip_skip},
                         {"is_using_inpainting_conditioning", false},
                         {"version", "diffuse"},
                         // Ours: the run was stopped by /interrupt after this step (its images are partial).
                         {"interrupted", interrupted_at_step > 0},
                         {"interrupted_at_step", interrupted_at_step},
                         // Ours: what the pipeline changed and said so ("init image 500x375 resized to 496x368").
                         {"warnings", warnings},
                         {"notes", a.notes}};
  nlohmann::json parameters = body;
  parameters["seed"] = a.seed;
  parameters["steps"] = p.steps;
  parameters["cfg_scale"] = p.cfg_scale;
  parameters["width"] = width;
  parameters["height"] = height;
  parameters["batch_size"] = a.batch_size;
  parameters["n_iter"] = a.n_iter;
  parameters["sampler_name"] = a1111_name(p.sampler);
  if (edit) {
    parameters["denoising_strength"] = p.edit.strength;
    // A1111 echoes the init images and the mask only with include_init_images.
    if (appended.empty()) {
      parameters["init_images"] = nullptr;
      parameters["mask"] = nullptr;
    }
  }
  for (const std::string& b64 : appended) images_b64.push_back(b64);
  nlohmann::json out = {{"images", images_b64}, {"parameters", parameters}, {"info", info.dump()}};
  res.set_content(out.dump(), "application/json");
}

// A1111's parse_generation_parameters (/sdapi/v1/png-info "parameters"):
// string values, "Size" split into "Size-1" and "Size-2".
nlohmann::json infotext_parameters(const std::string& text) {
  const InfotextFields f = parse_infotext(text);
  nlohmann::json out = {{"Prompt", f.prompt}, {"Negative prompt", f.negative_prompt}};
  out["Steps"] = std::to_string(f.steps);
  if (!f.sampler.empty()) out["Sampler"] = f.sampler;
  if (!f.schedule_type.empty()) out["Schedule type"] = f.schedule_type;
  out["CFG scale"] = infotext_number(f.cfg_scale);
  out["Seed"] = std::to_string(f.seed);
  out["Size-1"] = std::to_string(f.width);
  out["Size-2"] = std::to_string(f.height);
  if (!f.model_hash.empty()) out["Model hash"] = f.model_hash;
  if (!f.model.empty()) out["Model"] = f.model;
  if (!f.vae_hash.empty()) out["VAE hash"] = f.vae_hash;
  if (!f.vae.empty()) out["VAE"] = f.vae;
  if (f.variation_seed) out["Variation seed"] = std::to_string(*f.variation_seed);
  if (f.variation_seed_strength) out["Variation seed strength"] = infotext_number(*f.variation_seed_strength);
  if (f.denoising_strength) out["Denoising strength"] = infotext_number(*f.denoising_strength);
  out["Clip skip"] = std::to_string(f.clip_skip);
  if (f.ensd) out["ENSD"] = std::to_string(*f.ensd);
  if (!f.rng.empty()) out["RNG"] = f.rng;
  for (const auto& [k, v] : f.extra) out[k] = v;
  if (!f.version.empty()) out["Version"] = f.version;
  return out;
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
                          {"sd_vae", current_sd_vae(s)},
                          {"samples_format", "png"},
                          {"sd_checkpoints_limit", s.options.max_loaded}};
    out.update(a1111_preview_options(s.previews->options()));  // show_progress_type, ... (preview_options.h)
    res.set_content(out.dump(), "application/json");
  });

  http.Post("/sdapi/v1/options", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    // Every field is checked before any is applied. Options we do not have are ignored, as before.
    const int clip_skip = json_field<int>(body, "CLIP_stop_at_last_layers", 0);
    DIFFUSE_CHECK_ARG(!body.contains("CLIP_stop_at_last_layers") || (clip_skip >= 1 && clip_skip <= kMaxClipSkip),
                      "CLIP_stop_at_last_layers must be between 1 and " + std::to_string(kMaxClipSkip));
    const std::optional<PreviewOptions> preview = a1111_preview_options_from(body, s.previews->options());
    // sd_vae: a name of the VAE folders, "Automatic" or "None" (api_vae.cpp); an unknown one is answered 400.
    const bool set_vae = body.contains("sd_vae");
    const std::string vae = json_field<std::string>(body, "sd_vae", "Automatic");
    if (set_vae) {
      try {
        s.vaes->resolve(vae);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kInvalidArgument) throw;
        return send_error(res, 400, e.what());
      }
    }
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
    if (preview) s.previews->set_options(*preview);
    if (set_vae) set_sd_vae(s, vae);
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
                            // A1111's state.job is free text naming what runs: the kind, then the phase.
                            {"job", j ? j->kind + ": " + job_phase_label(*j) : ""},
                            {"job_count", static_cast<int>(s.jobs->pending())},
                            {"job_timestamp", "0"}, {"job_no", 0},
                            {"sampling_step", j ? j->step : 0}, {"sampling_steps", j ? j->total_steps : 0}};
    double progress = j && j->total_steps > 0 ? static_cast<double>(j->step) / j->total_steps : 0.0;
    nlohmann::json out = {{"progress", progress},
                          {"eta_relative", j ? j->eta_s : 0.0},
                          {"state", state},
                          {"current_image", (!skip_image && j && !j->preview_png.empty())
                                                ? nlohmann::json(base64_encode(j->preview_png))
                                                : nlohmann::json(nullptr)},
                          {"textinfo", j ? nlohmann::json(job_phase_label(*j)) : nlohmann::json(nullptr)}};
    res.set_content(out.dump(), "application/json");
  });

  http.Post("/sdapi/v1/txt2img", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    A1111Request a = parse_a1111_request(s, body);
    a.p.validate();
    if (!apply_a1111_hires(s, body, a.p, res)) return;  // enable_hr, hr_* (hires_request.h)
    if (!apply_a1111_controlnet(s, body, a.model, a.p, res)) return;  // alwayson_scripts.controlnet (controlnet_request.h)
    if (!apply_adapters(s, a, res)) return;
    run_a1111(s, req, res, body, a, {});
  });

  http.Post("/sdapi/v1/img2img", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    A1111Request a = parse_a1111_request(s, body);
    std::vector<std::string> init_b64;
    try {
      init_b64 = parse_a1111_edit(body, upload_limits(s), &a.p.edit);
    } catch (const Error& e) {
      return send_error(res, 400, e.what());  // a bad upload or edit field
    }
    // No size given: 0, the init image's (the pipeline rounds it down to multiples of 8 and says so).
    if (!has_field(body, "width")) a.p.width = 0;
    if (!has_field(body, "height")) a.p.height = 0;
    a.p.validate();
    if (!apply_a1111_controlnet(s, body, a.model, a.p, res)) return;  // alwayson_scripts.controlnet (controlnet_request.h)
    if (!apply_adapters(s, a, res)) return;
    run_a1111(s, req, res, body, a, json_field<bool>(body, "include_init_images", false) ? init_b64
                                                                                          : std::vector<std::string>{});
  });

  http.Post("/sdapi/v1/png-info", [](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    nlohmann::json out = {{"info", ""}, {"items", nlohmann::json::object()}, {"parameters", nlohmann::json::object()}};
    const std::string image = json_field<std::string>(body, "image", "");
    if (image.find_first_not_of(" \t\r\n") == std::string::npos) {  // A1111: an empty image has no info
      return res.set_content(out.dump(), "application/json");
    }
    PngText text;
    try {
      UploadLimits limits;
      limits.max_side = 1 << 30;  // only the text chunks are read: any size
      const std::vector<uint8_t> bytes = decode_base64_upload(image, "image", limits);
      check_png_upload(bytes.data(), bytes.size(), "image", limits);
      text = read_png_text(bytes.data(), bytes.size());
    } catch (const Error& e) {
      return send_error(res, 400, e.code() == ErrorCode::kIo ? std::string("image: a corrupt PNG (") + e.what() + ")"
                                                              : std::string(e.what()));
    }
    for (const auto& [key, value] : text) {
      if (key == "parameters") out["info"] = value;
      else out["items"][key] = value;
    }
    if (!out["info"].get<std::string>().empty()) out["parameters"] = infotext_parameters(out["info"].get<std::string>());
    res.set_content(out.dump(), "application/json");
  });
}

}  // namespace diffuse::server
