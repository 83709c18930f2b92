// conv2d through cuDNN (legacy cudnnConvolutionForward) or cuBLASLt.
//
// Channels-last inputs (the layout the CUDA backend prefers, see ops.h) run
// cuDNN's NHWC tensor-core kernels with KRSC filters: no layout transposes.
// Of cuDNN's ranked algorithms the first four acceptable ones (small
// workspaces first) are timed once per shape and the fastest kept. 1x1
// stride-1 convs are plain GEMMs there (pixels x channels), with the bias and
// the residual in the GEMM epilogue; other convs add them in one vectorised pass
// (a per-image [N, O, 1, 1] residual too: the resnet's time embedding).
//
// NCHW inputs take cuDNN's NCHW path or im2col + cuBLASLt, whichever measured
// faster for the shape when it was first seen (cuDNN's NCHW kernels lose to the
// GEMM path on small images with many channels).
//
// f32 runs with CUDNN_FMA_MATH so no TF32 creeps in and skips FFT/Winograd,
// unless an AllowTf32 scope is open (ops.h: the upcast SDXL VAE), which runs
// it on tensor cores; f16/bf16 skip FFT (accuracy) but may use Winograd
// (checked by the tests at the SD shape).
//
// Fallback (no usable cuDNN, or DIFFUSE_CUDA_CONV=gemm): im2col + cuBLASLt
// per image on NCHW; 1x1 stride-1 convs skip im2col.
#include <cudnn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "backends/backend_registry.h"
#include "core/runtime_options.h"
#include "backends/cuda/cuda_api.h"
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
    if (runtime_options().cuda_conv == "gemm") return;
    if (cudnnCreate(&handle_) != CUDNN_STATUS_SUCCESS) {
      handle_ = nullptr;
      return;
    }
    if (cudnnSetStream(handle_, cuda_context().stream) != CUDNN_STATUS_SUCCESS) handle_ = nullptr;
  }
  bool available() const { return handle_ != nullptr; }

  // Returns false when this shape must take the GEMM path (NCHW) or cuDNN has no algorithm for it.
  // With nhwc, x and y are channels-last and w is KRSC (channels-last too).
  bool run(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad, bool nhwc) {
    std::lock_guard<std::mutex> lock(mu_);
    DType t = x.dtype();
    const bool tf32 = t == DType::kF32 && tf32_convs();
    std::string key = std::to_string(static_cast<int>(t)) + (nhwc ? "|nhwc|" : "|nchw|") + (tf32 ? "tf32|" : "") +
                      shape_str(x.shape()) +
                      shape_str(w.shape()) + "|" + std::to_string(stride) + "," + std::to_string(pad);
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(x, w, y, stride, pad, nhwc, tf32)).first;  // not in capture
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
  // tf32: f32 data on tensor cores (AllowTf32); otherwise f32 keeps FMA math, exact like the CPU path.
  ConvPlan make_plan(const Tensor& x, const Tensor& w, Tensor& y, int stride, int pad, bool nhwc, bool tf32) {
    ConvPlan p;
    cudnnDataType_t dt = dnn_type(x.dtype());
    const cudnnTensorFormat_t fmt = nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    auto d = [](const Tensor& t, int i) { return static_cast<int>(t.shape()[i]); };
    check_dnn(cudnnCreateTensorDescriptor(&p.x), "x desc");
    check_dnn(cudnnSetTensor4dDescriptor(p.x, fmt, dt, d(x, 0), d(x, 1), d(x, 2), d(x, 3)), "x desc");
    check_dnn(cudnnCreateTensorDescriptor(&p.y), "y desc");
    check_dnn(cudnnSetTensor4dDescriptor(p.y, fmt, dt, d(y, 0), d(y, 1), d(y, 2), d(y, 3)), "y desc");
    check_dnn(cudnnCreateFilterDescriptor(&p.w), "w desc");
    check_dnn(cudnnSetFilter4dDescriptor(p.w, dt, fmt, d(w, 0), d(w, 1), d(w, 2), d(w, 3)), "w desc");
    check_dnn(cudnnCreateConvolutionDescriptor(&p.conv), "conv desc");
    check_dnn(cudnnSetConvolution2dDescriptor(p.conv, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT),
              "conv desc");
    const bool exact_f32 = x.dtype() == DType::kF32 && !tf32;
    check_dnn(cudnnSetConvolutionMathType(p.conv, exact_f32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH), "math type");
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0;
    check_dnn(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p.x, p.w, p.conv, p.y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf),
              "algorithm heuristics");
    // Candidates in cuDNN's ranking (cudnnFind's own timings were unreliable here, ranking a 2x slower
    // algorithm first): up to four acceptable ones are timed with events and the fastest is kept.
    bool ok = false;
    float best_ms = 0;
    int timed = 0;
    const int max_timed = 4;
    // Trying a candidate allocates its workspace, and the allocator's peak keeps it. NHWC: candidates
    // needing at most 16 MiB go first, larger ones only when none of those works (the same algorithm
    // often comes twice there, as fast with a few KiB as with hundreds of MiB). NCHW: in rank order (its
    // fast algorithms transpose through their workspace; small-first measured 4x slower on the VAE).
    for (int pass = nhwc ? 0 : 1; pass < 2 && !ok; ++pass)
    for (int i = 0; i < found && timed < max_timed; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      if (nhwc && (perf[i].memory > (size_t(16) << 20)) != (pass == 1)) continue;
      // f32 must stay exact: skip algorithms that would only run with tensor-op (TF32) math.
      if (exact_f32 && perf[i].mathType != CUDNN_FMA_MATH) continue;
      // FFT and Winograd trade accuracy for speed; keep f32 as exact as the CPU path.
      cudnnConvolutionFwdAlgo_t al = perf[i].algo;
      bool fft = al == CUDNN_CONVOLUTION_FWD_ALGO_FFT || al == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING;
      bool transform = fft || al == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || al == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
      if (transform && (exact_f32 || fft)) continue;
      if (perf[i].memory > (size_t(2) << 30)) continue;
      ConvPlan cand = p;
      cand.algo = perf[i].algo;
      cand.workspace = perf[i].memory;
      // Only f32 takes the reported math type (FMA); resetting f16/bf16 to the
      // reported one measured 2.5x slower than keeping CUDNN_TENSOR_OP_MATH.
      if (exact_f32) check_dnn(cudnnSetConvolutionMathType(p.conv, perf[i].mathType), "math type");
      // An algorithm the heuristics offer can still be refused at run time (seen: bf16 NHWC on cuDNN 9.14
      // answering CUDNN_STATUS_BAD_PARAM); such a candidate is skipped.
      float ms = 0.0f;
      try {  // (an NCHW plan also times the GEMM path below)
        ms = time_ms([&] { execute(cand, x, w, y); });
      } catch (const Error& e) {
        if (runtime_options().cuda_log)
          std::fprintf(stderr, "[conv2d] %s algo %d refused: %s\n", nhwc ? "nhwc" : "nchw",
                       static_cast<int>(cand.algo), e.what());
        continue;
      }
      ++timed;
      if (runtime_options().cuda_log)
        std::fprintf(stderr, "[conv2d] %s x %s w %s %s: cudnn algo %d ws %zu B: %.3f ms\n", nhwc ? "nhwc" : "nchw",
                     shape_str(x.shape()).c_str(), shape_str(w.shape()).c_str(), dtype_name(x.dtype()),
                     static_cast<int>(cand.algo), cand.workspace, ms);
      // Near-ties (within 3%) go to the smaller workspace: it is peak memory.
      if (!ok || ms < best_ms * 0.97f || (ms <= best_ms * 1.03f && cand.workspace < p.workspace)) {
        p.algo = cand.algo;
        p.workspace = cand.workspace;
        best_ms = ms;
      }
      ok = true;
    }
    if (nhwc) {
      p.use_gemm = !ok;  // no GEMM path for channels-last 3x3 convs: the caller falls back to NCHW
      return p;
    }
    // The GEMM path's im2col buffer is C*kh*kw x Ho*Wo per image: at the VAE's large maps (4.8 GB for
    // SDXL's 1024^2 x 128 channels in f32) it is not even tried when cuDNN has an algorithm.
    const double col_bytes = static_cast<double>(x.dim(1)) * w.dim(2) * w.dim(3) * y.dim(2) * y.dim(3) *
                             dtype_size(x.dtype());
    if (ok && (col_bytes > double(256 << 20) || tf32)) {  // (the GEMM path is exact f32: no TF32 trial)
      p.use_gemm = false;
      return p;
    }
    float gemm_ms = time_ms([&] { conv_gemm(x, w, y, stride, pad); });
    p.use_gemm = !ok || gemm_ms < best_ms;
    if (runtime_options().cuda_log)
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

