// Ports of PyTorch's CPU normal sampler (aten/src/ATen/native/cpu/
// DistributionTemplates.h normal_fill / normal_fill_16, core/DistributionsHelper.h
// normal_distribution) and of its CUDA one (aten/src/ATen/native/cuda/
// DistributionTemplates.h distribution_nullary_kernel + curand_normal4). See rng.h.
#include "sampling/rng.h"

#include <cmath>
#include <cstring>


namespace diffuse {

Tensor Generator::randn(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  randn_fill(t.data<float>(), t.numel());
  return t;
}

// ---------------------------------------------------------------- CPU (mt19937)

CpuGenerator::CpuGenerator(uint64_t seed) : seed_(seed), engine_(static_cast<uint32_t>(seed)) {}

float CpuGenerator::uniform_float() {
  // transformation::uniform_real: (random() & (2^24 - 1)) * 2^-24.
  const uint32_t r = static_cast<uint32_t>(engine_());
  return static_cast<float>(r & ((1u << 24) - 1)) * (1.0f / 16777216.0f);
}

double CpuGenerator::uniform_double() {
  // random64() = (first 32-bit draw << 32) | second; keep 53 bits.
  const uint64_t hi = static_cast<uint32_t>(engine_());
  const uint64_t lo = static_cast<uint32_t>(engine_());
  const uint64_t r = (hi << 32) | lo;
  return static_cast<double>(r & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

double CpuGenerator::normal_double() {
  if (next_double_normal_) {
    const double v = *next_double_normal_;
    next_double_normal_.reset();
    return v;
  }
  const double u1 = uniform_double();
  const double u2 = uniform_double();
  const double r = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * M_PI * u1;
  next_double_normal_ = r * std::sin(theta);
  return r * std::cos(theta);
}

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// torch's AVX2 normal_fill_16 evaluates log and sincos with avx_mathfun.h
// (Pommier's port of the Cephes logf / sinf / cosf polynomials), compiled with
// FMA contraction. These are scalar re-derivations of those polynomials; the
// std::fma calls sit exactly where GCC fuses the vector multiply-adds, which
// makes the results bit-identical to torch's.
float cephes_logf(float x) {
  x = std::max(x, bits_float(0x00800000u));  // flush denormals to the smallest normal
  const int32_t exponent = static_cast<int32_t>(float_bits(x) >> 23) - 0x7f;
  x = bits_float((float_bits(x) & ~0x7f800000u) | float_bits(0.5f));  // mantissa in [0.5, 1)
  float e = static_cast<float>(exponent) + 1.0f;
  if (x < 0.707106781186547524f) {  // x in [0.5, sqrt(1/2)): use 2x - 1 and e - 1
    e -= 1.0f;
    x = (x - 1.0f) + x;
  } else {
    x = x - 1.0f;
  }
  const float z = x * x;
  float y = std::fma(7.0376836292E-2f, x, -1.1514610310E-1f);
  y = std::fma(y, x, 1.1676998740E-1f);
  y = std::fma(y, x, -1.2420140846E-1f);
  y = std::fma(y, x, 1.4249322787E-1f);
  y = std::fma(y, x, -1.6668057665E-1f);
  y = std::fma(y, x, 2.0000714765E-1f);
  y = std::fma(y, x, -2.4999993993E-1f);
  y = std::fma(y, x, 3.3333331174E-1f);
  y = y * x;
  y = std::fma(y, z, e * -2.12194440e-4f);
  y = std::fma(-z, 0.5f, y);
  return std::fma(e, 0.693359375f, x + y);
}

void cephes_sincosf(float in, float* sin_out, float* cos_out) {
  uint32_t sign_sin = float_bits(in) & 0x80000000u;
  float x = std::fabs(in);
  int32_t j = static_cast<int32_t>(x * 1.27323954473516f);  // octant: x * 4/pi, truncated
  j = (j + 1) & ~1;
  const float y = static_cast<float>(j);
  sign_sin ^= static_cast<uint32_t>(j & 4) << 29;
  const uint32_t sign_cos = static_cast<uint32_t>(~(j - 2) & 4) << 29;
  const bool sin_poly_is_sin = (j & 2) == 0;
  // Extended-precision x - j * pi/4.
  x = std::fma(y, -0.78515625f, x);
  x = std::fma(y, -2.4187564849853515625e-4f, x);
  x = std::fma(y, -3.77489497744594108e-8f, x);
  const float z = x * x;
  float pc = std::fma(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  pc = std::fma(pc, z, 4.166664568298827E-002f);
  pc = pc * z;
  pc = std::fma(pc, z, -(z * 0.5f));
  pc = pc + 1.0f;  // cos polynomial on [-pi/4, pi/4]
  float ps = std::fma(-1.9515295891E-4f, z, 8.3321608736E-3f);
  ps = std::fma(ps, z, -1.6666654611E-1f);
  ps = ps * z;
  ps = std::fma(ps, x, x);  // sin polynomial on [-pi/4, pi/4]
  const float s = sin_poly_is_sin ? ps : pc;
  const float c = sin_poly_is_sin ? pc : ps;
  *sin_out = bits_float(float_bits(s) ^ sign_sin);
  *cos_out = bits_float(float_bits(c) ^ sign_cos);
}

// normal_fill_16: 8 Box-Muller pairs from 16 uniforms, (u[j], u[j+8]) -> (cos, sin).
void normal_fill_16(float* data) {
  const float two_pi = static_cast<float>(2.0 * M_PI);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_logf(u1));
    float s, c;
    cephes_sincosf(two_pi * u2, &s, &c);
    data[j] = radius * c;
    data[j + 8] = radius * s;
  }
}

}  // namespace

void CpuGenerator::randn_fill(float* out, int64_t n) {
  if (n < 16) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(normal_double());
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = uniform_float();
  for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
  if (n % 16 != 0) {
    // torch recomputes the last 16 values from 16 fresh uniforms.
    float* tail = out + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform_float();
    normal_fill_16(tail);
  }
}

// ---------------------------------------------------------------- CUDA (Philox)

Philox4 philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
    key0 += kW0;
    key1 += kW1;
  }
  return ctr;
}

