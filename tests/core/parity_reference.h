// Naive fp64 reference implementations of the ops in core/ops.h, for
// test_ops_parity.cpp. Each takes logical (contiguous, row-major) values and
// follows the PyTorch definition directly, with no blocking or tricks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/ops.h"

namespace diffuse::testing {

struct Ref {
  Shape shape;
  std::vector<double> v;
  int64_t dim(int i) const { return shape[i < 0 ? i + static_cast<int>(shape.size()) : i]; }
  int64_t numel() const { return shape_numel(shape); }
};

inline Ref ref_empty(const Shape& s) { return Ref{s, std::vector<double>(static_cast<size_t>(shape_numel(s)), 0.0)}; }

inline double ref_act(double x, Activation act) {
  switch (act) {
    case Activation::kNone: return x;
    case Activation::kGelu: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kQuickGelu: return x / (1.0 + std::exp(-1.702 * x));
    case Activation::kSilu: return x / (1.0 + std::exp(-x));
    case Activation::kRelu: return x > 0 ? x : 0.0;
    case Activation::kTanh: return std::tanh(x);
  }
  return x;
}

inline Ref ref_linear(const Ref& x, const Ref& w, const Ref* bias, Activation act) {
  int64_t in = w.dim(1), out = w.dim(0), m = x.numel() / in;
  Shape s = x.shape;
  s.back() = out;
  Ref r = ref_empty(s);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias ? bias->v[o] : 0.0;
      for (int64_t k = 0; k < in; ++k) acc += x.v[i * in + k] * w.v[o * in + k];
      r.v[i * out + o] = ref_act(acc, act);
    }
  return r;
}

// Index of `flat` (in out_shape) inside a tensor of shape `s` broadcast to out_shape.
inline int64_t ref_broadcast_index(const Shape& out_shape, const Shape& s, int64_t flat) {
  int64_t idx = 0, stride = 1;
  size_t nd = out_shape.size(), k = s.size();
  for (size_t i = nd; i-- > 0;) {
    int64_t c = flat % out_shape[i];
    flat /= out_shape[i];
    if (i >= nd - k) {
      int64_t d = s[i - (nd - k)];
      if (d != 1) idx += c * stride;
      stride *= d;
    }
  }
  return idx;
}

inline Shape ref_broadcast_shape(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    out[i] = da == 1 ? db : da;
  }
  return out;
}

inline Ref ref_matmul(const Ref& a, const Ref& b) {
  int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = ref_broadcast_shape(ba, bb);
  Shape s = batch;
  s.push_back(m);
  s.push_back(n);
  Ref r = ref_empty(s);
  for (int64_t bi = 0; bi < shape_numel(batch); ++bi) {
    int64_t ia = ref_broadcast_index(batch, ba, bi), ib = ref_broadcast_index(batch, bb, bi);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < k; ++t) acc += a.v[(ia * m + i) * k + t] * b.v[(ib * k + t) * n + j];
        r.v[(bi * m + i) * n + j] = acc;
      }
  }
  return r;
}

inline Ref ref_conv2d(const Ref& x, const Ref& w, const Ref* bias, int stride, int pad, const Ref* residual) {
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (h + 2 * pad - kh) / stride + 1, wo = (wd + 2 * pad - kw) / stride + 1;
  Ref r = ref_empty({n, o, ho, wo});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox) {
          double acc = bias ? bias->v[oc] : 0.0;
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                acc += x.v[((b * c + ic) * h + iy) * wd + ix] * w.v[((oc * c + ic) * kh + ky) * kw + kx];
              }
          int64_t idx = ((b * o + oc) * ho + oy) * wo + ox;
          r.v[idx] = acc + (residual ? residual->v[idx] : 0.0);
        }
  return r;
}

inline Ref ref_group_norm(const Ref& x, int groups, const Ref& gamma, const Ref& beta, double eps, bool silu) {
  int64_t n = x.dim(0), c = x.dim(1), hw = x.numel() / (n * c), cpg = c / groups;
  Ref r = ref_empty(x.shape);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      int64_t base = (b * c + g * cpg) * hw, cnt = cpg * hw;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < cnt; ++i) mean += x.v[base + i];
      mean /= cnt;
      for (int64_t i = 0; i < cnt; ++i) var += (x.v[base + i] - mean) * (x.v[base + i] - mean);
      var /= cnt;
      for (int64_t i = 0; i < cnt; ++i) {
        int64_t ch = g * cpg + i / hw;
        double y = (x.v[base + i] - mean) / std::sqrt(var + eps) * gamma.v[ch] + beta.v[ch];
        r.v[base + i] = silu ? ref_act(y, Activation::kSilu) : y;
      }
    }
  return r;
}

inline Ref ref_layer_norm(const Ref& x, const Ref& gamma, const Ref& beta, double eps) {
  int64_t d = x.dim(-1), rows = x.numel() / d;
  Ref r = ref_empty(x.shape);
  for (int64_t i = 0; i < rows; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mean += x.v[i * d + j];
    mean /= d;
    for (int64_t j = 0; j < d; ++j) var += (x.v[i * d + j] - mean) * (x.v[i * d + j] - mean);
    var /= d;
    for (int64_t j = 0; j < d; ++j) r.v[i * d + j] = (x.v[i * d + j] - mean) / std::sqrt(var + eps) * gamma.v[j] + beta.v[j];
  }
  return r;
}

