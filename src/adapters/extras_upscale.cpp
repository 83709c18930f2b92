// A1111's Extras upscale step (upscalers.h ExtrasUpscale), after
// scripts/postprocessing_upscale.py ScriptPostprocessingUpscale.process and
// modules/upscaler.py Upscaler.upscale. Differences, on purpose:
//  - "Scale to" upscales to the size that covers width x height exactly and
//    centre-crops it; A1111 rounds that size down to a multiple of 8 first, so
//    its crop can leave black bars at the edges.
//  - Without crop, "Scale to" gives that covering size (A1111: the size
//    rounded down to a multiple of 8).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "adapters/upscalers.h"
#include "core/error.h"
#include "io/infotext.h"

namespace diffuse {

namespace {

constexpr int kMaxSide = 16384;

bool is_none(const std::string& name) { return name.empty() || name == "None"; }

// 4 -> "4", 2.5 -> "2.5" (the shortest text that reads back as the same double).
std::string format_number(double v) {
  char buf[32];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// PIL's Image.blend: in1 + alpha * (in2 - in1), truncated to 8 bits.
image::Rgb blend(const image::Rgb& a, const image::Rgb& b, double alpha) {
  image::Rgb out = a;
  const float al = static_cast<float>(alpha);
  for (size_t i = 0; i < out.px.size(); ++i) {
    const float v = static_cast<float>(a.px[i]) + al * (static_cast<float>(b.px[i]) - static_cast<float>(a.px[i]));
    out.px[i] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
  }
  return out;
}

void check_size(int64_t w, int64_t h, int64_t max_pixels) {
  DIFFUSE_CHECK_ARG(w >= 1 && h >= 1 && w <= kMaxSide && h <= kMaxSide && w * h <= max_pixels,
                    "the upscaled image would be " + std::to_string(w) + "x" + std::to_string(h) + " (at most " +
                        std::to_string(kMaxSide) + " per side and " + std::to_string(max_pixels) + " pixels)");
}

}  // namespace

void ExtrasUpscale::validate() const {
  DIFFUSE_CHECK_ARG(resize_mode == 0 || resize_mode == 1,
                    "resize_mode must be 0 (scale by) or 1 (scale to), got " + std::to_string(resize_mode));
  DIFFUSE_CHECK_ARG(std::isfinite(scale_by) && scale_by > 0 && scale_by <= 16,
                    "upscaling_resize must be above 0 and at most 16, got " + format_number(scale_by));
  DIFFUSE_CHECK_ARG(to_width >= 1 && to_width <= kMaxSide && to_height >= 1 && to_height <= kMaxSide,
                    "upscaling_resize_w and upscaling_resize_h must be 1-" + std::to_string(kMaxSide) + ", got " +
                        std::to_string(to_width) + "x" + std::to_string(to_height));
  DIFFUSE_CHECK_ARG(std::isfinite(upscaler_2_visibility) && upscaler_2_visibility >= 0 && upscaler_2_visibility <= 1,
                    "extras_upscaler_2_visibility must be 0-1, got " + format_number(upscaler_2_visibility));
}

int extras_scaled_side(int side, double scale) {
  const double exact = std::floor(side * scale);
  if (exact < 8) return static_cast<int>(std::max(1.0, exact));
  return static_cast<int>(std::floor(exact / 8) * 8);
}

ExtrasResult run_extras_upscale(const UpscalerLibrary& lib, const image::Rgb& in, const ExtrasUpscale& x, Device device,
                                int64_t max_pixels) {
  x.validate();
  DIFFUSE_CHECK_ARG(!in.empty(), "[extras] the input image is empty");
  ExtrasResult r;
  r.image = in;
  if (is_none(x.upscaler_1)) return r;  // A1111: no upscaler 1, no upscale step
  const UpscalerInfo u1 = lib.find(x.upscaler_1);
  const bool second = !is_none(x.upscaler_2);
  const UpscalerInfo u2 = second ? lib.find(x.upscaler_2) : UpscalerInfo{};

  std::vector<std::string> info;
  int w = 0, h = 0;  // what the upscalers make
  image::Rect crop{};
  bool cropping = false;
  if (x.resize_mode == 0) {
    info.push_back("Postprocess upscale by: " + format_number(x.scale_by));
    w = extras_scaled_side(in.width, x.scale_by);
    h = extras_scaled_side(in.height, x.scale_by);
  } else {
    info.push_back("Postprocess upscale to: " + std::to_string(x.to_width) + "x" + std::to_string(x.to_height));
    const double by = std::max(double(x.to_width) / in.width, double(x.to_height) / in.height);
    w = std::max(x.to_width, static_cast<int>(std::lround(in.width * by)));
    h = std::max(x.to_height, static_cast<int>(std::lround(in.height * by)));
    if (x.crop) {
      cropping = true;
      crop = {w / 2 - x.to_width / 2, h / 2 - x.to_height / 2, x.to_width, x.to_height};
      info.push_back("Postprocess crop to: " + std::to_string(x.to_width) + "x" + std::to_string(x.to_height));
    }
  }
  check_size(w, h, max_pixels);
  auto run = [&](const std::string& name) {  // as given: a path stays a path (the CLI)
    image::Rgb img = lib.upscale(name, in, w, h, device);
    return cropping ? image::crop(img, crop) : img;
  };
  r.image = run(x.upscaler_1);
  info.push_back("Postprocess upscaler: " + infotext_quote(u1.name));
  if (second && x.upscaler_2_visibility > 0) {
    r.image = blend(r.image, run(x.upscaler_2), x.upscaler_2_visibility);
    info.push_back("Postprocess upscaler 2: " + infotext_quote(u2.name));
  }
  for (size_t i = 0; i < info.size(); ++i) r.infotext += (i ? ", " : "") + info[i];
  return r;
}

}  // namespace diffuse
