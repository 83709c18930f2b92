#include "cli/controlnet_flags.h"

#include <algorithm>
#include <cstdlib>

#include "core/error.h"
#include "image/control_preprocess.h"
#include "io/file_io.h"
#include "io/png.h"
#include "pipeline/controlnet_library.h"

namespace diffuse::cli {
namespace {

constexpr const char* kDefaultControlNetDir = "models/ControlNet";

// "MODEL[:WEIGHT]": the part after the last ':' is a weight when it reads as a number.
std::pair<std::string, float> split_weight(const std::string& s) {
  const size_t colon = s.rfind(':');
  if (colon != std::string::npos && colon + 1 < s.size()) {
    const std::string tail = s.substr(colon + 1);
    char* end = nullptr;
    const double w = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0') return {s.substr(0, colon), static_cast<float>(w)};
  }
  return {s, 1.0f};
}

template <class T>
const T& per_unit(const std::vector<T>& v, size_t i, const T& fallback) {
  if (v.empty()) return fallback;
  return v.size() == 1 ? v[0] : v[i];
}

image::Rgb read_control_image(const std::string& path) {
  try {
    const std::shared_ptr<MappedFile> f = MappedFile::open(path);
    PngImage im = read_png(f->data(), f->size());
    return image::Rgb{im.width, im.height, std::move(im.rgb)};
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, "--control-image " + path + ": " + e.what());
  }
}

// --preprocess on the unit's image. The resolution: --preprocess-res, else pixel
// perfect for the output size when it is given (else the slider's default, 512).
void preprocess_unit(const ControlNetFlags& f, size_t i, const GenerationParams& p, ControlNetUnit& u) {
  const std::string module = per_unit(f.preprocess, i, std::string("none"));
  const image::PreprocessorInfo* info = image::find_control_preprocessor(module);
  DIFFUSE_CHECK_ARG(info != nullptr, "--preprocess: unknown preprocessor '" + module + "'; the available ones are " +
                                         image::control_preprocessor_list());
  u.module = info->name;
  if (info->name == "none") return;
  image::PreprocessOptions o;
  o.resolution = per_unit(f.preprocess_res, i, -1.0);
  o.threshold_a = per_unit(f.preprocess_a, i, -1.0);
  o.threshold_b = per_unit(f.preprocess_b, i, -1.0);
  if (o.resolution < 0 && info->resolution && p.width > 0 && p.height > 0) {
    o.resolution = std::clamp<double>(
        image::pixel_perfect_resolution(u.image.width, u.image.height, p.width, p.height, u.resize_mode),
        info->resolution->min, info->resolution->max);
    u.pixel_perfect = true;
  }
  // shuffle: sd-webui-controlnet's numpy seed, (seed + subseed) mod 2^32 with the subseed = the seed.
  o.seed = static_cast<uint32_t>((static_cast<uint64_t>(p.seed >= 0 ? p.seed : 0) * 2u) & 0xFFFFFFFFu);
  if (info->needs_mask) {
    DIFFUSE_CHECK_ARG(!p.edit.mask.empty(), "--preprocess " + info->name + " needs --init-image with --mask");
    o.mask = image::resize(p.edit.mask, u.image.width, u.image.height);
  }
  try {
    image::ControlMap map = image::preprocess_control(info->name, u.image, o);
    u.image = std::move(map.image);
    u.mask = std::move(map.mask);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    throw_error(ErrorCode::kInvalidArgument, "--preprocess " + info->name + ": " + e.what());
  }
}

}  // namespace

