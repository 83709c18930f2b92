// Scaled-dot-product attention on the CPU, heads packed in the last dim.
//
// Flash-attention style (Dao et al. 2022, "FlashAttention", Alg. 1): each
// task takes a block of query rows of one (batch, head) and streams over key
// blocks with an online softmax (running max m, running sum l, rescaled
// output), so only a kQBlock x kKBlock score tile exists at a time, never the
// Lq x Lk matrix. K is packed once as K^T per head so that the score tile is a
// plain row-major micro-GEMM. Causal masking follows torch SDPA's is_causal:
// query i sees keys j <= i.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/microkernel.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

constexpr int64_t kQBlock = 48;   // query rows per task (a multiple of the 6-row micro tile)
constexpr int64_t kKBlock = 128;  // keys per streamed block

struct AttnArgs {
  const float* q;  // [B, Lq, *] with row stride q_row, batch stride q_batch
  int64_t q_row, q_batch;
  const float* kt;  // packed [B, H, key block, D, kKBlock]: K^T tiles, zero-padded
  const float* v;   // packed [B, H, Lk, Dv]
  float* out;       // [B, Lq, H*Dv] contiguous
  int64_t lq, lk, k_blocks, heads, d, dv;
  float scale;
  bool causal;
};

// Scratch for one task: Qs [kQBlock, d], S [kQBlock, kKBlock], O [kQBlock, dv], m, l.
struct Scratch {
  std::vector<float> qs, s, o, m, l;
  Scratch(int64_t d, int64_t dv)
      : qs(kQBlock * d), s(kQBlock * kKBlock), o(kQBlock * dv), m(kQBlock), l(kQBlock) {}
};

DIFFUSE_CPU_CLONES void attend_block(const AttnArgs& a, int64_t b, int64_t h, int64_t q0, Scratch& sc) {
  using namespace simd;
  const int64_t rows = std::min(kQBlock, a.lq - q0), d = a.d, dv = a.dv;
  float* qs = sc.qs.data();
  float* s = sc.s.data();
  float* o = sc.o.data();
  float* m = sc.m.data();
  float* l = sc.l.data();
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = a.q + b * a.q_batch + (q0 + r) * a.q_row + h * d;
    for (int64_t j = 0; j < d; ++j) qs[r * d + j] = src[j] * a.scale;  // fold the scale into Q once
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  std::fill(o, o + rows * dv, 0.0f);
  const float* kt = a.kt + (b * a.heads + h) * a.k_blocks * d * kKBlock;
  const float* vb = a.v + (b * a.heads + h) * a.lk * dv;
  int64_t k_end = a.causal ? std::min(a.lk, q0 + rows) : a.lk;  // keys beyond the last row's diagonal are all masked
  for (int64_t k0 = 0; k0 < k_end; k0 += kKBlock) {
    int64_t kn = std::min(kKBlock, k_end - k0);
    int64_t kn_pad = (kn + 7) / 8 * 8;  // K^T tiles are zero-padded to whole blocks
    gemm_small(rows, kn_pad, d, qs, d, kt + (k0 / kKBlock) * d * kKBlock, kKBlock, s, kKBlock, false);
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = s + r * kKBlock;
      int64_t valid = a.causal ? std::min(kn, q0 + r - k0 + 1) : kn;
      if (valid <= 0) {
        std::fill(sr, sr + kn, 0.0f);
        continue;
      }
      float mx = -INFINITY;
      int64_t j = 0;
      if (valid >= 8) {
        v8f vmx = load(sr);
        for (j = 8; j + 8 <= valid; j += 8) vmx = vmax(vmx, load(sr + j));
        mx = hmax(vmx);
      }
      for (; j < valid; ++j) mx = std::max(mx, sr[j]);
      float m_new = std::max(m[r], mx);
      float corr = m[r] == -INFINITY ? 0.0f : std::exp(m[r] - m_new);
      v8f vm = splat(m_new), vsum = splat(0.0f);
      j = 0;
      for (; j + 8 <= valid; j += 8) {
        v8f p = simd::exp(load(sr + j) - vm);
        store(sr + j, p);
        vsum += p;
      }
      float sum = hsum(vsum);
      for (; j < valid; ++j) {
        sr[j] = std::exp(sr[j] - m_new);
        sum += sr[j];
      }
      for (; j < kn; ++j) sr[j] = 0.0f;
      l[r] = l[r] * corr + sum;
      m[r] = m_new;
      if (corr != 1.0f) {
        float* orow = o + r * dv;
        for (int64_t t = 0; t < dv; ++t) orow[t] *= corr;
      }
    }
    gemm_small(rows, dv, kn, s, kKBlock, vb + k0 * dv, dv, o, dv, true);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float inv = 1.0f / l[r];
    float* dst = a.out + (b * a.lq + q0 + r) * a.heads * dv + h * dv;
    for (int64_t t = 0; t < dv; ++t) dst[t] = o[r * dv + t] * inv;
  }
}

