// Device-side helpers shared by the .cu files: scalar conversions, a dtype
// dispatch macro-free switch, strided indexing and block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_kernels.h"

namespace diffuse::cuda_kernels {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Offset (elements) of the contiguous linear index i in a strided view.
__device__ __forceinline__ int64_t strided_offset(const StridedDesc& d, int64_t i) {
  int64_t off = 0;
  for (int k = d.ndim - 1; k >= 0; --k) {
    int64_t sz = d.shape[k];
    int64_t c = i % sz;
    i /= sz;
    off += c * d.stride[k];
  }
  return off;
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Calls f(T{}) with T the CUDA scalar type of a floating dtype.
template <class F>
void dispatch_float(DType t, F&& f) {
  switch (t) {
    case DType::kF32: f(float{}); break;
    case DType::kF16: f(__half{}); break;
    case DType::kBF16: f(__nv_bfloat16{}); break;
    default: break;  // validated by the caller
  }
}

// Sum over a block (blockDim.x a multiple of 32, at most 1024); result in all threads.
__device__ __forceinline__ float block_sum(float v, float* shm /*32 floats*/) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  int nw = blockDim.x / 32;
  float r = lane < nw ? shm[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}
__device__ __forceinline__ float block_max(float v, float* shm) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shm[warp] = v;
  __syncthreads();
  int nw = blockDim.x / 32;
  float r = lane < nw ? shm[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, o));
  return r;
}

}  // namespace diffuse::cuda_kernels