inline Ref ref_softmax(const Ref& x, int dim) {
  int nd = static_cast<int>(x.shape.size());
  if (dim < 0) dim += nd;
  int64_t n = x.shape[dim], inner = 1;
  for (int i = dim + 1; i < nd; ++i) inner *= x.shape[i];
  int64_t outer = x.numel() / (n * inner);
  Ref r = ref_empty(x.shape);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + in; };
      double mx = -INFINITY, s = 0;
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, x.v[at(j)]);
      for (int64_t j = 0; j < n; ++j) s += std::exp(x.v[at(j)] - mx);
      for (int64_t j = 0; j < n; ++j) r.v[at(j)] = std::exp(x.v[at(j)] - mx) / s;
    }
  return r;
}

inline Ref ref_attention(const Ref& q, const Ref& k, const Ref& v, int heads, double scale, bool causal) {
  int64_t b = q.dim(0), lq = q.dim(1), lk = k.dim(1), dq = q.dim(2) / heads, dv = v.dim(2) / heads;
  Ref r = ref_empty({b, lq, v.dim(2)});
  std::vector<double> s(static_cast<size_t>(lk));
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < lk; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < dq; ++d)
            acc += q.v[(bi * lq + i) * q.dim(2) + h * dq + d] * k.v[(bi * lk + j) * k.dim(2) + h * dq + d];
          s[j] = (causal && j > i) ? -INFINITY : acc * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < lk; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t d = 0; d < dv; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < lk; ++j) acc += s[j] * v.v[(bi * lk + j) * v.dim(2) + h * dv + d];
          r.v[(bi * lq + i) * v.dim(2) + h * dv + d] = acc / sum;
        }
      }
  return r;
}

inline Ref ref_unary(const Ref& x, Activation act) {
  Ref r = x;
  for (double& e : r.v) e = ref_act(e, act);
  return r;
}

inline Ref ref_geglu(const Ref& x) {
  int64_t n = x.dim(-1) / 2, rows = x.numel() / (2 * n);
  Shape s = x.shape;
  s.back() = n;
  Ref r = ref_empty(s);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j)
      r.v[i * n + j] = x.v[i * 2 * n + j] * ref_act(x.v[i * 2 * n + n + j], Activation::kGelu);
  return r;
}

inline Ref ref_binary(const Ref& a, const Ref& b, Backend::BinaryOp op) {
  Shape s = ref_broadcast_shape(a.shape, b.shape);
  Ref r = ref_empty(s);
  for (int64_t i = 0; i < r.numel(); ++i) {
    double x = a.v[ref_broadcast_index(s, a.shape, i)], y = b.v[ref_broadcast_index(s, b.shape, i)];
    r.v[i] = op == Backend::BinaryOp::kAdd ? x + y : op == Backend::BinaryOp::kSub ? x - y : x * y;
  }
  return r;
}

inline Ref ref_concat(const std::vector<Ref>& xs, int dim) {
  int nd = static_cast<int>(xs[0].shape.size());
  if (dim < 0) dim += nd;
  Shape s = xs[0].shape;
  s[dim] = 0;
  for (const Ref& x : xs) s[dim] += x.shape[dim];
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= s[i];
  for (int i = dim + 1; i < nd; ++i) inner *= s[i];
  Ref r = ref_empty(s);
  int64_t at = 0;
  for (const Ref& x : xs) {
    int64_t len = x.shape[dim];
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < len * inner; ++j) r.v[(o * s[dim] + at) * inner + j] = x.v[o * len * inner + j];
    at += len;
  }
  return r;
}

inline Ref ref_upsample(const Ref& x) {
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Ref r = ref_empty({n, c, 2 * h, 2 * w});
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t y = 0; y < 2 * h; ++y)
      for (int64_t xx = 0; xx < 2 * w; ++xx) r.v[(p * 2 * h + y) * 2 * w + xx] = x.v[(p * h + y / 2) * w + xx / 2];
  return r;
}

inline Ref ref_embedding(const Ref& ids, const Ref& table) {
  int64_t d = table.dim(1);
  Shape s = ids.shape;
  s.push_back(d);
  Ref r = ref_empty(s);
  for (int64_t i = 0; i < ids.numel(); ++i)
    for (int64_t j = 0; j < d; ++j) r.v[i * d + j] = table.v[static_cast<int64_t>(ids.v[i]) * d + j];
  return r;
}

// diffusers get_timestep_embedding, in exact arithmetic.
inline Ref ref_timestep_embedding(const Ref& t, int dim, bool flip, double shift, double max_period) {
  int64_t n = t.numel(), half = dim / 2;
  Ref r = ref_empty({n, dim});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < half; ++j) {
      double arg = t.v[i] * std::exp(-std::log(max_period) * j / (half - shift));
      r.v[i * dim + j] = flip ? std::cos(arg) : std::sin(arg);
      r.v[i * dim + half + j] = flip ? std::sin(arg) : std::cos(arg);
    }
  return r;
}

}  // namespace diffuse::testing
