// Elementwise ops on the CPU: activations, GEGLU, broadcasting binary ops,
// axpby and the sinusoidal timestep embedding. Math is f32; f16/bf16 inputs
// are widened first and the result narrowed to the activation dtype.
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/simd.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

constexpr int64_t kGrain = 1 << 14;

inline float gelu_erf(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f)); }

// Vector bodies use simd::exp / simd::erf (~1e-7 error); tails use libm.
DIFFUSE_CPU_CLONES void silu_n(float* x, int64_t n) {
  using namespace simd;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v = load(x + i);
    store(x + i, v / (splat(1.0f) + simd::exp(-v)));
  }
  for (; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
}
DIFFUSE_CPU_CLONES void quick_gelu_n(float* x, int64_t n) {
  using namespace simd;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v = load(x + i);
    store(x + i, v / (splat(1.0f) + simd::exp(splat(-1.702f) * v)));
  }
  for (; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
}
DIFFUSE_CPU_CLONES void gelu_n(float* x, int64_t n) {
  using namespace simd;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v = load(x + i);
    store(x + i, splat(0.5f) * v * (splat(1.0f) + simd::erf(v * splat(0.70710678118654752f))));
  }
  for (; i < n; ++i) x[i] = gelu_erf(x[i]);
}

}  // namespace

void apply_activation(float* x, int64_t n, Activation act) {
  switch (act) {
    case Activation::kNone: return;
    case Activation::kGelu: gelu_n(x, n); return;
    case Activation::kQuickGelu: quick_gelu_n(x, n); return;
    case Activation::kSilu: silu_n(x, n); return;
    case Activation::kRelu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
      return;
    case Activation::kTanh:
      for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
      return;
  }
}

Tensor activation(const Tensor& x, Activation act) {
  // as_f32 of an f32 contiguous tensor is the tensor itself: copy before writing.
  Tensor y = x.dtype() == DType::kF32 ? cpu::copy(x) : as_f32(x);
  float* p = y.data<float>();
  parallel_for(y.numel(), kGrain, [&](int64_t b, int64_t e) { apply_activation(p + b, e - b, act); });
  return from_f32(y, x.dtype());
}

namespace {

DIFFUSE_CPU_CLONES void leaky_relu_n(float* x, int64_t n, float slope) {
  // A select, not max(x, slope * x): that would be wrong for slopes above 1.
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= 0.0f ? x[i] : x[i] * slope;
}

}  // namespace

Tensor leaky_relu(const Tensor& x, float negative_slope) {
  Tensor y = x.dtype() == DType::kF32 ? cpu::copy(x) : as_f32(x);
  float* p = y.data<float>();
  parallel_for(y.numel(), kGrain, [&](int64_t b, int64_t e) { leaky_relu_n(p + b, e - b, negative_slope); });
  return from_f32(y, x.dtype());
}

namespace {

DIFFUSE_CPU_CLONES void geglu_row(const float* a, float* o, int64_t n) {
  using namespace simd;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f g = load(a + n + i);
    v8f ge = splat(0.5f) * g * (splat(1.0f) + simd::erf(g * splat(0.70710678118654752f)));
    store(o + i, load(a + i) * ge);
  }
  for (; i < n; ++i) o[i] = a[i] * gelu_erf(a[n + i]);
}

}  // namespace

Tensor geglu(const Tensor& x) {
  Tensor xf = as_f32(x);
  int64_t two_n = x.dim(-1), n = two_n / 2, rows = x.numel() / std::max<int64_t>(two_n, 1);
  Shape shape = x.shape();
  shape.back() = n;
  Tensor out = Tensor::empty(shape, DType::kF32);
  const float* src = xf.data<float>();
  float* dst = out.data<float>();
  parallel_for(rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      geglu_row(src + r * two_n, dst + r * n, n);
    }
  });
  return from_f32(out, x.dtype());
}

namespace {

DIFFUSE_CPU_CLONES void binary_row(const float* a, int64_t sa, const float* b, int64_t sb, float* o, int64_t n,
                                   Backend::BinaryOp op) {
  if (sa == 1 && sb == 1) {
    switch (op) {
      case Backend::BinaryOp::kAdd: for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i]; break;
      case Backend::BinaryOp::kSub: for (int64_t i = 0; i < n; ++i) o[i] = a[i] - b[i]; break;
      case Backend::BinaryOp::kMul: for (int64_t i = 0; i < n; ++i) o[i] = a[i] * b[i]; break;
    }
    return;
  }
  if (sa == 1 && sb == 0) {  // per-row scalar b (channel bias, scalar operand)
    float y = b[0];
    switch (op) {
      case Backend::BinaryOp::kAdd: for (int64_t i = 0; i < n; ++i) o[i] = a[i] + y; break;
      case Backend::BinaryOp::kSub: for (int64_t i = 0; i < n; ++i) o[i] = a[i] - y; break;
      case Backend::BinaryOp::kMul: for (int64_t i = 0; i < n; ++i) o[i] = a[i] * y; break;
    }
    return;
  }
  switch (op) {
    case Backend::BinaryOp::kAdd: for (int64_t i = 0; i < n; ++i) o[i] = a[i * sa] + b[i * sb]; break;
    case Backend::BinaryOp::kSub: for (int64_t i = 0; i < n; ++i) o[i] = a[i * sa] - b[i * sb]; break;
    case Backend::BinaryOp::kMul: for (int64_t i = 0; i < n; ++i) o[i] = a[i * sa] * b[i * sb]; break;
  }
}

}  // namespace

