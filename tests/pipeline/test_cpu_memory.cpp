// The CPU backend's memory-saving paths give the same numbers as the plain ones
// (issue "CPU speed", peak RSS):
// - conv2d in row bands (large activations) equals the one-shot convolution
//   bit for bit, with bias, residual, stride 2 and bands of a single row;
// - bf16 weights widened per call (conv2d and linear) give exactly what the
//   same weights stored as f32 give;
// - both agree with an fp64 reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/host_allocator.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/scratch.h"
#include "core/ops.h"
#include "test_util.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

Tensor random_tensor(const Shape& shape, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = dist(rng);
  return Tensor::from_vector(v, shape);
}

// Restores the default band threshold when a test ends.
struct BandBytes {
  explicit BandBytes(size_t bytes) { cpu::set_conv_band_bytes(bytes); }
  ~BandBytes() { cpu::set_conv_band_bytes(size_t{48} << 20); }
};

// fp64 NCHW convolution with symmetric padding.
std::vector<double> ref_conv(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad, const Tensor& r) {
  const std::vector<float> xv = x.to(DType::kF32).to_f32_vector(), wv = w.to(DType::kF32).to_f32_vector();
  const std::vector<float> bv = b.defined() ? b.to_f32_vector() : std::vector<float>();
  const std::vector<float> rv = r.defined() ? r.to_f32_vector() : std::vector<float>();
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wi = x.dim(3), o = w.dim(0), k = w.dim(2);
  const int64_t ho = (h + 2 * pad - k) / stride + 1, wo = (wi + 2 * pad - k) / stride + 1;
  std::vector<double> out(static_cast<size_t>(n * o * ho * wo));
  for (int64_t in = 0; in < n; ++in)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t y = 0; y < ho; ++y)
        for (int64_t xx = 0; xx < wo; ++xx) {
          double acc = bv.empty() ? 0.0 : bv[oc];
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t ky = 0; ky < k; ++ky)
              for (int64_t kx = 0; kx < k; ++kx) {
                const int64_t iy = y * stride - pad + ky, ix = xx * stride - pad + kx;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wi) continue;
                acc += static_cast<double>(xv[((in * c + ic) * h + iy) * wi + ix]) *
                       wv[((oc * c + ic) * k + ky) * k + kx];
              }
          const size_t idx = static_cast<size_t>(((in * o + oc) * ho + y) * wo + xx);
          out[idx] = acc + (rv.empty() ? 0.0 : rv[idx]);
        }
  return out;
}

double max_rel_to_ref(const std::vector<float>& got, const std::vector<double>& ref) {
  double scale = 0, err = 0;
  for (double v : ref) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::abs(got[i] - ref[i]));
  return err / std::max(scale, 1e-30);
}

struct ConvCase {
  Shape x, w;
  int stride, pad;
  bool bias, residual;
};

class ConvBands : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvBands, BandedEqualsWholeBitForBit) {
  const ConvCase& p = GetParam();
  const Tensor x = random_tensor(p.x, 1), w = random_tensor(p.w, 2, 0.2f);
  const Tensor b = p.bias ? random_tensor({p.w[0]}, 3) : Tensor();
  const int64_t ho = (p.x[2] + 2 * p.pad - p.w[2]) / p.stride + 1, wo = (p.x[3] + 2 * p.pad - p.w[3]) / p.stride + 1;
  const Tensor r = p.residual ? random_tensor({p.x[0], p.w[0], ho, wo}, 4) : Tensor();
  std::vector<float> whole, banded, one_row;
  {
    BandBytes off(std::numeric_limits<size_t>::max());
    whole = conv2d(x, w, b, p.stride, p.pad, r).to_f32_vector();
  }
  {
    BandBytes small(x.nbytes() / 3);  // a few bands
    banded = conv2d(x, w, b, p.stride, p.pad, r).to_f32_vector();
  }
  {
    BandBytes tiny(1);  // one output row per band
    one_row = conv2d(x, w, b, p.stride, p.pad, r).to_f32_vector();
  }
  ASSERT_EQ(whole.size(), banded.size());
  size_t differ = 0, differ_row = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    differ += whole[i] != banded[i];
    differ_row += whole[i] != one_row[i];
  }
  EXPECT_EQ(differ, 0u) << "banded conv differs from the whole one in " << differ << " of " << whole.size();
  EXPECT_EQ(differ_row, 0u) << "one-row bands differ from the whole conv in " << differ_row << " of " << whole.size();
  EXPECT_LT(max_rel_to_ref(banded, ref_conv(x, w, b, p.stride, p.pad, r)), 2e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvBands,
    ::testing::Values(ConvCase{{1, 16, 37, 29}, {24, 16, 3, 3}, 1, 1, true, true},   // blocked weights, residual
                      ConvCase{{2, 8, 20, 17}, {16, 8, 3, 3}, 2, 1, true, false},    // stride 2, batch 2
                      ConvCase{{1, 12, 15, 15}, {5, 12, 3, 3}, 1, 1, false, true},   // channels not multiples of 8
                      ConvCase{{1, 16, 19, 23}, {8, 16, 1, 1}, 1, 0, true, false},   // 1x1
                      ConvCase{{1, 4, 33, 9}, {32, 4, 3, 3}, 1, 1, true, false},     // 4 input channels (conv_in)
                      ConvCase{{1, 8, 10, 7}, {8, 8, 3, 3}, 2, 0, true, false}));    // stride 2 never reads row 9

