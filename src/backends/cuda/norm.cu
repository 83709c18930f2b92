// LayerNorm, GroupNorm (+SiLU) and softmax. Statistics in f32; GroupNorm
// merges per-block Welford partials (Chan et al.'s parallel variance) in a
// fixed order, so results do not depend on scheduling and stay accurate when
// a group's mean is large against its spread (the VAE's 1M-element groups).
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

void softmax(const void* x, void* y, DType t, int64_t outer, int64_t len, int64_t inner, cudaStream_t s) {
  int64_t rows = outer * inner;
  if (rows == 0 || len == 0) return;
  dispatch_float(t, [&](auto z) {
    using T = decltype(z);
    softmax_kernel<T><<<static_cast<unsigned>(rows), threads_for(len), 0, s>>>((const T*)x, (T*)y, len, inner);
  });
}

}  // namespace diffuse::cuda_kernels
