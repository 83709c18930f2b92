// Elementwise and data-movement kernels: copy, cast, activations, GEGLU,
// broadcasting binary ops, axpby, upsample, embedding, timestep embedding,
// the conv epilogue (bias + residual) and im2col. All memory-bound; grid-stride
// loops of 256 threads, f32 math for the 16-bit types.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_types.cuh"

namespace diffuse::cuda_kernels {

namespace {

constexpr int kThreads = 256;

#define DIFFUSE_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <class E>
__global__ void copy_strided_kernel(const E* __restrict__ src, E* __restrict__ dst, StridedDesc d, int64_t n) {
  DIFFUSE_GRID_LOOP(i, n) { dst[i] = src[strided_offset(d, i)]; }
}

template <class A, class B>
__device__ __forceinline__ B convert_one(A a) {
  if constexpr (std::is_integral_v<A> && std::is_integral_v<B>) {
    return static_cast<B>(a);
  } else if constexpr (std::is_integral_v<A>) {
    return from_f<B>(static_cast<float>(a));
  } else if constexpr (std::is_integral_v<B>) {
    return static_cast<B>(to_f(a));
  } else {
    return from_f<B>(to_f(a));
  }
}

template <class A, class B>
__global__ void cast_kernel(const A* __restrict__ src, B* __restrict__ dst, int64_t n) {
  DIFFUSE_GRID_LOOP(i, n) { dst[i] = convert_one<A, B>(src[i]); }
}

template <class F>
void dispatch_any(DType t, F&& f) {
  switch (t) {
    case DType::kI32: f(int32_t{}); break;
    case DType::kI64: f(int64_t{}); break;
    default: dispatch_float(t, f);
  }
}

template <class T>
__global__ void activation_kernel(const T* x, T* y, int64_t n, Activation act) {
  DIFFUSE_GRID_LOOP(i, n) {
    float v = to_f(x[i]);
    switch (act) {
      case Activation::kGelu: v = gelu_erf(v); break;
      case Activation::kQuickGelu: v = v * sigmoid(1.702f * v); break;
      case Activation::kSilu: v = v * sigmoid(v); break;
      case Activation::kRelu: v = v > 0.0f ? v : 0.0f; break;
      case Activation::kTanh: v = tanhf(v); break;
      default: break;
    }
    y[i] = from_f<T>(v);
  }
}

template <class T>
__global__ void leaky_relu_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float slope) {
  DIFFUSE_GRID_LOOP(i, n) {
    float v = to_f(x[i]);
    y[i] = from_f<T>(v >= 0.0f ? v : v * slope);
  }
}

template <class T>
__global__ void geglu_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t half) {
  DIFFUSE_GRID_LOOP(i, rows * half) {
    int64_t r = i / half, j = i % half;
    float a = to_f(x[r * 2 * half + j]);
    float g = to_f(x[r * 2 * half + half + j]);
    y[i] = from_f<T>(a * gelu_erf(g));
  }
}

// The same, V values a thread through 16-byte loads (half % V == 0, aligned rows).
template <class T, int V>
__global__ void geglu_vec_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int half_vecs) {
  struct alignas(16) Vec { T v[V]; };
  DIFFUSE_GRID_LOOP(i, rows * half_vecs) {
    const int64_t r = i / half_vecs;
    const int j = static_cast<int>(i - r * half_vecs);
    const Vec* xr = reinterpret_cast<const Vec*>(x) + r * 2 * half_vecs;
    const Vec a = xr[j], g = xr[half_vecs + j];
    Vec out;
#pragma unroll
    for (int k = 0; k < V; ++k) out.v[k] = from_f<T>(to_f(a.v[k]) * gelu_erf(to_f(g.v[k])));
    reinterpret_cast<Vec*>(y)[i] = out;
  }
}

template <class T>
__global__ void binary_kernel(const T* __restrict__ a, StridedDesc ad, const T* __restrict__ b, StridedDesc bd,
                              T* __restrict__ y, int64_t n, Backend::BinaryOp op) {
  DIFFUSE_GRID_LOOP(i, n) {
    float x = to_f(a[strided_offset(ad, i)]);
    float z = to_f(b[strided_offset(bd, i)]);
    float r = op == Backend::BinaryOp::kAdd ? x + z : op == Backend::BinaryOp::kSub ? x - z : x * z;
    y[i] = from_f<T>(r);
  }
}

