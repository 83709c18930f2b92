// CLIP text encoders against the transformers goldens (fixtures/<fam>/cases.json
// "text_encoder"): SD1 CLIP-L (quick_gelu), SD2 OpenCLIP-H layout (gelu),
// SDXL CLIP-L + OpenCLIP-bigG with projection.
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "models/clip_text.h"
#include "io/json_util.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::compare;
using testing::fixtures_dir;

// Relative to the reference's max |value| (test_util compare); the README suggests ~1e-5 for fp32.
constexpr double kTol = 1e-5;

void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const auto d = compare(actual.to_f32_vector(), expected.to_f32_vector());
  std::printf("  %-40s %s\n", what.c_str(), d.str().c_str());
  EXPECT_LE(d.max_rel, kTol) << what << ": " << d.str();
}

class ClipGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ClipGolden, MatchesTransformers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const std::string dir = fixtures_dir() + "/" + fam;
  const nlohmann::json cases = read_python_json_file(dir + "/cases.json");
  const Checkpoint golden = load_safetensors(dir + "/tensors.safetensors");
  ASSERT_FALSE(cases["text_encoder"].empty());
  std::vector<Tensor> penultimate;  // hidden_states[-2] of each encoder (SDXL's prompt embeds)
  for (const auto& entry : cases["text_encoder"]) {
    const std::string name = entry["name"];
    if (entry.contains("prompt_embeds")) {  // SDXL: concat(te1.hs[-2], te2.hs[-2]) along channels
      ASSERT_EQ(penultimate.size(), 2u);
      expect_close(concat(penultimate, 2), golden.tensors.at(entry["prompt_embeds"]), "sdxl prompt_embeds");
      continue;
    }
    SCOPED_TRACE(fam + "/" + name);
    const nlohmann::json cfg_json = read_python_json_file(dir + "/model/" + name + "/config.json");
    const bool with_projection =
        cfg_json["architectures"][0].get<std::string>() == "CLIPTextModelWithProjection";
    EXPECT_EQ(with_projection, entry.contains("text_embeds"));
    const ClipTextConfig cfg = ClipTextConfig::from_json(cfg_json, with_projection);
    const Checkpoint weights = load_safetensors(dir + "/model/" + name + "/model.safetensors");
    const ClipTextModel model(cfg, weights.tensors);

    const Tensor ids = golden.tensors.at(entry["input_ids"]);
    ASSERT_EQ(ids.dtype(), DType::kI64);
    const ClipTextModel::Output out = model.forward(ids);

    std::printf("%s/%s (%s, %d layers)\n", fam.c_str(), name.c_str(), cfg.hidden_act.c_str(), cfg.num_hidden_layers);
    expect_close(out.last_hidden_state, golden.tensors.at(entry["last_hidden_state"]), "last_hidden_state");
    const Tensor hs = golden.tensors.at(entry["hidden_states"]);  // [L+1, B, 77, D]
    ASSERT_EQ(out.hidden_states.size(), static_cast<size_t>(hs.dim(0)));
    for (int i = 0; i < hs.dim(0); ++i)
      expect_close(out.hidden_states[i], hs.select(0, i), "hidden_states[" + std::to_string(i) + "]");
    // final_layer_norm on the last hidden state is last_hidden_state (bit for bit).
    EXPECT_EQ(model.final_layer_norm(out.hidden_states.back()).to_f32_vector(),
              out.last_hidden_state.to_f32_vector());
    penultimate.push_back(out.hidden_states[out.hidden_states.size() - 2]);
    if (with_projection) {
      expect_close(out.text_embeds, golden.tensors.at(entry["text_embeds"]), "text_embeds");
    } else {
      expect_close(out.pooled, golden.tensors.at(entry["pooler_output"]), "pooler_output");
      EXPECT_FALSE(out.text_embeds.defined());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ClipGolden, ::testing::Values("sd1", "sd2", "sdxl"));

// "name\t[768, 3072]\tF16" lines with the given prefix, prefix stripped.
std::map<std::string, Shape> read_keys(const std::string& file, const std::string& prefix) {
  return testing::read_key_map(file, prefix);
}

// The published configs declare exactly the tensors of the real checkpoints.
TEST(ClipText, PublishedConfigsMatchDiffusersKeyLists) {
  DIFFUSE_REQUIRE_FIXTURES();
  const struct {
    const char* file;
    const char* folder;
    ClipTextConfig config;
  } cases[] = {{"diffusers_keys_sd15.tsv", "text_encoder/", ClipTextConfig::sd15()},
               {"diffusers_keys_sd21.tsv", "text_encoder/", ClipTextConfig::sd21()},
               {"diffusers_keys_sdxl.tsv", "text_encoder/", ClipTextConfig::sdxl_te1()},
               {"diffusers_keys_sdxl.tsv", "text_encoder_2/", ClipTextConfig::sdxl_te2()}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.file) + " " + c.folder);
    const auto want = read_keys(c.file, c.folder);
    ASSERT_GT(want.size(), 100u);
    std::map<std::string, Shape> have;
    for (auto& [name, shape] : ClipTextModel::expected_tensors(c.config)) have[name] = shape;
    EXPECT_EQ(have, want);
  }
}