// Use an f32 tensor in place when its rows are unit-stride; otherwise copy.
Tensor rows_f32(const Tensor& t) {
  if (t.dtype() == DType::kF32 && t.strides()[2] == 1) return t;
  return as_f32(t);
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, float scale, bool causal) {
  Tensor qf = rows_f32(q), kf = rows_f32(k), vf = rows_f32(v);
  int64_t b = q.dim(0), lq = q.dim(1), lk = k.dim(1);
  int64_t d = q.dim(2) / heads, dv = v.dim(2) / heads;
  int64_t k_blocks = (lk + kKBlock - 1) / kKBlock;
  Tensor out = Tensor::empty({b, lq, v.dim(2)}, DType::kF32);
  if (out.numel() == 0) return from_f32(out, q.dtype());

  // Pack per (batch, head): K^T in [key block][D][kKBlock] tiles (zero-padded)
  // and V as [Lk][Dv], so the micro-GEMMs stream small contiguous panels that
  // stay in L1 instead of rows a whole sequence apart.
  std::vector<float> kt(static_cast<size_t>(b * heads * k_blocks * d * kKBlock), 0.0f);
  std::vector<float> vp(static_cast<size_t>(b * heads * lk * dv));
  const float* pk = kf.data<float>();
  const float* pv = vf.data<float>();
  int64_t k_row = kf.strides()[1], k_batch = kf.strides()[0];
  int64_t v_row = vf.strides()[1], v_batch = vf.strides()[0];
  parallel_for(b * heads, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t bi = p / heads, h = p % heads;
      float* kdst = kt.data() + p * k_blocks * d * kKBlock;
      float* vdst = vp.data() + p * lk * dv;
      for (int64_t i = 0; i < lk; ++i) {
        const float* ks = pk + bi * k_batch + i * k_row + h * d;
        float* kb = kdst + (i / kKBlock) * d * kKBlock + i % kKBlock;
        for (int64_t j = 0; j < d; ++j) kb[j * kKBlock] = ks[j];
        const float* vs = pv + bi * v_batch + i * v_row + h * dv;
        std::copy(vs, vs + dv, vdst + i * dv);
      }
    }
  });

  AttnArgs args{qf.data<float>(), qf.strides()[1], qf.strides()[0], kt.data(), vp.data(), out.data<float>(),
                lq, lk, k_blocks, heads, d, dv, scale, causal};
  int64_t q_blocks = (lq + kQBlock - 1) / kQBlock;
  parallel_for(b * heads * q_blocks, 1, [&](int64_t t0, int64_t t1) {
    Scratch sc(d, dv);
    for (int64_t t = t0; t < t1; ++t) {
      int64_t qb = t % q_blocks, h = (t / q_blocks) % heads, bi = t / (q_blocks * heads);
      attend_block(args, bi, h, qb * kQBlock, sc);
    }
  });
  return from_f32(out, q.dtype());
}

}  // namespace diffuse::cpu
