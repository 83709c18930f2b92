// The CUDA Backend: tensor plumbing around the kernels of the .cu files,
// cuBLASLt (cuda_gemm.cpp) and cuDNN (cuda_conv.cpp). Inputs arrive validated
// by src/core/ops.cpp; strided inputs are either addressed through their
// strides (copy, binary, attention, matmul) or made contiguous first.
//
// Layout: the backend prefers channels-last 4-D activations (ops.h), which
// cuDNN's tensor-core convolutions read directly. Ops that see a channels-last
// input keep that layout in their output: conv2d, group_norm, the elementwise
// ops, concat and upsample. DIFFUSE_CUDA_LAYOUT=nchw turns the preference off;
// it holds for f16/bf16 (tensor cores), not f32.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/backend_registry.h"
#include "core/runtime_options.h"
#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_ops.h"

namespace diffuse {

namespace ck = cuda_kernels;

namespace {

cudaStream_t stream() { return cuda_context().stream; }
void check_launch(const char* op) { DIFFUSE_CUDA_CHECK(cudaGetLastError(), op); }

// Drops size-1 dims and merges neighbouring dims that are contiguous with each
// other in every operand, so most views collapse to one or two dims.
Shape coalesce(const Shape& shape, std::vector<std::vector<int64_t>>& strides) {
  Shape out;
  std::vector<std::vector<int64_t>> st(strides.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !out.empty();
    for (size_t k = 0; k < strides.size() && merge; ++k) merge = st[k].back() == strides[k][d] * shape[d];
    if (merge) {
      out.back() *= shape[d];
      for (size_t k = 0; k < strides.size(); ++k) st[k].back() = strides[k][d];
    } else {
      out.push_back(shape[d]);
      for (size_t k = 0; k < strides.size(); ++k) st[k].push_back(strides[k][d]);
    }
  }
  strides = st;
  return out;
}

ck::StridedDesc make_desc(const Shape& shape, const std::vector<int64_t>& strides, const char* op) {
  DIFFUSE_CHECK(shape.size() <= static_cast<size_t>(ck::kMaxDims), ErrorCode::kUnsupported,
                std::string("[") + op + "] views of more than 8 non-mergeable dims are not supported on cuda");
  ck::StridedDesc d;
  d.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    d.shape[i] = shape[i];
    d.stride[i] = strides[i];
  }
  return d;
}

int norm_dim(int dim, int ndim) { return dim < 0 ? dim + ndim : dim; }

// A CudaGraph as the Backend's DeviceGraph.
class CudaDeviceGraph final : public DeviceGraph {
 public:
  explicit CudaDeviceGraph(const std::function<void()>& fn) { graph_.capture(fn); }
  void replay() override { graph_.replay(); }