ClipTextConfig tiny_config() {
  ClipTextConfig c;
  c.vocab_size = 100;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.max_position_embeddings = 10;
  c.projection_dim = 6;
  c.with_projection = true;
  return c;
}

TEST(ClipText, RandomWeightsShapesAndPooling) {
  const ClipTextConfig c = tiny_config();
  const ClipTextModel model(c, ClipTextModel::random_weights(c, 7, DType::kF32));
  // Row 0 has its largest id at position 3, row 1 at 1 (first of two maxima).
  const Tensor ids = Tensor::from_ids({1, 2, 5, 99, 0, 0, 4, 99, 3, 99, 99, 0}, {2, 6});
  const ClipTextModel::Output out = model.forward(ids);
  EXPECT_EQ(out.last_hidden_state.shape(), (Shape{2, 6, 8}));
  EXPECT_EQ(out.hidden_states.size(), 3u);
  EXPECT_EQ(out.text_embeds.shape(), (Shape{2, 6}));
  const auto last = out.last_hidden_state.to_f32_vector();
  const auto pooled = out.pooled.to_f32_vector();
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ(pooled[d], last[(0 * 6 + 3) * 8 + d]);
    EXPECT_EQ(pooled[8 + d], last[(1 * 6 + 1) * 8 + d]);
  }
  // Causal: position 0 cannot see later tokens, so changing them leaves it unchanged.
  const Tensor ids2 = Tensor::from_ids({1, 7, 7, 7, 7, 7, 4, 99, 3, 99, 99, 0}, {2, 6});
  const auto last2 = model.forward(ids2).last_hidden_state.to_f32_vector();
  for (int d = 0; d < 8; ++d) EXPECT_EQ(last[d], last2[d]);
  EXPECT_NE(last[8], last2[8]);
}

TEST(ClipText, ReportsMissingAndMisshapenWeights) {
  const ClipTextConfig c = tiny_config();
  TensorMap w = ClipTextModel::random_weights(c, 1, DType::kF32);
  w.erase("text_model.encoder.layers.1.mlp.fc2.bias");
  w["text_projection.weight"] = Tensor::zeros({8, 8}, DType::kF32);
  try {
    ClipTextModel model(c, w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);  // models/weights.h: one code for weights that do not fit, every model
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing 'text_model.encoder.layers.1.mlp.fc2.bias' (8)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'text_projection.weight' has shape (8,8), expected (6,8)"), std::string::npos) << msg;
  }
  ClipTextConfig bad = c;
  bad.hidden_act = "relu";
  EXPECT_THROW(bad.validate(), Error);
}

TEST(ClipText, RejectsTooLongInput) {
  const ClipTextConfig c = tiny_config();
  const ClipTextModel model(c, ClipTextModel::random_weights(c, 3, DType::kF32));
  EXPECT_THROW(model.forward(Tensor::from_ids(std::vector<int64_t>(11, 1), {1, 11})), Error);
}

}  // namespace
}  // namespace diffuse
