// IP-Adapter units of the A1111 ControlNet API and the native API (ip_adapter_request.h).
#include "server/ip_adapter_request.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <optional>

#include "adapters/ip_adapter.h"
#include "io/json_util.h"
#include "models/unet.h"
#include "pipeline/controlnet_library.h"
#include "server/model_registry.h"

namespace diffuse::server {
namespace {

std::string lower(std::string v) {
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return v;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

std::string resolve(const std::string& name, const std::vector<std::string>& dirs) {
  std::error_code ec;
  return std::filesystem::is_regular_file(name, ec) ? name : resolve_controlnet(name, dirs);
}

// The UNet config of a model that is a diffusers folder; nullopt otherwise.
std::optional<UNetConfig> folder_unet_config(Server::State& s, const std::string& model) {
  const std::optional<ModelEntry> entry = s.models->find(model);
  if (!entry) return std::nullopt;
  std::error_code ec;
  const std::filesystem::path cfg_path = std::filesystem::path(entry->path) / "unet" / "config.json";
  if (!std::filesystem::is_regular_file(cfg_path, ec)) return std::nullopt;
  try {
    return UNetConfig::from_json(read_python_json_file(cfg_path.string()));
  } catch (const Error&) {
    return std::nullopt;  // the model's own problem, reported when it loads
  }
}

// The adapter's family against the model's: refused before the job is queued.
void check_family(Server::State& s, const std::string& path, const std::string& field, const std::string& label,
                  const std::string& model) {
  const IpAdapterProbe probe = probe_ip_adapter(path);
  const std::optional<ModelEntry> entry = s.models->find(model);
  if (!entry) return;  // the job reports an unknown model
  if (!entry->family.empty() && !probe.family.empty() && entry->family != probe.family) {
    throw_error(ErrorCode::kInvalidArgument, field + ": '" + label + "' is an IP-Adapter for " + probe.family +
                                                 ", the model '" + model + "' is " + entry->family);
  }
  // A diffusers folder: its UNet's widths, exactly (the pipeline checks single files when it runs).
  const std::optional<UNetConfig> found = folder_unet_config(s, model);
  if (!found) return;
  const UNetConfig& cfg = *found;
  const size_t layers = UNet::cross_attention_names(cfg).size();
  if (probe.cross_attention_dim != cfg.cross_attention_dim[0] || probe.layers != layers) {
    throw_error(ErrorCode::kInvalidArgument,
                field + ": '" + label + "' is an IP-Adapter for " +
                    (probe.family.empty() ? std::string("another model family") : probe.family) + " (token width " +
                    std::to_string(probe.cross_attention_dim) + ", " + std::to_string(probe.layers) +
                    " cross-attention layers), the model '" + model + "'" +
                    (entry->family.empty() ? std::string() : " (" + entry->family + ")") + " has width " +
                    std::to_string(cfg.cross_attention_dim[0]) + " and " + std::to_string(layers) +
                    " cross-attentions");
  }
}

void add_images(const nlohmann::json& v, const std::string& field, const UploadLimits& limits,
                std::vector<image::Rgb>& out) {
  nlohmann::json img = v;
  if (img.is_object()) img = img.value("image", nlohmann::json(nullptr));
  out.push_back(json_rgb_upload(img, field, limits));
}

}  // namespace

const std::vector<std::string>& ip_adapter_modules() {
  static const std::vector<std::string> m = {"ip-adapter_clip_sd15", "ip-adapter_clip_sdxl",
                                             "ip-adapter_clip_sdxl_plus_vith", "ip-adapter_clip_h",
                                             "ip-adapter_clip_g"};
  return m;
}

bool is_ip_adapter_unit(const nlohmann::json& u) {
  if (!u.is_object()) return false;
  const std::string module = u.contains("module") && u["module"].is_string() ? lower(u["module"].get<std::string>()) : "";
  const std::string model = u.contains("model") && u["model"].is_string() ? lower(u["model"].get<std::string>()) : "";
  return starts_with(module, "ip-adapter") || starts_with(module, "ip_adapter") || starts_with(model, "ip-adapter") ||
         starts_with(model, "ip_adapter");
}

void parse_ip_adapter_unit(Server::State& s, const nlohmann::json& u, const std::string& who,
                           const std::string& model, const std::vector<std::string>& dirs, const UploadLimits& limits,
                           GenerationParams& p) {
  const std::string name = json_field<std::string>(u, "model", "");
  DIFFUSE_CHECK_ARG(!name.empty() && lower(name) != "none", who + ".model: an IP-Adapter unit needs a model "
                                                                  "(an ip-adapter file of /controlnet/model_list)");
  const std::string path = resolve(name, dirs);
  const float weight = json_field<float>(u, "weight", 1.0f);
  DIFFUSE_CHECK_ARG(std::isfinite(weight) && weight >= 0.0f && weight <= 2.0f,
                    who + ".weight: must be between 0 and 2, got " + std::to_string(weight));
  IpAdapterParams& ip = p.ip_adapter;
  if (ip.active()) {
    DIFFUSE_CHECK_ARG(std::filesystem::absolute(ip.model) == std::filesystem::absolute(path) && ip.scale == weight,
                      who + ": one IP-Adapter per request (several reference images: units with the same model and "
                            "weight, whose images are used together)");
  } else {
    check_family(s, path, who + ".model", name, model);
    ip.model = path;
    ip.scale = weight;
    ip.module = json_field<std::string>(u, "module", "ip-adapter_clip");
  }
  bool any = false;
  for (const char* key : {"image", "input_image"}) {
    if (u.contains(key) && !u[key].is_null()) {
      if (u[key].is_array()) {
        for (size_t i = 0; i < u[key].size(); ++i)
          add_images(u[key][i], who + "." + key + "[" + std::to_string(i) + "]", limits, ip.images);
      } else {
        add_images(u[key], who + "." + key, limits, ip.images);
      }
      any = true;
      break;
    }
  }
  if (!any) {
    DIFFUSE_CHECK_ARG(p.edit.active(), who + ".image: no reference image (txt2img needs one; img2img uses the init image)");
    ip.images.push_back(p.edit.init_image);
  }
  validate_ip_adapter(ip);
}

bool apply_native_ip_adapter(Server::State& s, const nlohmann::json& body, const std::string& model,
                             const std::vector<std::string>& dirs, GenerationParams& p, nlohmann::json* echo,
                             httplib::Response& res) {
  if (!body.contains("ip_adapter") || body["ip_adapter"].is_null()) return true;
  try {
    const nlohmann::json& u = body["ip_adapter"];
    DIFFUSE_CHECK_ARG(u.is_object(), "ip_adapter must be an object ({\"model\", \"image\" or \"images\", \"scale\"})");
    UploadLimits limits;
    limits.max_bytes = s.options.max_upload_bytes;
    limits.max_side = s.options.max_upload_side;
    const std::string name = json_field<std::string>(u, "model", "");
    DIFFUSE_CHECK_ARG(!name.empty(), "ip_adapter.model: missing (an ip-adapter file of /api/controlnets or a path)");
    IpAdapterParams& ip = p.ip_adapter;
    ip.model = resolve(name, dirs);
    check_family(s, ip.model, "ip_adapter.model", name, model);
    ip.scale = json_field<float>(u, "scale", 1.0f);
    ip.image_encoder = json_field<std::string>(u, "image_encoder", "");
    ip.module = "ip-adapter_clip";
    if (u.contains("block_scales") && !u["block_scales"].is_null())
      ip.block_scales = u["block_scales"].is_string() ? u["block_scales"].get<std::string>() : u["block_scales"].dump();
    if (u.contains("images") && u["images"].is_array()) {
      for (size_t i = 0; i < u["images"].size(); ++i)
        add_images(u["images"][i], "ip_adapter.images[" + std::to_string(i) + "]", limits, ip.images);
    } else if (u.contains("image") && !u["image"].is_null()) {
      add_images(u["image"], "ip_adapter.image", limits, ip.images);
    }
    DIFFUSE_CHECK_ARG(!ip.images.empty(), "ip_adapter.image: no reference image (\"image\" or \"images\")");
    validate_ip_adapter(ip);
    if (!ip.block_scales.empty()) {  // against the model's UNet now when its config is at hand, else when the job runs
      if (const std::optional<UNetConfig> cfg = folder_unet_config(s, model))
        ip_adapter_layer_scales(nlohmann::json::parse(ip.block_scales), *cfg);
    }
    if (echo && echo->contains("ip_adapter") && (*echo)["ip_adapter"].is_object()) {
      nlohmann::json& e = (*echo)["ip_adapter"];
      for (const char* k : {"image", "images"}) {
        if (e.contains(k)) e[k] = "(" + std::to_string(ip.images.size()) + " image(s))";
      }
    }
    return true;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kOutOfMemory || e.code() == ErrorCode::kCancelled) throw;
    send_error(res, e.code() == ErrorCode::kNotFound ? 404 : 400, e.what());
    return false;
  }
}

size_t native_ip_adapter_image_bytes(const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("ip_adapter") || !body["ip_adapter"].is_object()) return 0;
  const nlohmann::json& u = body["ip_adapter"];
  size_t n = 0;
  if (u.contains("image") && u["image"].is_string()) n += u["image"].get_ref<const std::string&>().size();
  if (u.contains("images") && u["images"].is_array())
    for (const auto& i : u["images"])
      if (i.is_string()) n += i.get_ref<const std::string&>().size();
  return n;
}

}  // namespace diffuse::server
