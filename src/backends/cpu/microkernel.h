// A register-blocked f32 micro-GEMM for the small products inside our own
// kernels (attention score/value blocks): C[m,n] (+)= A[m,k] B[k,n], all
// row-major with leading dimensions. 6x16 tiles keep 12 accumulators in ymm
// registers (the BLIS layout for AVX2); tails use 8-wide and scalar columns.
#pragma once
#include "backends/cpu/simd.h"

namespace diffuse::cpu {

namespace micro {

using simd::v8f;

template <int MR, int NV>  // MR rows x (NV*8) columns
DIFFUSE_INLINE void tile(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                         bool accumulate) {
  // The pragmas make GCC unroll before scalar replacement, so acc stays in registers.
  v8f acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? simd::load(c + r * ldc + v * 8) : simd::splat(0.0f);
  for (int64_t kk = 0; kk < k; ++kk) {
    v8f bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = simd::load(b + kk * ldb + v * 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      v8f av = simd::splat(a[r * lda + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) simd::store(c + r * ldc + v * 8, acc[r][v]);
}

template <int MR>
DIFFUSE_INLINE void tile_scalar(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                                int64_t ldc, int64_t cols, bool accumulate) {
  for (int r = 0; r < MR; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      float s = accumulate ? c[r * ldc + j] : 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) s += a[r * lda + kk] * b[kk * ldb + j];
      c[r * ldc + j] = s;
    }
}

template <int MR>
DIFFUSE_INLINE void row_panel(int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                              int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) tile<MR, 2>(k, a, lda, b + j, ldb, c + j, ldc, accumulate);
  if (j + 8 <= n) {
    tile<MR, 1>(k, a, lda, b + j, ldb, c + j, ldc, accumulate);
    j += 8;
  }
  if (j < n) tile_scalar<MR>(k, a, lda, b + j, ldb, c + j, ldc, n - j, accumulate);
}

}  // namespace micro

DIFFUSE_INLINE void gemm_small(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                               int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) micro::row_panel<6>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
  switch (m - i) {
    case 5: micro::row_panel<5>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 4: micro::row_panel<4>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 3: micro::row_panel<3>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 2: micro::row_panel<2>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 1: micro::row_panel<1>(n, k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    default: break;
  }
}

}  // namespace diffuse::cpu
