// 2-D convolution on the CPU (NCHW) through oneDNN, with the bias and the
// optional residual (a "sum" post-op over a dst pre-filled with it) fused.
// f16, and bf16 on CPUs without native bf16 kernels, compute in f32.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/onednn.h"

namespace diffuse::cpu {

namespace {

using dnnl::memory;

struct ConvEntry {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};

onednn::PrimitiveCache<ConvEntry>& conv_cache() {
  static onednn::PrimitiveCache<ConvEntry> cache;
  return cache;
}

std::shared_ptr<ConvEntry> get_conv(const Shape& xs, const Shape& ws, const Shape& ys, int stride, int padding,
                                    memory::data_type dt, bool bias, bool residual) {
  std::string key = shape_str(xs) + shape_str(ws) + std::to_string(stride) + "," + std::to_string(padding) + "," +
                    std::to_string(static_cast<int>(dt)) + (bias ? "b" : "-") + (residual ? "r" : "-");
  return conv_cache().get(key, [&] {
    memory::dims xd(xs.begin(), xs.end()), wd(ws.begin(), ws.end()), yd(ys.begin(), ys.end());
    memory::desc x_md(xd, dt, memory::format_tag::nchw);
    memory::desc w_md(wd, dt, memory::format_tag::oihw);
    memory::desc y_md(yd, dt, memory::format_tag::nchw);
    memory::dims strides{stride, stride}, pad{padding, padding};
    auto e = std::make_shared<ConvEntry>();
    dnnl::primitive_attr attr;
    if (residual) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    if (bias) {
      memory::desc b_md({wd[0]}, memory::data_type::f32, memory::format_tag::x);
      e->pd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                          x_md, w_md, b_md, y_md, strides, pad, pad),
          attr, onednn::engine());
    } else {
      e->pd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                          x_md, w_md, y_md, strides, pad, pad),
          attr, onednn::engine());
    }
    e->prim = dnnl::convolution_forward(e->pd);
    return e;
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual) {
  DType cd = x.dtype() == DType::kBF16 && onednn::native_bf16() ? DType::kBF16 : DType::kF32;
  auto as_cd = [&](const Tensor& t) { return t.dtype() == cd ? t.contiguous() : cast(t, cd); };
  Tensor xc = as_cd(x), wc = as_cd(w);
  Tensor bc = bias.defined() ? as_f32(bias) : Tensor();
  int64_t n = x.dim(0), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (x.dim(2) + 2 * padding - kh) / stride + 1, wo = (x.dim(3) + 2 * padding - kw) / stride + 1;
  Shape ys{n, o, ho, wo};
  Tensor out;
  if (residual.defined()) {
    out = residual.dtype() == cd ? cpu::copy(residual) : cast(residual, cd);  // fresh buffer: the sum post-op writes it
  } else {
    out = Tensor::empty(ys, cd);
  }
  if (out.numel() == 0) return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
  auto e = get_conv(x.shape(), w.shape(), ys, stride, padding, onednn::dt_of(cd), bc.defined(), residual.defined());
  onednn::sync_threads();
  auto& eng = onednn::engine();
  std::unordered_map<int, memory> args;
  args[DNNL_ARG_SRC] = memory(e->pd.src_desc(), eng, xc.raw_data());
  args[DNNL_ARG_WEIGHTS] = memory(e->pd.weights_desc(), eng, wc.raw_data());
  args[DNNL_ARG_DST] = memory(e->pd.dst_desc(), eng, out.raw_data());
  if (bc.defined()) args[DNNL_ARG_BIAS] = memory(e->pd.bias_desc(), eng, bc.raw_data());
  e->prim.execute(onednn::stream(), args);
  onednn::stream().wait();
  return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
}

}  // namespace diffuse::cpu
