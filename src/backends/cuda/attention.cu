// Fused multi-head attention with online softmax, after FlashAttention-2
// (Dao, 2023): a block owns 64 query rows of one (batch, head), walks the keys
// in tiles of 64, and keeps the running max / sum / output in registers, so
// the Lq x Lk score matrix never reaches device memory.
//
// f16/bf16 use the tensor cores through mma.sync.m16n8k16 (f32 accumulate).
// The fragment layouts of that instruction (PTX ISA, "Matrix Fragments for
// mma.m16n8k16") let the S = Q K^T accumulators be reused directly as the A
// operand of O += P V, as in FlashAttention-2. The head dim is zero-padded
// in shared memory to a multiple of 16 (DP), so any head dim <= 512 works;
// 40 runs as 48, 80 as 80, 160 as 160; value heads wider than 128 (the VAE's
// 512) are split over blocks that each recompute the scores.
//
// f32 (kept exact: no TF32) and larger head dims use a scalar kernel: one
// warp per query row, key/value tiles of 32 shared by the 8 warps of a block.
#include <cstdlib>
#include <mutex>

#include "backends/cuda/cuda_types.cuh"
#include "core/runtime_options.h"

namespace diffuse::cuda_kernels {

namespace {

constexpr int kBM = 64;  // query rows per block (4 warps x 16)
constexpr int kBN = 64;  // keys per tile
constexpr int kPad = 8;  // halves of padding per shared row (bank spread)

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t ld32(const void* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Copies rows [row0, row0+kBN) x cols [0, DC) of a strided [L, width] matrix
// into shared memory (row stride DC + kPad), zero-filling past `len` / `width`.
template <class T, int DC>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t sl, int row0, int len, int width, bool vec) {
  constexpr int kChunks = DC / 8;
  for (int idx = threadIdx.x; idx < kBN * kChunks; idx += blockDim.x) {
    int r = idx / kChunks, c = (idx % kChunks) * 8;
    int gr = row0 + r;
    alignas(16) T buf[8];
    if (gr < len && vec && c + 8 <= width) {
      *reinterpret_cast<uint4*>(buf) = *reinterpret_cast<const uint4*>(src + gr * sl + c);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) buf[e] = (gr < len && c + e < width) ? src[gr * sl + c + e] : from_f<T>(0.0f);
    }
    *reinterpret_cast<uint4*>(dst + r * (DC + kPad) + c) = *reinterpret_cast<uint4*>(buf);
  }
}

// cp.async (sm_80+): 16 bytes global -> shared without a register round trip;
// src_bytes 0 zero-fills the destination (rows past the sequence end).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// load_tile's asynchronous twin for 16-byte aligned rows whose width is a
// multiple of 8 (a chunk of 8 is then wholly inside or wholly outside).
template <class T, int DC>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, int64_t sl, int row0, int len, int width) {
  constexpr int kChunks = DC / 8;
  for (int idx = threadIdx.x; idx < kBN * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const int gr = row0 + r;
    const bool in = gr < len && c < width;
    cp_async16(dst + r * (DC + kPad) + c, in ? src + gr * sl + c : src, in ? 16 : 0);
  }
}

// Four 8x8 b16 matrices, transposed, from the rows each lane addresses (16-byte aligned).
template <class T>
__device__ __forceinline__ void ldmatrix_x4_trans(const T* p, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3) {
  uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// DP: the q/k head dim padded to a multiple of 16. DV: the width of the value
// columns this block produces (a multiple of 8); blockIdx.z picks which DV-wide
// slice of the value head dim, so wide value heads (the VAE's 512) split
// across blocks and keep the output accumulators in registers.
//
// pipelined (vec, and shared memory for two K/V tiles): tile kt+1 streams in
// through cp.async while tile kt is computed (double buffering, as in
// FlashAttention-2's implementation); otherwise each tile is loaded, then used.
template <class T, int DP, int DV>
__device__ __forceinline__ void flash_tc_body(const AttentionArgs& a, float scale_log2, bool vec, bool pipelined) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);
  T* ks = qs + kBM * (DP + kPad);                            // K tiles [2][kBN][DP + kPad]
  T* vs = ks + (pipelined ? 2 : 1) * kBN * (DP + kPad);      // V tiles, row-major [2][kBN][DV + kPad]
  const int dv0 = blockIdx.z * DV;
  const int dv_width = min(DV, a.dv - dv0);

  const int bh = blockIdx.y;
  const int b = bh / a.heads, h = bh % a.heads;
  const int q0 = blockIdx.x * kBM;
  const T* qg = static_cast<const T*>(a.q) + b * a.q_sb + static_cast<int64_t>(h) * a.d;
  const T* kg = static_cast<const T*>(a.k) + b * a.k_sb + static_cast<int64_t>(h) * a.d;
  const T* vg = static_cast<const T*>(a.v) + b * a.v_sb + static_cast<int64_t>(h) * a.dv + dv0;

  load_tile<T, DP>(qs, qg, a.q_sl, q0, a.lq, a.d, vec);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int r0 = warp * 16;
  const int qi0 = q0 + r0 + g, qi1 = qi0 + 8;  // the two query rows this thread holds

  float o[DV / 8][4];
