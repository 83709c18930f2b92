// The ControlNet preprocessors on the HTTP API (controlnet_preprocess_api.h).
#include "server/controlnet_preprocess_api.h"

#include <algorithm>

#include "image/control_preprocess.h"
#include "io/png.h"
#include "server/base64.h"

namespace diffuse::server {
namespace {

nlohmann::json slider_json(const image::PreprocessorSlider& s) {
  nlohmann::json j = {{"name", s.name}, {"value", s.value}, {"min", s.min}, {"max", s.max}};
  if (s.step > 0) j["step"] = s.step;
  return j;
}

// The extension's "sliders" list: [resolution or null, threshold_a, threshold_b], trailing ones left out.
nlohmann::json sliders_json(const image::PreprocessorInfo& p) {
  nlohmann::json s = nlohmann::json::array();
  if (!p.resolution && !p.threshold_a && !p.threshold_b) return s;
  s.push_back(p.resolution ? slider_json(*p.resolution) : nlohmann::json(nullptr));
  if (p.threshold_a) s.push_back(slider_json(*p.threshold_a));
  if (p.threshold_b) s.push_back(slider_json(*p.threshold_b));
  return s;
}

// A number field of the detect body / unit; absent or null: -1 (the slider's default).
double number_or_default(const nlohmann::json& j, const char* key) { return json_field<double>(j, key, -1.0); }

const image::PreprocessorInfo& lookup(const std::string& module, const std::string& field) {
  const image::PreprocessorInfo* p = image::find_control_preprocessor(module.empty() ? "none" : module);
  DIFFUSE_CHECK_ARG(p != nullptr, field + ": unknown preprocessor '" + module + "'; the available ones are " +
                                      image::control_preprocessor_list());
  DIFFUSE_CHECK_ARG(p->available, field + ": the preprocessor '" + p->name + "' is not available: it " + p->reason);
  return *p;
}

std::string png_base64(const image::Rgb& im) {
  const std::vector<uint8_t> png = encode_png(im.width, im.height, im.px.data());
  return base64_encode(std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
}

}  // namespace

nlohmann::json controlnet_module_list_json() {
  nlohmann::json names = nlohmann::json::array(), detail = nlohmann::json::object();
  for (const image::PreprocessorInfo& p : image::control_preprocessors()) {
    if (p.available) names.push_back(p.name);
    nlohmann::json d = {{"model_free", false}, {"sliders", sliders_json(p)}, {"available", p.available}};
    if (!p.available) d["reason"] = "it " + p.reason;
    if (!p.label.empty()) d["label"] = p.label;
    if (p.needs_mask) d["needs_mask"] = true;
    detail[p.name] = d;
  }
  return {{"module_list", names}, {"module_detail", detail}};
}

uint32_t controlnet_numpy_seed(int64_t seed) {
  return static_cast<uint32_t>((static_cast<uint64_t>(seed) * 2u) & 0xFFFFFFFFu);
}

void preprocess_controlnet_unit(const nlohmann::json& u, const std::string& who, const GenerationParams& p,
                                uint32_t seed, const UploadLimits& limits, bool unit_has_image, ControlNetUnit& unit) {
  const std::string module = json_field<std::string>(u, "module", "none");
  const image::PreprocessorInfo& info = lookup(module, who + ".module");
  unit.module = info.name;
  if (info.name == "none") return;
  image::PreprocessOptions o;
  o.resolution = number_or_default(u, "processor_res");
  o.threshold_a = number_or_default(u, "threshold_a");
  o.threshold_b = number_or_default(u, "threshold_b");
  o.seed = seed;
  if (unit.pixel_perfect && info.resolution) {
    const int w = p.width > 0 ? p.width : unit.image.width, h = p.height > 0 ? p.height : unit.image.height;
    o.resolution = image::pixel_perfect_resolution(unit.image.width, unit.image.height, w, h, unit.resize_mode);
    // The estimate may fall outside the slider for tiny or huge outputs: keep it in range.
    o.resolution = std::clamp(o.resolution, info.resolution->min, info.resolution->max);
  }
  if (info.needs_mask) {
    nlohmann::json m = nullptr;
    if (u.contains("mask") && !u["mask"].is_null()) m = u["mask"];
    if (m.is_null() && u.contains("image") && u["image"].is_object()) m = u["image"].value("mask", nlohmann::json(nullptr));
    if (!m.is_null()) {
      o.mask = json_mask_upload(m, who + ".mask", limits);
    } else {
      DIFFUSE_CHECK_ARG(!unit_has_image && !p.edit.mask.empty(),
                        who + ".mask: the preprocessor '" + info.name + "' needs a mask (the unit's \"mask\", or "
                        "img2img inpainting's mask for a unit without its own image)");
      o.mask = p.edit.mask;
    }
    if (o.mask.width != unit.image.width || o.mask.height != unit.image.height)
      o.mask = image::resize(o.mask, unit.image.width, unit.image.height);
  }
  try {
    image::ControlMap map = image::preprocess_control(info.name, unit.image, o);
    unit.image = std::move(map.image);
    unit.mask = std::move(map.mask);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    throw_error(ErrorCode::kInvalidArgument, who + ": " + e.what());
  }
}

void register_controlnet_preprocess_routes(Server::State& s) {
  s.http.Get("/controlnet/module_list", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(controlnet_module_list_json().dump(), "application/json");
  });
  s.http.Post("/controlnet/detect", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    try {
      DIFFUSE_CHECK_ARG(body.is_object(), "the body must be a JSON object");
      const std::string module = json_field<std::string>(body, "controlnet_module", "none");
      const image::PreprocessorInfo& info = lookup(module, "controlnet_module");
      DIFFUSE_CHECK_ARG(body.contains("controlnet_input_images") && body["controlnet_input_images"].is_array() &&
                            !body["controlnet_input_images"].empty(),
                        "controlnet_input_images: no image given (a list of base64 PNGs)");
      const nlohmann::json& images = body["controlnet_input_images"];
      const nlohmann::json masks = body.value("controlnet_masks", nlohmann::json::array());
      DIFFUSE_CHECK_ARG(masks.is_array(), "controlnet_masks must be a list of base64 PNGs");
      DIFFUSE_CHECK_ARG(!info.needs_mask || masks.size() == images.size(),
                        "controlnet_masks: the preprocessor '" + info.name + "' needs one mask per image (" +
                            std::to_string(images.size()) + " images, " + std::to_string(masks.size()) + " masks)");
      UploadLimits limits;
      limits.max_bytes = s.options.max_upload_bytes;
      limits.max_side = s.options.max_upload_side;
      image::PreprocessOptions o;
      o.resolution = number_or_default(body, "controlnet_processor_res");
      o.threshold_a = number_or_default(body, "controlnet_threshold_a");
      o.threshold_b = number_or_default(body, "controlnet_threshold_b");
      const int64_t seed = json_field<int64_t>(body, "controlnet_seed", 0);
      DIFFUSE_CHECK_ARG(seed >= 0 && seed <= 0xFFFFFFFFll, "controlnet_seed must be between 0 and 4294967295");
      o.seed = static_cast<uint32_t>(seed);
      nlohmann::json out = nlohmann::json::array();
      for (size_t i = 0; i < images.size(); ++i) {
        const std::string field = "controlnet_input_images[" + std::to_string(i) + "]";
        const image::Rgb input = json_rgb_upload(images[i], field, limits);
        image::PreprocessOptions oi = o;
        if (info.needs_mask) {
          oi.mask = json_mask_upload(masks[i], "controlnet_masks[" + std::to_string(i) + "]", limits);
          if (oi.mask.width != input.width || oi.mask.height != input.height)
            oi.mask = image::resize(oi.mask, input.width, input.height);
        }
        image::ControlMap map;
        try {
          map = image::preprocess_control(info.name, input, oi);
        } catch (const Error& e) {
          if (e.code() != ErrorCode::kInvalidArgument) throw;
          throw_error(ErrorCode::kInvalidArgument, field + ": " + e.what());
        }
        out.push_back(png_base64(map.mask.empty() ? map.image : image::inpaint_display(map.image, map.mask)));
      }
      res.set_content(nlohmann::json{{"images", out}, {"info", "Success"}}.dump(), "application/json");
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument && e.code() != ErrorCode::kIo) throw;
      send_error(res, 400, e.what());
    }
  });
}

}  // namespace diffuse::server
