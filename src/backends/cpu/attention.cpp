// Scaled-dot-product attention on the CPU, heads packed in the last dim.
// Each query row keeps only its own Lk scores (never the Lq x Lk matrix).
// Causal masking follows torch SDPA's is_causal: query i sees keys j <= i.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

DIFFUSE_CPU_CLONES float dot(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

DIFFUSE_CPU_CLONES void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) {
  Tensor qf = as_f32(q), kf = as_f32(k), vf = as_f32(v);
  int64_t b = q.dim(0), lq = q.dim(1), lk = k.dim(1);
  int64_t dq = q.dim(2) / heads, dv = v.dim(2) / heads;
  int64_t qw = q.dim(2), vw = v.dim(2);
  Tensor out = Tensor::empty({b, lq, vw}, DType::kF32);
  const float* pq = qf.data<float>();
  const float* pk = kf.data<float>();
  const float* pv = vf.data<float>();
  float* po = out.data<float>();
  int64_t rows = b * heads * lq;
  parallel_for(rows, 8, [&](int64_t r0, int64_t r1) {
    std::vector<float> s(static_cast<size_t>(lk));
    for (int64_t r = r0; r < r1; ++r) {
      int64_t i = r % lq, h = (r / lq) % heads, bi = r / (lq * heads);
      const float* qr = pq + (bi * lq + i) * qw + h * dq;
      int64_t n = causal ? std::min(lk, i + 1) : lk;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = dot(qr, pk + (bi * lk + j) * qw + h * dq, dq) * scale;
        mx = std::max(mx, s[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      float* orow = po + (bi * lq + i) * vw + h * dv;
      std::fill(orow, orow + dv, 0.0f);
      for (int64_t j = 0; j < n; ++j) axpy(s[j], pv + (bi * lk + j) * vw + h * dv, orow, dv);
      float inv = 1.0f / sum;
      for (int64_t d = 0; d < dv; ++d) orow[d] *= inv;
    }
  });
  return from_f32(out, q.dtype());
}

}  // namespace diffuse::cpu
