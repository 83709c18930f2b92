// Internal interface of the CPU backend: one function per op family, each in
// its own file (matmul.cpp, conv.cpp, norm.cpp, attention.cpp, elementwise.cpp,
// layout.cpp). Inputs are validated by core/ops.cpp; these never throw except
// for allocation failure.
#pragma once
#include <vector>

#include "core/ops.h"

// Hot loops are compiled twice, for x86-64-v3 (AVX2+FMA+F16C) and the baseline,
// and picked at load time, so the default build runs on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DIFFUSE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DIFFUSE_CPU_CLONES
#endif

namespace diffuse::cpu {

// A contiguous f32 version of x (x itself when it already is one).
Tensor as_f32(const Tensor& x);
// x (contiguous f32) converted to dtype (x itself for f32).
Tensor from_f32(const Tensor& x, DType dtype);
// Copies src into dst (same shape and dtype, any strides on both sides).
void strided_copy(const Tensor& src, const Tensor& dst);
// Broadcast strides of t against out_shape (0 where t's dim is broadcast).
std::vector<int64_t> broadcast_strides(const Tensor& t, const Shape& out_shape);

// Elementwise activation in place over n floats.
void apply_activation(float* x, int64_t n, Activation act);

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act);
Tensor matmul(const Tensor& a, const Tensor& b);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual);
// conv2d splits its output rows into bands when src or dst holds more than
// `bytes` (default 48 MiB), so no full-size blocked copy of either is made.
// Process-wide tuning knob, for tests and measurements.
void set_conv_band_bytes(size_t bytes);
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor softmax(const Tensor& x, int dim);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal);
Tensor activation(const Tensor& x, Activation act);
Tensor leaky_relu(const Tensor& x, float negative_slope);
Tensor geglu(const Tensor& x);
Tensor binary(const Tensor& a, const Tensor& b, Backend::BinaryOp op);
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta);
Tensor concat(const std::vector<Tensor>& xs, int dim);
Tensor copy(const Tensor& x);
Tensor upsample_nearest2x(const Tensor& x);
Tensor embedding(const Tensor& ids, const Tensor& table);
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift, float max_period);
Tensor cast(const Tensor& x, DType dtype);

}  // namespace diffuse::cpu
