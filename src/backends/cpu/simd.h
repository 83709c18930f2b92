// 8-wide float vectors (GCC vector extensions) and the vector math the CPU
// kernels share. Functions here are always_inline so that they compile to
// AVX2+FMA inside DIFFUSE_CPU_CLONES kernels and to SSE pairs in the default clone.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#define DIFFUSE_INLINE inline __attribute__((always_inline))

// Every function here is always_inline, so the 32-byte-vector argument ABI
// GCC warns about (-Wpsabi) never applies; the warning stays off for the
// kernel files that include this (internal) header, where the calls are.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace diffuse::cpu::simd {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

DIFFUSE_INLINE v8f load(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
DIFFUSE_INLINE void store(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
// A shuffle of lane 0, so that GCC emits one vbroadcastss (an element-wise
// initialiser becomes a chain of vinsertps in target_clones functions).
DIFFUSE_INLINE v8f splat(float x) {
  v8f v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
DIFFUSE_INLINE v8f vmax(v8f a, v8f b) { return a > b ? a : b; }
DIFFUSE_INLINE v8f vmin(v8f a, v8f b) { return a < b ? a : b; }
DIFFUSE_INLINE float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
DIFFUSE_INLINE float hmax(v8f v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// exp(x) to ~2 ulp: 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], Cephes
// expf polynomial. Below -87.3 the result flushes to 0 (so exp(-inf) = 0).
DIFFUSE_INLINE v8f exp(v8f x) {
  const v8f kLog2e = splat(1.44269504088896341f), kLn2Hi = splat(0.693359375f), kLn2Lo = splat(-2.12194440e-4f);
  v8f xc = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
  const v8f kMagic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  v8f n = (xc * kLog2e + kMagic) - kMagic;
  v8f r = xc - n * kLn2Hi - n * kLn2Lo;
  v8f p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &e, sizeof scale);
  v8f res = p * scale;
  return x < splat(-87.3f) ? splat(0.0f) : res;
}

// erf(x) = 1 - erfc(|x|) with the Numerical Recipes erfc Chebyshev fit
// (fractional error < 1.2e-7): absolute error ~1e-7, which is what GELU needs.
DIFFUSE_INLINE v8f erf(v8f x) {
  v8f z = x < splat(0.0f) ? -x : x;
  v8f t = splat(1.0f) / (splat(1.0f) + splat(0.5f) * z);
  v8f p = splat(0.17087277f);
  p = p * t + splat(-0.82215223f);
  p = p * t + splat(1.48851587f);
  p = p * t + splat(-1.13520398f);
  p = p * t + splat(0.27886807f);
  p = p * t + splat(-0.18628806f);
  p = p * t + splat(0.09678418f);
  p = p * t + splat(0.37409196f);
  p = p * t + splat(1.00002368f);
  p = p * t + splat(-1.26551223f);
  v8f erfc = t * exp(-z * z + p);
  v8f r = splat(1.0f) - erfc;
  return x < splat(0.0f) ? -r : r;
}

}  // namespace diffuse::cpu::simd
