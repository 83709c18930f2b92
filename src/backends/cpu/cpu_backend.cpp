// The CPU Backend: a thin class forwarding to the per-family kernels, with the
// host allocator (core/host_allocator.h) as its memory.
#include <cstring>

#include "backends/backend_registry.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/profile.h"
#include "core/host_allocator.h"

namespace diffuse {

namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  std::shared_ptr<Storage> allocate(size_t nbytes) override { return host_storage(nbytes); }
  void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    DIFFUSE_CHECK(dst_dev == Device::kCPU && src_dev == Device::kCPU, ErrorCode::kInvalidArgument,
                  "[cpu] copy_bytes between host memory only");
    std::memcpy(dst, src, bytes);
  }
  DeviceMemoryStats memory_stats() const override { return host_memory_stats(); }
  void reset_peak_memory_stats() override { host_reset_peak_memory_stats(); }
  void empty_cache() override { host_empty_cache(); }
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act,
                const Tensor& residual) override {
    DIFFUSE_CPU_PROFILE("linear");
    Tensor y = cpu::linear(x, w, bias, act);
    return residual.defined() ? binary(y, residual, BinaryOp::kAdd) : y;
  }
  Tensor matmul(const Tensor& a, const Tensor& b) override {
    DIFFUSE_CPU_PROFILE("matmul");
    return cpu::matmul(a, b);
  }
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                const Tensor& residual) override {
    DIFFUSE_CPU_PROFILE("conv2d");
    // oneDNN's sum post-op needs a full-size residual; a per-channel [N, O, 1, 1] one is added after.
    if (residual.defined() && residual.dim(2) == 1 && residual.dim(3) == 1)
      return binary(cpu::conv2d(x, w, bias, stride, padding, Tensor()), residual, BinaryOp::kAdd);
    return cpu::conv2d(x, w, bias, stride, padding, residual);
  }
  Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                    bool silu) override {
    DIFFUSE_CPU_PROFILE("group_norm");
    return cpu::group_norm(x, groups, gamma, beta, eps, silu);
  }
  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override {
    DIFFUSE_CPU_PROFILE("layer_norm");
    return cpu::layer_norm(x, gamma, beta, eps);
  }
  Tensor softmax(const Tensor& x, int dim) override {
    DIFFUSE_CPU_PROFILE("softmax");
    return cpu::softmax(x, dim);
  }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) override {
    DIFFUSE_CPU_PROFILE("attention");
    return cpu::attention(q, k, v, heads, scale, causal);
  }
  Tensor activation(const Tensor& x, Activation act) override {
    DIFFUSE_CPU_PROFILE("activation");
    return cpu::activation(x, act);
  }
  Tensor leaky_relu(const Tensor& x, float negative_slope) override {
    DIFFUSE_CPU_PROFILE("leaky_relu");
    return cpu::leaky_relu(x, negative_slope);
  }
  Tensor geglu(const Tensor& x) override {
    DIFFUSE_CPU_PROFILE("geglu");
    return cpu::geglu(x);
  }
  Tensor binary(const Tensor& a, const Tensor& b, BinaryOp op) override {
    DIFFUSE_CPU_PROFILE("binary");
    return cpu::binary(a, b, op);
  }
  Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) override {
    DIFFUSE_CPU_PROFILE("axpby");
    return cpu::axpby(a, alpha, b, beta);
  }
  Tensor concat(const std::vector<Tensor>& xs, int dim) override {
    DIFFUSE_CPU_PROFILE("concat");
    return cpu::concat(xs, dim);
  }
  Tensor copy(const Tensor& x) override {
    DIFFUSE_CPU_PROFILE("copy");
    return cpu::copy(x);
  }
  Tensor upsample_nearest2x(const Tensor& x) override {
    DIFFUSE_CPU_PROFILE("upsample_nearest2x");
    return cpu::upsample_nearest2x(x);
  }
  Tensor embedding(const Tensor& ids, const Tensor& table) override {
    DIFFUSE_CPU_PROFILE("embedding");
    return cpu::embedding(ids, table);
  }
  Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift, float max_period) override {
    DIFFUSE_CPU_PROFILE("timestep_embedding");
    return cpu::timestep_embedding(t, dim, flip_sin_to_cos, shift, max_period);
  }
  Tensor cast(const Tensor& x, DType dtype) override {
    DIFFUSE_CPU_PROFILE("cast");
    return cpu::cast(x, dtype);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace diffuse
