// Op front end: validate shapes, dtypes and devices, then dispatch to the
// backend of the first tensor's device. Backends trust these checks.
#include "core/ops.h"

#include <cmath>
#include <initializer_list>

#include "backends/backend_registry.h"

namespace diffuse {

namespace {

std::string op_tag(const char* op) { return std::string("[") + op + "] "; }

void need_defined(const Tensor& t, const char* op, const char* name) {
  DIFFUSE_CHECK_ARG(t.defined(), op_tag(op) + name + " is undefined");
}

void need_float(const Tensor& t, const char* op, const char* name) {
  need_defined(t, op, name);
  DIFFUSE_CHECK_ARG(is_floating(t.dtype()), op_tag(op) + name + " " + shape_str(t.shape()) +
                                                " must be floating point, got " + dtype_name(t.dtype()));
}

void need_rank(const Tensor& t, int rank, const char* op, const char* name) {
  DIFFUSE_CHECK_ARG(t.ndim() == rank, op_tag(op) + name + " must have rank " + std::to_string(rank) + ", got " +
                                          shape_str(t.shape()));
}

// All defined tensors must live on the device of the first.
Device same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  Device dev = Device::kCPU;
  bool first = true;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (first) {
      dev = t->device();
      first = false;
    } else {
      DIFFUSE_CHECK_ARG(t->device() == dev, op_tag(op) + "tensors on different devices (" + device_name(dev) +
                                                " and " + device_name(t->device()) + ")");
    }
  }
  return dev;
}

void need_vector(const Tensor& t, int64_t n, const char* op, const char* name, const Tensor& x) {
  if (!t.defined()) return;
  need_float(t, op, name);
  DIFFUSE_CHECK_ARG(t.ndim() == 1 && t.dim(0) == n, op_tag(op) + name + " " + shape_str(t.shape()) + " must be (" +
                                                        std::to_string(n) + ") for x " + shape_str(x.shape()));
}

int wrap(int dim, int ndim, const char* op) {
  int d = dim < 0 ? dim + ndim : dim;
  DIFFUSE_CHECK_ARG(d >= 0 && d < ndim, op_tag(op) + "dim " + std::to_string(dim) + " out of range for rank " +
                                            std::to_string(ndim));
  return d;
}

// numpy broadcasting of two shapes; throws with both shapes on mismatch.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op, const char* what_a, const char* what_b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DIFFUSE_CHECK_ARG(da == db || da == 1 || db == 1, op_tag(op) + "cannot broadcast " + what_a + " " + shape_str(a) +
                                                          " with " + what_b + " " + shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary_op(const Tensor& a, const Tensor& b, Backend::BinaryOp op, const char* name) {
  need_float(a, name, "a");
  need_float(b, name, "b");
  Device dev = same_device(name, {&a, &b});
  broadcast_shapes(a.shape(), b.shape(), name, "a", "b");
  return backend_for(dev).binary(a, b, op);
}

Tensor unary(const Tensor& x, Activation act, const char* name) {
  need_float(x, name, "x");
  return backend_for(x.device()).activation(x, act);
}

}  // namespace

namespace {
// "cuda is not available: built without CUDA (configure with -DDIFFUSE_CUDA=ON)"
std::string not_compiled_message(Device device) {
  return std::string(device_name(device)) + " is not available: built without CUDA (configure with -DDIFFUSE_CUDA=ON)";
}
}  // namespace

Backend& backend_for(Device device) {
  if (device == Device::kCPU) return cpu_backend();
  const DeviceBackendHooks* hooks = device_backend_hooks(device);
  if (!hooks) throw_error(ErrorCode::kUnsupported, std::string("[backend] ") + not_compiled_message(device));
  return hooks->backend();
}

bool device_available(Device device) { return device_unavailable_reason(device).empty(); }

std::string device_unavailable_reason(Device device) {
  if (device == Device::kCPU) return "";
  const DeviceBackendHooks* hooks = device_backend_hooks(device);
  if (!hooks) return not_compiled_message(device);
  return hooks->start();
}

bool backend_compiled(Device device) { return device == Device::kCPU || device_backend_hooks(device) != nullptr; }

