// LayerNorm, GroupNorm (+SiLU) and softmax. Statistics in f32; GroupNorm
// merges per-block Welford partials (Chan et al.'s parallel variance) in a
// fixed order, so results do not depend on scheduling and stay accurate when
// a group's mean is large against its spread (the VAE's 1M-element groups).
#include <cstdint>

#include "backends/cuda/cuda_types.cuh"

namespace diffuse::cuda_kernels {

namespace {

struct Welford {
  float n = 0.0f, mean = 0.0f, m2 = 0.0f;
  __device__ void add(float x) {
    n += 1.0f;
    float d = x - mean;
    mean += d / n;
    m2 += d * (x - mean);
  }
  __device__ void merge(float nb, float mb, float m2b) {
    if (nb == 0.0f) return;
    float nt = n + nb;
    float delta = mb - mean;
    mean += delta * (nb / nt);
    m2 += m2b + delta * delta * (n * nb / nt);
    n = nt;
  }
};

// Merges the Welford states of a block; thread 0 gets the result.
__device__ Welford block_welford(Welford w) {
  __shared__ float sn[32], sm[32], s2[32];
  for (int o = 16; o > 0; o >>= 1) {
    float nb = __shfl_down_sync(0xffffffffu, w.n, o);
    float mb = __shfl_down_sync(0xffffffffu, w.mean, o);
    float m2b = __shfl_down_sync(0xffffffffu, w.m2, o);
    w.merge(nb, mb, m2b);
  }
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sn[warp] = w.n;
    sm[warp] = w.mean;
    s2[warp] = w.m2;
  }
  __syncthreads();
  Welford r;
  if (threadIdx.x == 0)
    for (int i = 0; i < (int)blockDim.x / 32; ++i) r.merge(sn[i], sm[i], s2[i]);
  return r;
}

template <class T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                  T* __restrict__ y, int64_t d, float eps) {
  __shared__ float shm[32];
  const T* xr = x + blockIdx.x * d;
  T* yr = y + blockIdx.x * d;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += to_f(xr[j]);
  float mean = block_sum(s, shm) / static_cast<float>(d);
  float q = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float t = to_f(xr[j]) - mean;
    q += t * t;
  }
  float var = block_sum(q, shm) / static_cast<float>(d);
  float rstd = rsqrtf(var + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float v = (to_f(xr[j]) - mean) * rstd;
    if (gamma) v *= to_f(gamma[j]);
    if (beta) v += to_f(beta[j]);
    yr[j] = from_f<T>(v);
  }
}

// One warp per row, the row held in registers as 16-byte vectors (V values
// each, at most kLnVecs vectors a lane): one read of x, an exact two-pass
// mean/variance over the registers, one write. For d % V == 0 and
// d <= 32 * kLnVecs * V (SD's 320..1280 widths); other rows take the kernel above.
constexpr int kLnVecs = 8;
template <class T, int V>
__global__ void layer_norm_warp_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                       const T* __restrict__ beta, T* __restrict__ y, int64_t rows, int d,
                                       float eps) {
  struct alignas(16) Vec { T v[V]; };
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const Vec* xr = reinterpret_cast<const Vec*>(x + row * d);
  const int nv = d / V;
  float vals[kLnVecs][V];
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kLnVecs; ++k) {
    const int vi = lane + 32 * k;
    if (vi < nv) {
      Vec in = xr[vi];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        vals[k][j] = to_f(in.v[j]);
        s += vals[k][j];
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / static_cast<float>(d);
  float q = 0.0f;
#pragma unroll
  for (int k = 0; k < kLnVecs; ++k)
    if (lane + 32 * k < nv)
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float t = vals[k][j] - mean;
        q += t * t;
      }
  for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
  const float rstd = rsqrtf(q / static_cast<float>(d) + eps);
  Vec* yr = reinterpret_cast<Vec*>(y + row * d);
#pragma unroll
  for (int k = 0; k < kLnVecs; ++k) {
    const int vi = lane + 32 * k;
    if (vi < nv) {
      Vec out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float v = (vals[k][j] - mean) * rstd;
        const int col = vi * V + j;
        if (gamma) v *= to_f(gamma[col]);
        if (beta) v += to_f(beta[col]);
        out.v[j] = from_f<T>(v);
      }
      yr[vi] = out;
    }
  }
}

