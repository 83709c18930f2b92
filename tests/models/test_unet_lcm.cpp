// LCM-distilled UNets (time_cond_proj_dim): the guidance-scale embedding, the
// cond_proj input of the time embedding, config and single-file key handling.
// References: an fp64 evaluation of diffusers' get_guidance_scale_embedding
// formula; an fp64 fold of cond_proj into linear_1's bias (the same network
// without the condition must give the same output); torch's float32 embedding
// (tools/reference/fewstep_reference.py). The diffusers goldens of
// tools/reference/fewstep_goldens.py have not been made yet (no GPU machine in
// the session that wrote this).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/ops.h"
#include "io/checkpoint.h"
#include "models/unet.h"
#include "models/unet_keys.h"
#include "../test_util.h"

namespace diffuse {
namespace {

using testing::compare;

std::string fixture_unet_dir() { return testing::fixtures_dir() + "/sd1/model/unet"; }

UNetConfig lcm_config(int dim = 256) {
  nlohmann::json j = nlohmann::json::parse(testing::read_file(fixture_unet_dir() + "/config.json"));
  j["time_cond_proj_dim"] = dim;
  return UNetConfig::from_json(j);
}

// diffusers' formula in fp64 (no float32 roundings).
std::vector<double> embedding_fp64(double w, int dim) {
  const int half = dim / 2;
  std::vector<double> out(static_cast<size_t>(dim), 0.0);
  for (int i = 0; i < half; ++i) {
    const double arg = w * 1000.0 * std::exp(-i * std::log(10000.0) / (half - 1));
    out[static_cast<size_t>(i)] = std::sin(arg);
    out[static_cast<size_t>(half + i)] = std::cos(arg);
  }
  return out;
}

TEST(GuidanceEmbedding, MatchesTheFormulaInFp64) {
  for (int dim : {256, 7}) {
    for (double w : {0.0, 0.5, 7.0}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", w " + std::to_string(w));
      const Tensor e = guidance_scale_embedding({static_cast<float>(w)}, dim);
      ASSERT_EQ(e.shape(), (Shape{1, dim}));
      const std::vector<float> got = e.to_f32_vector();
      const std::vector<double> want = embedding_fp64(w, dim);
      // torch computes the argument 1000 w f_i in float32: up to ~3 roundings of an
      // argument below 1000 w, so |error| <= 1000 w * 3 * 2^-24 (+ the sin/cos rounding).
      const double bound = 1000.0 * w * 3.0 * std::ldexp(1.0, -24) + 1e-6;
      double worst = 0;
      for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
      EXPECT_LE(worst, bound);
      if (dim % 2 == 1) {
        EXPECT_EQ(got.back(), 0.0f) << "odd dims are zero-padded";
      }
    }
  }
  // w = 0: sin 0 = 0 and cos 0 = 1 exactly.
  const std::vector<float> zero = guidance_scale_embedding({0.0f}, 8).to_f32_vector();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(zero[i], 0.0f);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(zero[i], 1.0f);
  // One row per entry of w.
  EXPECT_EQ(guidance_scale_embedding({1.0f, 2.0f, 3.0f}, 16).shape(), (Shape{3, 16}));
  EXPECT_EQ(testing::error_of([] { guidance_scale_embedding({}, 16); }).code(), ErrorCode::kInvalidArgument);
}

// The w-embedding as diffusers computes it in float32 (torch), and its fp64 value.
TEST(GuidanceEmbedding, MatchesTheTorchReference) {
  const nlohmann::json w = nlohmann::json::parse(testing::read_file(std::string(DIFFUSE_SOURCE_DIR) + "/tests/sampling/data/fewstep_reference.json"))["w_embedding"];
  const std::vector<float> got =
      guidance_scale_embedding({w["w"].get<float>()}, w["dim"].get<int>()).to_f32_vector();
  const testing::Diff f32 = testing::compare(got, w["float32"].get<std::vector<float>>());
  const testing::Diff f64 = testing::compare(got, w["float64"].get<std::vector<float>>());
  std::printf("  w-embedding (w 7, dim 256) vs torch float32: %s; vs float64: %s\n", f32.str().c_str(),
              f64.str().c_str());
  // The argument 1000 w f_i (up to 7000 rad) is a float32 in torch and here; torch's vectorised
  // exp / log round f_i differently from libm's by an ulp, which moves the argument by up to
  // 1000 w x 3 x 2^-24 = 1.25e-3 (torch's float32 is 4.1e-4 from fp64 itself).
  const double bound = 1000.0 * w["w"].get<double>() * 3.0 * std::ldexp(1.0, -24);
  EXPECT_LE(f32.max_abs, bound) << f32.str();
  EXPECT_LE(f64.max_abs, bound) << f64.str();
  // The low frequencies (small arguments) agree to float32 precision.
  const std::vector<float> t32 = w["float32"].get<std::vector<float>>();
  for (size_t i = 100; i < 128; ++i) EXPECT_NEAR(got[i], t32[i], 1e-6) << i;
}

TEST(LcmUNetConfig, ParsesAndDeclaresCondProj) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig c = lcm_config();
  EXPECT_EQ(c.time_cond_proj_dim, 256);
  EXPECT_TRUE(c.has_guidance_embedding());
  bool found = false;
  for (const auto& [name, shape] : UNet::expected_tensors(c)) {
    if (name == "time_embedding.cond_proj.weight") {
      found = true;
      EXPECT_EQ(shape, (Shape{c.block_out_channels[0], 256}));
    }
    EXPECT_NE(name, "time_embedding.cond_proj.bias") << "cond_proj has no bias";
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(c.architecture_differences(lcm_config(128)), std::vector<std::string>{"time_cond_proj_dim"});
  // Single files: the LDM-style name and the diffusers name the conversion script leaves.
  std::vector<std::string> ldm_keys;
  for (const auto& [k, shape] : unet_ldm_tensors(c)) ldm_keys.push_back(k);
  EXPECT_NE(std::find(ldm_keys.begin(), ldm_keys.end(), "time_embed.cond_proj.weight"), ldm_keys.end());
  const auto names = unet_ldm_to_diffusers({"time_embed.cond_proj.weight", kLdmCondProjAlias}, c);
  EXPECT_EQ(names.at("time_embed.cond_proj.weight"), "time_embedding.cond_proj.weight");
  EXPECT_EQ(names.at(kLdmCondProjAlias), "time_embedding.cond_proj.weight");
  // Without time_cond_proj_dim the key is not this UNet's.
  const UNetConfig plain = lcm_config(0);
  EXPECT_FALSE(plain.has_guidance_embedding());
  EXPECT_EQ(testing::error_of([&] { unet_ldm_to_diffusers({"time_embed.cond_proj.weight"}, plain); }).code(),
            ErrorCode::kIo);
  nlohmann::json bad = nlohmann::json::parse(testing::read_file(fixture_unet_dir() + "/config.json"));
  bad["time_cond_proj_dim"] = 2;
  EXPECT_EQ(testing::error_of([&] { UNetConfig::from_json(bad); }).code(), ErrorCode::kInvalidArgument);
}

// The fixture UNet plus a seeded cond_proj.
TensorMap lcm_weights(const UNetConfig& c, uint64_t seed) {
  TensorMap w = load_safetensors(fixture_unet_dir() + "/diffusion_pytorch_model.safetensors").tensors;
  for (auto& [k, t] : w) t = t.to(DType::kF32);
  const int64_t c0 = c.block_out_channels[0];
  std::vector<float> v = testing::noise(static_cast<size_t>(c0 * c.time_cond_proj_dim), static_cast<uint32_t>(seed), 0.05f);
  w["time_embedding.cond_proj.weight"] = Tensor::from_vector(v, {c0, c.time_cond_proj_dim});
  return w;
}

// linear_1(t_emb + W_c cond) = W_1 t_emb + (b_1 + W_1 W_c cond): the condition folded into
// linear_1's bias (fp64) makes the plain UNet compute the same function.
TEST(LcmUNet, CondProjEqualsAFoldedBias) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig c = lcm_config();
  TensorMap w = lcm_weights(c, 11);
  const UNet lcm(c, w);
  const float guidance = 8.0f;
  const Tensor cond = guidance_scale_embedding({guidance - 1.0f}, c.time_cond_proj_dim);  // [1, 256]