void select_device_ordinal(Device device, int ordinal) {
  const DeviceBackendHooks* hooks = device == Device::kCPU ? nullptr : device_backend_hooks(device);
  if (!hooks) {
    DIFFUSE_CHECK(device != Device::kCPU || ordinal == 0, ErrorCode::kInvalidArgument,
                  "[backend] there is one cpu device, cpu:0; got cpu:" + std::to_string(ordinal));
    DIFFUSE_CHECK(device == Device::kCPU, ErrorCode::kUnsupported, std::string("[backend] ") + not_compiled_message(device));
    return;
  }
  hooks->select_ordinal(ordinal);
}

std::string backend_library_versions(Device device) {
  const DeviceBackendHooks* hooks = device == Device::kCPU ? nullptr : device_backend_hooks(device);
  return hooks ? hooks->library_versions() : "";
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& residual) {
  need_float(x, "linear", "x");
  need_float(w, "linear", "w");
  DIFFUSE_CHECK_ARG(x.ndim() >= 1, "[linear] x must have rank >= 1, got " + shape_str(x.shape()));
  need_rank(w, 2, "linear", "w");
  DIFFUSE_CHECK_ARG(x.dim(-1) == w.dim(1), "[linear] last dim of x " + shape_str(x.shape()) + " must match w " +
                                               shape_str(w.shape()));
  need_vector(bias, w.dim(0), "linear", "bias", x);
  if (residual.defined()) {
    need_float(residual, "linear", "residual");
    Shape out = x.shape();
    out.back() = w.dim(0);
    DIFFUSE_CHECK_ARG(residual.shape() == out, "[linear] residual " + shape_str(residual.shape()) +
                                                   " must have the output's shape " + shape_str(out));
  }
  Device dev = same_device("linear", {&x, &w, &bias, &residual});
  return backend_for(dev).linear(x, w, bias, act, residual);
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  need_float(a, "matmul", "a");
  need_float(b, "matmul", "b");
  DIFFUSE_CHECK_ARG(a.ndim() >= 2 && b.ndim() >= 2, "[matmul] a " + shape_str(a.shape()) + " and b " +
                                                        shape_str(b.shape()) + " must have rank >= 2");
  DIFFUSE_CHECK_ARG(a.dim(-1) == b.dim(-2), "[matmul] last dim of a " + shape_str(a.shape()) +
                                                " must match dim -2 of b " + shape_str(b.shape()));
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  broadcast_shapes(ba, bb, "matmul", "batch dims of a", "batch dims of b");
  Device dev = same_device("matmul", {&a, &b});
  return backend_for(dev).matmul(a, b);
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual) {
  need_float(x, "conv2d", "x");
  need_float(w, "conv2d", "weight");
  need_rank(x, 4, "conv2d", "x");
  need_rank(w, 4, "conv2d", "weight");
  DIFFUSE_CHECK_ARG(x.dim(1) == w.dim(1), "[conv2d] weight " + shape_str(w.shape()) + " expects input channels " +
                                              std::to_string(w.dim(1)) + ", got x " + shape_str(x.shape()));
  DIFFUSE_CHECK_ARG(stride >= 1 && padding >= 0, "[conv2d] stride " + std::to_string(stride) + " must be >= 1 and padding " +
                                                     std::to_string(padding) + " >= 0");
  int64_t ho = (x.dim(2) + 2 * padding - w.dim(2)) / stride + 1;
  int64_t wo = (x.dim(3) + 2 * padding - w.dim(3)) / stride + 1;
  DIFFUSE_CHECK_ARG(x.dim(2) + 2 * padding >= w.dim(2) && x.dim(3) + 2 * padding >= w.dim(3) && ho > 0 && wo > 0,
                    "[conv2d] kernel " + shape_str(w.shape()) + " larger than padded input x " + shape_str(x.shape()));
  need_vector(bias, w.dim(0), "conv2d", "bias", x);
  if (residual.defined()) {
    need_float(residual, "conv2d", "residual");
    Shape out{x.dim(0), w.dim(0), ho, wo};
    Shape per_image{x.dim(0), w.dim(0), 1, 1};
    DIFFUSE_CHECK_ARG(residual.shape() == out || residual.shape() == per_image,
                      "[conv2d] residual " + shape_str(residual.shape()) + " must have the output shape " +
                          shape_str(out) + " or " + shape_str(per_image));
  }
  Device dev = same_device("conv2d", {&x, &w, &bias, &residual});
  return backend_for(dev).conv2d(x, w, bias, stride, padding, residual);
}

Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  need_float(x, "group_norm", "x");
  DIFFUSE_CHECK_ARG(x.ndim() >= 2, "[group_norm] x must be [N, C, *], got " + shape_str(x.shape()));
  DIFFUSE_CHECK_ARG(groups > 0 && x.dim(1) % groups == 0, "[group_norm] channels of x " + shape_str(x.shape()) +
                                                              " not divisible by groups " + std::to_string(groups));
  need_vector(gamma, x.dim(1), "group_norm", "gamma", x);
  need_vector(beta, x.dim(1), "group_norm", "beta", x);
  Device dev = same_device("group_norm", {&x, &gamma, &beta});
  return backend_for(dev).group_norm(x, groups, gamma, beta, eps, silu);
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  need_float(x, "layer_norm", "x");
  DIFFUSE_CHECK_ARG(x.ndim() >= 1, "[layer_norm] x must have rank >= 1");
  need_vector(gamma, x.dim(-1), "layer_norm", "gamma", x);
  need_vector(beta, x.dim(-1), "layer_norm", "beta", x);
  Device dev = same_device("layer_norm", {&x, &gamma, &beta});
  return backend_for(dev).layer_norm(x, gamma, beta, eps);
}

