// sd-webui-controlnet's API (controlnet_request.h).
#include "server/controlnet_request.h"

#include <algorithm>
#include <cctype>
#include <random>

#include "models/controlnet.h"
#include "pipeline/controlnet_library.h"
#include "server/controlnet_preprocess_api.h"
#include "server/edit_request.h"
#include "server/ip_adapter_request.h"

namespace diffuse::server {
namespace {

std::vector<std::string> controlnet_dirs(const Server::State& s) {
  return s.options.controlnet_dirs.empty() ? std::vector<std::string>{"models/ControlNet"} : s.options.controlnet_dirs;
}

std::string lower(std::string v) {
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return v;
}

// resize_mode: 0-2, or the extension's labels (its "Inner Fit" / "Outer Fit" are its older names).
image::ResizeMode unit_resize_mode(const nlohmann::json& v, const std::string& field) {
  if (v.is_number_integer()) {
    const int i = v.get<int>();
    if (i >= 0 && i <= 2) return static_cast<image::ResizeMode>(i);
  } else if (v.is_string()) {
    const std::string s = lower(v.get<std::string>());
    if (s == "just resize" || s == "envelope (outer fit)") return image::ResizeMode::kJustResize;
    if (s == "crop and resize" || s == "scale to fit (inner fit)" || s == "inner fit (scale to fit)")
      return image::ResizeMode::kCropAndResize;
    if (s == "resize and fill" || s == "outer fit (shrink to fit)") return image::ResizeMode::kResizeAndFill;
    try {
      return image::resize_mode_from_name(s);
    } catch (const Error&) {
    }
  }
  throw_error(ErrorCode::kInvalidArgument, field + " must be 0, 1, 2, \"Just Resize\", \"Crop and Resize\" or "
                                                   "\"Resize and Fill\", got " + v.dump().substr(0, 64));
}

ControlMode unit_control_mode(const nlohmann::json& v, const std::string& field) {
  if (v.is_number_integer() || v.is_string()) {
    try {
      return control_mode_from_name(v.is_string() ? v.get<std::string>() : std::to_string(v.get<int>()));
    } catch (const Error&) {
    }
  }
  throw_error(ErrorCode::kInvalidArgument, field + " must be 0, 1, 2, \"Balanced\", \"My prompt is more important\" "
                                                   "or \"ControlNet is more important\", got " + v.dump().substr(0, 64));
}

ControlNetUnit parse_unit(Server::State& s, const nlohmann::json& u, const std::string& who, const GenerationParams& p,
                          const UploadLimits& limits, image::ResizeMode default_resize, uint32_t numpy_seed) {
  ControlNetUnit unit;
  unit.path = resolve_controlnet(json_field<std::string>(u, "model", ""), controlnet_dirs(s));
  unit.weight = json_field<float>(u, "weight", 1.0f);
  unit.guidance_start = json_field<double>(u, "guidance_start", 0.0);
  unit.guidance_end = json_field<double>(u, "guidance_end", 1.0);
  if (u.contains("control_mode") && !u["control_mode"].is_null())
    unit.control_mode = unit_control_mode(u["control_mode"], who + ".control_mode");
  unit.resize_mode = default_resize;
  if (u.contains("resize_mode") && !u["resize_mode"].is_null())
    unit.resize_mode = unit_resize_mode(u["resize_mode"], who + ".resize_mode");
  unit.pixel_perfect = json_field<bool>(u, "pixel_perfect", false);
  unit.guess_mode = json_field<bool>(u, "guess_mode", false);
  // The image: a base64 PNG, or {"image": ..., "mask": ...} (newer clients); the older "input_image".
  nlohmann::json img = nullptr;
  for (const char* key : {"image", "input_image"}) {
    if (u.contains(key) && !u[key].is_null()) {
      img = u[key];
      break;
    }
  }
  if (img.is_object()) img = img.value("image", nlohmann::json(nullptr));
  if (!img.is_null()) {
    unit.image = json_rgb_upload(img, who + ".image", limits);
  } else {
    DIFFUSE_CHECK_ARG(p.edit.active(), who + ".image: no control image (txt2img needs one; img2img uses the init image)");
    unit.image = p.edit.init_image;
  }
  // The preprocessor (module, processor_res, threshold_a/b, pixel_perfect): controlnet_preprocess_api.h.
  preprocess_controlnet_unit(u, who, p, numpy_seed, limits, !img.is_null(), unit);
  return unit;
}

// Units of a list (disabled ones skipped) into p.controlnets, each checked.
void parse_units(Server::State& s, const nlohmann::json& args, const std::string& where, const std::string& model,
                 image::ResizeMode default_resize, uint32_t numpy_seed, GenerationParams& p) {
  UploadLimits limits;
  limits.max_bytes = s.options.max_upload_bytes;
  limits.max_side = s.options.max_upload_side;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string who = where + "[" + std::to_string(i) + "]";
    DIFFUSE_CHECK_ARG(args[i].is_object(), who + " must be an object (a ControlNet unit)");
    if (!json_field<bool>(args[i], "enabled", true)) continue;
    if (is_ip_adapter_unit(args[i])) {  // IP-Adapter units go to p.ip_adapter (ip_adapter_request.h)
      parse_ip_adapter_unit(s, args[i], who, model, controlnet_dirs(s), limits, p);
      continue;
    }
    p.controlnets.push_back(parse_unit(s, args[i], who, p, limits, default_resize, numpy_seed));
    // A ControlNet of another published family than the model: refused before the job is queued.
    const ControlNetProbe probe = probe_controlnet(p.controlnets.back().path);
    DIFFUSE_CHECK(!probe.is_union, ErrorCode::kInvalidArgument,
                  who + ".model: a union ControlNet (controlnet-union) is not supported");
    const std::optional<ModelEntry> entry = s.models->find(model);
    if (entry && !entry->family.empty() && !probe.family.empty() && entry->family != probe.family) {
      throw_error(ErrorCode::kInvalidArgument, who + ".model: '" + json_field<std::string>(args[i], "model", "") +
                                                   "' is a " + probe.family + " ControlNet, the model '" + model +
                                                   "' is " + entry->family);
    }
  }
  validate_controlnet_units(p.controlnets);
}

}  // namespace

