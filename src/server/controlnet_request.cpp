// sd-webui-controlnet's API (controlnet_request.h).
#include "server/controlnet_request.h"

#include <algorithm>
#include <cctype>

#include "models/controlnet.h"
#include "pipeline/controlnet_library.h"
#include "server/edit_request.h"

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
                          const UploadLimits& limits, image::ResizeMode default_resize) {
  ControlNetUnit unit;
  const std::string module = json_field<std::string>(u, "module", "none");
  DIFFUSE_CHECK_ARG(module == "none" || module == "None" || module.empty(),
                    who + ".module: the preprocessor '" + module + "' is not available (only \"none\": send the "
                          "control map itself, e.g. canny edges made beforehand)");
  unit.module = "none";
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
  return unit;
}

// Units of a list (disabled ones skipped) into p.controlnets, each checked.
void parse_units(Server::State& s, const nlohmann::json& args, const std::string& where, const std::string& model,
                 image::ResizeMode default_resize, GenerationParams& p) {
  UploadLimits limits;
  limits.max_bytes = s.options.max_upload_bytes;
  limits.max_side = s.options.max_upload_side;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string who = where + "[" + std::to_string(i) + "]";
    DIFFUSE_CHECK_ARG(args[i].is_object(), who + " must be an object (a ControlNet unit)");
    if (!json_field<bool>(args[i], "enabled", true)) continue;
    p.controlnets.push_back(parse_unit(s, args[i], who, p, limits, default_resize));
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
    parse_units(s, cn["args"], "alwayson_scripts.controlnet.args", model, image::ResizeMode::kCropAndResize, p);
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kOutOfMemory || e.code() == ErrorCode::kCancelled) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

bool apply_native_controlnet(Server::State& s, const nlohmann::json& body, const std::string& model,
                             GenerationParams& p, nlohmann::json* echo, httplib::Response& res) {
  if (!body.contains("controlnets") || body["controlnets"].is_null()) return true;
  try {
    DIFFUSE_CHECK_ARG(body["controlnets"].is_array(), "controlnets must be a list of units ([{\"model\", \"image\", ...}])");
    parse_units(s, body["controlnets"], "controlnets", model, image::ResizeMode::kJustResize, p);
    if (echo && echo->contains("controlnets") && (*echo)["controlnets"].is_array()) {
      for (auto& u : (*echo)["controlnets"]) {  // history keeps a note, not the base64
        if (u.is_object() && u.contains("image") && u["image"].is_string())
          u["image"] = "(image, " + std::to_string(u["image"].get_ref<const std::string&>().size()) + " bytes of base64)";
      }
    }
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kOutOfMemory || e.code() == ErrorCode::kCancelled) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

size_t native_controlnet_image_bytes(const nlohmann::json& body) {
  size_t n = 0;
  if (!body.is_object() || !body.contains("controlnets") || !body["controlnets"].is_array()) return 0;
  for (const auto& u : body["controlnets"])
    if (u.is_object() && u.contains("image") && u["image"].is_string()) n += u["image"].get_ref<const std::string&>().size();
  return n;
}

void register_controlnet_routes(Server::State& s) {
  httplib::Server& http = s.http;
  http.Get("/controlnet/model_list", [&s](const httplib::Request&, httplib::Response& res) {
    nlohmann::json names = nlohmann::json::array();
    for (const ControlNetEntry& e : list_controlnets(controlnet_dirs(s))) names.push_back(e.title());
    res.set_content(nlohmann::json{{"model_list", names}}.dump(), "application/json");
  });
  http.Get("/controlnet/module_list", [](const httplib::Request&, httplib::Response& res) {
    const nlohmann::json detail = {{"none", {{"model_free", false}, {"sliders", nlohmann::json::array()}}}};
    res.set_content(nlohmann::json{{"module_list", {"none"}}, {"module_detail", detail}}.dump(), "application/json");
  });
  http.Get("/controlnet/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"version": 2})", "application/json");
  });
  http.Get("/controlnet/settings", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"control_net_unit_count": 3})", "application/json");
  });
}

}  // namespace diffuse::server