void add_controlnet_flags(CLI::App* c, ControlNetFlags& f) {
  const std::string group = "ControlNet";
  c->add_option("--controlnet", f.models,
                "A ControlNet (diffusers folder, or an A1111 .safetensors/.pth file, or its name in "
                "--controlnet-dir), optionally with a weight: MODEL[:WEIGHT] (default 1, 0 to 2). Repeatable: "
                "the units add up")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--control-image", f.images,
                "The control image (PNG) of the --controlnet of the same rank (an edge map, depth map, pose...; "
                "resized to the output size)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--control-start", f.starts,
                "Fraction of the schedule where the control starts (default 0; one for all units or one per unit)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--control-end", f.ends, "Fraction of the schedule where it ends (default 1)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--control-mode", f.modes,
                "balanced (default), prompt (\"my prompt is more important\") or controlnet (\"ControlNet is "
                "more important\"), as sd-webui-controlnet")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--control-resize", f.resizes,
                "How the control image meets the output size: just-resize (default, as diffusers), crop, fill")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--preprocess", f.preprocess,
                "Preprocessor run on the --control-image first (as sd-webui-controlnet): none (default), canny, "
                "invert, tile_resample, blur_gaussian, shuffle, inpaint, inpaint_only (these two take --mask); "
                "`diffuse preprocess --list` shows their sliders")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--preprocess-res", f.preprocess_res,
                "The preprocessor's resolution (processor_res, 64-2048; default: pixel perfect, the output size's)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--preprocess-a", f.preprocess_a,
                "The preprocessor's first slider (threshold_a: canny's low threshold, tile_resample's rate, "
                "blur_gaussian's sigma; default: the slider's default)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--preprocess-b", f.preprocess_b, "The preprocessor's second slider (threshold_b: canny's high threshold)")
      ->group(group)
      ->allow_extra_args(false);
  c->add_flag("--guess-mode", f.guess_mode,
              "diffusers' guess_mode: the control on the conditional half only, log-spaced scales 0.1..1")
      ->group(group);
  c->add_option("--controlnet-dir", f.dirs,
                "Folder where --controlnet looks a name up (default: models/ControlNet in the working directory); "
                "repeatable")
      ->group(group)
      ->allow_extra_args(false);
}

void apply_controlnet_flags(const ControlNetFlags& f, GenerationParams& p) {
  const bool any_other = !f.images.empty() || !f.starts.empty() || !f.ends.empty() || !f.modes.empty() ||
                         !f.resizes.empty() || f.guess_mode || !f.preprocess.empty() || !f.preprocess_res.empty() ||
                         !f.preprocess_a.empty() || !f.preprocess_b.empty();
  if (f.models.empty()) {
    DIFFUSE_CHECK_ARG(!any_other, "--control-image, --control-start/end/mode/resize, --preprocess* and --guess-mode "
                                  "need --controlnet");
    return;
  }
  const size_t n = f.models.size();
  DIFFUSE_CHECK_ARG(f.images.size() == n, "each --controlnet needs its --control-image: " + std::to_string(n) +
                                              " --controlnet, " + std::to_string(f.images.size()) + " --control-image");
  auto count_ok = [n](size_t k) { return k <= 1 || k == n; };
  DIFFUSE_CHECK_ARG(count_ok(f.starts.size()) && count_ok(f.ends.size()) && count_ok(f.modes.size()) &&
                        count_ok(f.resizes.size()) && count_ok(f.preprocess.size()) &&
                        count_ok(f.preprocess_res.size()) && count_ok(f.preprocess_a.size()) &&
                        count_ok(f.preprocess_b.size()),
                    "--control-start/--control-end/--control-mode/--control-resize/--preprocess* take one value for "
                    "all units or one per --controlnet (" + std::to_string(n) + ")");
  const std::vector<std::string> dirs = f.dirs.empty() ? std::vector<std::string>{kDefaultControlNetDir} : f.dirs;
  for (size_t i = 0; i < n; ++i) {
    ControlNetUnit u;
    const auto [model, weight] = split_weight(f.models[i]);
    u.path = resolve_controlnet(model, dirs);
    u.weight = weight;
    u.image = read_control_image(f.images[i]);
    u.guidance_start = per_unit(f.starts, i, 0.0);
    u.guidance_end = per_unit(f.ends, i, 1.0);
    u.control_mode = control_mode_from_name(per_unit(f.modes, i, std::string("balanced")));
    u.resize_mode = image::resize_mode_from_name(per_unit(f.resizes, i, std::string("just-resize")));
    u.guess_mode = f.guess_mode;
    preprocess_unit(f, i, p, u);
    p.controlnets.push_back(std::move(u));
  }
  validate_controlnet_units(p.controlnets);
}

}  // namespace diffuse::cli
