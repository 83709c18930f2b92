// The SDXL refiner on the CUDA backend (ctest label "cuda"): the v2 refiner
// goldens (base -> refiner hand-off at 0.8 in one call, and the refiner as
// img2img at 0.3) run in fp16, the CUDA default, with both models on the
// device; every image within a mean of 2/255 of the CPU f32 image of the same
// run (the bound); in fp32, the final latents within 1e-3 relative
// of diffusers. Skips when no CUDA device is usable.
#include <cstdio>

#include "backends/cuda/cuda_api.h"
#include "refiner_runs.h"

namespace diffuse {
namespace {

using namespace testing;

std::shared_ptr<Pipeline> on(const std::string& path, Device device, Precision precision) {
  static std::map<std::tuple<std::string, Device, Precision>, std::shared_ptr<Pipeline>> cache;
  auto& p = cache[{path, device, precision}];
  if (!p) {
    LoadOptions o;
    o.device = device;
    o.precision = precision;
    p = std::shared_ptr<Pipeline>(Pipeline::load(path, o));
  }
  return p;
}

// The hand-off in one call (GenerationParams::refiner) on `device`.
GenerationResult handoff(Device device, Precision precision) {
  GenerationParams p = handoff_base_params();
  p.denoising_end = 1.0;
  p.output_latents = false;
  p.refiner.model = on(refiner_dir(), device, precision);
  p.refiner.switch_at = 0.8;
  return on(sdxl_base_dir(), device, precision)->generate(p);
}

GenerationResult img2img(Device device, Precision precision) {
  return on(refiner_dir(), device, precision)->generate(refiner_img2img_params());
}

class CudaRefiner : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaRefiner, Fp16ImagesStayNearCpuF32) {
  DIFFUSE_REQUIRE_FIXTURES();
  struct Run {
    const char* name;
    GenerationResult (*fn)(Device, Precision);
  };
  for (const Run& run : {Run{"hand-off", handoff}, Run{"img2img", img2img}}) {
    SCOPED_TRACE(run.name);
    const GenerationResult cpu = run.fn(Device::kCPU, Precision::kFp32);
    const GenerationResult gpu = run.fn(Device::kCUDA, Precision::kFp16);
    ASSERT_EQ(cpu.images.size(), 1u);
    ASSERT_EQ(gpu.images.size(), 1u);
    EXPECT_EQ(gpu.timings.loop_transfers, 0u);
    const PixelDiff d = pixel_diff(gpu.images[0].rgb, cpu.images[0].rgb);
    std::printf("  %s: CUDA fp16 vs CPU f32: mean %.3f/255, max %.0f/255\n", run.name, d.mean, d.max);
    EXPECT_LE(d.mean, 2.0) << run.name;
  }
}

TEST_F(CudaRefiner, Fp32MatchesDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const EditFamily& f = edit_family("sdxl");
  const GenerationResult h = handoff(Device::kCUDA, Precision::kFp32);
  const Diff dh = compare(h.final_latents.to_f32_vector(),
                          f.tensors.at(refiner_run("base_to_refiner")["refiner_call"]["final_latents"].get<std::string>())
                              .to(DType::kF32)
                              .to_f32_vector());
  EXPECT_LE(dh.max_rel, 1e-3) << dh.str();
  const GenerationResult i = img2img(Device::kCUDA, Precision::kFp32);
  const Diff di = compare(i.final_latents.to_f32_vector(),
                          f.tensors.at(refiner_run("refiner_img2img_s0.3")["final_latents"].get<std::string>())
                              .to(DType::kF32)
                              .to_f32_vector());
  EXPECT_LE(di.max_rel, 1e-3) << di.str();
  std::printf("  CUDA fp32 vs diffusers: hand-off %s, img2img %s\n", dh.str().c_str(), di.str().c_str());
}

}  // namespace
}  // namespace diffuse
