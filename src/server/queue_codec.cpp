#include "server/queue_codec.h"

#include "server/base64.h"

namespace diffuse::server {
namespace {

using nlohmann::json;

json rgb_json(const image::Rgb& im) {
  return {{"w", im.width},
          {"h", im.height},
          {"px", base64_encode(std::string_view(reinterpret_cast<const char*>(im.px.data()), im.px.size()))}};
}

template <class Img>
Img image_from(const json& j, int channels, const char* what) {
  Img im;
  if (j.is_null()) return im;
  im.width = j.at("w").get<int>();
  im.height = j.at("h").get<int>();
  im.px = base64_decode(j.at("px").get<std::string>());
  DIFFUSE_CHECK_ARG(im.width >= 0 && im.height >= 0 &&
                        im.px.size() == static_cast<size_t>(im.width) * im.height * channels,
                    std::string("queued job: ") + what + " has " + std::to_string(im.px.size()) +
                        " bytes, not width x height x " + std::to_string(channels));
  return im;
}

json gray_json(const image::Gray& im) {
  return {{"w", im.width},
          {"h", im.height},
          {"px", base64_encode(std::string_view(reinterpret_cast<const char*>(im.px.data()), im.px.size()))}};
}

json optional_string(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
std::optional<std::string> optional_string(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<std::string>();
}

}  // namespace

json encode_job_request(const JobRequest& r) {
  const GenerationParams& p = r.params;
  auto refuse = [](const char* what) {
    throw_error(ErrorCode::kUnsupported, std::string(what) + " is not available through the job queue (--queue) yet");
  };
  if (p.refiner.model) refuse("a preloaded refiner");
  if (p.initial_latents.defined() || p.init_latents.defined() || p.generator) refuse("starting from given latents");
  if (p.output_latents) refuse("output_latents");
  json j;
  j["model"] = r.model;
  j["echo"] = r.echo;
  j["written_prompt"] = r.written_prompt;
  j["warnings"] = r.warnings;
  json& g = j["params"];
  g["prompt"] = p.prompt;
  g["negative_prompt"] = optional_string(p.negative_prompt);
  g["prompts"] = p.prompts;
  g["negative_prompts"] = p.negative_prompts;
  g["width"] = p.width;
  g["height"] = p.height;
  g["steps"] = p.steps;
  g["cfg_scale"] = p.cfg_scale;
  g["sampler"] = p.sampler;
  g["schedule"] = p.schedule;
  g["seed"] = p.seed;
  g["rng"] = p.rng == RngKind::kCuda ? "cuda" : "cpu";
  g["images"] = p.images;
  g["seed_per_image"] = p.seed_per_image;
  g["clip_skip"] = p.clip_skip;
  g["decode_when_stopped"] = p.decode_when_stopped;
  g["vae_tiling"] = vae_tiling_name(p.vae_tiling);
  g["vae"] = p.vae;
  g["original_size"] = p.original_size;
  g["crops_coords_top_left"] = p.crops_coords_top_left;
  g["target_size"] = p.target_size;
  json loras = json::array();
  for (const LoraRef& l : p.loras) loras.push_back({{"path", l.path}, {"unet", l.unet_weight}, {"te", l.te_weight}});
  g["loras"] = loras;
  g["embedding_dirs"] = p.embedding_dirs;
  g["embeddings"] = p.embeddings;
  g["denoising_start"] = p.denoising_start;
  g["denoising_end"] = p.denoising_end;
  if (p.edit.active()) {
    const EditParams& e = p.edit;
    g["edit"] = {{"init_image", rgb_json(e.init_image)},
                 {"mask", e.mask.empty() ? json(nullptr) : gray_json(e.mask)},
                 {"strength", e.strength},
                 {"resize_mode", static_cast<int>(e.resize_mode)},
                 {"mask_blur", e.mask_blur},
                 {"invert_mask", e.invert_mask},
                 {"masked_content", static_cast<int>(e.masked_content)},
                 {"only_masked", e.only_masked},
                 {"only_masked_padding", e.only_masked_padding},
                 {"overlay", e.overlay},
                 {"outpaint",
                  {{"left", e.outpaint.left},
                   {"right", e.outpaint.right},
                   {"top", e.outpaint.top},
                   {"bottom", e.outpaint.bottom},
                   {"noise", e.outpaint.fill == image::OutpaintSpec::Fill::kNoise},
                   {"seam", e.outpaint.seam},
                   {"feather", e.outpaint.feather}}}};
  }
  if (!p.controlnets.empty()) {
    json units = json::array();
    for (const ControlNetUnit& u : p.controlnets) {
      units.push_back({{"path", u.path},
                       {"image", rgb_json(u.image)},
                       {"weight", u.weight},
                       {"guidance_start", u.guidance_start},
                       {"guidance_end", u.guidance_end},
                       {"control_mode", control_mode_name(u.control_mode)},
                       {"resize_mode", static_cast<int>(u.resize_mode)},
                       {"guess_mode", u.guess_mode},
                       {"module", u.module},
                       {"pixel_perfect", u.pixel_perfect},
                       {"mask", u.mask.empty() ? json(nullptr) : gray_json(u.mask)}});  // inpaint units
    }
    g["controlnets"] = units;
  }
  if (p.ip_adapter.active()) {
    const IpAdapterParams& ip = p.ip_adapter;
    json images = json::array();
    for (const image::Rgb& im : ip.images) images.push_back(rgb_json(im));
    g["ip_adapter"] = {{"model", ip.model},         {"image_encoder", ip.image_encoder}, {"images", images},
                       {"scale", ip.scale},         {"block_scales", ip.block_scales},   {"module", ip.module}};
  }
  if (p.refiner.enabled()) {
    g["refiner"] = {{"path", p.refiner.path},
                    {"switch_at", p.refiner.switch_at},
                    {"aesthetic_score", p.refiner.aesthetic_score},
                    {"negative_aesthetic_score", p.refiner.negative_aesthetic_score}};
  }
  if (p.hires.enabled) {
    const HiresParams& h = p.hires;
    g["hires"] = {{"scale", h.scale},
                  {"resize_x", h.resize_x},
                  {"resize_y", h.resize_y},
                  {"upscaler", h.upscaler},
                  {"second_pass_steps", h.second_pass_steps},
                  {"denoising_strength", h.denoising_strength},
                  {"prompt", optional_string(h.prompt)},
                  {"negative_prompt", optional_string(h.negative_prompt)},
                  {"sampler", h.sampler}};
  }
  return j;
}

JobRequest decode_job_request(const json& j) {
  try {
    JobRequest r;
    r.model = j.at("model").get<std::string>();
    r.echo = j.value("echo", json::object());
    r.written_prompt = j.value("written_prompt", "");
    r.warnings = j.value("warnings", std::vector<std::string>{});
    const json& g = j.at("params");
    GenerationParams& p = r.params;
    p.prompt = g.at("prompt").get<std::string>();
    p.negative_prompt = optional_string(g.at("negative_prompt"));
    p.prompts = g.at("prompts").get<std::vector<std::string>>();
    p.negative_prompts = g.at("negative_prompts").get<std::vector<std::string>>();
    p.width = g.at("width").get<int>();
    p.height = g.at("height").get<int>();
    p.steps = g.at("steps").get<int>();
    p.cfg_scale = g.at("cfg_scale").get<float>();
    p.sampler = g.at("sampler").get<std::string>();
    p.schedule = g.at("schedule").get<std::string>();
    p.seed = g.at("seed").get<int64_t>();
    p.rng = g.at("rng").get<std::string>() == "cuda" ? RngKind::kCuda : RngKind::kCpu;
    p.images = g.at("images").get<int>();
    p.seed_per_image = g.at("seed_per_image").get<bool>();
    p.clip_skip = g.at("clip_skip").get<int>();
    p.decode_when_stopped = g.at("decode_when_stopped").get<bool>();
    p.vae_tiling = vae_tiling_from_name(g.at("vae_tiling").get<std::string>());
    p.vae = g.at("vae").get<std::string>();
    p.original_size = g.at("original_size").get<std::array<int, 2>>();
    p.crops_coords_top_left = g.at("crops_coords_top_left").get<std::array<int, 2>>();
    p.target_size = g.at("target_size").get<std::array<int, 2>>();
    for (const json& l : g.at("loras")) {
      p.loras.push_back({l.at("path").get<std::string>(), l.at("unet").get<float>(), l.at("te").get<float>()});
    }
    p.embedding_dirs = g.at("embedding_dirs").get<std::vector<std::string>>();
    p.embeddings = g.at("embeddings").get<std::vector<std::string>>();
    p.denoising_start = g.at("denoising_start").get<double>();
    p.denoising_end = g.at("denoising_end").get<double>();
    if (g.contains("edit")) {
      const json& e = g["edit"];
      EditParams& x = p.edit;
      x.init_image = image_from<image::Rgb>(e.at("init_image"), 3, "init_image");
      x.mask = image_from<image::Gray>(e.at("mask"), 1, "mask");
      x.strength = e.at("strength").get<double>();
      x.resize_mode = static_cast<image::ResizeMode>(e.at("resize_mode").get<int>());
      x.mask_blur = e.at("mask_blur").get<int>();
      x.invert_mask = e.at("invert_mask").get<bool>();
      x.masked_content = static_cast<MaskedContent>(e.at("masked_content").get<int>());
      x.only_masked = e.at("only_masked").get<bool>();
      x.only_masked_padding = e.at("only_masked_padding").get<int>();
      x.overlay = e.at("overlay").get<bool>();
      const json& o = e.at("outpaint");
      x.outpaint.left = o.at("left").get<int>();
      x.outpaint.right = o.at("right").get<int>();
      x.outpaint.top = o.at("top").get<int>();
      x.outpaint.bottom = o.at("bottom").get<int>();
      x.outpaint.fill = o.at("noise").get<bool>() ? image::OutpaintSpec::Fill::kNoise : image::OutpaintSpec::Fill::kEdge;
      x.outpaint.seam = o.at("seam").get<int>();
      x.outpaint.feather = o.at("feather").get<int>();
    }
    if (g.contains("controlnets")) {
      for (const json& u : g["controlnets"]) {
        ControlNetUnit x;
        x.path = u.at("path").get<std::string>();
        x.image = image_from<image::Rgb>(u.at("image"), 3, "a ControlNet image");
        x.weight = u.at("weight").get<float>();
        x.guidance_start = u.at("guidance_start").get<double>();
        x.guidance_end = u.at("guidance_end").get<double>();
        x.control_mode = control_mode_from_name(u.at("control_mode").get<std::string>());
        x.resize_mode = static_cast<image::ResizeMode>(u.at("resize_mode").get<int>());
        x.guess_mode = u.at("guess_mode").get<bool>();
        x.module = u.at("module").get<std::string>();
        x.pixel_perfect = u.at("pixel_perfect").get<bool>();
        if (u.contains("mask") && !u["mask"].is_null()) x.mask = image_from<image::Gray>(u["mask"], 1, "a ControlNet mask");
        p.controlnets.push_back(std::move(x));
      }
    }
    if (g.contains("ip_adapter")) {
      const json& u = g["ip_adapter"];
      IpAdapterParams& x = p.ip_adapter;
      x.model = u.at("model").get<std::string>();
      x.image_encoder = u.at("image_encoder").get<std::string>();
      for (const json& im : u.at("images")) x.images.push_back(image_from<image::Rgb>(im, 3, "an IP-Adapter image"));
      x.scale = u.at("scale").get<float>();
      x.block_scales = u.at("block_scales").get<std::string>();
      x.module = u.at("module").get<std::string>();
    }
    if (g.contains("refiner")) {
      const json& f = g["refiner"];
      p.refiner.path = f.at("path").get<std::string>();
      p.refiner.switch_at = f.at("switch_at").get<double>();
      p.refiner.aesthetic_score = f.at("aesthetic_score").get<double>();
      p.refiner.negative_aesthetic_score = f.at("negative_aesthetic_score").get<double>();
    }
    if (g.contains("hires")) {
      const json& h = g["hires"];
      HiresParams& x = p.hires;
      x.enabled = true;
      x.scale = h.at("scale").get<double>();
      x.resize_x = h.at("resize_x").get<int>();
      x.resize_y = h.at("resize_y").get<int>();
      x.upscaler = h.at("upscaler").get<std::string>();
      x.second_pass_steps = h.at("second_pass_steps").get<int>();
      x.denoising_strength = h.at("denoising_strength").get<double>();
      x.prompt = optional_string(h.at("prompt"));
      x.negative_prompt = optional_string(h.at("negative_prompt"));
      x.sampler = h.at("sampler").get<std::string>();
    }
    return r;
  } catch (const json::exception& e) {
    throw_error(ErrorCode::kInvalidArgument, std::string("queued job: malformed request: ") + e.what());
  }
}

}  // namespace diffuse::server
