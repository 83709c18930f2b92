// Base and refiner taking turns on the device (ctest label "cuda";
// docs/refiner.md "Memory"). The process caps its GPU memory at 11 GiB
// (DIFFUSE_CUDA_MEMORY_LIMIT_MB, set before the first allocation): the
// published SDXL base (6.6 GiB of fp16 weights, f32 VAE) and refiner (5.8 GiB)
// fit one at a time but not together. Skips when no CUDA device is usable.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backends/cuda/cuda_api.h"
#include "core/ops.h"
#include "refiner_runs.h"

namespace diffuse {
namespace {

using namespace testing;

constexpr int kLimitMb = 11 * 1024;
// Read once, at the allocator's first device allocation: before any test runs.
const bool kLimitSet = setenv("DIFFUSE_CUDA_MEMORY_LIMIT_MB", std::to_string(kLimitMb).c_str(), 1) == 0;

class CudaRefinerPark : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(kLimitSet);
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

LoadOptions cuda_fp16() {
  LoadOptions o;
  o.device = Device::kCUDA;
  o.precision = Precision::kFp16;
  return o;
}

// Parking the tiny fixture base gives its device memory back, and the next
// call (which brings it back) makes the same image, bit for bit.
TEST_F(CudaRefinerPark, ParkedWeightsComeBackExactly) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::shared_ptr<Pipeline> base(Pipeline::load(sdxl_base_dir(), cuda_fp16()));
  std::shared_ptr<Pipeline> refiner(Pipeline::load(refiner_dir(), cuda_fp16()));
  GenerationParams p = handoff_base_params();
  p.denoising_end = 1.0;
  p.output_latents = false;
  p.refiner.model = refiner;
  const GenerationResult before = base->generate(p);
  ASSERT_EQ(before.images.size(), 1u);
  EXPECT_EQ(before.timings.park_s, 0.0);  // both fit: nobody moved

  Backend& backend = backend_for(Device::kCUDA);
  backend.synchronize();
  const uint64_t in_use = backend.memory_stats().in_use_bytes;
  const size_t freed = base->park_weights();
  EXPECT_TRUE(base->weights_parked());
  EXPECT_GT(freed, 0u);
  EXPECT_LE(backend.memory_stats().in_use_bytes + freed, in_use) << "the weights' device memory was not given back";
  EXPECT_EQ(base->park_weights(), 0u);  // already parked

  const GenerationResult after = base->generate(p);
  EXPECT_FALSE(base->weights_parked());
  ASSERT_EQ(after.images.size(), 1u);
  EXPECT_EQ(after.images[0].rgb, before.images[0].rgb);
}

// The published architectures under the cap: the refiner cannot load beside
// the base, so they take turns; the call says so, stays under the cap, and a
// second call (turns again, the other way) makes the same image.
TEST_F(CudaRefinerPark, FullSizeBaseAndRefinerTakeTurnsUnderTheCap) {
  std::shared_ptr<Pipeline> base(Pipeline::random("sdxl", cuda_fp16()));
  GenerationParams p;
  p.prompt = "a lighthouse at dusk";
  p.width = p.height = 512;
  p.steps = 5;
  p.seed = 7;
  std::shared_ptr<Pipeline> refiner;
  try {
    refiner.reset(Pipeline::random("sdxl-refiner", cuda_fp16()).release());
    FAIL() << "the refiner fit beside the base under " << kLimitMb << " MiB: the cap did not apply";
  } catch (const Error& e) {
    ASSERT_EQ(e.code(), ErrorCode::kOutOfMemory) << e.what();
  }
  EXPECT_GT(base->park_weights(), size_t{6} << 30);
  refiner.reset(Pipeline::random("sdxl-refiner", cuda_fp16()).release());
  p.refiner.model = refiner;
  p.refiner.switch_at = 0.6;

  Backend& backend = backend_for(Device::kCUDA);
  backend.reset_peak_memory_stats();
  const GenerationResult a = base->generate(p);
  ASSERT_EQ(a.images.size(), 1u);
  EXPECT_GT(a.timings.park_s, 0.0);
  bool told = false;
  for (const std::string& w : a.warnings) told = told || w.find("moved to host memory") != std::string::npos;
  EXPECT_TRUE(told) << "no warning says the models took turns";
  const auto stats = backend.memory_stats();
  EXPECT_LE(stats.peak_reserved_bytes, size_t(kLimitMb) << 20);
  EXPECT_TRUE(refiner->weights_parked() != base->weights_parked());  // exactly one holds the device
  std::printf("  take turns: %.2f s of copies, peak in use %.2f GiB, reserved %.2f GiB (cap %.0f GiB)\n",
              a.timings.park_s, stats.peak_in_use_bytes / 1073741824.0, stats.peak_reserved_bytes / 1073741824.0,
              kLimitMb / 1024.0);

  const GenerationResult b = base->generate(p);
  ASSERT_EQ(b.images.size(), 1u);
  const PixelDiff d = pixel_diff(b.images[0].rgb, a.images[0].rgb);
  EXPECT_LE(d.max, 1.0) << "the second call, after the models swapped back, made another image";
}

}  // namespace
}  // namespace diffuse