#pragma unroll
  for (int i = 0; i < DV / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  int tiles = (a.lk + kBN - 1) / kBN;
  if (a.causal) tiles = min(tiles, (min(q0 + kBM, a.lq) - 1) / kBN + 1);

  if (pipelined && tiles > 0) {
    load_tile_async<T, DP>(ks, kg, a.k_sl, 0, a.lk, a.d);
    load_tile_async<T, DV>(vs, vg, a.v_sl, 0, a.lk, dv_width);
    cp_async_commit();
  }
  for (int kt = 0; kt < tiles; ++kt) {
    const int k0 = kt * kBN;
    T* kcur = ks;
    T* vcur = vs;
    if (pipelined) {
      const int buf = kt & 1;
      kcur = ks + buf * kBN * (DP + kPad);
      vcur = vs + buf * kBN * (DV + kPad);
      if (kt + 1 < tiles) {  // the other buffer was released by the barrier that ended tile kt-1
        load_tile_async<T, DP>(ks + (buf ^ 1) * kBN * (DP + kPad), kg, a.k_sl, k0 + kBN, a.lk, a.d);
        load_tile_async<T, DV>(vs + (buf ^ 1) * kBN * (DV + kPad), vg, a.v_sl, k0 + kBN, a.lk, dv_width);
        cp_async_commit();
        cp_async_wait<1>();  // tile kt has landed (only tile kt+1 may still be in flight)
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
    } else {
      __syncthreads();  // previous tile fully consumed
      load_tile<T, DP>(ks, kg, a.k_sl, k0, a.lk, a.d, vec);
      load_tile<T, DV>(vs, vg, a.v_sl, k0, a.lk, dv_width, vec);
      __syncthreads();
    }

    float s[kBN / 8][4];
#pragma unroll
    for (int nb = 0; nb < kBN / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk) {
      const T* qa = qs + (r0 + g) * (DP + kPad) + kk * 16 + 2 * t;
      uint32_t af[4] = {ld32(qa), ld32(qa + 8 * (DP + kPad)), ld32(qa + 8), ld32(qa + 8 * (DP + kPad) + 8)};
#pragma unroll
      for (int nb = 0; nb < kBN / 8; ++nb) {
        const T* kb = kcur + (nb * 8 + g) * (DP + kPad) + kk * 16 + 2 * t;
        mma16816<T>(s[nb], af, ld32(kb), ld32(kb + 8));
      }
    }

    // Scale into the log2 domain, mask, and take the row maxima.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < kBN / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        int kj = k0 + nb * 8 + 2 * t + e;
        bool bad = kj >= a.lk;
        s[nb][e] = (bad || (a.causal && kj > qi0)) ? -INFINITY : s[nb][e] * scale_log2;
        s[nb][2 + e] = (bad || (a.causal && kj > qi1)) ? -INFINITY : s[nb][2 + e] * scale_log2;
        mx0 = fmaxf(mx0, s[nb][e]);
        mx1 = fmaxf(mx1, s[nb][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    float base0 = mn0 == -INFINITY ? 0.0f : mn0, base1 = mn1 == -INFINITY ? 0.0f : mn1;
    float alpha0 = exp2f(m0 - base0), alpha1 = exp2f(m1 - base1);
    m0 = mn0;
    m1 = mn1;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < kBN / 8; ++nb) {
      s[nb][0] = exp2f(s[nb][0] - base0);
      s[nb][1] = exp2f(s[nb][1] - base0);
      s[nb][2] = exp2f(s[nb][2] - base1);
      s[nb][3] = exp2f(s[nb][3] - base1);
      sum0 += s[nb][0] + s[nb][1];
      sum1 += s[nb][2] + s[nb][3];
    }
    l0 = l0 * alpha0 + sum0;  // per-thread partial sums; the 4 threads of a row add up at the end
    l1 = l1 * alpha1 + sum1;
#pragma unroll
    for (int i = 0; i < DV / 8; ++i) {
      o[i][0] *= alpha0;
      o[i][1] *= alpha0;
      o[i][2] *= alpha1;
      o[i][3] *= alpha1;
    }

    // O += P V: the S accumulators of key blocks 2j, 2j+1 form the A fragment of keys [16j, 16j+16).
#pragma unroll
    for (int j = 0; j < kBN / 16; ++j) {
      uint32_t pf[4] = {pack2<T>(s[2 * j][0], s[2 * j][1]), pack2<T>(s[2 * j][2], s[2 * j][3]),
                        pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]), pack2<T>(s[2 * j + 1][2], s[2 * j + 1][3])};
      // B fragments of V (keys x dims, row-major in shared memory) via ldmatrix.trans:
      // lanes 0-15 address keys 16j.. of dims [8nd, 8nd+8), lanes 16-31 the next 8 dims.
#pragma unroll
      for (int nd = 0; nd < DV / 8; nd += 2) {
        uint32_t r0, r1, r2, r3;
        int col = nd * 8 + ((lane >= 16 && nd + 1 < DV / 8) ? 8 : 0);
        ldmatrix_x4_trans(vcur + (j * 16 + (lane & 15)) * (DV + kPad) + col, r0, r1, r2, r3);
        mma16816<T>(o[nd], pf, r0, r1);
        if (nd + 1 < DV / 8) mma16816<T>(o[nd + 1], pf, r2, r3);
      }
    }
    if (pipelined) __syncthreads();  // tile kt's buffer is free for tile kt+2
  }

#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  const int64_t out_row = static_cast<int64_t>(a.heads) * a.dv;
  T* og = static_cast<T*>(a.out) + (static_cast<int64_t>(b) * a.lq) * out_row + static_cast<int64_t>(h) * a.dv +
          dv0;
#pragma unroll
  for (int nd = 0; nd < DV / 8; ++nd) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      int d = nd * 8 + 2 * t + e;
      if (d < dv_width) {
        if (qi0 < a.lq) og[qi0 * out_row + d] = from_f<T>(o[nd][e] * inv0);
        if (qi1 < a.lq) og[qi1 * out_row + d] = from_f<T>(o[nd][2 + e] * inv1);
      }
    }
  }
}

