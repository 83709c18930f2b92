// conv2d: cuDNN (legacy cudnnConvolutionForward, NCHW) or im2col + cuBLASLt,
// whichever measured faster for the shape when it was first seen (cuDNN's
// NCHW kernels lose to the GEMM path on small images with many channels);
// f32 runs with CUDNN_FMA_MATH so no TF32 creeps in and skips FFT/Winograd;
// f16/bf16 skip FFT (accuracy) but may use Winograd (checked by the tests at
// the SD shape). Bias and the fused residual are one extra pass.
//
// Fallback (no usable cuDNN, or DIFFUSE_CUDA_CONV=gemm): im2col + cuBLASLt
// per image; 1x1 stride-1 convs skip im2col (the input already is the matrix).
#include <cudnn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "backends/backend_registry.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_ops.h"

namespace diffuse::cuda_ops {

namespace {

void check_dnn(cudnnStatus_t st, const char* what) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  throw_error(ErrorCode::kRuntime, std::string("[conv2d] cuDNN error: ") + cudnnGetErrorString(st) + " in " + what);
}

cudnnDataType_t dnn_type(DType t) {
  switch (t) {
    case DType::kF16: return CUDNN_DATA_HALF;
    case DType::kBF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
  }
}

void conv_gemm(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad);

// Mean milliseconds of a call of fn on the backend stream (after two untimed calls, which absorb
// lazy module loading and cuDNN's run-time compiled engines).
template <class F>
float time_ms(F&& fn) {
  constexpr int kReps = 3;
  cudaStream_t s = cuda_context().stream;
  fn();
  fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < kReps; ++i) fn();
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / kReps;
}

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t algo{};
  size_t workspace = 0;
  bool use_gemm = false;  // the im2col + GEMM path measured faster, or cuDNN offered nothing acceptable
};

class DnnState {
 public:
  DnnState() {
    const char* env = std::getenv("DIFFUSE_CUDA_CONV");
    if (env && std::strcmp(env, "gemm") == 0) return;
    if (cudnnCreate(&handle_) != CUDNN_STATUS_SUCCESS) {
      handle_ = nullptr;
      return;
    }
    if (cudnnSetStream(handle_, cuda_context().stream) != CUDNN_STATUS_SUCCESS) handle_ = nullptr;
  }
  bool available() const { return handle_ != nullptr; }

  // Returns false when this shape must take the GEMM path.
  bool run(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad) {
    std::lock_guard<std::mutex> lock(mu_);
    DType t = x.dtype();
    std::string key = std::to_string(static_cast<int>(t)) + "|" + shape_str(x.shape()) + shape_str(w.shape()) + "|" +
                      std::to_string(stride) + "," + std::to_string(pad);
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(x, w, y, stride, pad)).first;  // not during capture
    ConvPlan& p = it->second;
    if (p.use_gemm) return false;
    execute(p, x, w, y);
    return true;
  }

 private:
  void execute(const ConvPlan& p, const Tensor& x, const Tensor& w, Tensor& y) {
    if (p.workspace > (workspace_ ? workspace_->nbytes : 0)) workspace_ = cuda_allocate(p.workspace);
    float alpha = 1.0f, beta = 0.0f;
    check_dnn(cudnnConvolutionForward(handle_, &alpha, p.x, x.raw_data(), p.w, w.raw_data(), p.conv, p.algo,
                                      workspace_ ? workspace_->data : nullptr, p.workspace, &beta, p.y, y.raw_data()),
              "cudnnConvolutionForward");
  }

  // Takes cuDNN's best-ranked acceptable algorithm (heuristics: cudnnFind's
  // own timings were unreliable here, ranking a 2x slower algorithm first),
  // times it and the GEMM path once with events, and keeps the faster.
  ConvPlan make_plan(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad) {
    ConvPlan p;
    cudnnDataType_t dt = dnn_type(x.dtype());
    auto d = [](const Tensor& t, int i) { return static_cast<int>(t.shape()[i]); };
    check_dnn(cudnnCreateTensorDescriptor(&p.x), "x desc");
    check_dnn(cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NCHW, dt, d(x, 0), d(x, 1), d(x, 2), d(x, 3)), "x desc");
    check_dnn(cudnnCreateTensorDescriptor(&p.y), "y desc");
    check_dnn(cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NCHW, dt, d(y, 0), d(y, 1), d(y, 2), d(y, 3)), "y desc");
    check_dnn(cudnnCreateFilterDescriptor(&p.w), "w desc");
    check_dnn(cudnnSetFilter4dDescriptor(p.w, dt, CUDNN_TENSOR_NCHW, d(w, 0), d(w, 1), d(w, 2), d(w, 3)), "w desc");
    check_dnn(cudnnCreateConvolutionDescriptor(&p.conv), "conv desc");
    check_dnn(cudnnSetConvolution2dDescriptor(p.conv, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT),
              "conv desc");
    check_dnn(cudnnSetConvolutionMathType(p.conv, x.dtype() == DType::kF32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
              "math type");
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0;
    check_dnn(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p.x, p.w, p.conv, p.y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf),
              "algorithm heuristics");
    bool ok = false;
    float best_ms = 0;
    for (int i = 0; i < found && !ok; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      // f32 must stay exact: skip algorithms that would only run with tensor-op (TF32) math.
      if (x.dtype() == DType::kF32 && perf[i].mathType != CUDNN_FMA_MATH) continue;
      // FFT and Winograd trade accuracy for speed; keep f32 as exact as the CPU path.
      cudnnConvolutionFwdAlgo_t al = perf[i].algo;
      bool fft = al == CUDNN_CONVOLUTION_FWD_ALGO_FFT || al == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING;
      bool transform = al == CUDNN_CONVOLUTION_FWD_ALGO_FFT || al == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
                       al == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || al == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
      if (transform && (x.dtype() == DType::kF32 || fft)) continue;
      if (perf[i].memory > (size_t(2) << 30)) continue;
      p.algo = perf[i].algo;
      p.workspace = perf[i].memory;
      // Only f32 takes the reported math type (FMA); resetting f16/bf16 to the
      // reported one measured 2.5x slower than keeping CUDNN_TENSOR_OP_MATH.
      if (x.dtype() == DType::kF32) check_dnn(cudnnSetConvolutionMathType(p.conv, perf[i].mathType), "math type");
      ok = true;
    }
    if (ok) best_ms = time_ms([&] { execute(p, x, w, y); });
    float gemm_ms = time_ms([&] { conv_gemm(x, w, y, stride, pad); });
    p.use_gemm = !ok || gemm_ms < best_ms;
    if (std::getenv("DIFFUSE_CUDA_LOG"))
      std::fprintf(stderr, "[conv2d] x %s w %s %s: cudnn algo %d %.3f ms, gemm %.3f ms -> %s\n",
                   shape_str(x.shape()).c_str(), shape_str(w.shape()).c_str(), dtype_name(x.dtype()),
                   ok ? static_cast<int>(p.algo) : -1, ok ? best_ms : -1.0f, gemm_ms, p.use_gemm ? "gemm" : "cudnn");
    return p;
  }

  std::mutex mu_;
  cudnnHandle_t handle_ = nullptr;
  std::shared_ptr<Storage> workspace_;
  std::unordered_map<std::string, ConvPlan> plans_;
};