namespace {

// Channels-last conv: x and the result NHWC in memory. Returns an undefined tensor when cuDNN has no
// algorithm for the shape (the caller then takes the NCHW path).
Tensor conv2d_nhwc(const Tensor& x, const Tensor& w_in, const Tensor& bias, int stride, int padding,
                   const Tensor& residual) {
  const DType t = x.dtype();
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t o = w_in.dim(0), kh = w_in.dim(2), kw = w_in.dim(3);
  const int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1;
  const Tensor b = bias.defined() ? contiguous_as(bias, t) : Tensor();
  const bool per_image = residual.defined() && residual.dim(2) == 1 && residual.dim(3) == 1 && ho * wo > 1;
  if (per_image && kh == 1 && kw == 1 && stride == 1 && padding == 0)  // no GEMM epilogue for it: add after
    return backend_for(Device::kCUDA)
        .binary(conv2d_nhwc(x, w_in, bias, stride, padding, Tensor()), residual, Backend::BinaryOp::kAdd);
  if (kh == 1 && kw == 1 && stride == 1 && padding == 0) {
    // Pixels x channels: [N*H*W, C] @ w[O, C]^T, bias and residual in the epilogue.
    const Tensor x2 = x.permute({0, 2, 3, 1}).reshape({n * h * wd, c});  // a view: x is channels-last
    const Tensor w2 = contiguous_as(w_in, t).reshape({o, c});
    const Tensor r2 = residual.defined() ? channels_last_as(residual, t).permute({0, 2, 3, 1}).reshape({n * h * wd, o})
                                         : Tensor();
    return cuda_ops::linear(x2, w2, b, Activation::kNone, r2).reshape({n, h, wd, o}).permute({0, 3, 1, 2});
  }
  if (!dnn().available()) return Tensor();
  const Tensor w = channels_last_as(w_in, t);  // KRSC; models convert their weights once at load
  Tensor y = empty_channels_last({n, o, ho, wo}, t);
  if (!dnn().run(x, w, y, stride, padding, /*nhwc=*/true)) return Tensor();
  // A full residual is channels-last like y; a per-image one is [N, O] rows, one per ho*wo output rows.
  const Tensor r = !residual.defined() ? Tensor() : per_image ? contiguous_as(residual, t) : channels_last_as(residual, t);
  if (b.defined() || r.defined()) {
    cuda_kernels::bias_residual_rows(y.raw_data(), b.defined() ? b.raw_data() : nullptr,
                                     r.defined() ? r.raw_data() : nullptr, t, n * ho * wo, o,
                                     per_image ? ho * wo : 0, cuda_context().stream);
    DIFFUSE_CUDA_CHECK(cudaGetLastError(), "conv2d");
  }
  return y;
}

}  // namespace