Tensor binary(const Tensor& a, const Tensor& b, Backend::BinaryOp op) {
  // Output shape by numpy broadcasting (validated in ops.cpp).
  size_t nd = std::max(a.shape().size(), b.shape().size());
  Shape shape(nd);
  for (size_t i = 0; i < nd; ++i) {
    int64_t da = i < nd - a.shape().size() ? 1 : a.shape()[i - (nd - a.shape().size())];
    int64_t db = i < nd - b.shape().size() ? 1 : b.shape()[i - (nd - b.shape().size())];
    shape[i] = da == 1 ? db : da;
  }
  Tensor af = as_f32(a), bf = as_f32(b);
  Tensor out = Tensor::empty(shape, DType::kF32);
  int64_t total = out.numel();
  if (total == 0) return from_f32(out, a.dtype());
  auto sa = broadcast_strides(af, shape), sb = broadcast_strides(bf, shape);
  // Merge trailing dims where both inputs are contiguous (or both broadcast) to get long rows.
  int64_t inner = shape.empty() ? 1 : shape.back();
  int64_t ia = shape.empty() ? 0 : sa.back(), ib = shape.empty() ? 0 : sb.back();
  int outer_dims = static_cast<int>(nd) - 1;
  while (outer_dims > 0) {
    int d = outer_dims - 1;
    // A dim folds into the row when each input steps through it exactly one row
    // further (or broadcasts both it and the row: stride 0 stays 0).
    if (sa[d] != ia * inner || sb[d] != ib * inner) break;
    inner *= shape[d];
    --outer_dims;
  }
  if (nd == 0) outer_dims = 0;
  int64_t rows = total / inner;
  const float* pa = af.data<float>();
  const float* pb = bf.data<float>();
  float* po = out.data<float>();
  parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t oa = 0, ob = 0, rem = r;
      for (int d = outer_dims - 1; d >= 0; --d) {
        int64_t idx = rem % shape[d];
        rem /= shape[d];
        oa += idx * sa[d];
        ob += idx * sb[d];
      }
      binary_row(pa + oa, ia, pb + ob, ib, po + r * inner, inner, op);
    }
  });
  return from_f32(out, a.dtype());
}

namespace {

DIFFUSE_CPU_CLONES void axpby_n(const float* a, float alpha, const float* b, float beta, float* o, int64_t n) {
  if (beta == 0.0f) {
    for (int64_t i = 0; i < n; ++i) o[i] = alpha * a[i];
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = alpha * a[i] + beta * b[i];
  }
}

}  // namespace

Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  Tensor af = as_f32(a);
  Tensor bf = beta == 0.0f ? af : as_f32(b);
  Tensor out = Tensor::empty(a.shape(), DType::kF32);
  const float* pa = af.data<float>();
  const float* pb = bf.data<float>();
  float* po = out.data<float>();
  parallel_for(out.numel(), kGrain, [&](int64_t s, int64_t e) { axpby_n(pa + s, alpha, pb + s, beta, po + s, e - s); });
  return from_f32(out, a.dtype());
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift, float max_period) {
  // Follows diffusers.models.embeddings.get_timestep_embedding step by step in
  // f32 (same rounding points), so fractional timesteps match too.
  std::vector<float> ts = t.to_f32_vector();
  int64_t n = static_cast<int64_t>(ts.size());
  int half = dim / 2;
  Tensor out = Tensor::zeros({n, dim}, DType::kF32);
  float* o = out.data<float>();
  std::vector<float> freqs(half);
  float neg_log = -std::log(max_period);
  for (int i = 0; i < half; ++i) {
    float exponent = neg_log * static_cast<float>(i);
    exponent = exponent / (static_cast<float>(half) - shift);
    freqs[i] = std::exp(exponent);
  }
  for (int64_t r = 0; r < n; ++r) {
    float* row = o + r * dim;
    for (int i = 0; i < half; ++i) {
      float arg = ts[r] * freqs[i];
      float s = std::sin(arg), c = std::cos(arg);
      row[i] = flip_sin_to_cos ? c : s;
      row[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

}  // namespace diffuse::cpu
