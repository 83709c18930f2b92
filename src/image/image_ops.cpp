// Image operations for editing, on top of OpenCV's imgproc. Where an
// operation follows AUTOMATIC1111 (modules/images.py resize_image,
// modules/masking.py get_crop_region / expand_crop_region / fill,
// modules/processing.py create_binary_mask and the mask blur), the comment
// says which, and docs/editing.md "Image operations" lists every place where
// we depart from it and why.
#include "image/image_ops.h"

#include <algorithm>
#include <cmath>
#include <random>

// OpenCV 4.6's headers mix enum types in arithmetic, which C++20 deprecates.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#pragma GCC diagnostic pop

#include "core/error.h"
#include "io/png.h"

namespace diffuse::image {
namespace {

// Same bound as the PNG reader: no image, canvas or resize target is larger.
constexpr int kMaxSide = 16384;
constexpr int kMaxBlurRadius = 256;
// "crop and resize" scales the whole image before cropping (A1111). Past this
// many pixels the scaled image is never built; the crop is sampled directly.
constexpr int64_t kMaxIntermediatePixels = int64_t{1} << 26;

std::string size_str(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }
std::string rect_str(const Rect& r) {
  return "(x " + std::to_string(r.x) + ", y " + std::to_string(r.y) + ", " + size_str(r.width, r.height) + ")";
}

int channels_of(const Rgb&) { return 3; }
int channels_of(const Gray&) { return 1; }

template <class Img>
void check_image(const Img& im, const std::string& op, const char* what) {
  DIFFUSE_CHECK_ARG(im.width >= 1 && im.height >= 1 && im.width <= kMaxSide && im.height <= kMaxSide,
                    "[" + op + "] " + what + " is " + size_str(im.width, im.height) + ": width and height must be 1-" +
                        std::to_string(kMaxSide));
  const size_t want = static_cast<size_t>(im.width) * im.height * channels_of(im);
  DIFFUSE_CHECK_ARG(im.px.size() == want, "[" + op + "] " + what + " is " + size_str(im.width, im.height) + " with " +
                                              std::to_string(channels_of(im)) + " channel(s), so it needs " +
                                              std::to_string(want) + " bytes, got " + std::to_string(im.px.size()));
}

void check_size(int width, int height, const std::string& op) {
  DIFFUSE_CHECK_ARG(width >= 1 && height >= 1 && width <= kMaxSide && height <= kMaxSide,
                    "[" + op + "] target size " + size_str(width, height) + " is out of range: width and height must be 1-" +
                        std::to_string(kMaxSide));
}

template <class Img>
void check_same_size(const Img& a, const Gray& m, const std::string& op, const char* a_name) {
  DIFFUSE_CHECK_ARG(a.width == m.width && a.height == m.height, "[" + op + "] the mask is " + size_str(m.width, m.height) +
                                                                    " but the " + a_name + " is " +
                                                                    size_str(a.width, a.height) + "; they must match");
}

void check_rect_inside(const Rect& r, int width, int height, const std::string& op) {
  bool ok = r.width >= 1 && r.height >= 1 && r.x >= 0 && r.y >= 0 && int64_t{r.x} + r.width <= width &&
            int64_t{r.y} + r.height <= height;
  DIFFUSE_CHECK_ARG(ok, "[" + op + "] rectangle " + rect_str(r) + " must be non-empty and inside the " +
                            size_str(width, height) + " image");
}

// A read-only OpenCV header over our pixels (OpenCV wants a non-const pointer).
template <class Img>
cv::Mat view(const Img& im) {
  return cv::Mat(im.height, im.width, CV_8UC(channels_of(im)), const_cast<uint8_t*>(im.px.data()));
}

template <class Img>
Img from_mat(const cv::Mat& m) {
  Img out;
  out.width = m.cols;
  out.height = m.rows;
  out.px.resize(static_cast<size_t>(m.cols) * m.rows * channels_of(out));
  cv::Mat dst(m.rows, m.cols, CV_8UC(channels_of(out)), out.px.data());
  m.copyTo(dst);  // handles ROIs (non-continuous rows)
  return out;
}

int interpolation_for(int from, int to) { return to > from ? cv::INTER_LANCZOS4 : cv::INTER_AREA; }

// Resampling to an exact size, chosen per axis: Lanczos-4 along an axis that
// grows, area averaging along one that shrinks. When both axes agree it is one
// cv::resize; when they differ it is x then y through float, so that nothing
// is rounded to 8 bits in between.
cv::Mat resize_exact(const cv::Mat& src, int width, int height) {
  if (src.cols == width && src.rows == height) return src.clone();
  const bool grow = width > src.cols || height > src.rows;
  const bool shrink = width < src.cols || height < src.rows;
  cv::Mat dst;
  if (!shrink || !grow) {
    cv::resize(src, dst, cv::Size(width, height), 0, 0, grow ? cv::INTER_LANCZOS4 : cv::INTER_AREA);
    return dst;
  }
  cv::Mat f, fx, fy;
  src.convertTo(f, CV_32F);
  cv::resize(f, fx, cv::Size(width, src.rows), 0, 0, interpolation_for(src.cols, width));
  cv::resize(fx, fy, cv::Size(width, height), 0, 0, interpolation_for(src.rows, height));
  fy.convertTo(dst, src.type());  // rounds and saturates (Lanczos overshoots)
  return dst;
}

// A1111 images.resize_image with upscaler None, on one image.
cv::Mat resize_with_mode(const cv::Mat& src, int width, int height, ResizeMode mode) {
  const int64_t iw = src.cols, ih = src.rows;
  const double ratio = static_cast<double>(width) / height;
  const double src_ratio = static_cast<double>(iw) / ih;
  switch (mode) {
    case ResizeMode::kJustResize:
      return resize_exact(src, width, height);
    case ResizeMode::kCropAndResize: {
      // Scale so the image covers width x height, then centre-crop. Both
      // scaled sides are >= the target (floor of a value >= the target).
      const int64_t sw = ratio > src_ratio ? width : iw * height / ih;
      const int64_t sh = ratio <= src_ratio ? height : ih * width / iw;
      const int64_t ox = width / 2 - sw / 2, oy = height / 2 - sh / 2;  // <= 0: where the scaled image is pasted
      if (sw * sh <= std::max(kMaxIntermediatePixels, iw * ih)) {
        cv::Mat scaled = resize_exact(src, static_cast<int>(sw), static_cast<int>(sh));
        return scaled(cv::Rect(static_cast<int>(-ox), static_cast<int>(-oy), width, height)).clone();
      }
      // A very elongated image enlarged a lot (e.g. 1x10000 to 512x512 would
      // scale to 512x5120000). Only enlargement gets here (a shrink's scaled
      // image is smaller than the input), so sample the visible window with
      // the same Lanczos-4 kernel straight from the source: output pixel x
      // sits at scaled x - ox, i.e. source ((x - ox + 0.5) * iw / sw - 0.5).
      const double ax = static_cast<double>(iw) / sw, ay = static_cast<double>(ih) / sh;
      cv::Mat m = (cv::Mat_<double>(2, 3) << ax, 0, (0.5 - ox) * ax - 0.5, 0, ay, (0.5 - oy) * ay - 0.5);
      cv::Mat dst;
      cv::warpAffine(src, dst, m, cv::Size(width, height), cv::INTER_LANCZOS4 | cv::WARP_INVERSE_MAP,
                     cv::BORDER_REPLICATE);
      return dst;
    }
    case ResizeMode::kResizeAndFill: {
      // Scale so the image fits inside, centre it, and fill the bars with the
      // outermost rows / columns repeated outwards. Scaled sides are at least
      // 1 (A1111 would fail on a zero-sized image).
      const int64_t sw = std::max<int64_t>(1, ratio < src_ratio ? width : iw * height / ih);
      const int64_t sh = std::max<int64_t>(1, ratio >= src_ratio ? height : ih * width / iw);
      cv::Mat scaled = resize_exact(src, static_cast<int>(sw), static_cast<int>(sh));
      const int left = static_cast<int>(width / 2 - sw / 2), top = static_cast<int>(height / 2 - sh / 2);
      const int right = width - static_cast<int>(sw) - left, bottom = height - static_cast<int>(sh) - top;
      cv::Mat dst;
      cv::copyMakeBorder(scaled, dst, top, bottom, left, right, cv::BORDER_REPLICATE);
      return dst;
    }
  }
  throw_error(ErrorCode::kInvalidArgument, "[resize] unknown resize mode " + std::to_string(static_cast<int>(mode)));
}

template <class Img>
Img resize_impl(const Img& src, int width, int height, ResizeMode mode) {
  check_image(src, "resize", "the image");
  check_size(width, height, "resize");
  return from_mat<Img>(resize_with_mode(view(src), width, height, mode));
}

// PIL's convert('L') for RGB: ITU-R 601-2 luma in 16-bit fixed point
// (libImaging/Convert.c, L24 = 19595 R + 38470 G + 7471 B, rounded).
uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

bool any_transparent(const PngRgba& png) {
  if (!png.has_alpha) return false;
  for (size_t i = 3; i < png.rgba.size(); i += 4)
    if (png.rgba[i] < 255) return true;
  return false;
}

Gray gray_of(const PngRgba& png) {
  Gray g;
  g.width = png.width;
  g.height = png.height;
  g.px.resize(static_cast<size_t>(png.width) * png.height);
  return g;
}

// Approximately a Gaussian of standard deviation `sigma` (PIL's
// ImageFilter.GaussianBlur(radius) takes the radius as sigma). Large sigmas
// use three box blurs (as PIL does), whose cost does not grow with sigma.
void gaussian_like(const cv::Mat& in, cv::Mat& out, double sigma) {
  if (sigma <= 0) {
    in.copyTo(out);
  } else if (sigma < 8) {
    cv::GaussianBlur(in, out, cv::Size(0, 0), sigma, sigma, cv::BORDER_REPLICATE);
  } else {
    // Three passes of a box of width 2r + 1 have variance r (r + 1).
    const int r = static_cast<int>(std::lround((std::sqrt(1 + 4 * sigma * sigma) - 1) / 2));
    const cv::Size k(2 * r + 1, 2 * r + 1);
    cv::Mat a, b;
    cv::blur(in, a, k, cv::Point(-1, -1), cv::BORDER_REPLICATE);
    cv::blur(a, b, k, cv::Point(-1, -1), cv::BORDER_REPLICATE);
    cv::blur(b, out, k, cv::Point(-1, -1), cv::BORDER_REPLICATE);
  }
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

ResizeMode resize_mode_from_name(const std::string& s) {
  if (s == "just-resize" || s == "0") return ResizeMode::kJustResize;
  if (s == "crop" || s == "1") return ResizeMode::kCropAndResize;
  if (s == "fill" || s == "2") return ResizeMode::kResizeAndFill;
  throw_error(ErrorCode::kInvalidArgument,
              "[resize] unknown resize mode '" + s + "': expected just-resize, crop or fill (or 0, 1, 2)");
}

const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::kJustResize: return "just-resize";
    case ResizeMode::kCropAndResize: return "crop";
    case ResizeMode::kResizeAndFill: return "fill";
  }
  return "unknown";
}

Rgb resize(const Rgb& src, int width, int height) { return resize_impl(src, width, height, ResizeMode::kJustResize); }
Gray resize(const Gray& src, int width, int height) { return resize_impl(src, width, height, ResizeMode::kJustResize); }
Rgb resize(const Rgb& src, int width, int height, ResizeMode mode) { return resize_impl(src, width, height, mode); }
Gray resize(const Gray& src, int width, int height, ResizeMode mode) { return resize_impl(src, width, height, mode); }

Gray decode_mask(const uint8_t* data, size_t size, MaskConvention convention) {
  PngRgba png = read_png_rgba(data, size);  // Error(kIo) when undecodable
  Gray out = gray_of(png);
  const bool transparent = any_transparent(png);
  switch (convention) {
    case MaskConvention::kLuminance:
      // create_binary_mask without its rounding (binarize() is separate).
      for (size_t i = 0; i < out.px.size(); ++i) {
        const uint8_t* p = &png.rgba[i * 4];
        out.px[i] = transparent ? p[3] : luma(p[0], p[1], p[2]);
      }
      return out;
    case MaskConvention::kTransparentIsEdit:
      DIFFUSE_CHECK_ARG(transparent, std::string("[decode_mask] the mask has no transparent pixels: ") +
                                         (png.has_alpha ? "every pixel is fully opaque"
                                                        : "the PNG has no alpha channel") +
                                         "; an OpenAI edit mask marks the area to edit with transparency (alpha < 255)");
      for (size_t i = 0; i < out.px.size(); ++i) out.px[i] = static_cast<uint8_t>(255 - png.rgba[i * 4 + 3]);
      return out;
  }
  throw_error(ErrorCode::kInvalidArgument,
              "[decode_mask] unknown mask convention " + std::to_string(static_cast<int>(convention)));
}

std::optional<Gray> alpha_edit_mask(const uint8_t* data, size_t size) {
  PngRgba png = read_png_rgba(data, size);
  if (!any_transparent(png)) return std::nullopt;
  Gray out = gray_of(png);
  for (size_t i = 0; i < out.px.size(); ++i) out.px[i] = png.rgba[i * 4 + 3] < 255 ? 255 : 0;
  return out;
}

Gray invert(const Gray& m) {
  check_image(m, "invert", "the mask");
  Gray out = m;
  for (uint8_t& v : out.px) v = static_cast<uint8_t>(255 - v);
  return out;
}

Gray blur(const Gray& m, int radius) {
  check_image(m, "blur", "the mask");
  DIFFUSE_CHECK_ARG(radius >= 0 && radius <= kMaxBlurRadius, "[blur] radius " + std::to_string(radius) +
                                                                 " is out of range: it must be 0-" +
                                                                 std::to_string(kMaxBlurRadius));
  if (radius == 0) return m;
  // A1111 processing.py: cv2.GaussianBlur(mask, (k, 1), r) then (1, k), each
  // rounded to 8 bits, with OpenCV's default border (reflect-101).
  const int k = 2 * static_cast<int>(2.5 * radius + 0.5) + 1;
  cv::Mat x, y;
  cv::GaussianBlur(view(m), x, cv::Size(k, 1), radius);
  cv::GaussianBlur(x, y, cv::Size(1, k), radius);
  return from_mat<Gray>(y);
}

Gray binarize(const Gray& m) {
  check_image(m, "binarize", "the mask");
  Gray out = m;
  for (uint8_t& v : out.px) v = v >= 128 ? 255 : 0;
  return out;
}

std::optional<Rect> bounding_box(const Gray& m) {
  check_image(m, "bounding_box", "the mask");
  int x0 = m.width, y0 = m.height, x1 = -1, y1 = -1;
  for (int y = 0; y < m.height; ++y) {
    const uint8_t* row = &m.px[static_cast<size_t>(y) * m.width];
    for (int x = 0; x < m.width; ++x) {
      if (!row[x]) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = y;
    }
  }
  if (x1 < 0) return std::nullopt;
  return Rect{x0, y0, x1 - x0 + 1, y1 - y0 + 1};
}

bool all_zero(const Gray& m) {
  check_image(m, "all_zero", "the mask");
  return std::all_of(m.px.begin(), m.px.end(), [](uint8_t v) { return v == 0; });
}

Rect masked_crop_region(const Gray& mask, int padding, int target_width, int target_height) {
  check_image(mask, "masked_crop_region", "the mask");
  DIFFUSE_CHECK_ARG(padding >= 0, "[masked_crop_region] padding " + std::to_string(padding) + " must be >= 0");
  check_size(target_width, target_height, "masked_crop_region");
  std::optional<Rect> box = bounding_box(mask);
  DIFFUSE_CHECK_ARG(box.has_value(), "[masked_crop_region] the " + size_str(mask.width, mask.height) +
                                         " mask is all zero: there is nothing to inpaint");
  const int64_t w = mask.width, h = mask.height;
  // masking.get_crop_region: the bbox grown by the padding, clipped.
  int64_t x1 = std::max<int64_t>(box->x - int64_t{padding}, 0);
  int64_t y1 = std::max<int64_t>(box->y - int64_t{padding}, 0);
  int64_t x2 = std::min<int64_t>(int64_t{box->x} + box->width + padding, w);
  int64_t y2 = std::min<int64_t>(int64_t{box->y} + box->height + padding, h);
  // masking.expand_crop_region, step for step, in the same double arithmetic.
  // Grown sizes are never negative, so C++'s / is Python's // here.
  const double ratio_crop = static_cast<double>(x2 - x1) / static_cast<double>(y2 - y1);
  const double ratio_processing = static_cast<double>(target_width) / target_height;
  auto grow = [](int64_t& lo, int64_t& hi, double desired, int64_t limit) {
    const int64_t diff = static_cast<int64_t>(desired - static_cast<double>(hi - lo));  // int(): truncates
    lo -= diff / 2;
    hi += diff - diff / 2;
    if (hi >= limit) {  // shift back inside from the far edge
      const int64_t over = hi - limit;
      hi -= over;
      lo -= over;
    }
    if (lo < 0) {  // then from the near edge
      hi -= lo;
      lo = 0;
    }
    if (hi >= limit) hi = limit;  // larger than the image: the whole axis
  };
  if (ratio_crop > ratio_processing)
    grow(y1, y2, static_cast<double>(x2 - x1) / ratio_processing, h);
  else
    grow(x1, x2, static_cast<double>(y2 - y1) * ratio_processing, w);
  return Rect{static_cast<int>(x1), static_cast<int>(y1), static_cast<int>(x2 - x1), static_cast<int>(y2 - y1)};
}

Rgb crop(const Rgb& src, const Rect& r) {
  check_image(src, "crop", "the image");
  check_rect_inside(r, src.width, src.height, "crop");
  return from_mat<Rgb>(view(src)(cv::Rect(r.x, r.y, r.width, r.height)));
}

Gray crop(const Gray& src, const Rect& r) {
  check_image(src, "crop", "the mask");
  check_rect_inside(r, src.width, src.height, "crop");
  return from_mat<Gray>(view(src)(cv::Rect(r.x, r.y, r.width, r.height)));
}

Rgb paste(const Rgb& dst, const Rgb& src, const Rect& r) {
  check_image(dst, "paste", "the destination");
  check_image(src, "paste", "the pasted image");
  check_rect_inside(r, dst.width, dst.height, "paste");
  Rgb out = dst;
  cv::Mat scaled = resize_exact(view(src), r.width, r.height);
  cv::Mat target(out.height, out.width, CV_8UC3, out.px.data());
  scaled.copyTo(target(cv::Rect(r.x, r.y, r.width, r.height)));
  return out;
}

Rgb composite(const Rgb& original, const Rgb& generated, const Gray& mask) {
  check_image(original, "composite", "the original");
  check_image(generated, "composite", "the generated image");
  check_image(mask, "composite", "the mask");
  DIFFUSE_CHECK_ARG(original.width == generated.width && original.height == generated.height,
                    "[composite] the original is " + size_str(original.width, original.height) +
                        " but the generated image is " + size_str(generated.width, generated.height) +
                        "; they must match");
  check_same_size(original, mask, "composite", "original");
  Rgb out = original;
  for (size_t i = 0; i < mask.px.size(); ++i) {
    const unsigned m = mask.px[i];
    for (int c = 0; c < 3; ++c) {
      const unsigned o = original.px[i * 3 + c], g = generated.px[i * 3 + c];
      // round((o (255 - m) + g m) / 255); never exactly .5 as 255 is odd.
      out.px[i * 3 + c] = static_cast<uint8_t>((o * (255 - m) + g * m + 127) / 255);
    }
  }
  return out;
}

Rgb fill_masked(const Rgb& src, const Gray& mask) {
  check_image(src, "fill_masked", "the image");
  check_image(mask, "fill_masked", "the mask");
  check_same_size(src, mask, "fill_masked", "image");
  // masking.fill: the unmasked pixels (alpha = 255 - mask, premultiplied) are
  // blurred at decreasing radii; each blur, un-premultiplied, is laid over
  // the previous result (alpha "over"). Big radii give every masked pixel a
  // colour from far away; small radii refine it near the mask's edge; the
  // last layer (radius 0) is the unmasked pixels themselves.
  const int n = src.width * src.height;
  cv::Mat premul(src.height, src.width, CV_32FC4);
  for (int i = 0; i < n; ++i) {
    const float a = (255 - mask.px[i]) / 255.0f;
    float* p = premul.ptr<float>() + i * 4;
    for (int c = 0; c < 3; ++c) p[c] = src.px[i * 3 + c] * a;
    p[3] = a;
  }
  std::vector<float> acc(static_cast<size_t>(n) * 4, 0.0f);  // straight colour + alpha
  constexpr struct { double radius; int repeats; } kLayers[] = {{256, 1}, {64, 1}, {16, 2}, {4, 4}, {2, 2}, {0, 1}};
  cv::Mat blurred;
  for (const auto& layer : kLayers) {
    gaussian_like(premul, blurred, layer.radius);
    for (int i = 0; i < n; ++i) {
      const float* b = blurred.ptr<float>() + i * 4;
      const float a = std::clamp(b[3], 0.0f, 1.0f);
      if (a <= 1e-6f) continue;  // nothing reached this pixel at this radius
      float* d = &acc[static_cast<size_t>(i) * 4];
      for (int r = 0; r < layer.repeats; ++r) {
        const float out_a = a + d[3] * (1 - a);
        for (int c = 0; c < 3; ++c) d[c] = (b[c] / b[3] * a + d[c] * d[3] * (1 - a)) / out_a;
        d[3] = out_a;
      }
    }
  }
  Rgb out = src;
  for (int i = 0; i < n; ++i) {
    if (mask.px[i] == 0) continue;  // unmasked: the original, bit for bit
    for (int c = 0; c < 3; ++c)
      out.px[i * 3 + c] = static_cast<uint8_t>(std::clamp(std::lround(acc[static_cast<size_t>(i) * 4 + c]), 0L, 255L));
  }
  return out;
}

OutpaintSpec parse_outpaint(const std::string& s) {
  const std::string where = "[outpaint] '" + s + "'";
  DIFFUSE_CHECK_ARG(!trim(s).empty(), where + ": expected key=pixels pairs such as left=128,right=64 or all=64");
  OutpaintSpec spec;
  bool seen[5] = {};  // left, right, top, bottom, all
  const char* names[5] = {"left", "right", "top", "bottom", "all"};
  int* fields[4] = {&spec.left, &spec.right, &spec.top, &spec.bottom};
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    const std::string part = trim(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    const size_t eq = part.find('=');
    DIFFUSE_CHECK_ARG(!part.empty() && eq != std::string::npos,
                      where + ": part '" + part + "' is not key=pixels (keys: left, right, top, bottom, all)");
    const std::string key = trim(part.substr(0, eq)), value = trim(part.substr(eq + 1));
    int k = 0;
    while (k < 5 && key != names[k]) ++k;
    DIFFUSE_CHECK_ARG(k < 5, where + ": unknown side '" + key + "' (keys: left, right, top, bottom, all)");
    DIFFUSE_CHECK_ARG(!seen[k], where + ": '" + key + "' is given twice");
    seen[k] = true;
    bool digits = !value.empty() && value.size() <= 6 &&
                  std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
    const int v = digits ? std::stoi(value) : -1;
    DIFFUSE_CHECK_ARG(digits && v <= kMaxSide, where + ": " + key + "='" + value +
                                                   "' must be a whole number of pixels, 0-" + std::to_string(kMaxSide));
    if (k == 4) {
      spec.left = spec.right = spec.top = spec.bottom = v;
    } else {
      *fields[k] = v;
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  DIFFUSE_CHECK_ARG(!seen[4] || !(seen[0] || seen[1] || seen[2] || seen[3]),
                    where + ": 'all' cannot be combined with left, right, top or bottom");
  return spec;
}

OutpaintCanvas outpaint_canvas(const Rgb& src, const OutpaintSpec& spec, uint64_t seed) {
  check_image(src, "outpaint_canvas", "the image");
  const std::pair<const char*, int> sides[] = {
      {"left", spec.left}, {"right", spec.right}, {"top", spec.top}, {"bottom", spec.bottom}};
  for (const auto& [name, v] : sides)
    DIFFUSE_CHECK_ARG(v >= 0 && v <= kMaxSide, std::string("[outpaint_canvas] ") + name + " = " + std::to_string(v) +
                                                   " is out of range: it must be 0-" + std::to_string(kMaxSide));
  DIFFUSE_CHECK_ARG(spec.any(), "[outpaint_canvas] nothing to outpaint: left, right, top and bottom are all 0");
  DIFFUSE_CHECK_ARG(spec.seam >= 0 && spec.seam <= kMaxSide, "[outpaint_canvas] seam " + std::to_string(spec.seam) +
                                                                 " is out of range: it must be 0-" +
                                                                 std::to_string(kMaxSide));
  DIFFUSE_CHECK_ARG(spec.feather >= 0 && spec.feather <= kMaxBlurRadius,
                    "[outpaint_canvas] feather " + std::to_string(spec.feather) + " is out of range: it must be 0-" +
                        std::to_string(kMaxBlurRadius));
  DIFFUSE_CHECK_ARG(spec.fill == OutpaintSpec::Fill::kEdge || spec.fill == OutpaintSpec::Fill::kNoise,
                    "[outpaint_canvas] unknown fill " + std::to_string(static_cast<int>(spec.fill)));
  // Round the canvas up to a multiple of 8; the extra goes right / bottom.
  const int64_t w0 = int64_t{src.width} + spec.left + spec.right, h0 = int64_t{src.height} + spec.top + spec.bottom;
  const int64_t cw = (w0 + 7) / 8 * 8, ch = (h0 + 7) / 8 * 8;
  DIFFUSE_CHECK_ARG(cw <= kMaxSide && ch <= kMaxSide, "[outpaint_canvas] the canvas would be " + size_str(cw, ch) +
                                                          " (the " + size_str(src.width, src.height) +
                                                          " image grown and rounded up to a multiple of 8); at most " +
                                                          size_str(kMaxSide, kMaxSide) + " is allowed");
  const int left = spec.left, top = spec.top;
  const int right = spec.right + static_cast<int>(cw - w0), bottom = spec.bottom + static_cast<int>(ch - h0);
  const int W = static_cast<int>(cw), H = static_cast<int>(ch);
  const Rect orig{left, top, src.width, src.height};
  auto in_orig = [&](int x, int y) { return x >= left && x < left + src.width && y >= top && y < top + src.height; };

  OutpaintCanvas out;
  out.original = orig;
  cv::Mat canvas;
  cv::copyMakeBorder(view(src), canvas, top, bottom, left, right, cv::BORDER_REPLICATE);
  out.image = from_mat<Rgb>(canvas);
  if (spec.fill == OutpaintSpec::Fill::kNoise) {
    // Uniform bytes: successive std::mt19937_64 outputs, low byte first,
    // over the new area in row-major order, R G B per pixel. mt19937_64 is
    // specified exactly by the standard, so a seed gives the same canvas
    // with any compiler.
    std::mt19937_64 rng(seed);
    uint64_t word = 0;
    int left_in_word = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        if (in_orig(x, y)) continue;
        for (int c = 0; c < 3; ++c) {
          if (left_in_word == 0) {
            word = rng();
            left_in_word = 8;
          }
          out.image.px[(static_cast<size_t>(y) * W + x) * 3 + c] = static_cast<uint8_t>(word);
          word >>= 8;
          --left_in_word;
        }
      }
  }

  // Mask: 255 over the new area, a ramp over the seam band along each side
  // that grew (the rounding to 8 counts); then feathered, clipped to that.
  const int seam_l = left > 0 ? spec.seam : 0, seam_r = right > 0 ? spec.seam : 0;
  const int seam_t = top > 0 ? spec.seam : 0, seam_b = bottom > 0 ? spec.seam : 0;
  auto in_band = [&](int x, int y) {
    const int ix = x - left, iy = y - top;
    return ix < seam_l || ix >= src.width - seam_r || iy < seam_t || iy >= src.height - seam_b;
  };
  Gray mask;
  mask.width = W;
  mask.height = H;
  mask.px.assign(static_cast<size_t>(W) * H, 0);
  // Inside the band a linear ramp, 255 at the old edge down to ~0 at the
  // band's inner side, so the overlay blends the seam without a step.
  auto band_value = [&](int x, int y) {
    const int ix = x - left, iy = y - top;
    int d = spec.seam;  // distance from the nearest grown edge, inside the original
    if (seam_l) d = std::min(d, ix);
    if (seam_r) d = std::min(d, src.width - 1 - ix);
    if (seam_t) d = std::min(d, iy);
    if (seam_b) d = std::min(d, src.height - 1 - iy);
    return static_cast<uint8_t>(spec.seam > 0 ? 255 * std::max(0, spec.seam - d) / spec.seam : 0);
  };
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      uint8_t& m = mask.px[static_cast<size_t>(y) * W + x];
      if (!in_orig(x, y)) m = 255;
      else if (in_band(x, y)) m = band_value(x, y);
    }
  if (spec.feather > 0) {
    Gray soft = blur(mask, spec.feather);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const size_t i = static_cast<size_t>(y) * W + x;
        // The new area stays fully repainted; the seam band takes the ramp;
        // the rest of the original stays untouched.
        if (in_orig(x, y)) mask.px[i] = in_band(x, y) ? soft.px[i] : 0;
      }
  }
  out.mask = std::move(mask);
  return out;
}

}  // namespace diffuse::image
