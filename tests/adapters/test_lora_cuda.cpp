// LoRA on the GPU (ctest label "cuda"): the merge runs the same ops on the
// device. Checked against the CPU path (itself checked against fp64 and
// diffusers in test_lora*.cpp) and the diffusers goldens, and SDXL's
// switching time is measured (issue 20: at most 1 s on the GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "adapters/lora.h"
#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "pipeline/edit_runs.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::fixtures_dir;

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testing::read_file(path)); }

// The goldens' kohya runs on CUDA: fp32 within the CPU bounds, fp16 images
// within a mean of 2/255 of diffusers' f32 images (issue 20).
TEST(LoraCuda, GoldensFp32AndFp16) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const std::string fam : {"sd1", "sd2", "sdxl"}) {
    const testing::EditFamily& f = testing::edit_family(fam);
    for (Precision prec : {Precision::kFp32, Precision::kFp16}) {
      LoadOptions o;
      o.device = Device::kCUDA;
      o.precision = prec;
      auto pipe = Pipeline::load(fixtures_dir() + "/" + fam + "/model", o);
      for (const auto& run : f.cases["lora"]["runs"]) {
        if (!run.contains("lora_file")) continue;
        const std::string name = run["name"].get<std::string>();
        SCOPED_TRACE(fam + " " + name + " " + precision_name(prec));
        GenerationParams p;
        p.prompt = run["prompt"].get<std::string>();
        p.negative_prompt = run["negative_prompt"].get<std::string>();
        p.cfg_scale = run["guidance_scale"].get<float>();
        p.steps = run["num_inference_steps"].get<int>();
        p.width = run["width"].get<int>();
        p.height = run["height"].get<int>();
        p.sampler = "euler";
        p.seed = run["generator"]["seed"].get<int64_t>();
        const float w = run["adapter_weight"].get<float>();
        p.loras.push_back({f.dir + "/" + run["lora_file"].get<std::string>(), w, w});
        const GenerationResult r = pipe->generate(p);
        const testing::Diff d = testing::compare(
            r.final_latents.to_f32_vector(), f.tensors.at(run["final_latents"].get<std::string>()).to(DType::kF32).to_f32_vector());
        if (prec == Precision::kFp32) {
          EXPECT_LE(d.max_rel, 1e-3) << d.str();
        }
        double mean = -1;
        const std::string png = run.contains("image_png") ? f.dir + "/" + run["image_png"].get<std::string>() : "";
        if (!png.empty() && std::filesystem::exists(png)) {
          const image::Rgb want = testing::load_rgb(png);
          mean = testing::pixel_diff(r.images.at(0).rgb, want.px).mean;
          EXPECT_LE(mean, prec == Precision::kFp32 ? 1.0 : 2.0) << "image mean abs diff (1/255)";
        }
        std::printf("  cuda %s %s/lora/%s: latents %s, image mean %.3f/255\n", precision_name(prec), fam.c_str(),
                    name.c_str(), d.str().c_str(), mean);
      }
    }
  }
}

// Every algorithm merged on the GPU gives the CPU's weights.
TEST(LoraCuda, AlgorithmsMatchTheCpu) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = fixtures_dir() + "/sd1/model";
  const UNetConfig cfg = UNetConfig::from_json(read_json(dir + "/unet/config.json"));
  const TensorMap weights = load_safetensors(dir + "/unet/diffusion_pytorch_model.safetensors").tensors;
  UNet cpu(cfg, weights, DType::kF32, Device::kCPU), gpu(cfg, weights, DType::kF32, Device::kCUDA);

  std::mt19937 gen(7);
  auto rnd = [&](const Shape& s) {
    std::normal_distribution<float> d(0.0f, 0.1f);
    std::vector<float> v(static_cast<size_t>(shape_numel(s)));
    for (float& x : v) x = d(gen);
    return Tensor::from_vector(v, s);
  };
  const std::string a = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_";
  TensorMap t;
  t[a + "attn1_to_q.hada_w1_a"] = rnd({32, 4}), t[a + "attn1_to_q.hada_w1_b"] = rnd({4, 32});
  t[a + "attn1_to_q.hada_w2_a"] = rnd({32, 4}), t[a + "attn1_to_q.hada_w2_b"] = rnd({4, 32});
  const std::string c1 = "lora_unet_down_blocks_0_resnets_0_conv1";
  t[c1 + ".hada_t1"] = rnd({3, 3, 3, 3}), t[c1 + ".hada_w1_a"] = rnd({3, 32}), t[c1 + ".hada_w1_b"] = rnd({3, 32});
  t[c1 + ".hada_t2"] = rnd({3, 3, 3, 3}), t[c1 + ".hada_w2_a"] = rnd({3, 32}), t[c1 + ".hada_w2_b"] = rnd({3, 32});
  const std::string c2 = "lora_unet_down_blocks_0_resnets_0_conv2";
  t[c2 + ".lokr_w1_a"] = rnd({4, 2}), t[c2 + ".lokr_w1_b"] = rnd({2, 4}), t[c2 + ".lokr_w2"] = rnd({8, 8, 3, 3});
  const std::string c3 = "lora_unet_mid_block_resnets_0_conv1";
  t[c3 + ".lora_down.weight"] = rnd({4, 64, 1, 1}), t[c3 + ".lora_mid.weight"] = rnd({4, 4, 3, 3});
  t[c3 + ".lora_up.weight"] = rnd({64, 4, 1, 1});
  t[a + "attn1_to_k.lora_down.weight"] = rnd({4, 32}), t[a + "attn1_to_k.lora_up.weight"] = rnd({32, 4});
  t[a + "attn1_to_k.dora_scale"] = rnd({1, 32});
  t[a + "ff_net_0_proj.lokr_w1"] = rnd({2, 2}), t[a + "ff_net_0_proj.lokr_w2_a"] = rnd({128, 2});
  t[a + "ff_net_0_proj.lokr_w2_b"] = rnd({2, 16});
  const std::string path = testing::temp_dir() + "/mix.safetensors";
  save_safetensors(path, t);

  LoraModel mc, mg;
  mc.family = mg.family = Family::kSD1;
  mc.unet = &cpu;
  mg.unet = &gpu;
  LoraMerger on_cpu, on_gpu;
  on_cpu.apply(mc, {{path, 0.7f, 1.0f}});
  on_gpu.apply(mg, {{path, 0.7f, 1.0f}});
  EXPECT_EQ(on_gpu.patched_weights(), 6u);
  for (const auto& [name, shape] : cpu.weights().specs()) {
    const testing::Diff d = testing::compare(gpu.weights().get(name).to(Device::kCPU).contiguous().to_f32_vector(),
                                             cpu.weights().get(name).contiguous().to_f32_vector());
    EXPECT_LE(d.max_rel, 1e-6) << name << ": " << d.str();
  }
  // Back to the base: the same values as loaded.
  on_gpu.apply(mg, {});
  UNet fresh(cfg, weights, DType::kF32, Device::kCUDA);
  for (const auto& [name, shape] : fresh.weights().specs())
    EXPECT_EQ(gpu.weights().get(name).to(Device::kCPU).contiguous().to_f32_vector(),
              fresh.weights().get(name).to(Device::kCPU).contiguous().to_f32_vector())
        << name;
}

