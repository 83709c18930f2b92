// Data movement on the CPU: strided copies, casts, concat, upsample, embedding.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

struct Dim {
  int64_t size, src_stride, dst_stride;
};

// Drops size-1 dims and merges neighbours that are contiguous in both tensors,
// so most copies become a few long rows.
std::vector<Dim> coalesce(const Shape& shape, const std::vector<int64_t>& ss, const std::vector<int64_t>& ds) {
  std::vector<Dim> dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    Dim d{shape[i], ss[i], ds[i]};
    if (!dims.empty()) {
      Dim& prev = dims.back();
      if (prev.src_stride == d.src_stride * d.size && prev.dst_stride == d.dst_stride * d.size) {
        prev.size *= d.size;
        prev.src_stride = d.src_stride;
        prev.dst_stride = d.dst_stride;
        continue;
      }
    }
    dims.push_back(d);
  }
  if (dims.empty()) dims.push_back({1, 1, 1});
  return dims;
}

template <class T>
void copy_row(const T* s, int64_t ss, T* d, int64_t ds, int64_t n) {
  if (ss == 1 && ds == 1) {
    std::memcpy(d, s, static_cast<size_t>(n) * sizeof(T));
    return;
  }
  for (int64_t i = 0; i < n; ++i) d[i * ds] = s[i * ss];
}

template <class T>
void copy_typed(const char* src, char* dst, const std::vector<Dim>& dims) {
  const Dim& in = dims.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) rows *= dims[i].size;
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(in.size, 1));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t so = 0, dof = 0, rem = r;
      for (size_t i = dims.size() - 1; i-- > 0;) {
        int64_t idx = rem % dims[i].size;
        rem /= dims[i].size;
        so += idx * dims[i].src_stride;
        dof += idx * dims[i].dst_stride;
      }
      copy_row(reinterpret_cast<const T*>(src) + so, in.src_stride, reinterpret_cast<T*>(dst) + dof, in.dst_stride,
               in.size);
    }
  });
}

// A transpose (e.g. NCHW <-> NHWC): the destination is unit-stride along the
// last dim, the source along dim p. Copies 16x16 tiles so that both sides
// touch whole cache lines, instead of one element per line on the source.
template <class T>
void transpose_typed(const char* src, char* dst, std::vector<Dim> dims, size_t p) {
  constexpr int64_t kTile = 16;  // 16 lines per side: within L1 associativity even at 4 KB-aliased strides
  Dim dp = dims[p], dl = dims.back();
  dims.erase(dims.begin() + static_cast<std::ptrdiff_t>(p));
  dims.pop_back();
  int64_t outer = 1;
  for (const Dim& d : dims) outer *= d.size;
  int64_t tp = (dp.size + kTile - 1) / kTile, tl = (dl.size + kTile - 1) / kTile;
  parallel_for(outer * tp * tl, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t il = t % tl, ip = (t / tl) % tp, o = t / (tl * tp);
      int64_t so = 0, dof = 0, rem = o;
      for (size_t i = dims.size(); i-- > 0;) {
        int64_t idx = rem % dims[i].size;
        rem /= dims[i].size;
        so += idx * dims[i].src_stride;
        dof += idx * dims[i].dst_stride;
      }
      const T* s = reinterpret_cast<const T*>(src) + so;
      T* d = reinterpret_cast<T*>(dst) + dof;
      int64_t p1 = std::min(dp.size, (ip + 1) * kTile), l1 = std::min(dl.size, (il + 1) * kTile);
      for (int64_t a = ip * kTile; a < p1; ++a)
        for (int64_t b = il * kTile; b < l1; ++b) d[a * dp.dst_stride + b] = s[a + b * dl.src_stride];
    }
  });
}

template <class T>
void copy_dispatch(const char* s, char* d, const std::vector<Dim>& dims) {
  const Dim& in = dims.back();
  if (dims.size() >= 2 && in.dst_stride == 1 && in.src_stride != 1) {
    for (size_t p = 0; p + 1 < dims.size(); ++p)
      if (dims[p].src_stride == 1) return transpose_typed<T>(s, d, dims, p);
  }
  copy_typed<T>(s, d, dims);
}

}  // namespace

