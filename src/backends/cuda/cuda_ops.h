// Internal to the CUDA backend: the op implementations that live in their own
// files (GEMM, conv) and helpers the backend files share.
#pragma once
#include <cstdint>

#include "backends/cuda/cuda_context.h"
#include "core/ops.h"

namespace diffuse::cuda_ops {

// Contiguous tensor of `dtype` on the device holding x's data (no copy when it already is).
Tensor contiguous_as(const Tensor& x, DType dtype);
// An uninitialised [N, C, H, W] tensor stored channels-last (NHWC memory).
Tensor empty_channels_last(const Shape& nchw, DType dtype);
// x as a channels-last tensor of `dtype` (no copy when it already is one).
Tensor channels_last_as(const Tensor& x, DType dtype);
// The channels-last fast path applies to x (4-D, NHWC in memory, not also plain NCHW).
inline bool nhwc(const Tensor& x) { return x.ndim() == 4 && x.is_channels_last() && !x.is_contiguous(); }
bool cudnn_available();
// f32 convs may use TF32 now: AllowTf32 is active and DIFFUSE_CUDA_TF32 is not 0.
bool tf32_convs();
void apply_activation_inplace(Tensor& y, Activation act);

// Column-major GEMM through cuBLASLt (f32 accumulate; f32 stays exact, no TF32):
//   D[m x n] = op(A)[m x k] op(B)[k x n] (+ bias[m]), `batch` matrices with the given element strides.
struct GemmArgs {
  DType dtype = DType::kF32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* d = nullptr;
  int64_t ldd = 0, stride_d = 0;
  int64_t batch = 1;
  const void* bias = nullptr;  // dtype `dtype`, length m
  const void* c = nullptr;     // optional addend with D's layout: D = op(A) op(B) + bias + C (a fused residual)
};
void gemm(const GemmArgs& g, const char* op);

// `residual` (optional, the output's shape) is added in the GEMM epilogue (no activation then).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& residual);
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual);

}  // namespace diffuse::cuda_ops
