// 2-D convolution on the CPU (NCHW) through oneDNN.
//
// oneDNN's direct JIT convolution wants blocked layouts (nChw8c on AVX2); it
// beats the im2col+GEMM path it picks for plain NCHW by ~15-20% even after
// reordering the activation in and out. The bias and an optional residual (a
// "sum" post-op over a dst pre-filled with it) are fused. f16, and bf16
// without native kernels, compute in f32.
//
// Memory (issue "CPU speed", peak RSS):
// - Weights already in the compute dtype (f32) are reordered once into the
//   blocked layout and cached per weight storage (a weak_ptr detects when the
//   storage dies). bf16/f16 weights computed in f32 are NOT cached as f32: that
//   copy was twice the bf16 weights (2.4 GB for SD1.5). They are widened and
//   blocked per call into a reused scratch buffer instead; the pass is fused
//   (one read of 2 bytes, one write of 4 per weight) and costs ~2% of a step.
// - Large activations (the VAE decoder at 512x512: 256 channels x 512^2 f32 is
//   268 MB) are convolved in bands of output rows, each band's input rows (plus
//   the kernel's halo) reordered into a small blocked buffer, so the full-size
//   blocked copies of src and dst (2x the activation) never exist. Every output
//   pixel sums the same products in the same order as the unbanded call.
// - The blocked src/dst buffers are per-thread scratch reused across calls (no
//   malloc or page faults per call in the step loop).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <list>

#include "backends/cpu/cpu_kernels.h"
#include "core/runtime_options.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/profile.h"
#include "backends/cpu/scratch.h"
#include "backends/cpu/simd.h"
#include "core/thread_pool.h"

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

// Padding may differ per side: the bands of a banded convolution pad only
// their outer edge.
struct Pads {
  int64_t top, bottom, left, right;
};

std::shared_ptr<ConvEntry> get_conv(const Shape& xs, const Shape& ws, const Shape& ys, int stride, const Pads& p,
                                    memory::data_type dt, bool bias, bool residual) {
  std::string key = shape_str(xs) + shape_str(ws) + shape_str(ys) + std::to_string(stride) + "," +
                    std::to_string(p.top) + "," + std::to_string(p.bottom) + "," + std::to_string(p.left) + "," +
                    std::to_string(p.right) + "," + std::to_string(static_cast<int>(dt)) + (bias ? "b" : "-") +
                    (residual ? "r" : "-");
  return conv_cache().get(key, [&] {
    memory::dims xd(xs.begin(), xs.end()), wd(ws.begin(), ws.end()), yd(ys.begin(), ys.end());
    memory::desc x_md(xd, dt, memory::format_tag::any);
    memory::desc w_md(wd, dt, memory::format_tag::any);
    memory::desc y_md(yd, dt, memory::format_tag::any);
    memory::dims strides{stride, stride}, pad_l{p.top, p.left}, pad_r{p.bottom, p.right};
    auto e = std::make_shared<ConvEntry>();
    e->key = key;
    dnnl::primitive_attr attr = onednn::attr();
    if (residual) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    if (bias) {
      memory::desc b_md({wd[0]}, memory::data_type::f32, memory::format_tag::x);
      e->pd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                          x_md, w_md, b_md, y_md, strides, pad_l, pad_r),
          attr, onednn::engine());
    } else {
      e->pd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                          x_md, w_md, y_md, strides, pad_l, pad_r),
          attr, onednn::engine());
    }
    e->prim = dnnl::convolution_forward(e->pd);
    return e;
  });
}

// A string naming a memory layout (dims, padding and blocking), so cached
// weights serve every primitive that wants the same layout.
std::string layout_key(const memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  std::string k = std::to_string(d.ndims) + ":" + std::to_string(static_cast<int>(d.data_type)) + ":";
  for (int i = 0; i < d.ndims; ++i) k += std::to_string(d.padded_dims[i]) + ",";
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  for (int i = 0; i < d.ndims; ++i) k += std::to_string(b.strides[i]) + ",";
  for (int i = 0; i < b.inner_nblks; ++i) k += std::to_string(b.inner_blks[i]) + "/" + std::to_string(b.inner_idxs[i]);
  return k;
}

