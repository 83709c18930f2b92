// Single-file key tables:
//  - name level: every key of the published SD1.5 / SD2.1 / SDXL single files
//    (fixtures/baselines/single_file_keys_*.tsv) maps to exactly the diffusers
//    names and shapes (diffusers_keys_*.tsv), without allocating tensors;
//  - tensor level: split_single_file on fixtures/<fam>/single_file.safetensors
//    gives bit-identical tensors to the diffusers folder, component by component;
//  (detection of families and variants: test_probe.cpp).
#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "models/keymap.h"
#include "models/probe.h"
#include "models/unet.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::fixtures_dir;
using KeyList = std::vector<std::pair<std::string, Shape>>;

KeyList read_tsv(const std::string& file) { return testing::read_key_list(file); }

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testing::read_file(path)); }

struct Published {
  const char* tag;
  Family family;
  UNetConfig unet;
  ClipTextConfig te1;
  std::optional<ClipTextConfig> te2;
};

std::vector<Published> published() {
  return {{"sd15", Family::kSD1, UNetConfig::sd15(), ClipTextConfig::sd15(), std::nullopt},
          {"sd21", Family::kSD2, UNetConfig::sd21(), ClipTextConfig::sd21(), std::nullopt},
          {"sdxl", Family::kSDXL, UNetConfig::sdxl_base(), ClipTextConfig::sdxl_te1(), ClipTextConfig::sdxl_te2()}};
}

TEST(Keymap, PublishedSingleFileKeysMapToDiffusersKeys) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const Published& p : published()) {
    SCOPED_TRACE(p.tag);
    const KeyList single = read_tsv(std::string("single_file_keys_") + p.tag + ".tsv");
    const KeyList diffusers = read_tsv(std::string("diffusers_keys_") + p.tag + ".tsv");
    ASSERT_GT(single.size(), 1000u);
    const SingleFilePlan plan = plan_single_file(single, p.family, p.unet, p.te1, p.te2);
    EXPECT_TRUE(plan.ignored.empty()) << plan.ignored.size() << " ignored, first: " << plan.ignored[0];
    std::map<std::string, Shape> have, want(diffusers.begin(), diffusers.end());
    for (const auto& t : plan.targets) {
      const std::string name = std::string(component_name(t.component)) + "/" + t.name;
      EXPECT_TRUE(have.emplace(name, t.shape).second) << "two keys map to " << name;
    }
    for (const auto& [name, shape] : want) {
      auto it = have.find(name);
      if (it == have.end()) {
        ADD_FAILURE() << "no single-file key maps to " << name;
      } else {
        EXPECT_EQ(it->second, shape) << name;
      }
    }
    for (const auto& [name, shape] : have) EXPECT_TRUE(want.count(name)) << "unexpected target " << name;
  }
}

// SD2 files hold OpenCLIP's 24th layer and logit_scale, SD1 files position_ids,
// all hold DDPM buffers: they are ignored, by name.
TEST(Keymap, ExtraKeysAreIgnoredByName) {
  DIFFUSE_REQUIRE_FIXTURES();
  const KeyList extras21 = {{"cond_stage_model.model.transformer.resblocks.23.ln_1.weight", {1024}},
                            {"cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight", {3072, 1024}},
                            {"cond_stage_model.model.logit_scale", {}},
                            {"cond_stage_model.model.text_projection", {1024, 1024}},
                            {"betas", {1000}},
                            {"alphas_cumprod", {1000}},
                            {"model_ema.decay", {}},
                            {"model_ema.diffusion_modelinput_blocks00weight", {320, 4, 3, 3}}};
  const KeyList extras15 = {{"cond_stage_model.transformer.text_model.embeddings.position_ids", {1, 77}},
                            {"lvlb_weights", {1000}}};
  struct Case {
    const char* tag;
    Family family;
    UNetConfig unet;
    ClipTextConfig te;
    const KeyList& extras;
  };
  for (const Case& c : {Case{"sd21", Family::kSD2, UNetConfig::sd21(), ClipTextConfig::sd21(), extras21},
                        Case{"sd15", Family::kSD1, UNetConfig::sd15(), ClipTextConfig::sd15(), extras15}}) {
    SCOPED_TRACE(c.tag);
    KeyList single = read_tsv(std::string("single_file_keys_") + c.tag + ".tsv");
    single.insert(single.end(), c.extras.begin(), c.extras.end());
    const SingleFilePlan plan = plan_single_file(single, c.family, c.unet, c.te, std::nullopt);
    EXPECT_EQ(plan.ignored.size(), c.extras.size());
    for (const auto& [name, shape] : c.extras)
      EXPECT_NE(std::find(plan.ignored.begin(), plan.ignored.end(), name), plan.ignored.end()) << name;
    EXPECT_EQ(plan.targets.size(), read_tsv(std::string("diffusers_keys_") + c.tag + ".tsv").size());
  }
}

