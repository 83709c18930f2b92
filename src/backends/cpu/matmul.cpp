// Linear and batched matmul on the CPU: oneDNN matmul primitives (cached by
// shape) with bias and activation fused as post-ops.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/profile.h"
#include "backends/cpu/scratch.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

using dnnl::memory;

struct MatmulEntry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

onednn::PrimitiveCache<MatmulEntry>& matmul_cache() {
  static onednn::PrimitiveCache<MatmulEntry> cache;
  return cache;
}

memory::dims to_dims(const Shape& s) { return memory::dims(s.begin(), s.end()); }

memory::dims plain_strides(const memory::dims& d) {
  memory::dims st(d.size());
  memory::dim acc = 1;
  for (size_t i = d.size(); i-- > 0;) {
    st[i] = acc;
    acc *= d[i];
  }
  return st;
}

dnnl::post_ops activation_post_op(Activation act) {
  dnnl::post_ops po;
  switch (act) {
    case Activation::kNone: break;
    case Activation::kGelu: po.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f); break;
    // swish(x; a) = x * sigmoid(a x): silu is a = 1, CLIP's quick_gelu is a = 1.702.
    case Activation::kQuickGelu: po.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.702f, 0.0f); break;
    case Activation::kSilu: po.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, 1.0f, 0.0f); break;
    case Activation::kRelu: po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f); break;
    case Activation::kTanh: po.append_eltwise(1.0f, dnnl::algorithm::eltwise_tanh, 0.0f, 0.0f); break;
  }
  return po;
}

// One matmul primitive: src [.., M, K] x weights [.., K, N] (+ bias [N]) -> dst.
// `w_transposed`: weights are stored [.., N, K] (a Linear weight).
std::shared_ptr<MatmulEntry> get_matmul(const memory::dims& src, const memory::dims& wei, const memory::dims& dst,
                                        memory::data_type dt, bool w_transposed, bool bias, Activation act) {
  std::string key = "mm";
  for (auto* d : {&src, &wei, &dst}) {
    key += "|";
    for (auto v : *d) key += std::to_string(v) + ",";
  }
  key += std::to_string(static_cast<int>(dt)) + (w_transposed ? "T" : "N") + (bias ? "b" : "-") +
         std::to_string(static_cast<int>(act));
  return matmul_cache().get(key, [&] {
    memory::desc src_md(src, dt, plain_strides(src));
    memory::dims wst = plain_strides(wei);
    if (w_transposed) {
      // Logical [.., K, N] over storage [.., N, K].
      size_t r = wei.size();
      wst[r - 1] = wei[r - 2];
      wst[r - 2] = 1;
    }
    memory::desc wei_md(wei, dt, wst);
    memory::desc dst_md(dst, dt, plain_strides(dst));
    dnnl::primitive_attr attr = onednn::attr();
    attr.set_post_ops(activation_post_op(act));
    std::shared_ptr<MatmulEntry> e = std::make_shared<MatmulEntry>();
    if (bias) {
      memory::dims bd(dst.size(), 1);
      bd.back() = dst.back();
      memory::desc bias_md(bd, memory::data_type::f32, plain_strides(bd));
      e->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md), attr, onednn::engine());
    } else {
      e->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), attr, onednn::engine());
    }
    e->prim = dnnl::matmul(e->pd);
    return e;
  });
}

}  // namespace