// bf16 weights computed in f32 are widened per call (whole or in row bands);
// the result must be the one of the same
// values stored as f32 (widening bf16 is exact), bit for bit.
TEST(CpuBf16Weights, ConvEqualsF32CopyOfTheWeights) {
  enum Mode { kWhole, kBands };
  for (Mode mode : {kWhole, kBands}) {
    BandBytes bands(mode == kBands ? 4096 : std::numeric_limits<size_t>::max());
    const Tensor x = random_tensor({2, 16, 18, 18}, 5), w16 = random_tensor({40, 16, 3, 3}, 6, 0.2f).to(DType::kBF16);
    const Tensor b = random_tensor({40}, 7), r = random_tensor({2, 40, 18, 18}, 11);
    const std::vector<float> got = conv2d(x, w16, b, 1, 1, r).to_f32_vector();
    std::vector<float> want;
    {
      BandBytes off(std::numeric_limits<size_t>::max());
      want = conv2d(x, w16.to(DType::kF32), b, 1, 1, r).to_f32_vector();
    }
    ASSERT_EQ(got.size(), want.size());
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
    EXPECT_EQ(differ, 0u) << "mode " << mode << ": " << differ << " of " << got.size() << " differ";
    EXPECT_LT(max_rel_to_ref(got, ref_conv(x, w16, b, 1, 1, r)), 2e-6) << "mode " << mode;
  }
}

TEST(CpuBf16Weights, LinearEqualsF32CopyOfTheWeights) {
  const Tensor x = random_tensor({3, 7, 96}, 8), w16 = random_tensor({80, 96}, 9, 0.2f).to(DType::kBF16);
  const Tensor b = random_tensor({80}, 10);
  const std::vector<float> got = linear(x, w16, b).to_f32_vector();
  const std::vector<float> want = linear(x, w16.to(DType::kF32), b).to_f32_vector();
  ASSERT_EQ(got.size(), want.size());
  size_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
  EXPECT_EQ(differ, 0u);
  // fp64 reference.
  const std::vector<float> xv = x.to_f32_vector(), wv = w16.to(DType::kF32).to_f32_vector(), bv = b.to_f32_vector();
  double err = 0, scale = 0;
  for (int64_t m = 0; m < 21; ++m)
    for (int64_t n = 0; n < 80; ++n) {
      double acc = bv[n];
      for (int64_t k = 0; k < 96; ++k) acc += static_cast<double>(xv[m * 96 + k]) * wv[n * 96 + k];
      err = std::max(err, std::abs(acc - got[m * 80 + n]));
      scale = std::max(scale, std::abs(acc));
    }
  EXPECT_LT(err / scale, 2e-6);
}

// The per-thread scratch grows to the largest request and is then reused.
TEST(CpuScratch, ReusesItsBuffer) {
  void* a = cpu::scratch(cpu::ScratchSlot::kConvSrc, 1 << 20);
  void* b = cpu::scratch(cpu::ScratchSlot::kConvSrc, 1000);
  EXPECT_EQ(a, b);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_GE(cpu::scratch_bytes(), size_t{1} << 20);
}

// CPU tensors of 1 MiB and more come from the host allocator's pool: a freed
// block serves the next request of about its size, and the free blocks it
// keeps stay bounded whatever sizes went through it (unlike a cache keyed by
// exact size). Its counters see every block.
TEST(HostAllocator, ReusesBlocksAndBoundsWhatItKeeps) {
  const DeviceMemoryStats s0 = host_memory_stats();
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({4, 1024, 1024}, DType::kF32);  // 16 MiB
    first = a.raw_data();
    a.data<float>()[0] = 1.0f;
  }
  {
    const DeviceMemoryStats before = host_memory_stats();
    Tensor b = Tensor::empty({4, 1000, 1024}, DType::kF32);  // 2.3% smaller: served by the same block
    EXPECT_EQ(b.raw_data(), first);
    const DeviceMemoryStats after = host_memory_stats();
    EXPECT_EQ(after.malloc_calls, before.malloc_calls);  // no new mapping
    EXPECT_EQ(after.alloc_calls, before.alloc_calls + 1);
    EXPECT_GE(after.in_use_bytes, before.in_use_bytes + (size_t{16} << 20));
  }
  {
    Tensor c = Tensor::empty({2, 1024, 1024}, DType::kF32);  // half the size: not worth the waste
    EXPECT_NE(c.raw_data(), first);
  }
  // Many distinct large sizes, each freed at once: the pool keeps a bounded amount.
  for (int64_t mib = 40; mib < 40 + 16 * 9; mib += 9) {  // 16 sizes, 1.4 GiB in all
    Tensor t = Tensor::empty({mib, 256, 1024}, DType::kF32);
    t.data<float>()[t.numel() - 1] = 0.0f;
  }
  EXPECT_LE(host_cached_bytes(), size_t{384} << 20);
  // Small tensors are not pooled, but counted.
  {
    const size_t in_use = host_memory_stats().in_use_bytes;
    Tensor small = Tensor::empty({100}, DType::kF32);
    EXPECT_EQ(host_memory_stats().in_use_bytes, in_use + 448);  // 400 bytes in 64-byte steps
  }
  const DeviceMemoryStats s1 = host_memory_stats();
  EXPECT_EQ(s1.in_use_bytes, s0.in_use_bytes);  // every block went back
  EXPECT_GE(s1.peak_in_use_bytes, size_t{(40 + 16 * 8) * 256 * 1024} * 4);
  EXPECT_EQ(s1.reserved_bytes - s1.in_use_bytes, host_cached_bytes());
}

}  // namespace