bool apply_a1111_controlnet(Server::State& s, const nlohmann::json& body, const std::string& model,
                            GenerationParams& p, httplib::Response& res) {
  if (!body.contains("alwayson_scripts") || !body["alwayson_scripts"].is_object()) return true;
  const nlohmann::json& scripts = body["alwayson_scripts"];
  nlohmann::json cn = nullptr;
  for (auto e = scripts.begin(); e != scripts.end(); ++e)
    if (lower(e.key()) == "controlnet") cn = e.value();
  if (cn.is_null()) return true;
  try {
    DIFFUSE_CHECK_ARG(cn.is_object() && cn.contains("args") && cn["args"].is_array(),
                      "alwayson_scripts.controlnet must be {\"args\": [unit, ...]}");
    // The shuffle preprocessor's numpy seed comes from the request's seed (random when -1, as A1111's).
    int64_t seed = json_field<int64_t>(body, "seed", -1);
    if (seed < 0) seed = p.seed >= 0 ? p.seed : static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    parse_units(s, cn["args"], "alwayson_scripts.controlnet.args", model, image::ResizeMode::kCropAndResize,
                controlnet_numpy_seed(seed), p);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kOutOfMemory || e.code() == ErrorCode::kCancelled) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

// The history keeps a note instead of each unit's base64 image / mask.
static void summarize_unit_images(nlohmann::json& units) {
  if (!units.is_array()) return;
  for (auto& u : units) {
    if (!u.is_object()) continue;
    for (const char* key : {"image", "mask"})
      if (u.contains(key) && u[key].is_string())
        u[key] = "(image, " + std::to_string(u[key].get_ref<const std::string&>().size()) + " bytes of base64)";
  }
}

static const nlohmann::json* alwayson_controlnet_args(const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("alwayson_scripts") || !body["alwayson_scripts"].is_object()) return nullptr;
  const nlohmann::json& scripts = body["alwayson_scripts"];
  for (auto e = scripts.begin(); e != scripts.end(); ++e)
    if (lower(e.key()) == "controlnet" && e.value().is_object() && e.value().contains("args"))
      return &e.value()["args"];
  return nullptr;
}

bool apply_native_controlnet(Server::State& s, const nlohmann::json& body, const std::string& model,
                             GenerationParams& p, nlohmann::json* echo, httplib::Response& res) {
  // A1111's alwayson_scripts.controlnet works on /api/jobs too (the web page's ControlNet panel sends it).
  if (alwayson_controlnet_args(body)) {
    if (!apply_a1111_controlnet(s, body, model, p, res)) return false;
    if (echo && echo->is_object() && echo->contains("alwayson_scripts")) {
      for (auto e = (*echo)["alwayson_scripts"].begin(); e != (*echo)["alwayson_scripts"].end(); ++e)
        if (lower(e.key()) == "controlnet" && e.value().is_object() && e.value().contains("args"))
          summarize_unit_images(e.value()["args"]);
    }
  }
  if (!body.contains("controlnets") || body["controlnets"].is_null()) return true;
  try {
    DIFFUSE_CHECK_ARG(body["controlnets"].is_array(), "controlnets must be a list of units ([{\"model\", \"image\", ...}])");
    parse_units(s, body["controlnets"], "controlnets", model, image::ResizeMode::kJustResize,
                controlnet_numpy_seed(p.seed >= 0 ? p.seed : 0), p);
    if (echo && echo->contains("controlnets")) summarize_unit_images((*echo)["controlnets"]);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kOutOfMemory || e.code() == ErrorCode::kCancelled) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

size_t native_controlnet_image_bytes(const nlohmann::json& body) {
  size_t n = 0;
  auto count = [&n](const nlohmann::json& units) {
    if (!units.is_array()) return;
    for (const auto& u : units)
      for (const char* key : {"image", "mask"})
        if (u.is_object() && u.contains(key) && u[key].is_string()) n += u[key].get_ref<const std::string&>().size();
  };
  if (body.is_object() && body.contains("controlnets")) count(body["controlnets"]);
  if (const nlohmann::json* args = alwayson_controlnet_args(body)) count(*args);
  return n;
}

void register_controlnet_routes(Server::State& s) {
  httplib::Server& http = s.http;
  http.Get("/controlnet/model_list", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json names = nlohmann::json::array();
    for (const ControlNetEntry& e : list_controlnets(controlnet_dirs(s))) names.push_back(e.title());
    res.set_content(nlohmann::json{{"model_list", names}}.dump(), "application/json");
  });
  register_controlnet_preprocess_routes(s);  // /controlnet/module_list, /controlnet/detect
  http.Get("/controlnet/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"version": 2})", "application/json");
  });
  http.Get("/controlnet/settings", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"control_net_unit_count": 3})", "application/json");
  });
}

}  // namespace diffuse::server