Tensor softmax(const Tensor& x, int dim) {
  need_float(x, "softmax", "x");
  DIFFUSE_CHECK_ARG(x.ndim() >= 1, "[softmax] x must have rank >= 1");
  int d = wrap(dim, x.ndim(), "softmax");
  return backend_for(x.device()).softmax(x, d);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) {
  need_float(q, "attention", "q");
  need_float(k, "attention", "k");
  need_float(v, "attention", "v");
  need_rank(q, 3, "attention", "q");
  need_rank(k, 3, "attention", "k");
  need_rank(v, 3, "attention", "v");
  std::string shapes = "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
  DIFFUSE_CHECK_ARG(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "[attention] q, k, v must share a dtype");
  DIFFUSE_CHECK_ARG(q.dim(0) == k.dim(0) && q.dim(0) == v.dim(0), "[attention] batch mismatch: " + shapes);
  DIFFUSE_CHECK_ARG(k.dim(1) == v.dim(1), "[attention] k and v lengths differ: " + shapes);
  DIFFUSE_CHECK_ARG(q.dim(2) == k.dim(2), "[attention] q and k widths differ: " + shapes);
  DIFFUSE_CHECK_ARG(heads > 0 && q.dim(2) % heads == 0 && v.dim(2) % heads == 0,
                    "[attention] widths not divisible by heads " + std::to_string(heads) + ": " + shapes);
  DIFFUSE_CHECK_ARG(k.dim(1) > 0, "[attention] empty key sequence: " + shapes);
  Device dev = same_device("attention", {&q, &k, &v});
  return backend_for(dev).attention(q, k, v, heads, scale, causal);
}

Tensor gelu(const Tensor& x) { return unary(x, Activation::kGelu, "gelu"); }
Tensor quick_gelu(const Tensor& x) { return unary(x, Activation::kQuickGelu, "quick_gelu"); }
Tensor silu(const Tensor& x) { return unary(x, Activation::kSilu, "silu"); }

Tensor leaky_relu(const Tensor& x, float negative_slope) {
  need_float(x, "leaky_relu", "x");
  DIFFUSE_CHECK_ARG(std::isfinite(negative_slope),
                    "[leaky_relu] negative_slope must be finite, got " + std::to_string(negative_slope));
  return backend_for(x.device()).leaky_relu(x, negative_slope);
}
Tensor relu(const Tensor& x) { return unary(x, Activation::kRelu, "relu"); }
Tensor tanh(const Tensor& x) { return unary(x, Activation::kTanh, "tanh"); }

Tensor geglu(const Tensor& x) {
  need_float(x, "geglu", "x");
  DIFFUSE_CHECK_ARG(x.ndim() >= 1 && x.dim(-1) % 2 == 0, "[geglu] last dim of x " + shape_str(x.shape()) + " must be even");
  return backend_for(x.device()).geglu(x);
}

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(a, b, Backend::BinaryOp::kAdd, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(a, b, Backend::BinaryOp::kSub, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(a, b, Backend::BinaryOp::kMul, "mul"); }

Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  need_float(a, "axpby", "a");
  need_float(b, "axpby", "b");
  DIFFUSE_CHECK_ARG(a.shape() == b.shape(), "[axpby] a " + shape_str(a.shape()) + " and b " + shape_str(b.shape()) +
                                                " must have the same shape");
  Device dev = same_device("axpby", {&a, &b});
  return backend_for(dev).axpby(a, alpha, b, beta);
}

