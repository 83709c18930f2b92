// LoRA through Pipeline::generate as the server drives it: concurrent calls
// with different sets (each gets exactly its set's result), the merged-set
// cache (same files and weights: no merge; a rewritten file: merged again),
// warnings and errors of a call, and a failed call leaving the base weights
// as they were.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "core/ops.h"
#include "io/checkpoint.h"
#include "pipeline/edit_runs.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;

std::string lora(const std::string& name) { return testing::goldens_dir() + "/sd1/lora/" + name; }

GenerationParams params(std::vector<LoraRef> loras) {
  GenerationParams p;
  p.prompt = "a red fox sitting in a snowy forest, detailed oil painting";
  p.negative_prompt = "blurry, low quality";
  p.width = p.height = 128;
  p.steps = 4;
  p.sampler = "euler";
  p.seed = 5500;
  p.loras = std::move(loras);
  return p;
}

std::vector<float> latents(Pipeline& pipe, const GenerationParams& p) {
  return pipe.generate(p).final_latents.to_f32_vector();
}

TEST(LoraPipeline, ConcurrentCallsWithDifferentSets) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto pipe = Pipeline::load(fixtures_dir() + "/sd1/model");
  const std::vector<std::vector<LoraRef>> sets = {
      {}, {{lora("lora_kohya.safetensors"), 1.0f, 1.0f}}, {{lora("lora_peft.safetensors"), 0.6f, 0.2f}},
      {{lora("lora_kohya.safetensors"), 0.5f, 1.0f}, {lora("lora_peft.safetensors"), 0.5f, 0.0f}}};
  std::vector<std::vector<float>> want;
  for (const auto& s : sets) want.push_back(latents(*pipe, params(s)));
  for (size_t i = 1; i < want.size(); ++i) EXPECT_NE(want[i], want[0]) << "set " << i << " changes nothing";

  constexpr int kThreads = 4, kRuns = 3;
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < kRuns; ++i) {
          const size_t s = static_cast<size_t>(t + i) % sets.size();
          if (latents(*pipe, params(sets[s])) != want[s]) failures[t] += "set " + std::to_string(s) + " differs; ";
        }
      } catch (const std::exception& e) {
        failures[t] += e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
  // And the base comes back exactly.
  EXPECT_EQ(latents(*pipe, params({})), want[0]);
}

// The merged set is kept while its files' times and sizes and the weights stay
// the same: a file rewritten with other values but the same size and time is
// not read again (the cache), one with a new time is.
TEST(LoraPipeline, SameSetIsNotMergedAgain) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto pipe = Pipeline::load(fixtures_dir() + "/sd1/model");
  const std::string path = testing::temp_dir() + "/cached.safetensors";
  TensorMap t = load_safetensors(lora("lora_kohya.safetensors")).tensors;
  save_safetensors(path, t);
  const GenerationParams p = params({{path, 1.0f, 1.0f}});
  const std::vector<float> first = latents(*pipe, p);

  const auto when = fs::last_write_time(path);
  for (auto& [name, tensor] : t)
    if (name.find("lora_up") != std::string::npos) tensor = scale(tensor.to(DType::kF32), 2.0f).to(tensor.dtype());
  save_safetensors(path, t);
  fs::last_write_time(path, when);
  EXPECT_EQ(latents(*pipe, p), first) << "same file time and size: the merged set is reused";

  fs::last_write_time(path, when + std::chrono::seconds(10));
  EXPECT_NE(latents(*pipe, p), first) << "a new file time: merged again from the new values";
}

TEST(LoraPipeline, WarningsErrorsAndInfotext) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto pipe = Pipeline::load(fixtures_dir() + "/sd1/model");
  const std::vector<float> base = latents(*pipe, params({}));

  // Unmatched modules: generated, with a warning naming them.
  const std::string dir = testing::temp_dir();
  TensorMap t = load_safetensors(lora("lora_kohya.safetensors")).tensors;
  t["lora_unet_not_a_module.lora_down.weight"] = Tensor::zeros({4, 8}, DType::kF32);
  t["lora_unet_not_a_module.lora_up.weight"] = Tensor::zeros({8, 4}, DType::kF32);
  save_safetensors(dir + "/extra.safetensors", t);
  GenerationResult r = pipe->generate(params({{dir + "/extra.safetensors", 1.0f, 1.0f}}));
  bool warned = false;
  for (const std::string& w : r.warnings) warned |= w.find("lora_unet_not_a_module") != std::string::npos;
  EXPECT_TRUE(warned) << "no warning names the unmatched module";
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_NE(r.images[0].parameters.find("Lora hashes: \"extra: "), std::string::npos) << r.images[0].parameters;

  // Errors: another family's file, a missing file, a weight that is not a number.
  const std::string sdxl = testing::goldens_dir() + "/sdxl/lora/lora_kohya.safetensors";
  try {
    pipe->generate(params({{sdxl, 1.0f, 1.0f}}));
    ADD_FAILURE() << "an SDXL LoRA was applied to SD1";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("sdxl"), std::string::npos) << e.what();
  }
  try {
    pipe->generate(params({{dir + "/nothing_here.safetensors", 1.0f, 1.0f}}));
    ADD_FAILURE() << "a missing file was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("nothing_here.safetensors"), std::string::npos) << e.what();
  }
  try {
    pipe->generate(params({{lora("lora_kohya.safetensors"), std::nanf(""), 1.0f}}));
    ADD_FAILURE() << "a NaN weight was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  // The failures changed nothing: the previous set (extra) is still merged, and no LoRA gives the base.
  EXPECT_EQ(pipe->generate(params({{dir + "/extra.safetensors", 1.0f, 1.0f}})).final_latents.to_f32_vector(),
            r.final_latents.to_f32_vector());
  EXPECT_EQ(latents(*pipe, params({})), base);
  const GenerationResult plain = pipe->generate(params({}));
  EXPECT_EQ(plain.images[0].parameters.find("Lora hashes"), std::string::npos);
  EXPECT_TRUE(plain.warnings.empty());
}

}  // namespace
}  // namespace diffuse
