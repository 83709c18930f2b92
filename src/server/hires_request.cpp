#include "server/hires_request.h"

#include "adapters/upscalers.h"
#include "image/latent_resize.h"
#include "pipeline/hires.h"

namespace diffuse::server {
namespace {

// The checks plan_hires makes, before the job is queued (the size: at the
// request's, or 512 where it leaves the model's default).
bool check_hires(const GenerationParams& p, httplib::Response& res) {
  try {
    (void)plan_hires(p.hires, p.width > 0 ? p.width : 512, p.height > 0 ? p.height : 512);
    DIFFUSE_CHECK_ARG(!p.edit.active(), "the hires fix is for text-to-image, not img2img");
    return true;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    send_error(res, 400, e.what());
    return false;
  }
}

std::string sampler_or_same(const std::string& name) {
  if (name.empty() || name == "Use same sampler") return "";
  return resolve_sampler_or_throw(name).sampler->name;
}

std::shared_ptr<const UpscalerLibrary> library(Server::State& s) { return s.upscalers; }

}  // namespace

bool apply_a1111_hires(Server::State& s, const nlohmann::json& body, GenerationParams& p, httplib::Response& res) {
  try {
    HiresParams& h = p.hires;
    h.enabled = json_field<bool>(body, "enable_hr", false);
    if (!h.enabled) return true;
    h.scale = json_field<double>(body, "hr_scale", 2.0);
    h.resize_x = json_field<int>(body, "hr_resize_x", 0);
    h.resize_y = json_field<int>(body, "hr_resize_y", 0);
    h.upscaler = json_field<std::string>(body, "hr_upscaler", "Latent");
    h.second_pass_steps = json_field<int>(body, "hr_second_pass_steps", 0);
    h.denoising_strength = json_field<double>(body, "denoising_strength", 0.7);
    h.prompt = json_field<std::string>(body, "hr_prompt", "");
    h.negative_prompt = json_field<std::string>(body, "hr_negative_prompt", "");
    h.sampler = sampler_or_same(json_field<std::string>(body, "hr_sampler_name", ""));
    h.models = hires_models_from(library(s));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    send_error(res, 400, e.what());
    return false;
  }
  return check_hires(p, res);
}

bool apply_native_hires(Server::State& s, const nlohmann::json& body, GenerationParams& p, httplib::Response& res) {
  if (!body.contains("hires") || body["hires"].is_null()) return true;
  try {
    const nlohmann::json& j = body["hires"];
    DIFFUSE_CHECK_ARG(j.is_object(), "hires must be an object ({\"scale\": 2, \"upscaler\": \"Latent\", ...})");
    HiresParams& h = p.hires;
    h.enabled = json_field<bool>(j, "enabled", true);
    if (!h.enabled) return true;
    h.scale = json_field<double>(j, "scale", 2.0);
    h.resize_x = json_field<int>(j, "resize_x", 0);
    h.resize_y = json_field<int>(j, "resize_y", 0);
    h.upscaler = json_field<std::string>(j, "upscaler", "Latent");
    h.second_pass_steps = json_field<int>(j, "steps", 0);
    h.denoising_strength = json_field<double>(j, "denoise", 0.7);
    h.prompt = json_field<std::string>(j, "prompt", "");
    h.negative_prompt = json_field<std::string>(j, "negative_prompt", "");
    h.sampler = json_field<std::string>(j, "sampler", "");
    if (!h.sampler.empty()) h.sampler = canonical_sampler(h.sampler);
    h.models = hires_models_from(library(s));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    send_error(res, 400, e.what());
    return false;
  }
  return check_hires(p, res);
}

void register_hires_routes(Server::State& s) {
  s.http.Get("/sdapi/v1/upscalers", [&s](const httplib::Request&, httplib::Response& res) {
    // A1111's UpscalerItem list: the pixel upscalers (scale 4 for the built-in ones, as A1111 lists them),
    // then its latent modes (scale null).
    nlohmann::json out = nlohmann::json::array();
    auto item = [](const std::string& name, const nlohmann::json& model_name, const nlohmann::json& path,
                   const nlohmann::json& scale) {
      return nlohmann::json{{"name", name}, {"model_name", model_name}, {"model_path", path},
                            {"model_url", nullptr}, {"scale", scale}};
    };
    out.push_back(item("None", nullptr, nullptr, 4));
    if (s.upscalers) {
      for (const UpscalerInfo& u : s.upscalers->list()) {
        const bool model = u.kind == "esrgan";
        out.push_back(item(u.name, model ? nlohmann::json("ESRGAN") : nlohmann::json(nullptr),
                           u.path.empty() ? nlohmann::json(nullptr) : nlohmann::json(u.path), u.scale));
      }
    } else {
      out.push_back(item("Lanczos", nullptr, nullptr, 4));
      out.push_back(item("Nearest", nullptr, nullptr, 4));
    }
    for (const image::LatentMode& m : image::latent_modes()) out.push_back(item(m.name, nullptr, nullptr, nullptr));
    res.set_content(out.dump(), "application/json");
  });

  s.http.Get("/sdapi/v1/latent-upscale-modes", [](const httplib::Request&, httplib::Response& res) {
    nlohmann::json out = nlohmann::json::array();
    for (const image::LatentMode& m : image::latent_modes()) out.push_back({{"name", m.name}});
    res.set_content(out.dump(), "application/json");
  });
}

}  // namespace diffuse::server
