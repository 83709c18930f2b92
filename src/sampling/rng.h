// Torch-compatible random number generators: the same seed gives the same
// initial latents (and ancestral-sampler noise) as diffusers on PyTorch.
//
// Both streams are computed on the CPU, whatever device runs the model:
//  - CpuGenerator: torch.Generator('cpu').manual_seed(seed) + torch.randn.
//    mt19937; tensors with >= 16 elements take torch's vectorised Box-Muller
//    path (normal_fill: 24-bit uniform floats, transformed in blocks of 16, the
//    tail block recomputed from 16 fresh uniforms); smaller tensors take the
//    scalar path (53-bit double uniforms, Box-Muller in double, with the second
//    value of each pair cached in the generator for the next draw).
//  - CudaGenerator: torch.Generator('cuda').manual_seed(seed) + torch.randn on
//    a CUDA device (what A1111 calls the "GPU" RNG source): curand
//    Philox4x32-10, one subsequence per CUDA thread, curand_normal4 per loop
//    iteration of torch's distribution_nullary_kernel (unroll 4). The thread
//    grid depends on the GPU only for tensors larger than
//    sm_count * (max_threads_per_sm / 256) * 256 elements (270,336 on an H100),
//    so CudaGenerator takes those two device properties (H100 by default).
//    Accuracy: the Philox bits, the offsets and the Box-Muller radius match
//    the GPU; its __sincosf, however, is a hardware table interpolation
//    (MUFU.SIN/COS) that we evaluate exactly instead, so values differ from
//    torch's by up to ~4e-7 * |radius| (<= 2e-6 absolute), not bit for bit.
//    CpuGenerator IS bit-exact (including the avx_mathfun polynomials torch
//    uses on AVX2 machines).
//
// randn_tensor semantics (diffusers.utils.torch_utils.randn_tensor): with ONE
// generator, diffusers draws the whole [N, 4, h, w] batch in a single
// torch.randn call, so image i of a batch is NOT the image a batch of 1 with
// the same seed would give. Call randn() once with the full batch shape to
// match it. (With a list of generators diffusers draws each image separately
// with shape [1, ...]; emulate that with one generator per image.)
//
// Generators are per request: never share one between concurrent generations.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <random>

#include "core/tensor.h"

namespace diffuse {

// Which noise stream: torch's CPU mt19937 generator (diffusers' default) or
// torch's CUDA Philox stream (AUTOMATIC1111's "GPU" seed), computed on the CPU.
enum class RngKind { kCpu, kCuda };

class Generator {
 public:
  virtual ~Generator() = default;
  // One torch.randn(shape) call: a fresh f32 CPU tensor, contiguous.
  Tensor randn(const Shape& shape);
  // The same draw written to `out` (n values).
  virtual void randn_fill(float* out, int64_t n) = 0;
  virtual uint64_t seed() const = 0;
};

// torch.Generator('cpu').manual_seed(seed); torch.randn(..., generator=g).
class CpuGenerator : public Generator {
 public:
  explicit CpuGenerator(uint64_t seed);
  void randn_fill(float* out, int64_t n) override;
  uint64_t seed() const override { return seed_; }

 private:
  float uniform_float();    // at::uniform_real_distribution<float>(0, 1): 24 random bits
  double uniform_double();  // at::uniform_real_distribution<double>(0, 1): 53 random bits
  double normal_double();   // at::normal_distribution<double>(0, 1) with the generator's cache

  uint64_t seed_;
  std::mt19937 engine_;  // torch's at::mt19937 is the standard engine seeded with (uint32_t)seed
  std::optional<double> next_double_normal_;
};

// Device properties that shape torch's CUDA launch grid (see the header note).
struct CudaGridProperties {
  int sm_count = 132;               // NVIDIA H100 SXM
  int max_threads_per_sm = 2048;
};

// torch.Generator('cuda').manual_seed(seed); torch.randn(..., device='cuda', generator=g),
// computed on the CPU.
class CudaGenerator : public Generator {
 public:
  explicit CudaGenerator(uint64_t seed, CudaGridProperties grid = {});
  void randn_fill(float* out, int64_t n) override;
  uint64_t seed() const override { return seed_; }
  uint64_t philox_offset() const { return offset_; }  // torch's counter offset (multiple of 4)

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  CudaGridProperties grid_;
};

std::unique_ptr<Generator> make_generator(RngKind kind, uint64_t seed);

// Philox4x32-10 block function (Salmon et al. 2011, as in curand): exposed for tests.
struct Philox4 {
  uint32_t v[4];
};
Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1);

}  // namespace diffuse