TEST(Keymap, RuleSyntax) {
  // Reversed decoder index, alternatives, 1x1 conv -> linear.
  auto r = apply_key_rules(vae_ldm_rules(), "decoder.up.0.block.2.conv1.weight", 4);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].name, "decoder.up_blocks.3.resnets.2.conv1.weight");
  r = apply_key_rules(vae_ldm_rules(), "encoder.mid.attn_1.proj_out.weight", 4);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].name, "encoder.mid_block.attentions.0.to_out.0.weight");
  EXPECT_EQ(transform_shape({512, 512, 1, 1}, r[0].transform, 0), (Shape{512, 512}));
  EXPECT_TRUE(apply_key_rules(vae_ldm_rules(), "encoder.down.0.block.0.bogus.weight", 4).empty());
  EXPECT_THROW(apply_key_rules(vae_ldm_rules(), "decoder.up.4.upsample.conv.weight", 4), Error);

  // Fused q|k|v split: three targets holding consecutive thirds.
  r = apply_key_rules(clip_openclip_rules(), "transformer.resblocks.5.attn.in_proj_weight");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[1].name, "text_model.encoder.layers.5.self_attn.k_proj.weight");
  const Tensor fused = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  EXPECT_EQ(transform_tensor(fused, r[2].transform, r[2].part).to_f32_vector(), (std::vector<float>{4, 5}));
  // OpenCLIP's text_projection is x @ P: the Linear weight is P^T.
  r = apply_key_rules(clip_openclip_rules(), "text_projection");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(transform_tensor(fused, r[0].transform, 0).to_f32_vector(), (std::vector<float>{0, 2, 4, 1, 3, 5}));

  // A table where a key matches two rows is a bug and says so.
  const KeyRule ambiguous[] = {{"a.*", "x.{0}"}, {"a.#", "y.{0}"}};
  EXPECT_THROW(apply_key_rules(ambiguous, "a.1"), Error);
  EXPECT_EQ(apply_key_rules(ambiguous, "a.b")[0].name, "x.b");
}

// Byte equality of two tensors (same dtype and shape).
void expect_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  EXPECT_EQ(std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()), 0) << what << " differs";
}

class SplitFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(SplitFixture, SplitMatchesDiffusersFolder) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const std::string dir = fixtures_dir() + "/" + fam;
  const Checkpoint single = load_safetensors(dir + "/single_file.safetensors");
  const CheckpointInfo info = probe_single_file(index_tensors(single.tensors), CheckpointFormat::kSafetensors);
  const Family family = info.family->family;
  EXPECT_EQ(info.family->name, fam);
  EXPECT_EQ(info.variant, Variant::kBase);
  EXPECT_NE(info.prediction, Prediction::kVPrediction);
  EXPECT_EQ(info.unet_in_channels, 4);

  const UNetConfig unet_cfg = UNetConfig::from_json(read_json(dir + "/model/unet/config.json"));
  const ClipTextConfig te1 = ClipTextConfig::from_json(read_json(dir + "/model/text_encoder/config.json"), false);
  std::optional<ClipTextConfig> te2;
  if (family == Family::kSDXL)
    te2 = ClipTextConfig::from_json(read_json(dir + "/model/text_encoder_2/config.json"), true);
  const SingleFileParts parts = split_single_file(single.tensors, family, unet_cfg, te1, te2);
  EXPECT_TRUE(parts.ignored.empty()) << parts.ignored.size() << " ignored, first: " << parts.ignored[0];

  const std::vector<std::pair<std::string, const TensorMap*>> components = {
      {"unet/diffusion_pytorch_model.safetensors", &parts.unet},
      {"vae/diffusion_pytorch_model.safetensors", &parts.vae},
      {"text_encoder/model.safetensors", &parts.text_encoder},
      {"text_encoder_2/model.safetensors", &parts.text_encoder_2}};
  size_t total = 0;
  for (const auto& [file, got] : components) {
    if (file.rfind("text_encoder_2", 0) == 0 && !te2) {
      EXPECT_TRUE(got->empty());
      continue;
    }
    SCOPED_TRACE(file);
    const Checkpoint want = load_safetensors(dir + "/model/" + file);
    EXPECT_EQ(got->size(), want.tensors.size());
    for (const auto& [name, t] : want.tensors) {
      auto it = got->find(name);
      if (it == got->end()) {
        ADD_FAILURE() << "missing " << name;
        continue;
      }
      expect_identical(it->second, t, name);
      ++total;
    }
  }
  EXPECT_GT(total, 300u);
}

INSTANTIATE_TEST_SUITE_P(Families, SplitFixture, ::testing::Values("sd1", "sd2", "sdxl"));

}  // namespace
}  // namespace diffuse