// Same-shape contiguous fast path (the common case: residual adds).
template <class T>
__global__ void binary_flat_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, int64_t n,
                                   Backend::BinaryOp op) {
  DIFFUSE_GRID_LOOP(i, n) {
    float x = to_f(a[i]), z = to_f(b[i]);
    float r = op == Backend::BinaryOp::kAdd ? x + z : op == Backend::BinaryOp::kSub ? x - z : x * z;
    y[i] = from_f<T>(r);
  }
}

template <class T>
__global__ void axpby_kernel(const T* __restrict__ a, float alpha, const T* __restrict__ b, float beta,
                             T* __restrict__ y, int64_t n) {
  DIFFUSE_GRID_LOOP(i, n) {
    float v = alpha * to_f(a[i]);
    if (beta != 0.0f) v += beta * to_f(b[i]);  // beta == 0 never reads b (scale() passes a as b)
    y[i] = from_f<T>(v);
  }
}

template <class T>
__global__ void upsample_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t planes, int64_t h, int64_t w) {
  int64_t w2 = 2 * w, h2 = 2 * h;
  DIFFUSE_GRID_LOOP(i, planes * h2 * w2) {
    int64_t ox = i % w2, oy = (i / w2) % h2, p = i / (w2 * h2);
    y[i] = x[(p * h + oy / 2) * w + ox / 2];
  }
}

// Channels-last: x [N, H, W, C] -> y [N, 2H, 2W, C].
template <class T>
__global__ void upsample_nhwc_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t h, int64_t w,
                                     int64_t c) {
  int64_t w2 = 2 * w, h2 = 2 * h;
  DIFFUSE_GRID_LOOP(i, n * h2 * w2 * c) {
    int64_t ch = i % c, r = i / c;
    int64_t ox = r % w2, oy = (r / w2) % h2, b = r / (w2 * h2);
    y[i] = x[((b * h + oy / 2) * w + ox / 2) * c + ch];
  }
}

template <class T, class I>
__global__ void embedding_kernel(const I* __restrict__ ids, const T* __restrict__ table, T* __restrict__ y, int64_t n,
                                 int64_t d) {
  DIFFUSE_GRID_LOOP(i, n * d) {
    int64_t r = i / d, j = i % d;
    y[i] = table[static_cast<int64_t>(ids[r]) * d + j];
  }
}

// diffusers.models.embeddings.get_timestep_embedding, in f32 as torch computes it.
__global__ void timestep_kernel(const float* __restrict__ t, float* __restrict__ y, int64_t n, int dim, bool flip,
                                float shift, float neg_log_period) {
  int half = dim / 2;
  DIFFUSE_GRID_LOOP(i, n * dim) {
    int64_t r = i / dim;
    int j = static_cast<int>(i % dim);
    float v = 0.0f;
    if (j < 2 * half) {
      int k = j < half ? j : j - half;
      bool first = j < half;
      float exponent = neg_log_period * static_cast<float>(k);
      exponent = exponent / (static_cast<float>(half) - shift);
      float arg = t[r] * expf(exponent);
      bool use_sin = flip ? !first : first;
      v = use_sin ? sinf(arg) : cosf(arg);
    }
    y[i] = v;
  }
}

template <class T>
__global__ void bias_residual_kernel(T* __restrict__ y, const T* __restrict__ bias, const T* __restrict__ res,
                                     int64_t n, int64_t c, int64_t hw) {
  DIFFUSE_GRID_LOOP(i, n * c * hw) {
    float v = to_f(y[i]);
    if (bias) v += to_f(bias[(i / hw) % c]);
    if (res) v += to_f(res[i]);
    y[i] = from_f<T>(v);
  }
}