Tensor scale(const Tensor& x, float s) {
  need_float(x, "scale", "x");
  // beta = 0: the backend does not read b.
  return backend_for(x.device()).axpby(x, s, x, 0.0f);
}

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  DIFFUSE_CHECK_ARG(!xs.empty(), "[concat] no tensors");
  const Tensor& x0 = xs[0];
  need_defined(x0, "concat", "xs[0]");
  int d = wrap(dim, x0.ndim(), "concat");
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    std::string name = "xs[" + std::to_string(i) + "]";
    need_defined(t, "concat", name.c_str());
    DIFFUSE_CHECK_ARG(t.dtype() == x0.dtype(), "[concat] " + name + " is " + dtype_name(t.dtype()) + ", xs[0] is " +
                                                   dtype_name(x0.dtype()));
    DIFFUSE_CHECK_ARG(t.device() == x0.device(), "[concat] " + name + " is on another device than xs[0]");
    bool ok = t.ndim() == x0.ndim();
    for (int j = 0; ok && j < t.ndim(); ++j) ok = j == d || t.dim(j) == x0.dim(j);
    DIFFUSE_CHECK_ARG(ok, "[concat] " + name + " " + shape_str(t.shape()) + " does not match xs[0] " +
                              shape_str(x0.shape()) + " outside dim " + std::to_string(dim));
  }
  return backend_for(x0.device()).concat(xs, d);
}

Tensor copy(const Tensor& x) {
  need_defined(x, "copy", "x");
  return backend_for(x.device()).copy(x);
}

namespace {
thread_local bool tf32_convs = false;
}  // namespace

AllowTf32::AllowTf32(bool on) : prev_(tf32_convs) { tf32_convs = on; }
AllowTf32::~AllowTf32() { tf32_convs = prev_; }
bool AllowTf32::active() { return tf32_convs; }

Tensor to_channels_last(const Tensor& x) {
  need_defined(x, "to_channels_last", "x");
  need_rank(x, 4, "to_channels_last", "x");
  if (x.is_channels_last()) return x;
  return backend_for(x.device()).copy(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});  // NHWC memory, NCHW shape
}

Tensor to_preferred_layout(const Tensor& x) {
  if (!x.defined() || x.ndim() != 4 || !backend_for(x.device()).prefers_channels_last(x.dtype())) return x;
  return to_channels_last(x);
}

std::vector<Tensor> place_weights(const std::vector<Tensor>& src, DType dtype, Device device) {
  auto make = [&](size_t i) { return to_preferred_layout(src[i].to(dtype).to(device)); };
  if (device == Device::kCPU) {
    std::vector<Tensor> out;
    for (size_t i = 0; i < src.size(); ++i) out.push_back(make(i));
    return out;
  }
  std::vector<size_t> sizes;
  for (const Tensor& t : src) sizes.push_back(static_cast<size_t>(t.numel()) * dtype_size(dtype));
  return pack_on_device(sizes, device, make);
}

Tensor upsample_nearest2x(const Tensor& x) {
  need_defined(x, "upsample_nearest2x", "x");
  need_rank(x, 4, "upsample_nearest2x", "x");
  return backend_for(x.device()).upsample_nearest2x(x);
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  need_defined(ids, "embedding", "ids");
  need_float(table, "embedding", "table");
  DIFFUSE_CHECK_ARG(ids.dtype() == DType::kI32 || ids.dtype() == DType::kI64,
                    std::string("[embedding] ids must be i32 or i64, got ") + dtype_name(ids.dtype()));
  need_rank(table, 2, "embedding", "table");
  Device dev = same_device("embedding", {&ids, &table});
  for (int64_t id : ids.to_i64_vector())
    DIFFUSE_CHECK_ARG(id >= 0 && id < table.dim(0), "[embedding] id " + std::to_string(id) + " out of range for table " +
                                                        shape_str(table.shape()));
  return backend_for(dev).embedding(ids, table);
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period) {
  need_float(t, "timestep_embedding", "t");
  need_rank(t, 1, "timestep_embedding", "t");
  DIFFUSE_CHECK_ARG(dim > 0, "[timestep_embedding] dim must be positive, got " + std::to_string(dim));
  DIFFUSE_CHECK_ARG(dim / 2 - downscale_freq_shift != 0.0f || dim / 2 == 0,
                    "[timestep_embedding] half dim equals downscale_freq_shift (division by zero)");
  return backend_for(t.device()).timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift, max_period);
}

}  // namespace diffuse