// Reordered weights, keyed by (storage, offset, layout). Bounded in bytes;
// entries whose storage died are dropped when the cache is walked.
class WeightCache {
 public:
  template <class Make>
  memory get(const Tensor& w, const memory::desc& layout, Make&& make) {
    std::string key = std::to_string(reinterpret_cast<uintptr_t>(w.storage().get())) + ":" +
                      std::to_string(w.offset()) + ":" + shape_str(w.strides()) + ":" + dtype_name(w.dtype()) + ":" +
                      layout_key(layout);
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
    memory dst(layout, onednn::engine());
    make(dst);
    size_t bytes = layout.get_size();
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

using simd::v8f;

// Eight consecutive weights as f32: f32 as is, bf16 widened (the high half of an f32).
DIFFUSE_INLINE v8f load8(const float* p) { return simd::load(p); }
DIFFUSE_INLINE v8f load8(const uint16_t* p) {
  typedef uint16_t v8u16 __attribute__((vector_size(16)));
  v8u16 h;
  std::memcpy(&h, p, sizeof h);
  simd::v8i wide = __builtin_convertvector(h, simd::v8i) << 16;
  v8f f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

// In-register 8x8 transpose (the unpack / shuffle / 128-bit permute sequence).
DIFFUSE_INLINE void transpose8(v8f r[8]) {
  v8f t[8], u[8];
  for (int q = 0; q < 8; q += 2) {
    t[q] = __builtin_shufflevector(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[q + 1] = __builtin_shufflevector(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int q = 0; q < 8; q += 4) {
    u[q] = __builtin_shufflevector(t[q], t[q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[q + 1] = __builtin_shufflevector(t[q], t[q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[q + 2] = __builtin_shufflevector(t[q + 1], t[q + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[q + 3] = __builtin_shufflevector(t[q + 1], t[q + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = __builtin_shufflevector(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[q + 4] = __builtin_shufflevector(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// One 8x8 channel block of OIhw8i8o (AVX2's blocked conv weights:
// [O/8][I/8][kh*kw][8 i][8 o]) from plain OIHW. Each of the block's 8 output
// channels reads 8*k contiguous weights (8 input channels x k taps); 8x8
// tiles of those rows are transposed so that the 8 output channels of one
// (input channel, tap) land in one vector.
template <class T>
DIFFUSE_INLINE void pack_block(const T* src, float* d, int64_t i, int64_t k) {
  const T* rows[8];
  for (int q = 0; q < 8; ++q) rows[q] = src + q * i * k;
  for (int64_t j = 0; j < 8 * k; j += 8) {  // 8*k is a multiple of 8: tiles never straddle rows
    v8f r[8];
    for (int q = 0; q < 8; ++q) r[q] = load8(rows[q] + j);
    transpose8(r);
    for (int q = 0; q < 8; ++q) {
      const int64_t jj = j + q, i8 = jj / k, t = jj % k;
      simd::store(d + (t * 8 + i8) * 8, r[q]);
    }
  }
}

DIFFUSE_CPU_CLONES void pack_blocks_f32(const float* src, float* dst, int64_t b0, int64_t b1, int64_t i, int64_t k) {
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t bo = blk / (i / 8), bi = blk % (i / 8);
    pack_block(src + (bo * 8 * i + bi * 8) * k, dst + blk * k * 64, i, k);
  }
}

DIFFUSE_CPU_CLONES void pack_blocks_bf16(const uint16_t* src, float* dst, int64_t b0, int64_t b1, int64_t i,
                                         int64_t k) {
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t bo = blk / (i / 8), bi = blk % (i / 8);
    pack_block(src + (bo * 8 * i + bi * 8) * k, dst + blk * k * 64, i, k);
  }
}

// Fills `dst` (laid out as `layout`, f32) from the plain OIHW weights w.
void pack_weights(const Tensor& w, memory dst, DType cd) {
  const memory::desc layout = dst.get_desc();
  const int64_t o = w.dim(0), i = w.dim(1), k = w.dim(2) * w.dim(3);
  memory::dims wd(w.shape().begin(), w.shape().end());
  const bool f32_out = cd == DType::kF32;
  const bool simple_src = w.is_contiguous() && (w.dtype() == DType::kF32 || w.dtype() == DType::kBF16);
  if (f32_out && simple_src && o % 8 == 0 && i % 8 == 0 &&
      layout == memory::desc(wd, memory::data_type::f32, memory::format_tag::OIhw8i8o)) {
    DIFFUSE_CPU_PROFILE("conv2d.weights.pack8i8o");
    float* d = static_cast<float*>(dst.get_data_handle());
    const bool f32 = w.dtype() == DType::kF32;
    const void* src = w.raw_data();
    parallel_for((o / 8) * (i / 8), 4, [&](int64_t b0, int64_t b1) {
      if (f32) {
        pack_blocks_f32(static_cast<const float*>(src), d, b0, b1, i, k);
      } else {
        pack_blocks_bf16(static_cast<const uint16_t*>(src), d, b0, b1, i, k);
      }
    });
    return;
  }
  // Any other layout (e.g. conv_in's 4 input channels): through oneDNN's reorder.
  DIFFUSE_CPU_PROFILE("conv2d.weights.reorder");
  Tensor wc = w.dtype() == cd ? w.contiguous() : cast(w, cd);
  auto& eng = onednn::engine();
  memory src({wd, onednn::dt_of(cd), memory::format_tag::oihw}, eng, wc.raw_data());
  onednn::reorder(src, dst);
}

// The weights in the layout `layout` wants. DIFFUSE_CONV_CACHE chooses which
// are cached (blocked, in f32) and which are packed per call into scratch:
//   unset / "f32": weights already in the compute dtype are cached; bf16/f16
//                  weights computed in f32 are packed per call (the memory-lean
//                  bf16 mode: one bf16 copy of the weights, see docs/performance.md);
//   "0":           nothing cached (fp32 then keeps one copy of its conv weights);
//   "all":         widened bf16/f16 copies are cached too (bf16 then computes
//                  as fast as before this change, at fp32's conv weight memory).
enum class CachePolicy { kNone, kF32, kAll };

CachePolicy cache_policy() {
  static const CachePolicy p = [] {
    const std::string& s = runtime_options().conv_cache;
    return s == "0" ? CachePolicy::kNone : s == "all" ? CachePolicy::kAll : CachePolicy::kF32;
  }();
  return p;
}

memory conv_weights(const Tensor& w, const memory::desc& layout, DType cd) {
  const CachePolicy policy = cache_policy();
  if (policy == CachePolicy::kAll || (policy == CachePolicy::kF32 && w.dtype() == cd)) {
    return weight_cache().get(w, layout, [&](memory& dst) { pack_weights(w, dst, cd); });
  }
  memory dst(layout, onednn::engine(), scratch(ScratchSlot::kConvWeights, layout.get_size()));
  pack_weights(w, dst, cd);
  return dst;
}

// Activations above this size are convolved in row bands (set_conv_band_bytes).
std::atomic<size_t> g_band_bytes{size_t{48} << 20};

// A plain NCHW view of rows [row0, row0 + rows) of a [n, c, h, w] tensor at `base`.
memory nchw_view(void* base, DType dt, int64_t n, int64_t c, int64_t h, int64_t w, int64_t row0, int64_t rows) {
  memory::desc md({n, c, rows, w}, onednn::dt_of(dt), memory::dims{c * h * w, h * w, w, 1});
  return memory(md, onednn::engine(), static_cast<char*>(base) + row0 * w * static_cast<int64_t>(dtype_size(dt)));
}

void run_reorder(memory from, memory to) { onednn::reorder(from, to); }

}  // namespace

void set_conv_band_bytes(size_t bytes) { g_band_bytes = bytes; }

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding, const Tensor& residual) {
  DType cd = x.dtype() == DType::kBF16 && onednn::native_bf16() ? DType::kBF16 : DType::kF32;
  auto as_cd = [&](const Tensor& t) { return t.dtype() == cd ? t.contiguous() : cast(t, cd); };
  Tensor xc;
  {
    DIFFUSE_CPU_PROFILE("conv2d.cast_in");
    xc = as_cd(x);
  }
  Tensor bc = bias.defined() ? as_f32(bias) : Tensor();
  Tensor rc = residual.defined() ? as_cd(residual) : Tensor();
  const Tensor wc = w.contiguous();
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wi = x.dim(3);
  const int64_t o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (wi + 2 * padding - kw) / stride + 1;
  Shape ys{n, o, ho, wo};
  Tensor out = Tensor::empty(ys, cd);
  if (out.numel() == 0) return out.dtype() == x.dtype() ? out : cast(out, x.dtype());

  // Output rows per band: all of them unless src or dst is large (the VAE at
  // full size). Splitting output channels instead (so that per-call packed
  // weights stay in cache) was tried: oneDNN ran the UNet's 1280-channel 8x8
  // convs 2x slower in 160-channel pieces.
  const size_t es = dtype_size(cd);
  const size_t big = std::max(xc.numel(), out.numel()) * es, band_bytes = g_band_bytes.load();
  int64_t band = ho;
  if (big > band_bytes && ho > 1) {
    const size_t target = std::max<size_t>(band_bytes / 4, 1);
    band = std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(ho) * target / big), 1, ho);
  }

  auto& eng = onednn::engine();
  const memory::data_type dt = onednn::dt_of(cd);
  memory wm;
  std::string w_layout;
  for (int64_t r0 = 0; r0 < ho; r0 += band) {
    const int64_t r1 = std::min(ho, r0 + band);
    // Input rows this band reads, and the padding that stands in for rows outside [0, h).
    const int64_t in_lo = r0 * stride - padding, in_hi = (r1 - 1) * stride - padding + kh;
    const int64_t lo = std::max<int64_t>(in_lo, 0), hi = std::min<int64_t>(in_hi, h);
    const Pads pads{lo - in_lo, in_hi - hi, padding, padding};
    const bool whole = r0 == 0 && r1 == ho;
    auto e = get_conv({n, c, hi - lo, wi}, w.shape(), {n, o, r1 - r0, wo}, stride, pads, dt, bc.defined(),
                      rc.defined());
    {
      DIFFUSE_CPU_PROFILE("conv2d.weights");
      const memory::desc w_md = e->pd.weights_desc();
      std::string key = layout_key(w_md);
      if (!wm || key != w_layout) {  // once per call: every band wants the same layout
        wm = conv_weights(wc, w_md, cd);
        w_layout = key;
      }
    }
    // (A stride-2 conv may not read the last input row: then even one band is a view.)
    memory x_user = lo == 0 && hi == h ? memory({{n, c, h, wi}, dt, memory::format_tag::nchw}, eng, xc.raw_data())
                                       : nchw_view(xc.raw_data(), cd, n, c, h, wi, lo, hi - lo);
    memory y_user = whole ? memory({{n, o, ho, wo}, dt, memory::format_tag::nchw}, eng, out.raw_data())
                          : nchw_view(out.raw_data(), cd, n, o, ho, wo, r0, r1 - r0);
    memory xm = x_user, ym = y_user;
    if (e->pd.src_desc() != x_user.get_desc()) {
      DIFFUSE_CPU_PROFILE("conv2d.reorder_in");
      xm = memory(e->pd.src_desc(), eng, scratch(ScratchSlot::kConvSrc, e->pd.src_desc().get_size()));
      run_reorder(x_user, xm);
    }
    if (e->pd.dst_desc() != y_user.get_desc())
      ym = memory(e->pd.dst_desc(), eng, scratch(ScratchSlot::kConvDst, e->pd.dst_desc().get_size()));
    if (rc.defined()) {
      // The sum post-op adds onto dst: start dst as the residual.
      memory r_user = whole ? memory({{n, o, ho, wo}, dt, memory::format_tag::nchw}, eng, rc.raw_data())
                            : nchw_view(rc.raw_data(), cd, n, o, ho, wo, r0, r1 - r0);
      run_reorder(r_user, ym);
    }
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
    if (bc.defined()) args[DNNL_ARG_BIAS] = memory(e->pd.bias_desc(), eng, bc.raw_data());
    {
      DIFFUSE_CPU_PROFILE("conv2d.exec");
      onednn::execute(e->prim, e->pd.scratchpad_desc(), std::move(args));
    }
    if (ym != y_user) {
      DIFFUSE_CPU_PROFILE("conv2d.reorder_out");
      run_reorder(ym, y_user);
    }
  }
  return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
}

}  // namespace diffuse::cpu
