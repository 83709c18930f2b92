// Linear and batched matmul on the CPU.
#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

// C rows [i0, i1) += A rows * B (B is [K, N] row-major), tiled so a B panel
// stays in cache while up to 4 rows of C accumulate into it.
DIFFUSE_CPU_CLONES void gemm_rows(int64_t i0, int64_t i1, int64_t n, int64_t k, const float* a, int64_t lda,
                                  const float* b, int64_t ldb, float* c, int64_t ldc) {
  constexpr int64_t kNb = 256, kKb = 128;
  for (int64_t nb = 0; nb < n; nb += kNb) {
    int64_t ne = std::min(n, nb + kNb), len = ne - nb;
    for (int64_t kb = 0; kb < k; kb += kKb) {
      int64_t ke = std::min(k, kb + kKb);
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        float* c0 = c + i * ldc + nb;
        float* c1 = c0 + ldc;
        float* c2 = c1 + ldc;
        float* c3 = c2 + ldc;
        for (int64_t kk = kb; kk < ke; ++kk) {
          const float* br = b + kk * ldb + nb;
          float a0 = a[i * lda + kk], a1 = a[(i + 1) * lda + kk], a2 = a[(i + 2) * lda + kk],
                a3 = a[(i + 3) * lda + kk];
          for (int64_t j = 0; j < len; ++j) {
            float bv = br[j];
            c0[j] += a0 * bv;
            c1[j] += a1 * bv;
            c2[j] += a2 * bv;
            c3[j] += a3 * bv;
          }
        }
      }
      for (; i < i1; ++i) {
        float* cr = c + i * ldc + nb;
        for (int64_t kk = kb; kk < ke; ++kk) {
          const float* br = b + kk * ldb + nb;
          float av = a[i * lda + kk];
          for (int64_t j = 0; j < len; ++j) cr[j] += av * br[j];
        }
      }
    }
  }
}

}  // namespace

void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, bool trans_b,
              float* c, int64_t ldc, float beta) {
  std::vector<float> bt;
  if (trans_b) {
    // Transpose B [N, K] into [K, N] once; it is reused by every row block.
    bt.resize(static_cast<size_t>(n * k));
    parallel_for(k, 64, [&](int64_t k0, int64_t k1) {
      for (int64_t kk = k0; kk < k1; ++kk)
        for (int64_t j = 0; j < n; ++j) bt[kk * n + j] = b[j * ldb + kk];
    });
    b = bt.data();
    ldb = n;
  }
  int64_t grain = std::max<int64_t>(4, (1 << 16) / std::max<int64_t>(n * k, 1) * 4);
  parallel_for(m, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* cr = c + i * ldc;
      if (beta == 0.0f) {
        std::fill(cr, cr + n, 0.0f);
      } else if (beta != 1.0f) {
        for (int64_t j = 0; j < n; ++j) cr[j] *= beta;
      }
    }
    gemm_rows(i0, i1, n, k, a, lda, b, ldb, c, ldc);
  });
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act) {
  Tensor xf = as_f32(x), wf = as_f32(w);
  int64_t in = w.dim(1), out_f = w.dim(0), m = x.numel() / std::max<int64_t>(in, 1);
  Shape shape = x.shape();
  shape.back() = out_f;
  Tensor out = Tensor::empty(shape, DType::kF32);
  float* po = out.data<float>();
  gemm_f32(m, out_f, in, xf.data<float>(), in, wf.data<float>(), in, true, po, out_f, 0.0f);
  Tensor bf = bias.defined() ? as_f32(bias) : Tensor();
  const float* pb = bf.defined() ? bf.data<float>() : nullptr;
  if (pb || act != Activation::kNone) {
    parallel_for(m, std::max<int64_t>(1, 4096 / std::max<int64_t>(out_f, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* row = po + r * out_f;
        if (pb)
          for (int64_t j = 0; j < out_f; ++j) row[j] += pb[j];
        apply_activation(row, out_f, act);
      }
    });
  }
  return from_f32(out, x.dtype());
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor af = as_f32(a), bf = as_f32(b);
  int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  size_t nd = std::max(ba.size(), bb.size());
  Shape batch(nd);
  for (size_t i = 0; i < nd; ++i) {
    int64_t da = i < nd - ba.size() ? 1 : ba[i - (nd - ba.size())];
    int64_t db = i < nd - bb.size() ? 1 : bb[i - (nd - bb.size())];
    batch[i] = da == 1 ? db : da;
  }
  // Batch strides in units of whole matrices (0 where broadcast).
  auto batch_strides = [&](const Shape& s, int64_t mat) {
    std::vector<int64_t> st(nd, 0);
    int64_t acc = mat;
    for (size_t i = s.size(); i-- > 0;) {
      size_t o = nd - s.size() + i;
      st[o] = s[i] == 1 ? 0 : acc;
      acc *= s[i];
    }
    return st;
  };
  auto sa = batch_strides(ba, m * k), sb = batch_strides(bb, k * n);
  Shape shape = batch;
  shape.push_back(m);
  shape.push_back(n);
  Tensor out = Tensor::empty(shape, DType::kF32);
  int64_t nb = shape_numel(batch);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t oa = 0, ob = 0, rem = bi;
    for (size_t d = nd; d-- > 0;) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    gemm_f32(m, n, k, af.data<float>() + oa, k, bf.data<float>() + ob, n, false, out.data<float>() + bi * m * n, n, 0.0f);
  }
  return from_f32(out, a.dtype());
}

}  // namespace diffuse::cpu