constexpr int64_t kGroupChunk = 8192;

template <class T>
__global__ void group_stats_kernel(const T* __restrict__ x, float* __restrict__ partials, int64_t group_len,
                                   int chunks) {
  int64_t g = blockIdx.y;
  int64_t begin = blockIdx.x * kGroupChunk;
  int64_t end = min(begin + kGroupChunk, group_len);
  const T* xg = x + g * group_len;
  Welford w;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) w.add(to_f(xg[i]));
  Welford r = block_welford(w);
  if (threadIdx.x == 0) {
    float* p = partials + (g * chunks + blockIdx.x) * 3;
    p[0] = r.n;
    p[1] = r.mean;
    p[2] = r.m2;
  }
}

__global__ void group_finalize_kernel(float* __restrict__ partials, float* __restrict__ stats, int64_t groups,
                                      int chunks, float eps) {
  int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (g >= groups) return;
  Welford w;
  for (int c = 0; c < chunks; ++c) {
    const float* p = partials + (g * chunks + c) * 3;
    w.merge(p[0], p[1], p[2]);
  }
  stats[2 * g] = w.mean;
  stats[2 * g + 1] = rsqrtf(w.m2 / w.n + eps);
}

template <class T>
__global__ void group_apply_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                   const float* __restrict__ stats, T* __restrict__ y, int64_t total, int64_t c,
                                   int64_t spatial, int64_t cpg, bool silu) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t nc = i / spatial;
    int64_t ch = nc % c;
    int64_t g = (nc / c) * (c / cpg) + ch / cpg;
    float v = (to_f(x[i]) - stats[2 * g]) * stats[2 * g + 1];
    if (gamma) v *= to_f(gamma[ch]);
    if (beta) v += to_f(beta[ch]);
    if (silu) v = v * sigmoid(v);
    y[i] = from_f<T>(v);
  }
}

// Channels-last GroupNorm, x [n, hw, c]. Each block takes `pix` pixels of one
// image; a thread owns a channel (or several) and sums its values shifted by
// the channel's first value in the chunk, so a mean that is large against the
// spread does not cancel the variance. Per-channel (count, mean, M2) then
// merge into per-group partials in a fixed order (no atomics: deterministic).
template <class T>
__global__ void group_stats_nhwc_kernel(const T* __restrict__ x, float* __restrict__ partials, int64_t hw, int64_t c,
                                        int64_t pix, int chunks, int groups) {
  extern __shared__ float ch_stats[];  // [2 * c]: per-channel mean, then M2
  const int64_t n = blockIdx.y;
  const int chunk = blockIdx.x;
  const int64_t p0 = chunk * pix, p1 = min(p0 + pix, hw);
  const float cnt = static_cast<float>(p1 - p0);
  const T* xb = x + n * hw * c;
  for (int64_t ch = threadIdx.x; ch < c; ch += blockDim.x) {
    const float shift = to_f(xb[p0 * c + ch]);
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll 4
    for (int64_t p = p0; p < p1; ++p) {
      const float d = to_f(xb[p * c + ch]) - shift;
      s1 += d;
      s2 += d * d;
    }
    const float mean_d = s1 / cnt;
    ch_stats[ch] = shift + mean_d;
    ch_stats[c + ch] = fmaxf(s2 - s1 * mean_d, 0.0f);
  }
  __syncthreads();
  const int64_t cpg = c / groups;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    Welford w;
    for (int64_t j = 0; j < cpg; ++j) w.merge(cnt, ch_stats[g * cpg + j], ch_stats[c + g * cpg + j]);
    float* p = partials + ((n * groups + g) * chunks + chunk) * 3;
    p[0] = w.n;
    p[1] = w.mean;
    p[2] = w.m2;
  }
}