bool cudnn_available() { return dnn().available(); }

bool tf32_convs() {
  static const bool allowed = runtime_options().cuda_tf32;
  return allowed && AllowTf32::active();
}

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias, int stride, int padding,
              const Tensor& residual) {
  DType t = x_in.dtype();
  if (nhwc(x_in) && x_in.numel() > 0) {
    Tensor y = conv2d_nhwc(x_in, w_in, bias, stride, padding, residual);
    if (y.defined()) return y;
    // No channels-last algorithm: the NCHW path below, and back to channels-last.
    return to_channels_last(cuda_ops::conv2d(x_in.contiguous(), w_in.contiguous(), bias, stride, padding,
                                   residual.defined() ? residual.contiguous() : residual));
  }
  Tensor x = contiguous_as(x_in, t);
  Tensor w = contiguous_as(w_in, t);
  int64_t n = x.dim(0), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (wd + 2 * padding - kw) / stride + 1;
  Tensor y = Tensor::empty({n, o, ho, wo}, t, Device::kCUDA);
  if (y.numel() == 0) return y;
  if (x.dim(1) == 0) {
    y = Tensor::zeros({n, o, ho, wo}, t, Device::kCUDA);
  } else if (!dnn().available() || !dnn().run(x, w, y, stride, padding, /*nhwc=*/false)) {
    conv_gemm(x, w, y, stride, padding);
  }
  Tensor b = bias.defined() ? contiguous_as(bias, t) : Tensor();
  if (residual.defined() && residual.dim(2) == 1 && residual.dim(3) == 1 && ho * wo > 1) {  // per-image shift
    if (b.defined())
      cuda_kernels::bias_residual(y.raw_data(), b.raw_data(), nullptr, t, n, o, ho * wo, cuda_context().stream);
    DIFFUSE_CUDA_CHECK(cudaGetLastError(), "conv2d");
    return backend_for(Device::kCUDA).binary(y, residual, Backend::BinaryOp::kAdd);
  }
  Tensor r = residual.defined() ? contiguous_as(residual, t) : Tensor();
  if (b.defined() || r.defined()) {
    cuda_kernels::bias_residual(y.raw_data(), b.defined() ? b.raw_data() : nullptr,
                                r.defined() ? r.raw_data() : nullptr, t, n, o, ho * wo, cuda_context().stream);
    DIFFUSE_CUDA_CHECK(cudaGetLastError(), "conv2d");
  }
  return y;
}

}  // namespace diffuse::cuda_ops
