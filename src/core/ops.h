// Model-agnostic tensor ops, as free functions.
//
// Every op checks shapes and dtypes when it is called and throws
// Error(kInvalidArgument) naming the op and the shapes, e.g.
//   "[linear] last dim of x (2,77,768) must match w (320,1024)".
// Then it dispatches on the device of its first tensor argument to a Backend
// (src/backends/<device>/). Backends may assume validated inputs.
//
// Conventions:
//  - Inputs may be strided (views); outputs are new dense tensors: contiguous,
//    or channels-last when a channels-last input meets a backend that keeps
//    that layout (see "Memory format" below).
//  - All tensor inputs of an op live on the same device.
//  - Floating dtype: the output has the dtype of the activation input `x`
//    (or `a`). Weights (w, gamma, beta, bias, table) may have another floating
//    dtype; a backend converts them. Models convert weights once at load so
//    that the fast path sees matching dtypes.
//  - f16/bf16 math accumulates in f32 (matmul, conv, norms, softmax, attention).
#pragma once
#include <vector>

#include "core/tensor.h"

namespace diffuse {

enum class Activation { kNone, kGelu /*erf*/, kQuickGelu /*x*sigmoid(1.702x)*/, kSilu, kRelu, kTanh };

// x [..., in] @ w[out, in]^T + bias[out] -> [..., out]; then optional activation.
// `residual` (optional, the output's shape) is added last: a fused skip connection.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {}, Activation act = Activation::kNone,
              const Tensor& residual = {});

// Batched matmul: a [..., M, K] @ b [..., K, N] -> [..., M, N]; batch dims broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);

// 2-D convolution, NCHW. x [N, C, H, W], w [O, C, kh, kw], bias [O].
// `residual` (optional) is added after the bias: the output's shape (a fused skip
// connection) or [N, O, 1, 1] (a per-image, per-channel shift such as a resnet's time embedding).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = {}, int stride = 1, int padding = 0,
              const Tensor& residual = {});

// GroupNorm over [N, C, *] with `groups` groups (C % groups == 0); gamma/beta [C].
// With silu=true the output is silu(group_norm(x)), one pass.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                  bool silu = false);

// LayerNorm over the last dim; gamma/beta [D].
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);

Tensor softmax(const Tensor& x, int dim = -1);

// Multi-head scaled-dot-product attention with heads packed in the last dim:
//   q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*Dv] -> [B, Lq, H*Dv]
// out = softmax(q k^T * scale [+ causal mask]) v, per head. Never materialises
// more than one row block of scores at a time on fast backends.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal = false);

// Activations (elementwise).
Tensor gelu(const Tensor& x);        // exact erf GELU
Tensor quick_gelu(const Tensor& x);  // x * sigmoid(1.702 x)
Tensor silu(const Tensor& x);
// torch.nn.LeakyReLU: x where x >= 0, else negative_slope * x (ESRGAN's RRDBNet uses 0.2).
Tensor leaky_relu(const Tensor& x, float negative_slope);
Tensor relu(const Tensor& x);        // max(x, 0)
Tensor tanh(const Tensor& x);
// GEGLU as diffusers' GEGLU after its projection: x [..., 2N] -> x[..., :N] * gelu(x[..., N:]).
Tensor geglu(const Tensor& x);

// Broadcasting binary ops (numpy rules). Output dtype = a's dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// alpha * a + beta * b, same shapes (no broadcast). Used for CFG and samplers.
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta);
Tensor scale(const Tensor& x, float s);

Tensor concat(const std::vector<Tensor>& xs, int dim);
// Materialised copy of any view (slice/permute/reshape are Tensor methods).
Tensor copy(const Tensor& x);

// Nearest-neighbour 2x upsample: [N, C, H, W] -> [N, C, 2H, 2W].
Tensor upsample_nearest2x(const Tensor& x);

// ids (i32/i64) [...], table [V, D] -> [..., D] in the table's dtype. Out-of-range ids throw.
Tensor embedding(const Tensor& ids, const Tensor& table);

// Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
// t [N] (f32) -> [N, dim] f32. half = dim/2, exponent = -ln(max_period) * i / (half - shift),
// emb = [sin, cos] (or [cos, sin] when flip_sin_to_cos); odd dim is zero-padded.
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period = 10000.0f);

// Memory format. A backend may prefer 4-D activations stored channels-last
// (Tensor::is_channels_last: the shape stays [N, C, H, W], memory is NHWC), as
// cuDNN's tensor-core convolutions are. Its ops then keep that layout from
// input to output, and the transformer blocks' [B, HW, C] views cost no copy.
// Every op accepts either layout on every backend; this is only about speed.
Tensor to_channels_last(const Tensor& x);  // x itself when it already is channels-last
// to_channels_last(x) where x's backend prefers it for x's dtype (4-D x only), else x.
Tensor to_preferred_layout(const Tensor& x);