// Merges each group's chunk partials: one warp per group, lanes take chunks
// lane, lane+32, ... in order, then a fixed shuffle tree (deterministic).
__global__ void group_finalize_warp_kernel(const float* __restrict__ partials, float* __restrict__ stats, int chunks,
                                           float eps) {
  const int64_t g = blockIdx.x;
  Welford w;
  for (int c = threadIdx.x; c < chunks; c += 32) {
    const float* p = partials + (g * chunks + c) * 3;
    w.merge(p[0], p[1], p[2]);
  }
  for (int o = 16; o > 0; o >>= 1) {
    float nb = __shfl_down_sync(0xffffffffu, w.n, o);
    float mb = __shfl_down_sync(0xffffffffu, w.mean, o);
    float m2b = __shfl_down_sync(0xffffffffu, w.m2, o);
    w.merge(nb, mb, m2b);
  }
  if (threadIdx.x == 0) {
    stats[2 * g] = w.mean;
    stats[2 * g + 1] = rsqrtf(w.m2 / w.n + eps);
  }
}

// y = (x - mean) * rstd * gamma + beta (+ SiLU) over [n, hw, c], V elements a
// thread (V = 8 16-bit values or 4 floats: one 16-byte load; c % V == 0).
template <class T, int V>
__global__ void group_apply_nhwc_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                        const T* __restrict__ beta, const float* __restrict__ stats,
                                        T* __restrict__ y, int64_t vecs, int c, int64_t hwc, int cpg, int groups,
                                        bool silu) {
  struct alignas(16) Vec { T v[V]; };
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vecs; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t e = i * V;
    const int ch0 = static_cast<int>(e % c);
    const int64_t gbase = (e / hwc) * groups;
    Vec in = reinterpret_cast<const Vec*>(x)[i], out;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int ch = ch0 + k;
      const int64_t g = gbase + ch / cpg;
      float v = (to_f(in.v[k]) - stats[2 * g]) * stats[2 * g + 1];
      if (gamma) v *= to_f(gamma[ch]);
      if (beta) v += to_f(beta[ch]);
      if (silu) v = v * sigmoid(v);
      out.v[k] = from_f<T>(v);
    }
    reinterpret_cast<Vec*>(y)[i] = out;
  }
}

// Pixels per block of the channels-last statistics pass: about 512 blocks in
// all, so small maps still fill the GPU and large ones keep blocks long.
int64_t nhwc_chunk_pixels(int64_t n, int64_t hw) {
  int64_t pix = (n * hw + 511) / 512;
  pix = pix < 16 ? 16 : pix > 4096 ? 4096 : pix;
  return pix < hw ? pix : hw;
}

template <class T>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t len, int64_t inner) {
  __shared__ float shm[32];
  int64_t r = blockIdx.x;
  int64_t base = (r / inner) * len * inner + r % inner;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, to_f(x[base + j * inner]));
  m = block_max(m, shm);
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) s += expf(to_f(x[base + j * inner]) - m);
  s = block_sum(s, shm);
  float inv = 1.0f / s;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x)
    y[base + j * inner] = from_f<T>(expf(to_f(x[base + j * inner]) - m) * inv);
}

int threads_for(int64_t len) { return len >= 1024 ? 256 : len >= 256 ? 128 : 64; }

}  // namespace

void layer_norm(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t rows, int64_t d,
                float eps, cudaStream_t s) {
  if (rows == 0 || d == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    constexpr int V = 16 / sizeof(T);
    const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
    if (aligned && d % V == 0 && d <= 32 * kLnVecs * V) {
      constexpr int kRowsPerBlock = 4;  // 4 warps, a row each
      layer_norm_warp_kernel<T, V><<<static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock),
                                     32 * kRowsPerBlock, 0, s>>>((const T*)x, (const T*)gamma, (const T*)beta, (T*)y,
                                                                 rows, static_cast<int>(d), eps);
      return;
    }
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), threads_for(d), 0, s>>>((const T*)x, (const T*)gamma,
                                                                                 (const T*)beta, (T*)y, d, eps);
  });
}

