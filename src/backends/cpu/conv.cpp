// 2-D convolution on the CPU (NCHW): im2col + GEMM per image, with the bias
// and the optional residual fused into the output pass.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual) {
  Tensor xf = as_f32(x), wf = as_f32(w);
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  int64_t o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1;
  int64_t ckk = c * kh * kw, hwo = ho * wo;
  Tensor out = Tensor::empty({n, o, ho, wo}, DType::kF32);
  bool direct = kh == 1 && kw == 1 && stride == 1 && padding == 0;
  std::vector<float> col(direct ? 0 : static_cast<size_t>(ckk * hwo));
  const float* px = xf.data<float>();
  float* po = out.data<float>();
  for (int64_t img = 0; img < n; ++img) {
    const float* xi = px + img * c * h * wd;
    const float* b = xi;
    if (!direct) {
      // col[(ci, ky, kx), (oy, ox)] = x[ci, oy*s - p + ky, ox*s - p + kx] (0 outside).
      parallel_for(ckk, 4, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          int64_t ci = r / (kh * kw), ky = (r / kw) % kh, kx = r % kw;
          float* dst = col.data() + r * hwo;
          for (int64_t oy = 0; oy < ho; ++oy) {
            int64_t iy = oy * stride - padding + ky;
            float* drow = dst + oy * wo;
            if (iy < 0 || iy >= h) {
              std::fill(drow, drow + wo, 0.0f);
              continue;
            }
            const float* srow = xi + (ci * h + iy) * wd;
            for (int64_t ox = 0; ox < wo; ++ox) {
              int64_t ix = ox * stride - padding + kx;
              drow[ox] = (ix >= 0 && ix < wd) ? srow[ix] : 0.0f;
            }
          }
        }
      });
      b = col.data();
    }
    gemm_f32(o, hwo, ckk, wf.data<float>(), ckk, b, hwo, false, po + img * o * hwo, hwo, 0.0f);
  }
  Tensor bf = bias.defined() ? as_f32(bias) : Tensor();
  Tensor rf = residual.defined() ? as_f32(residual) : Tensor();
  if (bf.defined() || rf.defined()) {
    const float* pb = bf.defined() ? bf.data<float>() : nullptr;
    const float* pr = rf.defined() ? rf.data<float>() : nullptr;
    parallel_for(n * o, std::max<int64_t>(1, 4096 / std::max<int64_t>(hwo, 1)), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        float* row = po + p * hwo;
        float bv = pb ? pb[p % o] : 0.0f;
        if (pr) {
          const float* rr = pr + p * hwo;
          for (int64_t j = 0; j < hwo; ++j) row[j] = row[j] + bv + rr[j];
        } else {
          for (int64_t j = 0; j < hwo; ++j) row[j] += bv;
        }
      }
    });
  }
  return from_f32(out, x.dtype());
}

}  // namespace diffuse::cpu