// Small head dims cap registers so 5 blocks (20 warps) stay resident per SM:
// uncapped, the d=64 build used 104 registers and fell to 4 blocks, which
// measured slower. Larger buckets keep the compiler's own choice (a cap made
// it spill at d=80).
template <class T, int DP, int DV>
__global__ void __launch_bounds__(128, 5) flash_tc_small(AttentionArgs a, float scale_log2, bool vec, bool pipelined) {
  flash_tc_body<T, DP, DV>(a, scale_log2, vec, pipelined);
}
template <class T, int DP, int DV>
__global__ void __launch_bounds__(128) flash_tc_kernel(AttentionArgs a, float scale_log2, bool vec, bool pipelined) {
  flash_tc_body<T, DP, DV>(a, scale_log2, vec, pipelined);
}

constexpr int kScalarRows = 8;   // warps (query rows) per block
constexpr int kScalarKeys = 32;  // keys per tile (one per lane)
constexpr int kScalarMaxChunks = 16;  // head dim <= 512

template <class T>
__global__ void __launch_bounds__(256) flash_scalar_kernel(AttentionArgs a, float scale) {
  extern __shared__ float sm[];
  const int dpad = a.d + 1, dvp = a.dv;
  float* ks = sm;                          // [32][d+1]  (+1: lanes read different rows)
  float* vs = ks + kScalarKeys * dpad;     // [32][dv]
  float* qs = vs + kScalarKeys * dvp;      // [8][d]
  const int bh = blockIdx.y;
  const int b = bh / a.heads, h = bh % a.heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int qrow0 = blockIdx.x * kScalarRows;
  const int qi = qrow0 + warp;
  const T* qg = static_cast<const T*>(a.q) + b * a.q_sb + static_cast<int64_t>(h) * a.d;
  const T* kg = static_cast<const T*>(a.k) + b * a.k_sb + static_cast<int64_t>(h) * a.d;
  const T* vg = static_cast<const T*>(a.v) + b * a.v_sb + static_cast<int64_t>(h) * a.dv;
  for (int d = lane; d < a.d; d += 32) qs[warp * a.d + d] = qi < a.lq ? to_f(qg[qi * a.q_sl + d]) : 0.0f;

  float o[kScalarMaxChunks];
#pragma unroll
  for (int i = 0; i < kScalarMaxChunks; ++i) o[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  int tiles = (a.lk + kScalarKeys - 1) / kScalarKeys;
  if (a.causal) tiles = min(tiles, (min(qrow0 + kScalarRows, a.lq) - 1) / kScalarKeys + 1);
  for (int kt = 0; kt < tiles; ++kt) {
    const int k0 = kt * kScalarKeys;
    __syncthreads();
    for (int idx = threadIdx.x; idx < kScalarKeys * a.d; idx += blockDim.x) {
      int r = idx / a.d, c = idx % a.d;
      ks[r * dpad + c] = k0 + r < a.lk ? to_f(kg[(k0 + r) * a.k_sl + c]) : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kScalarKeys * a.dv; idx += blockDim.x) {
      int r = idx / a.dv, c = idx % a.dv;
      vs[r * dvp + c] = k0 + r < a.lk ? to_f(vg[(k0 + r) * a.v_sl + c]) : 0.0f;
    }
    __syncthreads();
    int kj = k0 + lane;
    float sc = 0.0f;
    for (int d = 0; d < a.d; ++d) sc += qs[warp * a.d + d] * ks[lane * dpad + d];
    sc = (kj >= a.lk || (a.causal && kj > qi)) ? -INFINITY : sc * scale;
    float mx = sc;
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float mn = fmaxf(m, mx);
    float base = mn == -INFINITY ? 0.0f : mn;
    float alpha = expf(m - base);
    float p = expf(sc - base);
    float ps = p;
    for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    l = l * alpha + ps;
    m = mn;
#pragma unroll
    for (int i = 0; i < kScalarMaxChunks; ++i) o[i] *= alpha;
    for (int j = 0; j < kScalarKeys; ++j) {
      float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < kScalarMaxChunks; ++i) {
        int d = lane + 32 * i;
        if (d < a.dv) o[i] += pj * vs[j * dvp + d];
      }
    }
  }
  if (qi >= a.lq) return;
  float inv = l > 0.0f ? 1.0f / l : 0.0f;
  const int64_t out_row = static_cast<int64_t>(a.heads) * a.dv;
  T* og = static_cast<T*>(a.out) + (static_cast<int64_t>(b) * a.lq + qi) * out_row + static_cast<int64_t>(h) * a.dv;
#pragma unroll
  for (int i = 0; i < kScalarMaxChunks; ++i) {
    int d = lane + 32 * i;
    if (d < a.dv) og[d] = from_f<T>(o[i] * inv);
  }
}