int64_t group_norm_scratch_floats(int64_t n, int64_t c, int64_t spatial, int groups) {
  int64_t group_len = (c / groups) * spatial;
  int64_t chunks = (group_len + kGroupChunk - 1) / kGroupChunk;
  if (chunks < 1) chunks = 1;
  return n * groups * (chunks * 3 + 2);
}

void group_norm(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t n, int64_t c,
                int64_t spatial, int groups, float eps, bool silu, float* partials, cudaStream_t s) {
  int64_t total = n * c * spatial;
  if (total == 0) return;
  int64_t group_len = (c / groups) * spatial;
  int chunks = static_cast<int>((group_len + kGroupChunk - 1) / kGroupChunk);
  int64_t ng = n * groups;
  float* stats = partials + ng * chunks * 3;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    group_stats_kernel<T><<<dim3(chunks, static_cast<unsigned>(ng)), 256, 0, s>>>((const T*)x, partials, group_len,
                                                                                    chunks);
    group_finalize_kernel<<<static_cast<unsigned>((ng + 127) / 128), 128, 0, s>>>(partials, stats, ng, chunks, eps);
    group_apply_kernel<T><<<cuda_blocks_for(total), 256, 0, s>>>((const T*)x, (const T*)gamma, (const T*)beta, stats,
                                                                  (T*)y, total, c, spatial, c / groups, silu);
  });
}

int64_t group_norm_nhwc_scratch_floats(int64_t n, int64_t c, int64_t hw, int groups) {
  (void)c;
  const int64_t pix = nhwc_chunk_pixels(n, hw);
  const int64_t chunks = hw == 0 ? 1 : (hw + pix - 1) / pix;
  return n * groups * (chunks * 3 + 2);
}

void group_norm_nhwc(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t n, int64_t c,
                     int64_t hw, int groups, float eps, bool silu, float* partials, cudaStream_t s) {
  const int64_t total = n * c * hw;
  if (total == 0) return;
  const int64_t pix = nhwc_chunk_pixels(n, hw);
  const int chunks = static_cast<int>((hw + pix - 1) / pix);
  const int64_t ng = n * groups;
  float* stats = partials + ng * chunks * 3;
  int threads = static_cast<int>(c < 1024 ? (c + 31) / 32 * 32 : 1024);
  if (threads < groups) threads = groups < 1024 ? (groups + 31) / 32 * 32 : 1024;
  const size_t smem = static_cast<size_t>(2 * c) * sizeof(float);
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    group_stats_nhwc_kernel<T><<<dim3(chunks, static_cast<unsigned>(n)), threads, smem, s>>>(
        (const T*)x, partials, hw, c, pix, chunks, groups);
    group_finalize_warp_kernel<<<static_cast<unsigned>(ng), 32, 0, s>>>(partials, stats, chunks, eps);
    constexpr int V = 16 / sizeof(T);
    const bool vec = c % V == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
    if (vec)
      group_apply_nhwc_kernel<T, V><<<cuda_blocks_for(total / V), 256, 0, s>>>(
          (const T*)x, (const T*)gamma, (const T*)beta, stats, (T*)y, total / V, static_cast<int>(c), hw * c,
          static_cast<int>(c / groups), groups, silu);
    else
      group_apply_nhwc_kernel<T, 1><<<cuda_blocks_for(total), 256, 0, s>>>(
          (const T*)x, (const T*)gamma, (const T*)beta, stats, (T*)y, total, static_cast<int>(c), hw * c,
          static_cast<int>(c / groups), groups, silu);
  });
}

void softmax(const void* x, void* y, DType t, int64_t outer, int64_t len, int64_t inner, cudaStream_t s) {
  int64_t rows = outer * inner;
  if (rows == 0 || len == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    softmax_kernel<T><<<static_cast<unsigned>(rows), threads_for(len), 0, s>>>((const T*)x, (T*)y, len, inner);
  });
}

}  // namespace diffuse::cuda_kernels