  const int64_t c0 = c.block_out_channels[0], D = c.time_cond_proj_dim, T = c.time_embed_dim();
  const std::vector<float> wc = w.at("time_embedding.cond_proj.weight").to_f32_vector();  // [c0, D]
  const std::vector<float> w1 = w.at("time_embedding.linear_1.weight").to_f32_vector();   // [T, c0]
  const std::vector<float> b1 = w.at("time_embedding.linear_1.bias").to_f32_vector();     // [T]
  const std::vector<float> e = cond.to_f32_vector();
  std::vector<double> proj(static_cast<size_t>(c0), 0.0);
  for (int64_t i = 0; i < c0; ++i)
    for (int64_t k = 0; k < D; ++k) proj[i] += static_cast<double>(wc[i * D + k]) * e[k];
  std::vector<float> folded(static_cast<size_t>(T));
  for (int64_t o = 0; o < T; ++o) {
    double acc = b1[o];
    for (int64_t i = 0; i < c0; ++i) acc += static_cast<double>(w1[o * c0 + i]) * proj[i];
    folded[o] = static_cast<float>(acc);
  }
  TensorMap plain_w = w;
  plain_w.erase("time_embedding.cond_proj.weight");
  plain_w["time_embedding.linear_1.bias"] = Tensor::from_vector(folded, {T});
  const UNet plain(lcm_config(0), plain_w);

