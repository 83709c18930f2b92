// ControlNets inside the step's CUDA graph (pipeline/controlnet_step.h): a run
// with two units whose windows change the acting set mid-run (so several
// graphs are captured) gives the latents of the eager run
// (DIFFUSE_CUDA_GRAPH=0), a second graph run gives them again, no tensor
// crosses to the host in the loop, and the units change the result.
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "core/ops.h"
#include "core/runtime_options.h"
#include "pipeline/pipeline.h"
#include "test_controlnet_model.h"
#include "test_util.h"

namespace diffuse {
namespace {

using namespace testing;

image::Rgb pattern(int w, int h) {
  image::Rgb im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.px[static_cast<size_t>((y * w + x) * 3 + c)] = static_cast<uint8_t>(((x / 8 + y / 8) % 2) * 200 + c * 20);
  return im;
}

TEST(ControlNetCudaGraph, GraphRunsMatchEagerRuns) {
  DIFFUSE_REQUIRE_FIXTURES();
  if (!device_available(Device::kCUDA)) GTEST_SKIP() << "no CUDA device";
  for (std::string fam : {"sd1", "sdxl"}) {
    SCOPED_TRACE(fam);
    LoadOptions opts;
    opts.device = Device::kCUDA;
    opts.precision = Precision::kFp16;
    std::unique_ptr<Pipeline> pipe = Pipeline::load(fixtures_dir() + "/" + fam + "/model", opts);
    GenerationParams p;
    p.prompt = "a red fox";
    p.negative_prompt = "blurry";
    p.width = 128;
    p.height = 64;
    p.steps = 8;
    p.sampler = "euler";
    p.seed = 5;
    const GenerationResult plain = pipe->generate(p);
    ControlNetUnit a;
    a.path = make_controlnet_folder(fam, 3);
    a.image = pattern(96, 48);
    a.weight = 0.8f;
    ControlNetUnit b = a;
    b.path = make_controlnet_folder(fam, 4);
    b.weight = 0.6f;
    b.guidance_start = 0.25;  // acts in steps 2-5 of 8: three acting sets over the run
    b.guidance_end = 0.75;
    b.control_mode = ControlMode::kPrompt;
    p.controlnets = {a, b};
    const GenerationResult graph = pipe->generate(p);
    const GenerationResult again = pipe->generate(p);
    const RuntimeOptions saved = runtime_options();
    RuntimeOptions eager_options = saved;
    eager_options.cuda_graph = false;
    set_runtime_options(eager_options);
    const GenerationResult eager = pipe->generate(p);
    set_runtime_options(saved);
    EXPECT_EQ(graph.timings.loop_transfers, 0u);
    const Diff d = compare(graph.final_latents.to_f32_vector(), eager.final_latents.to_f32_vector());
    EXPECT_LT(d.max_rel, 1e-5) << d.str();
    const Diff d2 = compare(again.final_latents.to_f32_vector(), graph.final_latents.to_f32_vector());
    EXPECT_LT(d2.max_rel, 1e-5) << d2.str();
    const Diff moved = compare(graph.final_latents.to_f32_vector(), plain.final_latents.to_f32_vector());
    EXPECT_GT(moved.max_rel, 1e-3) << "the units changed nothing: " << moved.str();
  }
}

}  // namespace
}  // namespace diffuse