// Channels-last epilogue: y [rows, c] += bias[c] + res[rows, c], V values a
// thread (16-byte loads when c % V == 0 and the buffers are aligned, else V = 1).
// With res_rows > 0 the residual is one row per image: res[row / res_rows, c].
template <class T, int V>
__global__ void bias_residual_rows_kernel(T* __restrict__ y, const T* __restrict__ bias, const T* __restrict__ res,
                                          int64_t vecs, int c, int64_t res_rows) {
  struct alignas(V * sizeof(T)) Vec { T v[V]; };
  DIFFUSE_GRID_LOOP(i, vecs) {
    const int64_t e = i * V;
    const int ch0 = static_cast<int>(e % c);
    Vec out = reinterpret_cast<Vec*>(y)[i];
    Vec r;
    if (res) r = reinterpret_cast<const Vec*>(res)[res_rows > 0 ? ((e / c) / res_rows * c + ch0) / V : i];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float v = to_f(out.v[k]);
      if (bias) v += to_f(bias[ch0 + k]);
      if (res) v += to_f(r.v[k]);
      out.v[k] = from_f<T>(v);
    }
    reinterpret_cast<Vec*>(y)[i] = out;
  }
}

template <class T>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ col, int64_t c, int64_t h, int64_t w, int kh,
                              int kw, int stride, int pad, int64_t ho, int64_t wo) {
  int64_t plane = ho * wo;
  DIFFUSE_GRID_LOOP(i, c * kh * kw * plane) {
    int64_t p = i % plane, row = i / plane;
    int kx = static_cast<int>(row % kw), ky = static_cast<int>((row / kw) % kh);
    int64_t ch = row / (kh * kw);
    int64_t oy = p / wo, ox = p % wo;
    int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
    col[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(ch * h + iy) * w + ix] : from_f<T>(0.0f);
  }
}

}  // namespace

void copy_strided(const void* src, void* dst, int esize, const StridedDesc& desc, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  unsigned g = cuda_blocks_for(n);
  switch (esize) {
    case 1: copy_strided_kernel<<<g, kThreads, 0, s>>>((const uint8_t*)src, (uint8_t*)dst, desc, n); break;
    case 2: copy_strided_kernel<<<g, kThreads, 0, s>>>((const uint16_t*)src, (uint16_t*)dst, desc, n); break;
    case 4: copy_strided_kernel<<<g, kThreads, 0, s>>>((const uint32_t*)src, (uint32_t*)dst, desc, n); break;
    default: copy_strided_kernel<<<g, kThreads, 0, s>>>((const uint64_t*)src, (uint64_t*)dst, desc, n); break;
  }
}

void cast(const void* src, DType from, void* dst, DType to, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_any(from, [&](auto a) {
    dispatch_any(to, [&](auto b) {
      using A = decltype(a);
      using B = decltype(b);
      cast_kernel<A, B><<<cuda_blocks_for(n), kThreads, 0, s>>>((const A*)src, (B*)dst, n);
    });
  });
}

void activation(const void* x, void* y, DType t, int64_t n, Activation act, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    activation_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)x, (T*)y, n, act);
  });
}

void leaky_relu(const void* x, void* y, DType t, int64_t n, float negative_slope, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    leaky_relu_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)x, (T*)y, n, negative_slope);
  });
}

void geglu(const void* x, void* y, DType t, int64_t rows, int64_t half, cudaStream_t s) {
  if (rows * half == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    constexpr int V = 16 / sizeof(T);
    if (half % V == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0) {
      const int64_t n = rows * (half / V);
      geglu_vec_kernel<T, V><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)x, (T*)y, rows,
                                                                     static_cast<int>(half / V));
      return;
    }
    geglu_kernel<T><<<cuda_blocks_for(rows * half), kThreads, 0, s>>>((const T*)x, (T*)y, rows, half);
  });
}

void binary(const void* a, const StridedDesc& ad, const void* b, const StridedDesc& bd, void* y, DType t, int64_t n,
            Backend::BinaryOp op, cudaStream_t s) {
  if (n == 0) return;
  auto flat = [](const StridedDesc& d) {
    int64_t expect = 1;
    for (int k = d.ndim - 1; k >= 0; --k) {
      if (d.shape[k] != 1 && d.stride[k] != expect) return false;
      expect *= d.shape[k];
    }
    return true;
  };
  bool fast = flat(ad) && flat(bd);
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    if (fast)
      binary_flat_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)a, (const T*)b, (T*)y, n, op);
    else
      binary_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)a, ad, (const T*)b, bd, (T*)y, n, op);
  });
}