  const Tensor x = Tensor::from_vector(testing::noise(4 * 16 * 16, 5, 1.0f), {1, 4, 16, 16});
  const Tensor ctx = Tensor::from_vector(testing::noise(77 * 16, 6, 1.0f), {1, 77, 16});
  const Tensor t = Tensor::full({1}, 759.0f);
  const std::vector<float> got = lcm.forward(x, t, ctx, {}, {}, nullptr, nullptr, cond).to_f32_vector();
  const std::vector<float> want = plain.forward(x, t, ctx).to_f32_vector();
  const testing::Diff d = compare(got, want);
  std::printf("  cond_proj vs folded bias: %s\n", d.str().c_str());
  EXPECT_LE(d.max_rel, 1e-4) << d.str();
  // The condition matters: guidance 1 (w = 0) gives another output.
  const Tensor cond0 = guidance_scale_embedding({0.0f}, c.time_cond_proj_dim);
  const testing::Diff other = compare(lcm.forward(x, t, ctx, {}, {}, nullptr, nullptr, cond0).to_f32_vector(), want);
  EXPECT_GT(other.max_rel, 1e-2) << other.str();
  // A batch of 2 with one shared condition row gives each image the same output as alone.
  const Tensor x2 = concat({x, x}, 0), ctx2 = concat({ctx, ctx}, 0);
  const std::vector<float> two = lcm.forward(x2, Tensor::full({2}, 759.0f), ctx2, {}, {}, nullptr, nullptr, cond).to_f32_vector();
  const std::vector<float> second(two.begin() + static_cast<long>(got.size()), two.end());
  EXPECT_LE(compare(second, got).max_rel, 1e-5);
}

TEST(LcmUNet, RefusesAMissingOrStrayCondition) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig c = lcm_config();
  const UNet lcm(c, lcm_weights(c, 3));
  const Tensor x = Tensor::zeros({1, 4, 16, 16}, DType::kF32), ctx = Tensor::zeros({1, 77, 16}, DType::kF32);
  const Tensor t = Tensor::full({1}, 500.0f);
  const Error missing = testing::error_of([&] { lcm.forward(x, t, ctx); });
  EXPECT_EQ(missing.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(missing.what()).find("timestep_cond"), std::string::npos) << missing.what();
  const Tensor wrong = guidance_scale_embedding({1.0f}, 128);
  EXPECT_EQ(testing::error_of([&] { lcm.forward(x, t, ctx, {}, {}, nullptr, nullptr, wrong); }).code(),
            ErrorCode::kInvalidArgument);
  TensorMap plain_w = lcm_weights(c, 3);
  plain_w.erase("time_embedding.cond_proj.weight");
  const UNet plain(lcm_config(0), plain_w);
  EXPECT_EQ(testing::error_of([&] { plain.forward(x, t, ctx, {}, {}, nullptr, nullptr, wrong); }).code(),
            ErrorCode::kInvalidArgument);
  // The checkpoint must hold cond_proj when the config names it.
  EXPECT_EQ(testing::error_of([&] { UNet u(c, plain_w); }).code(), ErrorCode::kIo);
}

}  // namespace
}  // namespace diffuse
