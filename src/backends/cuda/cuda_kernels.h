// Kernel launchers of the CUDA backend (implemented in the .cu files).
// They take raw device pointers of contiguous buffers unless a stride set is
// passed, enqueue on `stream`, and never throw: the caller checks
// cudaGetLastError() after the launch (DIFFUSE_CUDA_CHECK).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/ops.h"

namespace diffuse::cuda_kernels {

// cudaSuccess when the current device can load this build's kernels, else
// cudaErrorNoKernelImageForDevice (or the error that stopped the check).
cudaError_t check_kernel_image();

// Launch geometry for a flat loop over n items with a grid-stride kernel.
inline unsigned cuda_blocks_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 16) b = 65535LL * 16;
  return static_cast<unsigned>(b);
}

constexpr int kMaxDims = 8;
// A strided view (element strides) of up to kMaxDims dims.
struct StridedDesc {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
};

// dst (contiguous) = src viewed through desc; elements of esize bytes (1, 2, 4, 8).
void copy_strided(const void* src, void* dst, int esize, const StridedDesc& desc, int64_t n, cudaStream_t s);
void cast(const void* src, DType from, void* dst, DType to, int64_t n, cudaStream_t s);
void activation(const void* x, void* y, DType t, int64_t n, Activation act, cudaStream_t s);
void leaky_relu(const void* x, void* y, DType t, int64_t n, float negative_slope, cudaStream_t s);
// y[r, j] = x[r, j] * gelu(x[r, half + j]); x [rows, 2*half].
void geglu(const void* x, void* y, DType t, int64_t rows, int64_t half, cudaStream_t s);
// y = a op b with a and b addressed through their (broadcast) strides over the output shape.
void binary(const void* a, const StridedDesc& ad, const void* b, const StridedDesc& bd, void* y, DType t, int64_t n,
            Backend::BinaryOp op, cudaStream_t s);
void axpby(const void* a, float alpha, const void* b, float beta, void* y, DType t, int64_t n, cudaStream_t s);
void upsample_nearest2x(const void* x, void* y, DType t, int64_t planes, int64_t h, int64_t w, cudaStream_t s);
// Channels-last: x [N, H, W, C] -> y [N, 2H, 2W, C].
void upsample_nearest2x_nhwc(const void* x, void* y, DType t, int64_t n, int64_t h, int64_t w, int64_t c,
                             cudaStream_t s);
void embedding(const void* ids, bool ids_i64, const void* table, void* y, DType t, int64_t n, int64_t d,
               cudaStream_t s);
void timestep_embedding(const float* t, float* y, int64_t n, int dim, bool flip_sin_to_cos, float shift,
                        float max_period, cudaStream_t s);
// y[n, c, :] += bias[c] (if bias) + residual[n, c, :] (if residual); all of dtype t.
void bias_residual(void* y, const void* bias, const void* residual, DType t, int64_t n, int64_t c, int64_t hw,
                   cudaStream_t s);
// The same for channels-last outputs: y [rows, c] += bias[c] + residual[rows, c]; with
// residual_rows > 0 the residual is per image instead, [rows / residual_rows, c].
void bias_residual_rows(void* y, const void* bias, const void* residual, DType t, int64_t rows, int64_t c,
                        int64_t residual_rows, cudaStream_t s);
// im2col for the conv fallback: x [C, H, W] -> col [C*kh*kw, Ho*Wo].
void im2col(const void* x, void* col, DType t, int64_t c, int64_t h, int64_t w, int kh, int kw, int stride,
            int pad, int64_t ho, int64_t wo, cudaStream_t s);

// Norms and softmax (norm.cu). gamma/beta have dtype t or are null.
void layer_norm(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t rows, int64_t d,
                float eps, cudaStream_t s);
// x [n, c, spatial]; `partials` is scratch of group_norm_scratch_floats() floats.
int64_t group_norm_scratch_floats(int64_t n, int64_t c, int64_t spatial, int groups);
// Channels-last: x [n, hw, c] (c <= kGroupNormNhwcMaxChannels: per-channel stats live in shared memory).
constexpr int64_t kGroupNormNhwcMaxChannels = 6144;
int64_t group_norm_nhwc_scratch_floats(int64_t n, int64_t c, int64_t hw, int groups);
void group_norm_nhwc(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t n, int64_t c,
                     int64_t hw, int groups, float eps, bool silu, float* partials, cudaStream_t s);
void group_norm(const void* x, const void* gamma, const void* beta, void* y, DType t, int64_t n, int64_t c,
                int64_t spatial, int groups, float eps, bool silu, float* partials, cudaStream_t s);
// Softmax over the middle dim of x viewed as [outer, len, inner].
void softmax(const void* x, void* y, DType t, int64_t outer, int64_t len, int64_t inner, cudaStream_t s);

// Attention (attention.cu). Strides in elements for the batch and sequence
// dims; the packed head dim is contiguous. out is contiguous [B, Lq, H*dv].
struct AttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  DType dtype = DType::kF32;
  int batch = 0, heads = 0, lq = 0, lk = 0, d = 0, dv = 0;
  int64_t q_sb = 0, q_sl = 0, k_sb = 0, k_sl = 0, v_sb = 0, v_sl = 0;
  float scale = 1.0f;
  bool causal = false;
};
// Returns false if the launch could not be configured (caller raises).
bool attention(const AttentionArgs& a, int max_smem_optin, cudaStream_t s);

}  // namespace diffuse::cuda_kernels