void axpby(const void* a, float alpha, const void* b, float beta, void* y, DType t, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    axpby_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)a, alpha, (const T*)b, beta, (T*)y, n);
  });
}

void upsample_nearest2x(const void* x, void* y, DType t, int64_t planes, int64_t h, int64_t w, cudaStream_t s) {
  int64_t n = planes * h * w * 4;
  if (n == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    upsample_kernel<T><<<cuda_blocks_for(n), kThreads, 0, s>>>((const T*)x, (T*)y, planes, h, w);
  });
}

void upsample_nearest2x_nhwc(const void* x, void* y, DType t, int64_t n, int64_t h, int64_t w, int64_t c,
                             cudaStream_t s) {
  int64_t total = n * h * w * c * 4;
  if (total == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    upsample_nhwc_kernel<T><<<cuda_blocks_for(total), kThreads, 0, s>>>((const T*)x, (T*)y, n, h, w, c);
  });
}

void embedding(const void* ids, bool ids_i64, const void* table, void* y, DType t, int64_t n, int64_t d,
               cudaStream_t s) {
  if (n * d == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    if (ids_i64)
      embedding_kernel<T, int64_t>
          <<<cuda_blocks_for(n * d), kThreads, 0, s>>>((const int64_t*)ids, (const T*)table, (T*)y, n, d);
    else
      embedding_kernel<T, int32_t>
          <<<cuda_blocks_for(n * d), kThreads, 0, s>>>((const int32_t*)ids, (const T*)table, (T*)y, n, d);
  });
}

void timestep_embedding(const float* t, float* y, int64_t n, int dim, bool flip_sin_to_cos, float shift,
                        float max_period, cudaStream_t s) {
  if (n * dim == 0) return;
  // torch multiplies the f32 arange by the python double -log(max_period) rounded to f32.
  float neg_log = static_cast<float>(-std::log(static_cast<double>(max_period)));
  timestep_kernel<<<cuda_blocks_for(n * dim), kThreads, 0, s>>>(t, y, n, dim, flip_sin_to_cos, shift, neg_log);
}

void bias_residual(void* y, const void* bias, const void* residual, DType t, int64_t n, int64_t c, int64_t hw,
                   cudaStream_t s) {
  int64_t total = n * c * hw;
  if (total == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    bias_residual_kernel<T>
        <<<cuda_blocks_for(total), kThreads, 0, s>>>((T*)y, (const T*)bias, (const T*)residual, n, c, hw);
  });
}

void im2col(const void* x, void* col, DType t, int64_t c, int64_t h, int64_t w, int kh, int kw, int stride, int pad,
            int64_t ho, int64_t wo, cudaStream_t s) {
  int64_t total = c * kh * kw * ho * wo;
  if (total == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    im2col_kernel<T><<<cuda_blocks_for(total), kThreads, 0, s>>>((const T*)x, (T*)col, c, h, w, kh, kw, stride, pad,
                                                                  ho, wo);
  });
}

void bias_residual_rows(void* y, const void* bias, const void* residual, DType t, int64_t rows, int64_t c,
                        int64_t residual_rows, cudaStream_t s) {
  int64_t total = rows * c;
  if (total == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    constexpr int V = 16 / sizeof(T);
    const bool vec = c % V == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(residual) % 16 == 0;
    if (vec)
      bias_residual_rows_kernel<T, V><<<cuda_blocks_for(total / V), kThreads, 0, s>>>(
          (T*)y, (const T*)bias, (const T*)residual, total / V, static_cast<int>(c), residual_rows);
    else
      bias_residual_rows_kernel<T, 1><<<cuda_blocks_for(total), kThreads, 0, s>>>(
          (T*)y, (const T*)bias, (const T*)residual, total, static_cast<int>(c), residual_rows);
  });
}

}  // namespace diffuse::cuda_kernels
