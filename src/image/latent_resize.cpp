// torch.nn.functional.interpolate (align_corners=False, size given) for CPU
// f32, following the arithmetic of ATen's UpSample.h / cpu/UpSampleKernel.cpp
// (torch 1.13): where torch rounds an intermediate to f32 or keeps it in
// double, so does this file, so that the results agree to an ulp or two (the
// sums' evaluation order is torch's; only its compiler's FMA contraction may
// differ).
#include "image/latent_resize.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.h"

namespace diffuse::image {

const std::vector<LatentMode>& latent_modes() {
  static const std::vector<LatentMode> modes = {
      {"Latent", LatentInterp::kBilinear, false},
      {"Latent (antialiased)", LatentInterp::kBilinear, true},
      {"Latent (bicubic)", LatentInterp::kBicubic, false},
      {"Latent (bicubic antialiased)", LatentInterp::kBicubic, true},
      {"Latent (nearest)", LatentInterp::kNearest, false},
      {"Latent (nearest-exact)", LatentInterp::kNearestExact, false},
  };
  return modes;
}

const LatentMode* find_latent_mode(const std::string& name) {
  auto lower = [](std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const std::string want = lower(name);
  for (const LatentMode& m : latent_modes()) {
    if (lower(m.name) == want) return &m;
  }
  return nullptr;
}

namespace {

// One axis of a resampling: output i reads `taps` inputs starting at first[i]
// (clamped per tap for the non-antialiased kernels: index[i * taps + k]) with
// weight[i * taps + k].
struct Axis {
  int taps = 0;
  std::vector<int64_t> index;  // [out * taps] input positions
  std::vector<float> weight;   // [out * taps]
  std::vector<int> count;      // antialiased: the taps output i uses (its window, <= taps)
};

// area_pixel_compute_scale / compute_scales_value with no scale given: in / out in f32.
float axis_scale(int64_t in, int64_t out) { return static_cast<float>(in) / static_cast<float>(out); }

Axis bilinear_axis(int64_t in, int64_t out) {
  Axis a;
  a.taps = 2;
  a.index.resize(static_cast<size_t>(out * 2));
  a.weight.resize(static_cast<size_t>(out * 2));
  const float scale = axis_scale(in, out);
  for (int64_t i = 0; i < out; ++i) {
    int64_t i0 = i, i1 = i;
    float l0 = 1.0f, l1 = 0.0f;
    if (in != out) {  // compute_source_index_and_lambda
      float src = static_cast<float>(scale * (static_cast<double>(i) + 0.5) - 0.5);
      if (src < 0) src = 0;  // area_pixel_compute_source_index, linear
      i0 = static_cast<int64_t>(src);
      i1 = i0 + (i0 < in - 1 ? 1 : 0);
      l1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
      l0 = 1.0f - l1;
    }
    a.index[i * 2] = i0;
    a.index[i * 2 + 1] = i1;
    a.weight[i * 2] = l0;
    a.weight[i * 2 + 1] = l1;
  }
  return a;
}

// Keys' cubic convolution with A = -0.75 (UpSample.h cubic_convolution1/2).
float cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
float cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

Axis bicubic_axis(int64_t in, int64_t out) {
  Axis a;
  a.taps = 4;
  a.index.resize(static_cast<size_t>(out * 4));
  a.weight.resize(static_cast<size_t>(out * 4));
  const float scale = axis_scale(in, out);
  const float A = -0.75f;
  for (int64_t i = 0; i < out; ++i) {
    // area_pixel_compute_source_index, cubic: no clamp at 0.
    const float src = static_cast<float>(scale * (static_cast<double>(i) + 0.5) - 0.5);
    const int64_t i0 = static_cast<int64_t>(std::floor(src));
    const float t = src - static_cast<float>(i0);
    // get_cubic_upsample_coefficients: x + 1.0 is a double rounded back to f32.
    const float w[4] = {cubic2(static_cast<float>(t + 1.0), A), cubic1(t, A), cubic1(static_cast<float>(1.0 - t), A),
                        cubic2(static_cast<float>((1.0 - t) + 1.0), A)};
    for (int k = 0; k < 4; ++k) {
      a.index[i * 4 + k] = std::max<int64_t>(std::min<int64_t>(i0 - 1 + k, in - 1), 0);
      a.weight[i * 4 + k] = w[k];
    }
  }
  return a;
}

Axis nearest_axis(int64_t in, int64_t out, bool exact) {
  Axis a;
  a.taps = 1;
  a.index.resize(static_cast<size_t>(out));
  a.weight.assign(static_cast<size_t>(out), 1.0f);
  const float scale = axis_scale(in, out);
  for (int64_t i = 0; i < out; ++i) {
    int64_t src = 0;
    if (exact) {  // nearest_neighbor_exact_compute_source_index
      src = static_cast<int64_t>(std::floor(static_cast<float>((static_cast<double>(i) + 0.5) * scale)));
    } else if (out == in) {  // nearest_idx's shortcuts
      src = i;
    } else if (out == 2 * in) {
      src = i >> 1;
    } else {  // nearest_neighbor_compute_source_index
      src = static_cast<int64_t>(std::floor(static_cast<float>(i) * scale));
    }
    a.index[i] = std::min(src, in - 1);
  }
  return a;
}

// HelperInterpLinear / HelperInterpCubic ::aa_filter.
float aa_linear(float x) {
  if (x < 0.0f) x = -x;
  if (x < 1.0f) return 1.0f - x;
  return 0.0f;
}
float aa_cubic(float x) {  // Keys a = -0.5 (PIL's bicubic), evaluated in double
  const double a = -0.5;
  if (x < 0.0f) x = -x;
  if (x < 1.0f) return static_cast<float>(((a + 2.0) * x - (a + 3.0)) * x * x + 1.0);
  if (x < 2.0f) return static_cast<float>((((x - 5) * x + 8) * x - 4) * a);
  return 0.0f;
}

// _compute_indices_weights_aa: a window of taps around each output's centre,
// the filter stretched by in/out when shrinking, weights normalised to sum 1.
Axis antialias_axis(int64_t in, int64_t out, bool cubic) {
  const int interp = cubic ? 4 : 2;
  const float scale = axis_scale(in, out);
  const float support = scale >= 1.0f ? static_cast<float>((interp * 0.5) * scale) : static_cast<float>(interp * 0.5);
  Axis a;
  a.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  a.index.assign(static_cast<size_t>(out * a.taps), 0);
  a.weight.assign(static_cast<size_t>(out * a.taps), 0.0f);
  const float invscale = scale >= 1.0f ? static_cast<float>(1.0 / scale) : 1.0f;
  for (int64_t i = 0; i < out; ++i) {
    const float center = static_cast<float>(scale * (static_cast<double>(i) + 0.5));
    const int64_t xmin = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
    int64_t xsize = std::min(static_cast<int64_t>(center + support + 0.5), in) - xmin;
    xsize = std::clamp<int64_t>(xsize, 0, a.taps);
    float* w = a.weight.data() + i * a.taps;
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; ++j) {
      const float arg = static_cast<float>((static_cast<double>(static_cast<float>(j + xmin) - center) + 0.5) * invscale);
      w[j] = cubic ? aa_cubic(arg) : aa_linear(arg);
      total += w[j];
    }
    if (total != 0.0f) {
      for (int64_t j = 0; j < xsize; ++j) w[j] /= total;
    }
    for (int k = 0; k < a.taps; ++k) a.index[i * a.taps + k] = std::min(xmin + k, in - 1);
    a.count.push_back(static_cast<int>(std::max<int64_t>(xsize, 1)));
  }
  return a;
}

Axis make_axis(int64_t in, int64_t out, LatentInterp interp, bool antialias) {
  switch (interp) {
    case LatentInterp::kBilinear: return antialias ? antialias_axis(in, out, false) : bilinear_axis(in, out);
    case LatentInterp::kBicubic: return antialias ? antialias_axis(in, out, true) : bicubic_axis(in, out);
    case LatentInterp::kNearest: return nearest_axis(in, out, false);
    case LatentInterp::kNearestExact: return nearest_axis(in, out, true);
  }
  return bilinear_axis(in, out);
}

// One plane, both axes at once (upsample_generic_Nd_kernel_impl):
// out = sum_ky wy * (sum_kx wx * in[y, x]), each sum started from its first term.
void resize_plane_2d(const float* src, int64_t w, float* dst, int64_t oh, int64_t ow, const Axis& ay, const Axis& ax) {
  for (int64_t y = 0; y < oh; ++y) {
    for (int64_t x = 0; x < ow; ++x) {
      float acc = 0.0f;
      for (int ky = 0; ky < ay.taps; ++ky) {
        const float* row = src + ay.index[y * ay.taps + ky] * w;
        float t = row[ax.index[x * ax.taps]] * ax.weight[x * ax.taps];
        for (int kx = 1; kx < ax.taps; ++kx) t += row[ax.index[x * ax.taps + kx]] * ax.weight[x * ax.taps + kx];
        acc = ky == 0 ? t * ay.weight[y * ay.taps] : acc + t * ay.weight[y * ay.taps + ky];
      }
      dst[y * ow + x] = acc;
    }
  }
}

// Output i of one line (samples `stride` apart) along an antialiased axis
// (interpolate_aa_single_dim): the window's taps, summed from the first.
float aa_sum(const float* line, int64_t stride, const Axis& a, int64_t i) {
  const float* w = a.weight.data() + i * a.taps;
  const int64_t* idx = a.index.data() + i * a.taps;
  float out = line[idx[0] * stride] * w[0];
  for (int k = 1; k < a.count[static_cast<size_t>(i)]; ++k) out += line[idx[k] * stride] * w[k];
  return out;
}

}  // namespace

Tensor resize_latents(const Tensor& x, int out_h, int out_w, LatentInterp interp, bool antialias) {
  DIFFUSE_CHECK_ARG(x.defined() && x.ndim() == 4, "[resize_latents] expects [N, C, h, w], got " +
                                                      (x.defined() ? x.str() : std::string("an undefined tensor")));
  DIFFUSE_CHECK_ARG(out_h >= 1 && out_h <= 16384 && out_w >= 1 && out_w <= 16384,
                    "[resize_latents] output size " + std::to_string(out_w) + "x" + std::to_string(out_h) +
                        " is outside 1-16384");
  DIFFUSE_CHECK_ARG(!antialias || interp == LatentInterp::kBilinear || interp == LatentInterp::kBicubic,
                    "[resize_latents] antialias is only for bilinear and bicubic (as torch)");
  const Device device = x.device();
  const Tensor in = x.to(Device::kCPU).to(DType::kF32).contiguous();
  const int64_t planes = in.dim(0) * in.dim(1), h = in.dim(2), w = in.dim(3);
  DIFFUSE_CHECK_ARG(h >= 1 && w >= 1, "[resize_latents] empty input " + in.str());
  const Axis ay = make_axis(h, out_h, interp, antialias);
  const Axis ax = make_axis(w, out_w, interp, antialias);
  Tensor out = Tensor::empty({in.dim(0), in.dim(1), out_h, out_w}, DType::kF32);
  const float* s = in.data<float>();
  float* d = out.data<float>();
  if (!antialias) {
    for (int64_t p = 0; p < planes; ++p) resize_plane_2d(s + p * h * w, w, d + p * out_h * out_w, out_h, out_w, ay, ax);
  } else {
    // Separable, as torch: the last dim first (into [h, out_w]), then the rows.
    std::vector<float> tmp(static_cast<size_t>(h * out_w));
    for (int64_t p = 0; p < planes; ++p) {
      const float* sp = s + p * h * w;
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t xo = 0; xo < out_w; ++xo) tmp[y * out_w + xo] = aa_sum(sp + y * w, 1, ax, xo);
      }
      float* dp = d + p * out_h * out_w;
      for (int64_t yo = 0; yo < out_h; ++yo) {
        for (int64_t xo = 0; xo < out_w; ++xo) dp[yo * out_w + xo] = aa_sum(tmp.data() + xo, out_w, ay, yo);
      }
    }
  }
  return out.to(device);
}

}  // namespace diffuse::image