// Model weights onto `device` as `dtype`, 4-D ones in the backend's preferred
// layout. On a GPU they share one allocation (tensor.h pack_on_device): no
// per-tensor rounding. On the CPU each stays its own tensor.
std::vector<Tensor> place_weights(const std::vector<Tensor>& src, DType dtype, Device device);

// TF32 for f32 convolutions, on this thread while an AllowTf32 with on=true
// lives: f32 convs may then run on TF32 tensor cores (10-bit mantissa products,
// f32 accumulation) where the backend has them. It is PyTorch's default for
// cuDNN convolutions (torch.backends.cudnn.allow_tf32), so diffusers' f32 VAE
// inside an fp16 pipeline (SDXL's force_upcast) decodes this way; everywhere
// else f32 stays exact. Scopes nest; the CUDA backend honours it.
class AllowTf32 {
 public:
  explicit AllowTf32(bool on);
  ~AllowTf32();
  AllowTf32(const AllowTf32&) = delete;
  AllowTf32& operator=(const AllowTf32&) = delete;
  static bool active();

 private:
  bool prev_;
};

// A recorded sequence of a device's ops, replayed with one launch (CUDA graphs).
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
  virtual void replay() = 0;  // enqueues the recorded work; does not wait
};

// Backend interface: one implementation per device. ops.cpp validates, then
// calls the ops; the core (tensor.cpp) allocates, copies and synchronises only
// through the device services below, so it never names a device API.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // --- Device services ---
  // `nbytes` of this device's memory; the Storage's deleter gives it back.
  virtual std::shared_ptr<Storage> allocate(size_t nbytes) = 0;
  // Copies `bytes` between this device's memory and the host, or within this
  // device. Synchronous for the host when the destination is host memory.
  virtual void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = 0;
  // Waits for all work enqueued on this device (host-side timing, tests).
  virtual void synchronize() {}
  virtual DeviceMemoryStats memory_stats() const = 0;
  virtual void reset_peak_memory_stats() = 0;
  // Gives cached, unused memory back to the system / driver.
  virtual void empty_cache() {}
  // Records `fn`'s ops on this device without running them, for replay().
  // Tensors allocated inside `fn` stay owned by the graph; `fn` must not
  // synchronise with the host. nullptr when the device has no graphs (CPU).
  virtual std::unique_ptr<DeviceGraph> capture(const std::function<void()>& fn) { return nullptr; }

  // --- Ops ---
  // Whether 4-D activations of this dtype run faster stored channels-last.
  virtual bool prefers_channels_last(DType) const { return false; }
  virtual Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act,
                        const Tensor& residual) = 0;
  virtual Tensor matmul(const Tensor& a, const Tensor& b) = 0;
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                        const Tensor& residual) = 0;
  virtual Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                            bool silu) = 0;
  virtual Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) = 0;
  virtual Tensor softmax(const Tensor& x, int dim) = 0;
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale,
                           bool causal) = 0;
  virtual Tensor activation(const Tensor& x, Activation act) = 0;
  virtual Tensor leaky_relu(const Tensor& x, float negative_slope) = 0;
  virtual Tensor geglu(const Tensor& x) = 0;
  enum class BinaryOp { kAdd, kSub, kMul };
  virtual Tensor binary(const Tensor& a, const Tensor& b, BinaryOp op) = 0;  // broadcasting
  virtual Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) = 0;
  virtual Tensor concat(const std::vector<Tensor>& xs, int dim) = 0;
  virtual Tensor copy(const Tensor& x) = 0;  // any strides -> contiguous, same dtype
  virtual Tensor upsample_nearest2x(const Tensor& x) = 0;
  virtual Tensor embedding(const Tensor& ids, const Tensor& table) = 0;
  virtual Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift,
                                    float max_period) = 0;
  // dtype conversion on this device: any strides in; a contiguous result, or the
  // same layout where the backend keeps it (CUDA keeps channels-last).
  virtual Tensor cast(const Tensor& x, DType dtype) = 0;
};

// The backend for a device. Throws kUnsupported for CUDA when built without it
// or when no CUDA device is present (the message says which).
Backend& backend_for(Device device);
bool device_available(Device device);
// "" when `device` can be used, else why not ("built without CUDA", "no CUDA
// device: ..."). Starts the device's backend if needed; never throws.
std::string device_unavailable_reason(Device device);
// Whether this binary was built with the backend for `device`.
bool backend_compiled(Device device);
// Chooses which physical device of a kind the backend runs on (cuda:N), before
// its first use; throws kUnsupported afterwards for another ordinal, or when
// the backend is not compiled in.
void select_device_ordinal(Device device, int ordinal);
// The libraries a backend loaded ("CUDA runtime 13.0, cuBLASLt ..., cuDNN ...");
// "" when not compiled in.
std::string backend_library_versions(Device device);

}  // namespace diffuse