namespace {

// curand's _curand_box_muller on the device: u in (0, 1], v in (0, 2*pi);
// nvcc fuses v's multiply-add. __sincosf is the SFU approximation: the
// argument is scaled by 1/(2*pi) with a round-toward-zero multiply (emulated
// exactly here), then MUFU.SIN/COS evaluate sin/cos(2*pi*t) by table
// interpolation, which we can only approximate with the exact function: values
// differ from the GPU's by up to ~4e-7 * |radius| (see rng.h).
float mul_round_toward_zero(float a, float b) {
  const double exact = static_cast<double>(a) * static_cast<double>(b);  // 24x24 bits: exact in double
  float r = static_cast<float>(exact);
  if (std::fabs(static_cast<double>(r)) > std::fabs(exact)) r = std::nextafter(r, 0.0f);
  return r;
}

void box_muller(uint32_t x, uint32_t y, float* out_sin, float* out_cos) {
  constexpr float kInv2Pow32 = 2.3283064e-10f;                   // CURAND_2POW32_INV
  constexpr float kInv2Pow32x2Pi = 2.3283064e-10f * 6.2831855f;  // CURAND_2POW32_INV_2PI
  const float u = static_cast<float>(x) * kInv2Pow32 + kInv2Pow32 / 2.0f;
  const float v = std::fma(static_cast<float>(y), kInv2Pow32x2Pi, kInv2Pow32x2Pi / 2.0f);
  const float s = std::sqrt(-2.0f * std::log(u));
  const double turns = mul_round_toward_zero(v, 0.15915494f);
  *out_sin = s * static_cast<float>(std::sin(2.0 * M_PI * turns));
  *out_cos = s * static_cast<float>(std::cos(2.0 * M_PI * turns));
}

}  // namespace

CudaGenerator::CudaGenerator(uint64_t seed, CudaGridProperties grid) : seed_(seed), grid_(grid) {
  DIFFUSE_CHECK_ARG(grid.sm_count > 0 && grid.max_threads_per_sm >= 256,
                    "[CudaGenerator] invalid grid properties");
}

void CudaGenerator::randn_fill(float* out, int64_t n) {
  if (n <= 0) return;
  // calc_execution_policy: 256-thread blocks, at most sm_count * (max_threads / 256) blocks.
  constexpr uint64_t kBlock = 256, kUnroll = 4;
  const uint64_t numel = static_cast<uint64_t>(n);
  const uint64_t blocks_per_sm = static_cast<uint64_t>(grid_.max_threads_per_sm) / kBlock;
  const uint64_t grid = std::min(static_cast<uint64_t>(grid_.sm_count) * blocks_per_sm, (numel + kBlock - 1) / kBlock);
  const uint64_t stride = kBlock * grid;  // threads in flight
  const uint64_t iterations = (numel - 1) / (stride * kUnroll) + 1;
  const uint32_t key0 = static_cast<uint32_t>(seed_), key1 = static_cast<uint32_t>(seed_ >> 32);
  const uint64_t base = offset_ / 4;  // curand_init(seed, idx, offset): skipahead(offset) -> counter += offset / 4

  for (uint64_t idx = 0; idx < stride; ++idx) {
    for (uint64_t it = 0; it < iterations; ++it) {
      // Counter = (offset / 4 + it) in the low 64 bits, subsequence = thread index in the high 64 bits.
      const uint64_t c = base + it;
      const Philox4 r = philox4x32_10(
          Philox4{{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), static_cast<uint32_t>(idx),
                   static_cast<uint32_t>(idx >> 32)}},
          key0, key1);
      float vals[4];
      box_muller(r.v[0], r.v[1], &vals[0], &vals[1]);
      box_muller(r.v[2], r.v[3], &vals[2], &vals[3]);
      for (uint64_t ii = 0; ii < kUnroll; ++ii) {
        const uint64_t li = idx + stride * (it * kUnroll + ii);
        if (li < numel) out[li] = vals[ii];
      }
    }
  }
  // philox_cuda_state(counter_offset): the offset advances by 4 per loop iteration.
  offset_ += iterations * 4;
}

std::unique_ptr<Generator> make_generator(RngKind kind, uint64_t seed) {
  switch (kind) {
    case RngKind::kCpu: return std::make_unique<CpuGenerator>(seed);
    case RngKind::kCuda: return std::make_unique<CudaGenerator>(seed);
  }
  throw_error(ErrorCode::kInvalidArgument, "[make_generator] unknown RngKind");
}

}  // namespace diffuse
