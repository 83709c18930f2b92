// ControlNet preprocessors without networks (control_preprocess.h), after
// sd-webui-controlnet's scripts/preprocessor code and annotator/shuffle.
#include "image/control_preprocess.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <random>

// OpenCV 4.6's headers mix enum types in arithmetic, which C++20 deprecates.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#pragma GCC diagnostic pop

#include "core/error.h"

namespace diffuse::image {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The extension's slider table (scripts/processor.py preprocessor_sliders_config).
PreprocessorSlider resolution_slider() { return {"Preprocessor Resolution", 512, 64, 2048, 0}; }

std::vector<PreprocessorInfo> make_table() {
  std::vector<PreprocessorInfo> t;
  auto add = [&t](const std::string& name, const std::string& label) -> PreprocessorInfo& {
    PreprocessorInfo p;
    p.name = name;
    p.label = label;
    t.push_back(std::move(p));
    return t.back();
  };
  add("none", "");
  {
    PreprocessorInfo& p = add("canny", "");
    p.resolution = resolution_slider();
    p.threshold_a = PreprocessorSlider{"Canny Low Threshold", 100, 1, 255, 0};
    p.threshold_b = PreprocessorSlider{"Canny High Threshold", 200, 1, 255, 0};
  }
  add("invert", "invert (from white bg & black line)");
  add("tile_resample", "").threshold_a = PreprocessorSlider{"Down Sampling Rate", 1.0, 1.0, 8.0, 0.01};
  {
    PreprocessorInfo& p = add("blur_gaussian", "");
    p.resolution = resolution_slider();
    p.threshold_a = PreprocessorSlider{"Sigma", 9.0, 0.01, 64.0, 0};
  }
  add("shuffle", "").resolution = resolution_slider();
  add("inpaint", "inpaint_global_harmonious").needs_mask = true;
  add("inpaint_only", "").needs_mask = true;
  // Preprocessors that run a network (the extension's annotators): listed, not run.
  const std::string why_net =
      "runs a network (an annotator model) that Diffuse does not implement: make the map with another tool and "
      "send it with module \"none\"";
  for (const char* name :
       {"depth_midas", "depth_leres", "depth_leres++", "depth_zoe", "depth_anything", "normal_bae", "normal_midas",
        "openpose", "openpose_face", "openpose_faceonly", "openpose_full", "openpose_hand", "dw_openpose_full",
        "lineart_realistic", "lineart_coarse", "lineart_anime", "lineart_anime_denoise", "softedge_hed",
        "softedge_hedsafe", "softedge_pidinet", "softedge_pidisafe", "scribble_hed", "scribble_pidinet", "mlsd",
        "seg_ofade20k", "seg_ofcoco", "seg_ufade20k", "inpaint_only+lama"}) {
    PreprocessorInfo& p = add(name, "");
    p.available = false;
    p.reason = why_net;
    p.resolution = resolution_slider();
  }
  return t;
}

// The value of a slider: the default below 0 (bound_check_params), else checked against its range.
double slider_value(const PreprocessorInfo& p, const std::optional<PreprocessorSlider>& s, double v,
                    const char* field) {
  if (!s) return v;
  if (v < 0) return s->value;
  DIFFUSE_CHECK_ARG(std::isfinite(v) && v >= s->min && v <= s->max,
                    std::string(field) + " of '" + p.name + "' (" + s->name + ") must be between " + num(s->min) +
                        " and " + num(s->max) + ", got " + num(v));
  return v;
}

cv::Mat view(const Rgb& im) {
  return cv::Mat(im.height, im.width, CV_8UC3, const_cast<uint8_t*>(im.px.data()));
}

Rgb from_mat(const cv::Mat& m) {
  DIFFUSE_CHECK(m.type() == CV_8UC3, ErrorCode::kRuntime, "[control_preprocess] expected an 8-bit RGB result");
  Rgb out{m.cols, m.rows, std::vector<uint8_t>(static_cast<size_t>(m.cols) * m.rows * 3)};
  cv::Mat dst(m.rows, m.cols, CV_8UC3, out.px.data());
  m.copyTo(dst);
  return out;
}

// numpy's np.round: half to even (the default floating-point rounding mode).
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// resize_image_with_pad: short side to `resolution` (cubic up, area down), then
// padded with edge pixels to multiples of 64. Returns the padded image and the unpadded size.
cv::Mat resize_with_pad(const cv::Mat& img, double resolution, cv::Size* target) {
  const double k = resolution / static_cast<double>(std::min(img.rows, img.cols));
  const int h = round_half_even(img.rows * k), w = round_half_even(img.cols * k);
  DIFFUSE_CHECK_ARG(h >= 1 && w >= 1 && h <= 16384 && w <= 16384,
                    "the preprocessor resolution " + std::to_string(resolution) + " gives a " + std::to_string(w) +
                        "x" + std::to_string(h) + " image (sides 1-16384)");
  cv::Mat scaled;
  cv::resize(img, scaled, cv::Size(w, h), 0, 0, k > 1 ? cv::INTER_CUBIC : cv::INTER_AREA);
  const int pad_h = (h + 63) / 64 * 64 - h, pad_w = (w + 63) / 64 * 64 - w;
  cv::Mat padded;
  cv::copyMakeBorder(scaled, padded, 0, pad_h, 0, pad_w, cv::BORDER_REPLICATE);
  *target = cv::Size(w, h);
  return padded;
}

// numpy's legacy RandomState(seed).uniform(0, 1): MT19937 seeded by init_genrand
// (std::mt19937's seeding), 53-bit doubles from two draws.
double next_double(std::mt19937& g) {
  const uint32_t a = g() >> 5, b = g() >> 6;
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

// annotator/shuffle make_noise_disk(H, W, 1, F): uniform noise on an (H/F + 2) x (W/F + 2)
// grid, cubic-upsampled to (H + 2F) x (W + 2F), the centre H x W, scaled to [0, 1].
cv::Mat noise_disk(int h, int w, int f, std::mt19937& g) {
  cv::Mat coarse(h / f + 2, w / f + 2, CV_64F);
  for (int y = 0; y < coarse.rows; ++y)
    for (int x = 0; x < coarse.cols; ++x) coarse.at<double>(y, x) = next_double(g);
  cv::Mat fine;
  cv::resize(coarse, fine, cv::Size(w + 2 * f, h + 2 * f), 0, 0, cv::INTER_CUBIC);
  cv::Mat n = fine(cv::Rect(f, f, w, h)).clone();
  double lo = 0, hi = 0;
  cv::minMaxLoc(n, &lo, nullptr);
  n -= lo;
  cv::minMaxLoc(n, nullptr, &hi);
  n /= hi;  // as numpy: a constant field gives NaN there too (not reachable: the grid is random)
  return n;
}

// ContentShuffleDetector: cv::remap with a smooth random flow (f = 256).
cv::Mat content_shuffle(const cv::Mat& img, uint32_t seed) {
  std::mt19937 g(seed);
  const int h = img.rows, w = img.cols, f = 256;
  const cv::Mat nx = noise_disk(h, w, f, g);
  const cv::Mat ny = noise_disk(h, w, f, g);
  cv::Mat flow(h, w, CV_32FC2);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      flow.at<cv::Vec2f>(y, x) = cv::Vec2f(static_cast<float>(nx.at<double>(y, x) * static_cast<double>(w - 1)),
                                           static_cast<float>(ny.at<double>(y, x) * static_cast<double>(h - 1)));
  cv::Mat out;
  cv::remap(img, out, flow, cv::noArray(), cv::INTER_LINEAR);
  return out;
}

}  // namespace

const std::vector<PreprocessorInfo>& control_preprocessors() {
  static const std::vector<PreprocessorInfo> table = make_table();
  return table;
}

const PreprocessorInfo* find_control_preprocessor(const std::string& name) {
  const std::string n = lower(name);
  for (const PreprocessorInfo& p : control_preprocessors())
    if (n == p.name || (!p.label.empty() && n == lower(p.label))) return &p;
  // The extension's older module names.
  static const std::pair<const char*, const char*> kOld[] = {
      {"depth", "depth_midas"}, {"hed", "softedge_hed"}, {"pidinet", "softedge_pidinet"},
      {"lineart", "lineart_realistic"}, {"normal_map", "normal_midas"}, {"segmentation", "seg_ufade20k"}};
  for (const auto& [old_name, now] : kOld)
    if (n == old_name) return find_control_preprocessor(now);
  return nullptr;
}

std::string control_preprocessor_list() {
  std::string s;
  for (const PreprocessorInfo& p : control_preprocessors()) {
    if (!p.available) continue;
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

int pixel_perfect_resolution(int raw_width, int raw_height, int target_width, int target_height, ResizeMode mode) {
  DIFFUSE_CHECK_ARG(raw_width > 0 && raw_height > 0 && target_width > 0 && target_height > 0,
                    "pixel perfect: sizes must be positive");
  const double k0 = static_cast<double>(target_height) / raw_height;
  const double k1 = static_cast<double>(target_width) / raw_width;
  const double k = mode == ResizeMode::kResizeAndFill ? std::min(k0, k1) : std::max(k0, k1);
  return round_half_even(k * std::min(raw_width, raw_height));
}

Rgb inpaint_display(const Rgb& image, const Gray& mask) {
  DIFFUSE_CHECK_ARG(mask.width == image.width && mask.height == image.height,
                    "the inpaint mask must have the image's size");
  Rgb out = image;
  for (size_t i = 0; i < mask.px.size(); ++i) {
    const int alpha = 255 - mask.px[i] / 2;
    for (int c = 0; c < 3; ++c) {
      uint8_t& v = out.px[i * 3 + static_cast<size_t>(c)];
      v = static_cast<uint8_t>((v * alpha + 127) / 255);
    }
  }
  return out;
}

ControlMap preprocess_control(const std::string& module, const Rgb& input, const PreprocessOptions& o) {
  const PreprocessorInfo* p = find_control_preprocessor(module.empty() ? "none" : module);
  DIFFUSE_CHECK_ARG(p != nullptr, "unknown preprocessor '" + module + "': the available ones are " +
                                      control_preprocessor_list());
  DIFFUSE_CHECK_ARG(p->available, "the preprocessor '" + p->name + "' is not available: it " + p->reason);
  DIFFUSE_CHECK_ARG(!input.empty() && input.px.size() == static_cast<size_t>(input.width) * input.height * 3,
                    "preprocessor '" + p->name + "': the image is empty or its pixels do not match its size");
  const double res = slider_value(*p, p->resolution, o.resolution, "processor_res");
  const double a = slider_value(*p, p->threshold_a, o.threshold_a, "threshold_a");
  const double b = slider_value(*p, p->threshold_b, o.threshold_b, "threshold_b");
  const cv::Mat img = view(input);
  ControlMap out;
  if (p->name == "none") {
    out.image = input;
  } else if (p->name == "canny") {
    cv::Size size;
    const cv::Mat padded = resize_with_pad(img, res, &size);
    cv::Mat edges, rgb;
    cv::Canny(padded, edges, static_cast<int>(a), static_cast<int>(b));
    cv::cvtColor(edges(cv::Rect(0, 0, size.width, size.height)), rgb, cv::COLOR_GRAY2RGB);
    out.image = from_mat(rgb);
  } else if (p->name == "invert") {
    cv::Mat inv;
    cv::bitwise_not(img, inv);
    out.image = from_mat(inv);
  } else if (p->name == "tile_resample") {
    if (a < 1.1) {
      out.image = input;
    } else {
      const int h = std::max(1, static_cast<int>(input.height / a)), w = std::max(1, static_cast<int>(input.width / a));
      cv::Mat small;
      cv::resize(img, small, cv::Size(w, h), 0, 0, cv::INTER_AREA);
      out.image = from_mat(small);
    }
  } else if (p->name == "blur_gaussian") {
    cv::Size size;
    const cv::Mat padded = resize_with_pad(img, res, &size);
    cv::Mat blurred;
    cv::GaussianBlur(padded(cv::Rect(0, 0, size.width, size.height)).clone(), blurred, cv::Size(0, 0), a);
    out.image = from_mat(blurred);
  } else if (p->name == "shuffle") {
    cv::Size size;
    const cv::Mat padded = resize_with_pad(img, res, &size);
    out.image = from_mat(content_shuffle(padded(cv::Rect(0, 0, size.width, size.height)).clone(), o.seed));
  } else if (p->needs_mask) {
    DIFFUSE_CHECK_ARG(!o.mask.empty(), "the preprocessor '" + p->name + "' needs a mask (white = repaint)");
    DIFFUSE_CHECK_ARG(o.mask.width == input.width && o.mask.height == input.height,
                      "the mask of '" + p->name + "' is " + std::to_string(o.mask.width) + "x" +
                          std::to_string(o.mask.height) + ", the image " + std::to_string(input.width) + "x" +
                          std::to_string(input.height) + ": they must have the same size");
    out.image = input;
    out.mask = o.mask;
  } else {
    throw_error(ErrorCode::kRuntime, "[control_preprocess] no implementation for '" + p->name + "'");
  }
  return out;
}

}  // namespace diffuse::image