DnnState& dnn() {
  static DnnState* s = new DnnState();
  return *s;
}

void conv_gemm(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad) {
  DType t = x.dtype();
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  int64_t o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = y.dim(2), wo = y.dim(3), ckk = c * kh * kw, plane = ho * wo;
  bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  Tensor col = direct ? Tensor() : Tensor::empty({ckk, plane}, t, Device::kCUDA);
  size_t es = dtype_size(t);
  cudaStream_t s = cuda_context().stream;
  for (int64_t i = 0; i < n; ++i) {
    const char* xi = static_cast<const char*>(x.raw_data()) + i * c * h * wd * es;
    const void* colp = xi;
    if (!direct) {
      cuda_kernels::im2col(xi, col.raw_data(), t, c, h, wd, static_cast<int>(kh), static_cast<int>(kw), stride, pad,
                           ho, wo, s);
      DIFFUSE_CUDA_CHECK(cudaGetLastError(), "conv2d");
      colp = col.raw_data();
    }
    // Row-major out[o, plane] = w[o, ckk] @ col[ckk, plane], as column-major out^T = col^T w^T.
    GemmArgs g;
    g.dtype = t;
    g.m = plane;
    g.n = o;
    g.k = ckk;
    g.a = colp;
    g.lda = plane;
    g.b = w.raw_data();
    g.ldb = ckk;
    g.d = static_cast<char*>(y.raw_data()) + i * o * plane * es;
    g.ldd = plane;
    gemm(g, "conv2d");
  }
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias, int stride, int padding,
              const Tensor& residual) {
  DType t = x_in.dtype();
  Tensor x = contiguous_as(x_in, t);
  Tensor w = contiguous_as(w_in, t);
  int64_t n = x.dim(0), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1;
  Tensor y = Tensor::empty({n, o, ho, wo}, t, Device::kCUDA);
  if (y.numel() == 0) return y;
  if (x.dim(1) == 0) {
    y = Tensor::zeros({n, o, ho, wo}, t, Device::kCUDA);
  } else if (!dnn().available() || !dnn().run(x, w, y, stride, padding)) {
    conv_gemm(x, w, y, stride, padding);
  }
  Tensor b = bias.defined() ? contiguous_as(bias, t) : Tensor();
  Tensor r = residual.defined() ? contiguous_as(residual, t) : Tensor();
  if (b.defined() || r.defined()) {
    cuda_kernels::bias_residual(y.raw_data(), b.defined() ? b.raw_data() : nullptr,
                                r.defined() ? r.raw_data() : nullptr, t, n, o, ho * wo, cuda_context().stream);
    DIFFUSE_CUDA_CHECK(cudaGetLastError(), "conv2d");
  }
  return y;
}

}  // namespace diffuse::cuda_ops
