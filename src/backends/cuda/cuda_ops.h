// Internal to the CUDA backend: the op implementations that live in their own
// files (GEMM, conv) and helpers the backend files share.
#pragma once
#include <cstdint>

#include "backends/cuda/cuda_context.h"
#include "core/ops.h"

namespace diffuse::cuda_ops {

// Contiguous tensor of `dtype` on the device holding x's data (no copy when it already is).
Tensor contiguous_as(const Tensor& x, DType dtype);
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
};
void gemm(const GemmArgs& g, const char* op);

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act);
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual);

}  // namespace diffuse::cuda_ops
