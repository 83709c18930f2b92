// An LCM-distilled UNet (time_cond_proj_dim) on the GPU (ctest label "cuda"):
// the fixture SD1 UNet with a seeded cond_proj, its guidance embedding as
// timestep_cond, in CUDA fp32 and fp16 against the CPU f32 result. Bounds: the
// CPU UNet tests' own (fp16 5e-3, observed 1.3e-3 on the plain fixture UNet).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "io/checkpoint.h"
#include "models/unet.h"
#include "test_util.h"

namespace diffuse {
namespace {

#define REQUIRE_CUDA() \
  if (!device_available(Device::kCUDA)) GTEST_SKIP() << "no CUDA device"

TEST(LcmUNetCuda, FollowsTheCpu) {
  REQUIRE_CUDA();
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = testing::fixtures_dir() + "/sd1/model/unet";
  nlohmann::json j = nlohmann::json::parse(testing::read_file(dir + "/config.json"));
  j["time_cond_proj_dim"] = 256;
  const UNetConfig c = UNetConfig::from_json(j);
  TensorMap w = load_safetensors(dir + "/diffusion_pytorch_model.safetensors").tensors;
  for (auto& [k, t] : w) t = t.to(DType::kF32);
  const int64_t c0 = c.block_out_channels[0];
  w["time_embedding.cond_proj.weight"] =
      Tensor::from_vector(testing::noise(static_cast<size_t>(c0 * 256), 11, 0.05f), {c0, 256});
  const Tensor x = Tensor::from_vector(testing::noise(2 * 4 * 16 * 16, 5, 1.0f), {2, 4, 16, 16});
  const Tensor ctx = Tensor::from_vector(testing::noise(2 * 77 * 16, 6, 1.0f), {2, 77, 16});
  const Tensor t = Tensor::from_vector({759.0f, 259.0f}, {2});
  const Tensor cond = guidance_scale_embedding({7.0f, 7.0f}, 256);
  const std::vector<float> want = UNet(c, w).forward(x, t, ctx, {}, {}, nullptr, nullptr, cond).to_f32_vector();
  for (DType dt : {DType::kF32, DType::kF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const UNet gpu(c, w, dt, Device::kCUDA);
    const Tensor out = gpu.forward(x.to(Device::kCUDA), t, ctx.to(Device::kCUDA), {}, {}, nullptr, nullptr, cond);
    EXPECT_EQ(out.device(), Device::kCUDA);
    const testing::Diff d = testing::compare(out.to(Device::kCPU).to_f32_vector(), want);
    std::printf("  LCM UNet on CUDA %s vs CPU f32: %s\n", dtype_name(dt), d.str().c_str());
    EXPECT_LT(d.max_rel, dt == DType::kF16 ? 5e-3 : 1e-4) << d.str();
  }
}

}  // namespace
}  // namespace diffuse