// Full-size SDXL (random weights, fp16): the time a generate() spends on
// changing the LoRA set, with a rank-32 LoRA on every attention linear of the
// UNet and every linear of both text encoders.
TEST(LoraCuda, SdxlSwitchTime) {
  LoadOptions o;
  o.device = Device::kCUDA;
  auto pipe = Pipeline::random("sdxl", o);
  const UNetConfig cfg = UNetConfig::sdxl_base();
  const std::string dir = testing::temp_dir();
  auto write = [&](const std::string& name, float value) {
    TensorMap t;
    auto add = [&](const std::string& prefix, const std::string& weight, const Shape& s) {
      std::string m = weight.substr(0, weight.size() - 7);
      std::replace(m.begin(), m.end(), '.', '_');
      Shape down = s, up = {s[0], 32};
      down[0] = 32;
      t[prefix + m + ".lora_down.weight"] = Tensor::full(down, value, DType::kF16);
      t[prefix + m + ".lora_up.weight"] = Tensor::full(up, value, DType::kF16);
      t[prefix + m + ".alpha"] = Tensor::full({}, 16.0f, DType::kF16);
    };
    auto linear = [](const std::string& n, const Shape& s) {
      return s.size() == 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
    };
    for (const auto& [n, s] : UNet::expected_tensors(cfg))
      if (linear(n, s) && n.find("attentions") != std::string::npos) add("lora_unet_", n, s);
    for (const auto& [n, s] : ClipTextModel::expected_tensors(ClipTextConfig::sdxl_te1()))
      if (linear(n, s) && n.find("layers") != std::string::npos) add("lora_te1_", n, s);
    for (const auto& [n, s] : ClipTextModel::expected_tensors(ClipTextConfig::sdxl_te2()))
      if (linear(n, s) && n.find("layers") != std::string::npos) add("lora_te2_", n, s);
    save_safetensors(dir + "/" + name, t);
    return std::make_pair(dir + "/" + name, t.size() / 3);
  };
  const auto [a, modules] = write("a.safetensors", 0.001f);
  const auto [b, modules_b] = write("b.safetensors", -0.001f);
  GenerationParams p;
  p.prompt = "a photo";
  p.width = p.height = 512;
  p.steps = 1;
  p.seed = 1;
  auto timed = [&](std::vector<LoraRef> loras) {
    p.loras = std::move(loras);
    const auto t0 = std::chrono::steady_clock::now();
    const GenerationResult r = pipe->generate(p);
    EXPECT_TRUE(r.warnings.empty()) << r.warnings.at(0);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  timed({});
  const double base = timed({});
  const double first = timed({{a, 1.0f, 1.0f}});
  const double cached = timed({{a, 1.0f, 1.0f}});
  const double to_b = timed({{b, 1.0f, 1.0f}});
  const double reweight = timed({{b, 0.5f, 0.5f}});
  const double off = timed({});
  std::printf("  sdxl %zu LoRA modules (rank 32): generate without %.3f s; first set %+.3f s; same set %+.3f s; "
              "other file %+.3f s; other weight %+.3f s; back to none %+.3f s (each vs without)\n",
              modules, base, first - base, cached - base, to_b - base, reweight - base, off - base);
  EXPECT_LT(cached - base, 0.1) << "the same set must not be merged again";
}

}  // namespace
}  // namespace diffuse
