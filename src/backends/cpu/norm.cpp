// Normalisations and softmax on the CPU. Statistics are accumulated in double
// per row/group (cheap next to the memory traffic) so large groups such as
// GroupNorm over 64x64x10 elements stay exact to f32 rounding.
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/simd.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

DIFFUSE_CPU_CLONES void sum_sq(const float* x, int64_t n, double& sum, double& sq) {
  // Blocks of 8-wide f32 partial sums, folded into double per block. The
  // second moment is taken about the block mean to avoid cancellation when
  // the data sit far from zero.
  using namespace simd;
  constexpr int64_t kBlock = 256;
  double s = 0, q = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    int64_t e = std::min(n, b + kBlock), i = b;
    v8f vs = splat(0.0f);
    for (; i + 8 <= e; i += 8) vs += load(x + i);
    float fs = hsum(vs);
    for (; i < e; ++i) fs += x[i];
    double mean_blk = fs / static_cast<double>(e - b);
    float m = static_cast<float>(mean_blk);
    v8f vq = splat(0.0f), vm = splat(m);
    for (i = b; i + 8 <= e; i += 8) {
      v8f d = load(x + i) - vm;
      vq += d * d;
    }
    float fq = hsum(vq);
    for (; i < e; ++i) fq += (x[i] - m) * (x[i] - m);
    // sum of squares about zero = sum (x - m)^2 + 2 m (sum - n m) + n m^2, exactly.
    s += fs;
    q += fq + 2.0 * m * (fs - (e - b) * static_cast<double>(m)) + (e - b) * static_cast<double>(m) * m;
  }
  sum += s;
  sq += q;
}

DIFFUSE_CPU_CLONES void affine_row(const float* x, float* y, int64_t n, float a, float b, bool silu) {
  using namespace simd;
  int64_t i = 0;
  v8f va = splat(a), vb = splat(b);
  if (silu) {
    for (; i + 8 <= n; i += 8) {
      v8f v = load(x + i) * va + vb;
      store(y + i, v / (splat(1.0f) + simd::exp(-v)));
    }
    for (; i < n; ++i) {
      float v = x[i] * a + b;
      y[i] = v / (1.0f + std::exp(-v));
    }
  } else {
    for (; i + 8 <= n; i += 8) store(y + i, load(x + i) * va + vb);
    for (; i < n; ++i) y[i] = x[i] * a + b;
  }
}

}  // namespace

Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  Tensor xf = as_f32(x);
  Tensor gf = gamma.defined() ? as_f32(gamma) : Tensor();
  Tensor bf = beta.defined() ? as_f32(beta) : Tensor();
  int64_t n = x.dim(0), c = x.dim(1), hw = x.numel() / std::max<int64_t>(n * c, 1);
  int64_t cpg = c / groups;
  Tensor out = Tensor::empty(x.shape(), DType::kF32);
  const float* px = xf.data<float>();
  const float* pg = gf.defined() ? gf.data<float>() : nullptr;
  const float* pb = bf.defined() ? bf.data<float>() : nullptr;
  float* po = out.data<float>();
  parallel_for(n * groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const float* base = px + g * cpg * hw;
      double sum = 0, sq = 0;
      sum_sq(base, cpg * hw, sum, sq);
      double cnt = static_cast<double>(cpg * hw);
      double mean = sum / cnt;
      double var = std::max(0.0, sq / cnt - mean * mean);
      double rstd = 1.0 / std::sqrt(var + eps);
      int64_t c0 = (g % groups) * cpg;
      for (int64_t ci = 0; ci < cpg; ++ci) {
        double w = pg ? pg[c0 + ci] : 1.0;
        double b = pb ? pb[c0 + ci] : 0.0;
        float a = static_cast<float>(rstd * w);
        float off = static_cast<float>(b - mean * rstd * w);
        affine_row(base + ci * hw, po + (g * cpg + ci) * hw, hw, a, off, silu);
      }
    }
  });
  return from_f32(out, x.dtype());
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  Tensor xf = as_f32(x);
  Tensor gf = gamma.defined() ? as_f32(gamma) : Tensor();
  Tensor bf = beta.defined() ? as_f32(beta) : Tensor();
  int64_t d = x.dim(-1), rows = x.numel() / std::max<int64_t>(d, 1);
  Tensor out = Tensor::empty(x.shape(), DType::kF32);
  const float* px = xf.data<float>();
  const float* pg = gf.defined() ? gf.data<float>() : nullptr;
  const float* pb = bf.defined() ? bf.data<float>() : nullptr;
  float* po = out.data<float>();
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * d;
      float* yr = po + r * d;
      double sum = 0, sq = 0;
      sum_sq(xr, d, sum, sq);
      double mean = sum / d;
      double var = std::max(0.0, sq / d - mean * mean);
      float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
      float m = static_cast<float>(mean);
      for (int64_t i = 0; i < d; ++i) {
        float v = (xr[i] - m) * rstd;
        if (pg) v *= pg[i];
        if (pb) v += pb[i];
        yr[i] = v;
      }
    }
  });
  return from_f32(out, x.dtype());
}

namespace {

DIFFUSE_CPU_CLONES void softmax_row(const float* x, float* y, int64_t n) {
  using namespace simd;
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -INFINITY) mx = 0;  // an all -inf row gives NaN like torch; keep exp finite meanwhile
  v8f vs = splat(0.0f), vm = splat(mx);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f e = simd::exp(load(x + i) - vm);
    store(y + i, e);
    vs += e;
  }
  float s = hsum(vs);
  for (; i < n; ++i) {
    y[i] = std::exp(x[i] - mx);
    s += y[i];
  }
  float inv = 1.0f / s;
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

}  // namespace

Tensor softmax(const Tensor& x, int dim) {
  Tensor xf = as_f32(x);
  int64_t n = x.dim(dim);
  int64_t inner = 1;
  for (int i = dim + 1; i < x.ndim(); ++i) inner *= x.dim(i);
  int64_t outer = x.numel() / std::max<int64_t>(n * inner, 1);
  Tensor out = Tensor::empty(x.shape(), DType::kF32);
  const float* px = xf.data<float>();
  float* po = out.data<float>();
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) softmax_row(px + r * n, po + r * n, n);
    });
  } else {
    // Softmax along a strided dim: gather each line into a buffer.
    parallel_for(outer * inner, 16, [&](int64_t l0, int64_t l1) {
      std::vector<float> in(n), res(n);
      for (int64_t l = l0; l < l1; ++l) {
        int64_t o = l / inner, i = l % inner;
        const float* base = px + o * n * inner + i;
        for (int64_t j = 0; j < n; ++j) in[j] = base[j * inner];
        softmax_row(in.data(), res.data(), n);
        float* ob = po + o * n * inner + i;
        for (int64_t j = 0; j < n; ++j) ob[j * inner] = res[j];
      }
    });
  }
  return from_f32(out, x.dtype());
}

}  // namespace diffuse::cpu
