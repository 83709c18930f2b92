// PIL-compatible bicubic resampling and CLIPImageProcessor's steps (see the header).
#include "image/clip_preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace diffuse::image {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed-point precision for 8-bit images

// Pillow's bicubic kernel, a = -0.5.
double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// One output position's taps: the first input index and the fixed-point weights.
struct Taps {
  int first = 0;
  std::vector<int32_t> k;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size.
std::vector<Taps> coefficients(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;  // bicubic support 2
  std::vector<Taps> out(static_cast<size_t>(out_size));
  std::vector<double> w;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    int xmin = static_cast<int>(center - support + 0.5);  // C's truncation, as Pillow
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    w.assign(static_cast<size_t>(std::max(xmax, 0)), 0.0);
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bicubic((x + xmin - center + 0.5) * ss);
      total += w[x];
    }
    Taps& t = out[xx];
    t.first = xmin;
    t.k.resize(w.size());
    for (size_t x = 0; x < w.size(); ++x) {
      const double v = total != 0.0 ? w[x] / total : w[x];
      t.k[x] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
  }
  return out;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

Rgb resize_bicubic_pil(const Rgb& src, int width, int height) {
  DIFFUSE_CHECK_ARG(!src.empty() && src.px.size() == static_cast<size_t>(src.width) * src.height * 3,
                    "[resize_bicubic_pil] the image is empty or its pixel count does not match its size");
  DIFFUSE_CHECK_ARG(width >= 1 && width <= 16384 && height >= 1 && height <= 16384,
                    "[resize_bicubic_pil] size " + std::to_string(width) + "x" + std::to_string(height) +
                        " is outside 1-16384");
  Rgb cur = src;
  if (width != cur.width) {  // horizontal pass
    const std::vector<Taps> taps = coefficients(cur.width, width);
    Rgb out{width, cur.height, std::vector<uint8_t>(static_cast<size_t>(width) * cur.height * 3)};
    for (int y = 0; y < cur.height; ++y) {
      const uint8_t* row = cur.px.data() + static_cast<size_t>(y) * cur.width * 3;
      for (int x = 0; x < width; ++x) {
        const Taps& t = taps[x];
        for (int c = 0; c < 3; ++c) {
          int64_t s = int64_t{1} << (kPrecisionBits - 1);
          for (size_t i = 0; i < t.k.size(); ++i) s += static_cast<int64_t>(row[(t.first + i) * 3 + c]) * t.k[i];
          out.px[(static_cast<size_t>(y) * width + x) * 3 + c] = clip8(s);
        }
      }
    }
    cur = std::move(out);
  }
  if (height != cur.height) {  // vertical pass
    const std::vector<Taps> taps = coefficients(cur.height, height);
    Rgb out{cur.width, height, std::vector<uint8_t>(static_cast<size_t>(cur.width) * height * 3)};
    for (int y = 0; y < height; ++y) {
      const Taps& t = taps[y];
      for (int x = 0; x < cur.width; ++x) {
        for (int c = 0; c < 3; ++c) {
          int64_t s = int64_t{1} << (kPrecisionBits - 1);
          for (size_t i = 0; i < t.k.size(); ++i)
            s += static_cast<int64_t>(cur.px[((t.first + i) * cur.width + x) * 3 + c]) * t.k[i];
          out.px[(static_cast<size_t>(y) * cur.width + x) * 3 + c] = clip8(s);
        }
      }
    }
    cur = std::move(out);
  }
  return cur;
}

std::vector<float> clip_pixel_values(const Rgb& src, int size) {
  DIFFUSE_CHECK_ARG(size >= 1 && size <= 4096, "[clip_pixel_values] size " + std::to_string(size) + " is outside 1-4096");
  DIFFUSE_CHECK_ARG(!src.empty(), "[clip_pixel_values] the image is empty");
  // transformers get_resize_output_image_size(default_to_square=False): the short side to `size`.
  const bool portrait = src.width <= src.height;
  const int s = portrait ? src.width : src.height, l = portrait ? src.height : src.width;
  const int long_side = static_cast<int>(static_cast<double>(size) * l / s);
  const int w = portrait ? size : long_side, h = portrait ? long_side : size;
  const Rgb r = resize_bicubic_pil(src, w, h);
  const int top = (h - size) / 2, left = (w - size) / 2;  // centre crop (sizes >= size here)
  static const float kMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  static const float kStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  std::vector<float> out(static_cast<size_t>(3) * size * size);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const uint8_t* p = r.px.data() + (static_cast<size_t>(y + top) * w + (x + left)) * 3;
      for (int c = 0; c < 3; ++c) {
        // rescale in float64 then float32, normalise in float32 (transformers' numpy steps)
        const float v = static_cast<float>(static_cast<double>(p[c]) * (1.0 / 255.0));
        out[(static_cast<size_t>(c) * size + y) * size + x] = (v - kMean[c]) / kStd[c];
      }
    }
  }
  return out;
}

}  // namespace diffuse::image