template <class T, int DP, int DV>
bool launch_tc(const AttentionArgs& a, int max_smem, cudaStream_t s) {
  const size_t single = (static_cast<size_t>(kBM + kBN) * (DP + kPad) + static_cast<size_t>(kBN) * (DV + kPad)) * sizeof(T);
  const size_t twice = single + (static_cast<size_t>(kBN) * (DP + kPad) + static_cast<size_t>(kBN) * (DV + kPad)) * sizeof(T);
  if (single > static_cast<size_t>(max_smem)) return false;
  const size_t reserve = twice <= static_cast<size_t>(max_smem) ? twice : single;
  void (*kernel)(AttentionArgs, float, bool, bool);
  if constexpr (DP <= 64)
    kernel = flash_tc_small<T, DP, DV>;
  else
    kernel = flash_tc_kernel<T, DP, DV>;
  static std::once_flag once;
  std::call_once(once, [&] {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(reserve));
  });
  auto aligned = [](const void* p, int64_t s1, int64_t s2, int d) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0 && s1 % 8 == 0 && s2 % 8 == 0 && d % 8 == 0;
  };
  // Value slices start at multiples of DV (a multiple of 8), so dv % 8 == 0 keeps them 16-byte aligned.
  bool vec = aligned(a.q, a.q_sb, a.q_sl, a.d) && aligned(a.k, a.k_sb, a.k_sl, a.d) &&
             aligned(a.v, a.v_sb, a.v_sl, a.dv);
  dim3 grid((a.lq + kBM - 1) / kBM, a.batch * a.heads, (a.dv + DV - 1) / DV);
  float scale_log2 = a.scale * 1.4426950408889634f;
  // Double buffering needs the cp.async path (aligned rows, widths of whole 16-byte chunks) and the room.
  static const bool single_buffer = runtime_options().cuda_attn_single_buffer;  // for A/B runs
  const bool pipelined = vec && reserve == twice && !single_buffer;
  kernel<<<grid, 128, pipelined ? twice : single, s>>>(a, scale_log2, vec, pipelined);
  return true;
}