// bf16 GEMM runs natively only where oneDNN has a real kernel for it (AVX-512
// BF16 / AMX); elsewhere we widen to f32, which is faster than its reference path.
bool onednn::native_bf16() {
  static const bool ok = [] {
    try {
      auto e = get_matmul({64, 64}, {64, 64}, {64, 64}, memory::data_type::bf16, false, false, Activation::kNone);
      return !onednn::is_reference(e->pd.impl_info_str());
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

namespace {

DType compute_dtype(DType t) { return t == DType::kBF16 && onednn::native_bf16() ? DType::kBF16 : DType::kF32; }

Tensor as_dtype_contig(const Tensor& t, DType d) { return t.dtype() == d ? t.contiguous() : cast(t, d); }

void run_matmul(const MatmulEntry& e, const Tensor& src, const void* wei, const Tensor& bias, const Tensor& dst) {
  auto& eng = onednn::engine();
  std::unordered_map<int, memory> args;
  args[DNNL_ARG_SRC] = memory(e.pd.src_desc(), eng, src.raw_data());
  args[DNNL_ARG_WEIGHTS] = memory(e.pd.weights_desc(), eng, const_cast<void*>(wei));
  args[DNNL_ARG_DST] = memory(e.pd.dst_desc(), eng, dst.raw_data());
  if (bias.defined()) args[DNNL_ARG_BIAS] = memory(e.pd.bias_desc(), eng, bias.raw_data());
  onednn::execute(e.prim, e.pd.scratchpad_desc(), std::move(args));
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act) {
  DType cd = compute_dtype(x.dtype());
  Tensor xc, wc;
  const void* wp = nullptr;
  {
    DIFFUSE_CPU_PROFILE("linear.cast_in");
    xc = as_dtype_contig(x, cd);
    if (w.dtype() != cd && cd == DType::kF32 && w.is_contiguous()) {
      // bf16/f16 weights without native kernels: widened per call into a
      // reused buffer (no f32 copy of the weights is kept, no allocation).
      float* buf = static_cast<float*>(scratch(ScratchSlot::kLinearWeights, w.numel() * sizeof(float)));
      widen_to_f32(w.raw_data(), w.dtype(), buf, w.numel());
      wp = buf;
    } else {
      wc = as_dtype_contig(w, cd);
      wp = wc.raw_data();
    }
  }
  Tensor bc = bias.defined() ? as_f32(bias) : Tensor();
  int64_t in = w.dim(1), out_f = w.dim(0), m = x.numel() / std::max<int64_t>(in, 1);
  Shape shape = x.shape();
  shape.back() = out_f;
  if (m == 0 || in == 0) {
    // Degenerate sizes oneDNN rejects: the product is empty or all zeros.
    Tensor z = Tensor::zeros(shape, DType::kF32);
    if (bc.defined() && z.numel() > 0) z = binary(z, bc, Backend::BinaryOp::kAdd);
    apply_activation(z.data<float>(), z.numel(), act);
    return from_f32(z, x.dtype());
  }
  Tensor out = Tensor::empty(shape, cd);
  auto e = get_matmul({m, in}, {in, out_f}, {m, out_f}, onednn::dt_of(cd), true, bc.defined(), act);
  {
    DIFFUSE_CPU_PROFILE("linear.exec");
    run_matmul(*e, xc, wp, bc, out);
  }
  return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  DType cd = compute_dtype(a.dtype());
  Tensor ac = as_dtype_contig(a, cd), bc = as_dtype_contig(b, cd);
  int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  size_t nd = std::max(a.shape().size(), b.shape().size());
  // Pad both to the same rank with leading 1s; oneDNN broadcasts size-1 batch dims.
  Shape sa(nd - a.shape().size(), 1), sb(nd - b.shape().size(), 1);
  sa.insert(sa.end(), a.shape().begin(), a.shape().end());
  sb.insert(sb.end(), b.shape().begin(), b.shape().end());
  Shape so(nd);
  for (size_t i = 0; i + 2 < nd; ++i) so[i] = sa[i] == 1 ? sb[i] : sa[i];
  so[nd - 2] = m;
  so[nd - 1] = n;
  Tensor out = Tensor::empty(so, cd);
  if (out.numel() == 0) return out.to(a.dtype());
  if (k == 0) return Tensor::zeros(so, a.dtype());
  auto e = get_matmul(to_dims(sa), to_dims(sb), to_dims(so), onednn::dt_of(cd), false, false, Activation::kNone);
  run_matmul(*e, ac, bc.raw_data(), Tensor(), out);
  return out.dtype() == a.dtype() ? out : cast(out, a.dtype());
}

}  // namespace diffuse::cpu