void strided_copy(const Tensor& src, const Tensor& dst) {
  if (src.numel() == 0) return;
  auto dims = coalesce(src.shape(), src.strides(), dst.strides());
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(dst.raw_data());
  switch (dtype_size(src.dtype())) {
    case 2: copy_dispatch<uint16_t>(s, d, dims); break;
    case 4: copy_dispatch<uint32_t>(s, d, dims); break;
    default: copy_dispatch<uint64_t>(s, d, dims); break;
  }
}

std::vector<int64_t> broadcast_strides(const Tensor& t, const Shape& out_shape) {
  size_t n = out_shape.size(), k = t.shape().size();
  std::vector<int64_t> st(n, 0);
  for (size_t i = 0; i < k; ++i) {
    size_t o = n - k + i;
    st[o] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  }
  return st;
}

Tensor copy(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  if (x.is_contiguous()) {
    std::memcpy(out.raw_data(), x.raw_data(), x.nbytes());
  } else {
    strided_copy(x, out);
  }
  return out;
}

Tensor cast(const Tensor& x, DType dtype) {
  Tensor src = x.is_contiguous() ? x : cpu::copy(x);
  Tensor out = Tensor::empty(src.shape(), dtype);
  int64_t n = src.numel();
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(out.raw_data());
  size_t ssz = dtype_size(src.dtype()), dsz = dtype_size(dtype);
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
    convert(s + b * ssz, src.dtype(), d + b * dsz, dtype, static_cast<size_t>(e - b));
  });
  return out;
}

Tensor as_f32(const Tensor& x) {
  if (x.dtype() == DType::kF32 && x.is_contiguous()) return x;
  return cast(x, DType::kF32);
}

Tensor from_f32(const Tensor& x, DType dtype) { return dtype == DType::kF32 ? x : cast(x, dtype); }

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  Shape shape = xs[0].shape();
  shape[dim] = 0;
  for (const Tensor& t : xs) shape[dim] += t.dim(dim);
  Tensor out = Tensor::empty(shape, xs[0].dtype());
  int64_t at = 0;
  for (const Tensor& t : xs) {
    int64_t len = t.dim(dim);
    if (len == 0) continue;
    strided_copy(t, out.slice(dim, at, at + len));
    at += len;
  }
  return out;
}

namespace {

template <class T>
void upsample_rows(const Tensor& x, Tensor& out) {
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const auto& st = x.strides();
  const T* src = static_cast<const T*>(x.raw_data());
  T* dst = static_cast<T*>(out.raw_data());
  parallel_for(n * c * h, std::max<int64_t>(1, 4096 / std::max<int64_t>(w, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t y = r % h, ch = (r / h) % c, b = r / (h * c);
      const T* srow = src + b * st[0] + ch * st[1] + y * st[2];
      T* d0 = dst + ((b * c + ch) * 2 * h + 2 * y) * 2 * w;
      for (int64_t i = 0; i < w; ++i) d0[2 * i] = d0[2 * i + 1] = srow[i * st[3]];
      std::memcpy(d0 + 2 * w, d0, static_cast<size_t>(2 * w) * sizeof(T));  // the second output row is the same
    }
  });
}

}  // namespace

Tensor upsample_nearest2x(const Tensor& x) {
  Tensor out = Tensor::empty({x.dim(0), x.dim(1), 2 * x.dim(2), 2 * x.dim(3)}, x.dtype());
  if (out.numel() == 0) return out;
  switch (dtype_size(x.dtype())) {
    case 2: upsample_rows<uint16_t>(x, out); break;
    case 4: upsample_rows<uint32_t>(x, out); break;
    default: upsample_rows<uint64_t>(x, out); break;
  }
  return out;
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  std::vector<int64_t> idv = ids.to_i64_vector();
  Tensor tab = table.contiguous();
  int64_t d = tab.dim(1);
  Shape shape = ids.shape();
  shape.push_back(d);
  Tensor out = Tensor::empty(shape, tab.dtype());
  size_t row = static_cast<size_t>(d) * dtype_size(tab.dtype());
  const char* src = static_cast<const char*>(tab.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (size_t i = 0; i < idv.size(); ++i) std::memcpy(dst + i * row, src + idv[i] * row, row);
  return out;
}

}  // namespace diffuse::cpu