// Buckets of the q/k head dim; the value slice matches the head dim (40 keeps
// 40 columns of output instead of 48) except for the widest bucket.
template <class T>
bool launch_tc_dispatch(const AttentionArgs& a, int max_smem, cudaStream_t s) {
  if (a.d <= 32) return launch_tc<T, 32, 32>(a, max_smem, s);
  if (a.d <= 48) return a.dv <= 40 ? launch_tc<T, 48, 40>(a, max_smem, s) : launch_tc<T, 48, 48>(a, max_smem, s);
  if (a.d <= 64) return launch_tc<T, 64, 64>(a, max_smem, s);
  if (a.d <= 80) return launch_tc<T, 80, 80>(a, max_smem, s);
  if (a.d <= 96) return launch_tc<T, 96, 96>(a, max_smem, s);
  if (a.d <= 128) return launch_tc<T, 128, 128>(a, max_smem, s);
  if (a.d <= 160) return launch_tc<T, 160, 160>(a, max_smem, s);
  if (a.d <= 256) return launch_tc<T, 256, 128>(a, max_smem, s);
  if (a.d <= 512) return launch_tc<T, 512, 128>(a, max_smem, s);
  return false;
}

template <class T>
bool launch_scalar(const AttentionArgs& a, int max_smem, cudaStream_t s) {
  if (a.dv > 32 * kScalarMaxChunks) return false;
  size_t smem = (static_cast<size_t>(kScalarKeys) * (a.d + 1) + static_cast<size_t>(kScalarKeys) * a.dv +
                 static_cast<size_t>(kScalarRows) * a.d) *
                sizeof(float);
  if (smem > static_cast<size_t>(max_smem)) return false;
  if (smem > 48 * 1024) {
    static std::once_flag once;
    std::call_once(once, [&] {
      cudaFuncSetAttribute(flash_scalar_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
    });
  }
  dim3 grid((a.lq + kScalarRows - 1) / kScalarRows, a.batch * a.heads);
  flash_scalar_kernel<T><<<grid, 32 * kScalarRows, smem, s>>>(a, a.scale);
  return true;
}

}  // namespace

bool attention(const AttentionArgs& a, int max_smem_optin, cudaStream_t s) {
  if (a.lq == 0 || a.batch == 0 || a.heads == 0 || a.dv == 0) return true;
  bool ok = false;
  switch (a.dtype) {
    case DType::kF16:
      ok = launch_tc_dispatch<__half>(a, max_smem_optin, s) || launch_scalar<__half>(a, max_smem_optin, s);
      break;
    case DType::kBF16:
      ok = launch_tc_dispatch<__nv_bfloat16>(a, max_smem_optin, s) ||
           launch_scalar<__nv_bfloat16>(a, max_smem_optin, s);
      break;
    default: ok = launch_scalar<float>(a, max_smem_optin, s); break;
  }
  return ok;
}

}  // namespace diffuse::cuda_kernels