 private:
  CudaGraph graph_;
};

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }

  std::shared_ptr<Storage> allocate(size_t nbytes) override { return cuda_allocate(nbytes); }
  void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    cuda_copy(dst, dst_dev, src, src_dev, bytes);
  }
  void synchronize() override { cuda_synchronize(); }
  DeviceMemoryStats memory_stats() const override {
    const CudaAllocatorStats a = cuda_allocator_stats();
    DeviceMemoryStats s;
    s.malloc_calls = a.malloc_calls;
    s.alloc_calls = a.alloc_calls;
    s.reserved_bytes = a.reserved_bytes;
    s.in_use_bytes = a.in_use_bytes;
    s.peak_reserved_bytes = a.peak_reserved_bytes;
    s.peak_in_use_bytes = a.peak_in_use_bytes;
    return s;
  }
  void reset_peak_memory_stats() override { cuda_reset_peak_stats(); }
  void empty_cache() override { cuda_empty_cache(); }
  std::unique_ptr<DeviceGraph> capture(const std::function<void()>& fn) override {
    return std::make_unique<CudaDeviceGraph>(fn);
  }
  // f16/bf16, and f32 under AllowTf32 (tensor cores): cuDNN's exact-f32 NHWC kernels measured slower
  // than its NCHW ones on the SDXL VAE (466 vs 350 ms on an H200).
  bool prefers_channels_last(DType dtype) const override {
    static const bool on = runtime_options().cuda_layout == "nhwc" && cuda_ops::cudnn_available();
    return on && (dtype == DType::kF16 || dtype == DType::kBF16 || (dtype == DType::kF32 && cuda_ops::tf32_convs()));
  }

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act,
                const Tensor& residual) override {
    return cuda_ops::linear(x, w, bias, act, residual);
  }
  Tensor matmul(const Tensor& a, const Tensor& b) override { return cuda_ops::matmul(a, b); }
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                const Tensor& residual) override {
    return cuda_ops::conv2d(x, w, bias, stride, padding, residual);
  }

  Tensor group_norm(const Tensor& x_in, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                    bool silu) override {
    DType t = x_in.dtype();
    Tensor g = gamma.defined() ? cuda_ops::contiguous_as(gamma, t) : Tensor();
    Tensor b = beta.defined() ? cuda_ops::contiguous_as(beta, t) : Tensor();
    // Channels-last input: the NHWC kernels, output channels-last too; otherwise NCHW (contiguous).
    const bool cl = cuda_ops::nhwc(x_in) && x_in.dim(1) <= ck::kGroupNormNhwcMaxChannels;
    Tensor x = cl ? x_in : cuda_ops::contiguous_as(x_in, t);
    Tensor y = cl ? cuda_ops::empty_channels_last(x.shape(), t) : Tensor::empty(x.shape(), t, Device::kCUDA);
    if (y.numel() == 0) return y;
    const int64_t n = x.dim(0), c = x.dim(1), spatial = x.numel() / (n * c);
    auto* scratch_floats = cl ? ck::group_norm_nhwc_scratch_floats : ck::group_norm_scratch_floats;
    auto* run = cl ? ck::group_norm_nhwc : ck::group_norm;
    Tensor scratch = Tensor::empty({scratch_floats(n, c, spatial, groups)}, DType::kF32, Device::kCUDA);
    run(x.raw_data(), g.defined() ? g.raw_data() : nullptr, b.defined() ? b.raw_data() : nullptr, y.raw_data(), t, n,
        c, spatial, groups, eps, silu, scratch.data<float>(), stream());
    check_launch("group_norm");
    return y;
  }

  Tensor layer_norm(const Tensor& x_in, const Tensor& gamma, const Tensor& beta, float eps) override {
    DType t = x_in.dtype();
    Tensor x = cuda_ops::contiguous_as(x_in, t);
    Tensor g = gamma.defined() ? cuda_ops::contiguous_as(gamma, t) : Tensor();
    Tensor b = beta.defined() ? cuda_ops::contiguous_as(beta, t) : Tensor();
    Tensor y = Tensor::empty(x.shape(), t, Device::kCUDA);
    int64_t d = x.dim(-1);
    if (y.numel() == 0) return y;
    ck::layer_norm(x.raw_data(), g.defined() ? g.raw_data() : nullptr, b.defined() ? b.raw_data() : nullptr,
                   y.raw_data(), t, x.numel() / d, d, eps, stream());
    check_launch("layer_norm");
    return y;
  }

  Tensor softmax(const Tensor& x_in, int dim) override {
    Tensor x = cuda_ops::contiguous_as(x_in, x_in.dtype());
    int d = norm_dim(dim, x.ndim());
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; ++i) outer *= x.shape()[i];
    for (int i = d + 1; i < x.ndim(); ++i) inner *= x.shape()[i];
    Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::kCUDA);
    ck::softmax(x.raw_data(), y.raw_data(), x.dtype(), outer, x.shape()[d], inner, stream());
    check_launch("softmax");
    return y;
  }

  Tensor attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, int heads, float scale,
                   bool causal) override {
    DType t = q_in.dtype();
    // The kernels address batch and sequence through strides; the packed head dim must be dense.
    auto prep = [&](const Tensor& x) {
      if (x.dtype() == t && x.ndim() == 3 && (x.strides()[2] == 1 || x.dim(2) == 1)) return x;
      return cuda_ops::contiguous_as(x, t);
    };
    Tensor q = prep(q_in), k = prep(k_in), v = prep(v_in);
    // f32 single-head attention with a wide head (the VAE mid block: d = 512)
    // has only the scalar flash kernel (27 ms at 4096 tokens, measured); as
    // exact-f32 GEMMs (cuBLASLt, no TF32) + softmax it is bound by the GEMMs
    // instead. Query rows go in chunks so the score matrix stays <= 256 MiB.
    if (t == DType::kF32 && heads == 1 && !causal && q.dim(2) > 160) return attention_f32_gemm(q, k, v, scale);
    ck::AttentionArgs a;
    a.dtype = t;
    a.batch = static_cast<int>(q.dim(0));
    a.heads = heads;
    a.lq = static_cast<int>(q.dim(1));
    a.lk = static_cast<int>(k.dim(1));
    a.d = static_cast<int>(q.dim(2) / heads);
    a.dv = static_cast<int>(v.dim(2) / heads);
    Tensor out = Tensor::empty({q.dim(0), q.dim(1), v.dim(2)}, t, Device::kCUDA);
    if (out.numel() == 0) return out;
    a.q = q.raw_data();
    a.k = k.raw_data();
    a.v = v.raw_data();
    a.out = out.raw_data();
    a.q_sb = q.strides()[0];
    a.q_sl = q.strides()[1];
    a.k_sb = k.strides()[0];
    a.k_sl = k.strides()[1];
    a.v_sb = v.strides()[0];
    a.v_sl = v.strides()[1];
    a.scale = scale;
    a.causal = causal;
    bool ok = ck::attention(a, static_cast<int>(cuda_context().max_smem_optin), stream());
    DIFFUSE_CHECK(ok, ErrorCode::kUnsupported,
                  "[attention] head dim " + std::to_string(a.d) + "/" + std::to_string(a.dv) +
                      " is too large for the cuda kernels (at most 512)");
    check_launch("attention");
    return out;
  }

  // softmax(q k^T * scale) v for one head, [B, L, D] each, by query-row chunks.
  Tensor attention_f32_gemm(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
    const int64_t lq = q.dim(1), lk = k.dim(1), b = q.dim(0);
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(lq, (int64_t{256} << 20) / (4 * lk * b)));
    const Tensor kt = k.permute({0, 2, 1});  // [B, D, Lk] view
    std::vector<Tensor> parts;
    for (int64_t r = 0; r < lq; r += rows) {
      Tensor sc = cuda_ops::matmul(q.slice(1, r, std::min(lq, r + rows)), kt);  // [B, rows, Lk]
      sc = softmax(diffuse::scale(sc, scale), 2);
      parts.push_back(cuda_ops::matmul(sc, v));                               // [B, rows, Dv]
    }
    return parts.size() == 1 ? parts[0] : diffuse::concat(parts, 1);
  }

  Tensor activation(const Tensor& x_in, Activation act) override {
    // Channels-last stays channels-last: the op is elementwise over the dense storage.
    const bool cl = cuda_ops::nhwc(x_in);
    Tensor x = cl ? x_in : cuda_ops::contiguous_as(x_in, x_in.dtype());
    Tensor y = cl ? cuda_ops::empty_channels_last(x.shape(), x.dtype()) : Tensor::empty(x.shape(), x.dtype(), Device::kCUDA);
    if (act == Activation::kNone) {
      copy_bytes(y, x);
      return y;
    }
    ck::activation(x.raw_data(), y.raw_data(), x.dtype(), x.numel(), act, stream());
    check_launch("activation");
    return y;
  }

  Tensor leaky_relu(const Tensor& x_in, float negative_slope) override {
    // Elementwise over the dense storage, like activation(): channels-last stays so.
    const bool cl = cuda_ops::nhwc(x_in);
    Tensor x = cl ? x_in : cuda_ops::contiguous_as(x_in, x_in.dtype());
    Tensor y = cl ? cuda_ops::empty_channels_last(x.shape(), x.dtype()) : Tensor::empty(x.shape(), x.dtype(), Device::kCUDA);
    ck::leaky_relu(x.raw_data(), y.raw_data(), x.dtype(), x.numel(), negative_slope, stream());
    check_launch("leaky_relu");
    return y;
  }

  Tensor geglu(const Tensor& x_in) override {
    Tensor x = cuda_ops::contiguous_as(x_in, x_in.dtype());
    Shape s = x.shape();
    int64_t half = s.back() / 2;
    s.back() = half;
    Tensor y = Tensor::empty(s, x.dtype(), Device::kCUDA);
    if (y.numel() == 0) return y;
    ck::geglu(x.raw_data(), y.raw_data(), x.dtype(), y.numel() / half, half, stream());
    check_launch("geglu");
    return y;
  }

  Tensor binary(const Tensor& a, const Tensor& b_in, BinaryOp op) override {
    DType t = a.dtype();
    Tensor b = b_in.dtype() == t ? b_in : cuda_ops::contiguous_as(b_in, t);
    int nd = std::max(a.ndim(), b.ndim());
    Shape out(nd);
    std::vector<std::vector<int64_t>> st(2, std::vector<int64_t>(nd, 0));
    for (int i = 0; i < nd; ++i) {
      int ia = i - (nd - a.ndim()), ib = i - (nd - b.ndim());
      int64_t da = ia >= 0 ? a.shape()[ia] : 1, db = ib >= 0 ? b.shape()[ib] : 1;
      out[i] = da == 1 ? db : da;
      st[0][i] = (ia >= 0 && da != 1) ? a.strides()[ia] : 0;
      st[1][i] = (ib >= 0 && db != 1) ? b.strides()[ib] : 0;
    }
    // A channels-last `a` of the output's shape gives a channels-last output; the loop then runs
    // over the dims in memory order (N, H, W, C), so same-layout operands coalesce to one dim.
    const bool cl = cuda_ops::nhwc(a) && a.shape() == out;
    Tensor y = cl ? cuda_ops::empty_channels_last(out, t) : Tensor::empty(out, t, Device::kCUDA);
    if (y.numel() == 0) return y;
    if (cl) {
      const int order[4] = {0, 2, 3, 1};
      Shape po(4);
      std::vector<std::vector<int64_t>> pst(2, std::vector<int64_t>(4));
      for (int i = 0; i < 4; ++i) {
        po[i] = out[order[i]];
        pst[0][i] = st[0][order[i]];
        pst[1][i] = st[1][order[i]];
      }
      out = po;
      st = pst;
    }
    Shape cs = coalesce(out, st);
    ck::binary(a.raw_data(), make_desc(cs, st[0], "binary"), b.raw_data(), make_desc(cs, st[1], "binary"),
               y.raw_data(), t, y.numel(), op, stream());
    check_launch("binary");
    return y;
  }

  Tensor axpby(const Tensor& a_in, float alpha, const Tensor& b_in, float beta) override {
    DType t = a_in.dtype();
    Tensor a = cuda_ops::contiguous_as(a_in, t);
    Tensor b = beta == 0.0f ? a : cuda_ops::contiguous_as(b_in, t);
    Tensor y = Tensor::empty(a.shape(), t, Device::kCUDA);
    ck::axpby(a.raw_data(), alpha, b.raw_data(), beta, y.raw_data(), t, y.numel(), stream());
    check_launch("axpby");
    return y;
  }

  Tensor concat(const std::vector<Tensor>& xs, int dim) override {
    DType t = xs.front().dtype();
    int nd = xs.front().ndim();
    int d = norm_dim(dim, nd);
    if (cuda_ops::nhwc(xs.front())) {
      // Channels-last: concatenate the NHWC views (dim N, C, H, W -> 0, 3, 1, 2) and view the result back.
      const int phys[4] = {0, 3, 1, 2};
      std::vector<Tensor> views;
      for (const Tensor& x : xs) views.push_back(cuda_ops::channels_last_as(x, t).permute({0, 2, 3, 1}));
      return concat(views, phys[d]).permute({0, 3, 1, 2});
    }
    Shape out = xs.front().shape();
    out[d] = 0;
    for (const Tensor& x : xs) out[d] += x.shape()[d];
    Tensor y = Tensor::empty(out, t, Device::kCUDA);
    if (y.numel() == 0) return y;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; ++i) outer *= out[i];
    for (int i = d + 1; i < nd; ++i) inner *= out[i];
    size_t es = dtype_size(t);
    size_t dst_pitch = static_cast<size_t>(out[d] * inner) * es, col = 0;
    for (const Tensor& x_in : xs) {
      size_t width = static_cast<size_t>(x_in.shape()[d] * inner) * es;
      if (width > 0) {
        Tensor x = cuda_ops::contiguous_as(x_in, t);
        // Each input is `outer` rows of `width` bytes landing at column `col` of the output rows.
        DIFFUSE_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(y.raw_data()) + col, dst_pitch, x.raw_data(), width,
                                             width, static_cast<size_t>(outer), cudaMemcpyDeviceToDevice, stream()),
                           "concat");
      }
      col += width;
    }
    return y;
  }

  Tensor copy(const Tensor& x) override {
    Tensor y = Tensor::empty(x.shape(), x.dtype(), Device::kCUDA);
    if (y.numel() == 0) return y;
    if (x.is_contiguous()) {
      copy_bytes(y, x);
      return y;
    }
    std::vector<std::vector<int64_t>> st{x.strides()};
    Shape cs = coalesce(x.shape(), st);
    ck::copy_strided(x.raw_data(), y.raw_data(), static_cast<int>(dtype_size(x.dtype())), make_desc(cs, st[0], "copy"),
                     y.numel(), stream());
    check_launch("copy");
    return y;
  }

  Tensor upsample_nearest2x(const Tensor& x_in) override {
    if (cuda_ops::nhwc(x_in)) {
      const int64_t n = x_in.dim(0), c = x_in.dim(1), h = x_in.dim(2), w = x_in.dim(3);
      Tensor y = cuda_ops::empty_channels_last({n, c, 2 * h, 2 * w}, x_in.dtype());
      ck::upsample_nearest2x_nhwc(x_in.raw_data(), y.raw_data(), x_in.dtype(), n, h, w, c, stream());
      check_launch("upsample_nearest2x");
      return y;
    }
    Tensor x = cuda_ops::contiguous_as(x_in, x_in.dtype());
    int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
    Tensor y = Tensor::empty({n, c, 2 * h, 2 * w}, x.dtype(), Device::kCUDA);
    ck::upsample_nearest2x(x.raw_data(), y.raw_data(), x.dtype(), n * c, h, w, stream());
    check_launch("upsample_nearest2x");
    return y;
  }

  Tensor embedding(const Tensor& ids_in, const Tensor& table_in) override {
    Tensor ids = cuda_ops::contiguous_as(ids_in, ids_in.dtype());
    Tensor table = cuda_ops::contiguous_as(table_in, table_in.dtype());
    int64_t vocab = table.dim(0), d = table.dim(1);
    // Ids are few (77 tokens per prompt): check their range on the host so a bad id throws instead of
    // reading out of bounds on the device.
    std::vector<int64_t> host = ids.to_i64_vector();
    for (size_t i = 0; i < host.size(); ++i)
      DIFFUSE_CHECK_ARG(host[i] >= 0 && host[i] < vocab, "[embedding] id " + std::to_string(host[i]) + " at index " +
                                                             std::to_string(i) + " is out of range for a table of " +
                                                             std::to_string(vocab) + " rows");
    Shape s = ids.shape();
    s.push_back(d);
    Tensor y = Tensor::empty(s, table.dtype(), Device::kCUDA);
    ck::embedding(ids.raw_data(), ids.dtype() == DType::kI64, table.raw_data(), y.raw_data(), table.dtype(),
                  ids.numel(), d, stream());
    check_launch("embedding");
    return y;
  }

  Tensor timestep_embedding(const Tensor& t_in, int dim, bool flip_sin_to_cos, float shift,
                            float max_period) override {
    Tensor t = cuda_ops::contiguous_as(t_in, DType::kF32);
    Tensor y = Tensor::empty({t.numel(), dim}, DType::kF32, Device::kCUDA);
    ck::timestep_embedding(t.data<float>(), y.data<float>(), t.numel(), dim, flip_sin_to_cos, shift, max_period,
                           stream());
    check_launch("timestep_embedding");
    return y;
  }

  Tensor cast(const Tensor& x_in, DType dtype) override {
    const bool cl = cuda_ops::nhwc(x_in);  // dense storage: cast it as it lies, keeping the layout
    Tensor x = cl || x_in.is_contiguous() ? x_in : copy(x_in);
    Tensor y = cl ? cuda_ops::empty_channels_last(x.shape(), dtype) : Tensor::empty(x.shape(), dtype, Device::kCUDA);
    if (dtype == x.dtype()) {
      copy_bytes(y, x);
      return y;
    }
    ck::cast(x.raw_data(), x.dtype(), y.raw_data(), dtype, x.numel(), stream());
    check_launch("cast");
    return y;
  }

 private:
  static void copy_bytes(Tensor& dst, const Tensor& src) {
    if (src.nbytes() == 0) return;
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(), cudaMemcpyDeviceToDevice,
                                       stream()),
                       "copy");
  }
};

}  // namespace

namespace cuda_ops {

Tensor contiguous_as(const Tensor& x, DType dtype) {
  if (x.is_contiguous() && x.dtype() == dtype) return x;
  Backend& be = cuda_backend();
  Tensor c = x.is_contiguous() ? x : be.copy(x);
  return c.dtype() == dtype ? c : be.cast(c, dtype);
}

Tensor empty_channels_last(const Shape& s, DType dtype) {
  return Tensor::empty({s[0], s[2], s[3], s[1]}, dtype, Device::kCUDA).permute({0, 3, 1, 2});
}

Tensor channels_last_as(const Tensor& x, DType dtype) {
  Tensor c = to_channels_last(x);
  return c.dtype() == dtype ? c : cuda_backend().cast(c, dtype);
}

void apply_activation_inplace(Tensor& y, Activation act) {
  if (act == Activation::kNone || y.numel() == 0) return;
  ck::activation(y.raw_data(), y.raw_data(), y.dtype(), y.numel(), act, stream());
  check_launch("linear");
}

}  // namespace cuda_ops

Backend& cuda_backend() {
  cuda_context();  // throws kUnsupported without a device
  static CudaBackend* backend = new CudaBackend();
  return *backend;
}

}  // namespace diffuse
