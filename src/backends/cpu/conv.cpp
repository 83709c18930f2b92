// 2-D convolution on the CPU (NCHW) through oneDNN.
//
// oneDNN's direct JIT convolution wants blocked layouts (nChw8c on AVX2); it
// beats the im2col+GEMM path it picks for plain NCHW by ~15-20% even after
// reordering the activation in and out. Weights are reordered once and cached
// per weight storage (a weak_ptr detects when the storage dies), which also
// skips the per-call bf16->f32 widening of bf16 weights on CPUs without
// native bf16. The bias and an optional residual (a "sum" post-op over a dst
// pre-filled with it) are fused. f16, and bf16 without native kernels,
// compute in f32.
#include <algorithm>
#include <cstring>
#include <list>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/profile.h"

namespace diffuse::cpu {

namespace {

using dnnl::memory;

struct ConvEntry {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  std::string key;
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
    memory::desc x_md(xd, dt, memory::format_tag::any);
    memory::desc w_md(wd, dt, memory::format_tag::any);
    memory::desc y_md(yd, dt, memory::format_tag::any);
    memory::dims strides{stride, stride}, pad{padding, padding};
    auto e = std::make_shared<ConvEntry>();
    e->key = key;
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

// Reordered weights, keyed by (storage, offset, conv key). Bounded in bytes;
// entries whose storage died are dropped when the cache is walked.
class WeightCache {
 public:
  memory get(const Tensor& w, const ConvEntry& conv, DType cd) {
    std::string key = std::to_string(reinterpret_cast<uintptr_t>(w.storage().get())) + ":" +
                      std::to_string(w.offset()) + ":" + shape_str(w.strides()) + ":" + dtype_name(w.dtype()) + ":" +
                      conv.key;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto it = entries_.begin(); it != entries_.end();) {
        if (it->owner.expired()) {
          bytes_ -= it->bytes;
          it = entries_.erase(it);
          continue;
        }
        if (it->key == key && it->owner.lock() == w.storage()) {
          entries_.splice(entries_.begin(), entries_, it);  // most recently used first
          return it->mem;
        }
        ++it;
      }
    }
    Tensor wc = w.dtype() == cd ? w.contiguous() : cast(w, cd);
    auto& eng = onednn::engine();
    memory::dims wd(w.shape().begin(), w.shape().end());
    memory src({wd, onednn::dt_of(cd), memory::format_tag::oihw}, eng, wc.raw_data());
    memory dst(conv.pd.weights_desc(), eng);
    onednn::sync_threads();
    dnnl::reorder(src, dst).execute(onednn::stream(), src, dst);
    onednn::stream().wait();
    size_t bytes = conv.pd.weights_desc().get_size();
    std::lock_guard<std::mutex> lk(mu_);
    entries_.push_front(Entry{key, w.storage(), dst, bytes});
    bytes_ += bytes;
    while (bytes_ > kMaxBytes && entries_.size() > 1) {
      bytes_ -= entries_.back().bytes;
      entries_.pop_back();
    }
    return dst;
  }

 private:
  struct Entry {
    std::string key;
    std::weak_ptr<Storage> owner;
    memory mem;
    size_t bytes;
  };
  static constexpr size_t kMaxBytes = size_t{6} << 30;  // all conv weights of SDXL in f32 fit
  std::mutex mu_;
  std::list<Entry> entries_;
  size_t bytes_ = 0;
};

WeightCache& weight_cache() {
  static WeightCache cache;
  return cache;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual) {
  DType cd = x.dtype() == DType::kBF16 && onednn::native_bf16() ? DType::kBF16 : DType::kF32;
  auto as_cd = [&](const Tensor& t) { return t.dtype() == cd ? t.contiguous() : cast(t, cd); };
  Tensor xc;
  {
    DIFFUSE_CPU_PROFILE("conv2d.cast_in");
    xc = as_cd(x);
  }
  Tensor bc = bias.defined() ? as_f32(bias) : Tensor();
  int64_t n = x.dim(0), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  int64_t ho = (x.dim(2) + 2 * padding - kh) / stride + 1, wo = (x.dim(3) + 2 * padding - kw) / stride + 1;
  Shape ys{n, o, ho, wo};
  Tensor out = Tensor::empty(ys, cd);
  if (out.numel() == 0) return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
  auto e = get_conv(x.shape(), w.shape(), ys, stride, padding, onednn::dt_of(cd), bc.defined(), residual.defined());
  memory wm;
  {
    DIFFUSE_CPU_PROFILE("conv2d.weights");
    wm = weight_cache().get(w, *e, cd);
  }

  onednn::sync_threads();
  auto& eng = onednn::engine();
  auto& s = onednn::stream();
  memory::data_type dt = onednn::dt_of(cd);
  memory x_user({memory::dims(x.shape().begin(), x.shape().end()), dt, memory::format_tag::nchw}, eng, xc.raw_data());
  memory y_user({memory::dims(ys.begin(), ys.end()), dt, memory::format_tag::nchw}, eng, out.raw_data());
  memory xm = x_user, ym = y_user;
  if (e->pd.src_desc() != x_user.get_desc()) {
    DIFFUSE_CPU_PROFILE("conv2d.reorder_in");
    xm = memory(e->pd.src_desc(), eng);
    dnnl::reorder(x_user, xm).execute(s, x_user, xm);
    s.wait();
  }
  if (e->pd.dst_desc() != y_user.get_desc()) ym = memory(e->pd.dst_desc(), eng);
  if (residual.defined()) {
    Tensor rc = as_cd(residual);
    memory r_user({memory::dims(ys.begin(), ys.end()), dt, memory::format_tag::nchw}, eng, rc.raw_data());
    dnnl::reorder(r_user, ym).execute(s, r_user, ym);  // the sum post-op adds onto dst
  }
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
  if (bc.defined()) args[DNNL_ARG_BIAS] = memory(e->pd.bias_desc(), eng, bc.raw_data());
  {
    DIFFUSE_CPU_PROFILE("conv2d.exec");
    e->prim.execute(s, args);
    s.wait();
  }
  if (ym != y_user) {
    DIFFUSE_CPU_PROFILE("conv2d.reorder_out");
    dnnl::reorder(ym, y_user).execute(s, ym, y_user);
    s.wait();
  }
  return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
}

}  // namespace diffuse::cpu
