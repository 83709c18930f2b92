// Hostile and broken model files through the real loader (Pipeline::load),
// beyond the container-level cases of tests/io/test_safetensors.cpp and
// test_torch_checkpoint.cpp: a well-formed file whose weights do not fit the
// architecture, and weights holding NaN / Inf (find_non_finite).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/tensor_checks.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;

std::string single_file() { return fixtures_dir() + "/sd1/single_file.safetensors"; }

LoadOptions sd1_options() {
  LoadOptions o;
  o.config_dir = fixtures_dir() + "/sd1/model";
  return o;
}

// The fixture single file with `key` replaced by a zero tensor of `shape`.
std::string with_reshaped(const std::string& key, const Shape& shape) {
  Checkpoint ck = load_safetensors(single_file());
  auto it = ck.tensors.find(key);
  EXPECT_NE(it, ck.tensors.end()) << key;
  it->second = Tensor::zeros(shape, it->second.dtype());
  std::string path = testing::temp_dir() + "/reshaped.safetensors";
  save_safetensors(path, ck.tensors, ck.metadata);
  return path;
}

std::string load_error(const std::string& path) {
  try {
    Pipeline::load(path, sd1_options());
  } catch (const Error& e) {
    // A file that does not fit the architecture: kIo (corrupt file, what the
    // UNet loader reports) or kInvalidArgument (check_weights for the text
    // encoder / VAE); either maps to a clean CLI / HTTP error.
    EXPECT_TRUE(e.code() == ErrorCode::kIo || e.code() == ErrorCode::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "Pipeline::load accepted " << path;
  return "";
}

TEST(HostileModels, FixtureSingleFileLoads) {
  DIFFUSE_REQUIRE_FIXTURES();
  auto p = Pipeline::load(single_file(), sd1_options());
  EXPECT_EQ(p->info().family, Family::kSD1);
}

// One tensor per component, shape changed in different ways (extra column,
// fewer rows, different rank): the error names the tensor and both shapes.
TEST(HostileModels, WrongShapeNamesTensorAndBothShapes) {
  DIFFUSE_REQUIRE_FIXTURES();
  struct Case {
    const char* key;      // checkpoint key (LDM layout)
    const char* part;     // part of the tensor's name the message must contain
    Shape wrong;
    const char* expected; // the architecture's shape
  };
  const Case cases[] = {
      {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight", "attn1.to_out.0.weight",
       {32, 33}, "(32,32)"},
      {"first_stage_model.decoder.mid.block_1.conv1.bias", "conv1.bias", {65}, "(64)"},
      {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", "position_embedding.weight",
       {76, 16}, "(77,16)"},
      {"model.diffusion_model.input_blocks.2.1.norm.bias", "norm.bias", {32, 1}, "(32)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    const std::string msg = load_error(with_reshaped(c.key, c.wrong));
    EXPECT_NE(msg.find(c.part), std::string::npos) << msg;
    EXPECT_NE(msg.find(shape_str(c.wrong)), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
  }
}

TEST(HostileModels, MissingTensorIsNamed) {
  DIFFUSE_REQUIRE_FIXTURES();
  Checkpoint ck = load_safetensors(single_file());
  const std::string key = "first_stage_model.decoder.conv_out.weight";
  ASSERT_EQ(ck.tensors.erase(key), 1u);
  const std::string path = testing::temp_dir() + "/missing.safetensors";
  save_safetensors(path, ck.tensors);
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find("conv_out.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(TensorChecks, FindsNanAndInfInEveryFloatDtype) {
  TensorMap m;
  m["a.clean"] = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  m["b.nan"] = Tensor::from_vector({1, std::nanf(""), 3, std::nanf("")}, {4});
  m["c.inf_f16"] = Tensor::from_vector({1, std::numeric_limits<float>::infinity(), 0, 0}, {4}).to(DType::kF16);
  m["d.ninf_bf16"] = Tensor::from_vector({-std::numeric_limits<float>::infinity(), 2}, {2}).to(DType::kBF16);
  m["e.ids"] = Tensor::from_ids({1, 2, 3}, {3});
  m["f.max_f16"] = Tensor::from_vector({65504.0f, -65504.0f}, {2}).to(DType::kF16);  // finite extremes
  m["g.empty"] = Tensor::zeros({0, 4}, DType::kF32);
  auto bad = find_non_finite(m, 10);
  ASSERT_EQ(bad.size(), 3u);
  EXPECT_EQ(bad[0], "b.nan (2 non-finite of 4)");
  EXPECT_EQ(bad[1], "c.inf_f16 (1 non-finite of 4)");
  EXPECT_EQ(bad[2], "d.ninf_bf16 (1 non-finite of 2)");
}

TEST(TensorChecks, RespectsMaxNamesAndViews) {
  TensorMap m;
  for (int i = 0; i < 5; ++i) m["t" + std::to_string(i)] = Tensor::full({3}, std::nanf(""));
  EXPECT_EQ(find_non_finite(m, 2).size(), 2u);
  EXPECT_TRUE(find_non_finite(m, 0).empty());
  // A non-contiguous view: only the viewed elements count.
  Tensor base = Tensor::from_vector({1, std::nanf(""), 2, 3, std::nanf(""), 4}, {2, 3});
  TensorMap v{{"view", base.transpose(0, 1).slice(0, 0, 1)}};  // column 0: {1, 3}
  EXPECT_TRUE(find_non_finite(v).empty());
  TensorMap w{{"view", base.transpose(0, 1).slice(0, 1, 2)}};  // column 1: {nan, nan}
  ASSERT_EQ(find_non_finite(w).size(), 1u);
  EXPECT_EQ(find_non_finite(w)[0], "view (2 non-finite of 2)");
}

// NaN weights in a real checkpoint: the loader still loads (a warning is the
// right answer: some fine-tunes carry unused NaN tensors), and the check
// names the tensor by its checkpoint key.
TEST(TensorChecks, NanWeightsInFixtureCheckpoint) {
  DIFFUSE_REQUIRE_FIXTURES();
  Checkpoint ck = load_safetensors(single_file());
  EXPECT_TRUE(find_non_finite(ck.tensors).empty());
  const std::string key = "model.diffusion_model.input_blocks.2.1.norm.bias";
  Tensor t = ck.tensors.at(key).to(DType::kF32).clone();
  t.data<float>()[3] = std::numeric_limits<float>::infinity();
  ck.tensors[key] = t.to(DType::kF16);
  auto bad = find_non_finite(ck.tensors);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0], key + " (1 non-finite of 32)");
  const std::string path = testing::temp_dir() + "/inf.safetensors";
  save_safetensors(path, ck.tensors);
  // The loader loads it and reports a warning naming the tensor (the CLI
  // prints info().warnings as "warning: ...").
  std::unique_ptr<Pipeline> p;
  ASSERT_NO_THROW(p = Pipeline::load(path, sd1_options()));
  const std::vector<std::string>& warnings = p->info().warnings;
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(key), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("NaN/Inf"), std::string::npos) << warnings[0];
  // The clean fixture loads without warnings.
  EXPECT_TRUE(Pipeline::load(single_file(), sd1_options())->info().warnings.empty());
}

}  // namespace
}  // namespace diffuse
