// The weights contract (models/weights.h): one check with one error code and
// one message form for every model, the placed table (get, replace), the one
// random initialiser and the one dtype conversion.
#include <cmath>

#include "core/error.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/weights.h"
#include "test_util.h"

namespace diffuse {
namespace {

const WeightSpecs kSpecs = {{"a.weight", {4, 3}}, {"a.bias", {4}}, {"norm.weight", {4}}};

std::string check_error(const TensorMap& w, ExtraWeights extras, ErrorCode* code = nullptr) {
  try {
    check_weights(w, kSpecs, "model", extras);
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

TEST(Weights, OneCheckOneCodeOneMessageForm) {
  TensorMap w = random_weights(kSpecs, 1, DType::kF32);
  EXPECT_EQ(check_error(w, ExtraWeights::kReject), "");
  ErrorCode code = ErrorCode::kRuntime;
  TensorMap bad = w;
  bad.erase("a.bias");
  EXPECT_EQ(check_error(bad, ExtraWeights::kAllow, &code), "model: missing 'a.bias' (4)");
  EXPECT_EQ(code, ErrorCode::kIo);
  bad = w;
  bad["a.weight"] = Tensor::zeros({3, 4}, DType::kF32);
  EXPECT_EQ(check_error(bad, ExtraWeights::kAllow), "model: 'a.weight' has shape (3,4), expected (4,3)");
  bad = w;
  bad["norm.weight"] = Tensor::from_ids({1, 2, 3, 4}, {4});
  EXPECT_EQ(check_error(bad, ExtraWeights::kAllow), "model: 'norm.weight' has dtype i64, expected a floating type");
  bad = w;
  bad["extra"] = Tensor::zeros({2}, DType::kF16);
  EXPECT_EQ(check_error(bad, ExtraWeights::kAllow), "");
  EXPECT_EQ(check_error(bad, ExtraWeights::kReject, &code), "model: unexpected 'extra' (2)");
  EXPECT_EQ(code, ErrorCode::kIo);
  bad.erase("a.bias");
  EXPECT_EQ(check_error(bad, ExtraWeights::kReject),
            "model: 2 weight problems:\n  missing 'a.bias' (4)\n  unexpected 'extra' (2)");
  // Many problems: eight named, the rest counted.
  EXPECT_NE(check_error(TensorMap{}, ExtraWeights::kAllow).find("3 weight problems"), std::string::npos);
  WeightSpecs many;
  for (int i = 0; i < 11; ++i) many.push_back({"t" + std::to_string(i), {1}});
  try {
    check_weights(TensorMap{}, many, "model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\n  ... and 3 more"), std::string::npos) << e.what();
  }
}

// The same problem reads the same, with the same code, from every model.
TEST(Weights, EveryModelReportsTheSameWay) {
  auto error_of = [](const std::function<void()>& fn) -> std::pair<ErrorCode, std::string> {
    try {
      fn();
    } catch (const Error& e) {
      return {e.code(), e.what()};
    }
    return {ErrorCode::kRuntime, ""};
  };
  ClipTextConfig clip;
  clip.hidden_size = 8, clip.intermediate_size = 12, clip.num_hidden_layers = 1, clip.num_attention_heads = 2;
  clip.max_position_embeddings = 6, clip.vocab_size = 10;
  TensorMap cw = ClipTextModel::random_weights(clip, 1);
  cw.erase("text_model.final_layer_norm.bias");
  auto [clip_code, clip_msg] = error_of([&] { ClipTextModel m(clip, cw); });
  EXPECT_EQ(clip_code, ErrorCode::kIo);
  EXPECT_EQ(clip_msg, "text_encoder: missing 'text_model.final_layer_norm.bias' (8)");

  VaeConfig vae;
  vae.block_out_channels = {4, 8};
  vae.norm_num_groups = 2;
  vae.layers_per_block = 1;
  TensorMap vw = Vae::random_weights(vae, 1);
  vw["decoder.conv_out.bias"] = Tensor::zeros({4}, DType::kF32);
  auto [vae_code, vae_msg] = error_of([&] { Vae m(vae, vw); });
  EXPECT_EQ(vae_code, ErrorCode::kIo);
  EXPECT_EQ(vae_msg, "vae: 'decoder.conv_out.bias' has shape (4), expected (3)");

  UNetConfig unet;
  unet.block_out_channels = {32, 32};
  unet.layers_per_block = {1, 1};
  unet.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  unet.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  unet.attention_head_dim = {2, 2};
  unet.cross_attention_dim = {8, 8};
  unet.transformer_layers_per_block = {{1}, {1}};
  TensorMap uw = UNet::random_weights(unet, 1, DType::kF32);
  uw.erase("conv_out.bias");
  auto [unet_code, unet_msg] = error_of([&] { UNet m(unet, uw); });
  EXPECT_EQ(unet_code, ErrorCode::kIo);
  EXPECT_EQ(unet_msg, "unet: missing 'conv_out.bias' (4)");
}

TEST(Weights, TableGetsAndReplacesByName) {
  const TensorMap src = random_weights(kSpecs, 2, DType::kF32);
  WeightTable t("model", kSpecs, src, DType::kF16, Device::kCPU, ExtraWeights::kReject);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.get("a.weight").dtype(), DType::kF16);  // placed in the table's dtype
  EXPECT_EQ(t.get("a.weight").to_f32_vector(), src.at("a.weight").to(DType::kF16).to_f32_vector());
  EXPECT_FALSE(t.find("nope").defined());
  try {
    t.get("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("no weight named 'nope'"), std::string::npos);
  }
  const Tensor twos = Tensor::full({4, 3}, 2.0f);
  t.replace("a.weight", twos);
  EXPECT_EQ(t.get("a.weight").dtype(), DType::kF16);
  EXPECT_EQ(t.get("a.weight").to_f32_vector(), std::vector<float>(12, 2.0f));
  try {
    t.replace("a.bias", twos);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("'a.bias' has shape (4,3), expected (4)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.replace("a.bias", Tensor::from_ids({1, 2, 3, 4}, {4})), Error);
}

// A replaced weight is what the model computes with, and putting the old one
// back restores the old output exactly (LoRA patches and unpatches this way).
TEST(Weights, ModelsComputeWithReplacedWeights) {
  UNetConfig c;
  c.block_out_channels = {32, 32};
  c.layers_per_block = {1, 1};
  c.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  c.attention_head_dim = {2, 2};
  c.cross_attention_dim = {8, 8};
  c.transformer_layers_per_block = {{1}, {1}};
  UNet unet(c, UNet::random_weights(c, 4, DType::kF32));
  const Tensor x = Tensor::full({1, 4, 8, 8}, 0.3f), t = Tensor::from_vector({500.0f}, {1});
  const Tensor ctx = Tensor::full({1, 3, 8}, 0.2f);
  const std::vector<float> before = unet.forward(x, t, ctx).to_f32_vector();
  const std::string name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
  const Tensor old = unet.weights().get(name);
  unet.replace_weight(name, Tensor::full(old.shape(), 0.05f));
  EXPECT_NE(unet.forward(x, t, ctx).to_f32_vector(), before);
  unet.replace_weight(name, old);
  EXPECT_EQ(unet.forward(x, t, ctx).to_f32_vector(), before);

  ClipTextConfig cc;
  cc.hidden_size = 8, cc.intermediate_size = 12, cc.num_hidden_layers = 1, cc.num_attention_heads = 2;
  cc.max_position_embeddings = 6, cc.vocab_size = 10;
  ClipTextModel clip(cc, ClipTextModel::random_weights(cc, 5));
  const Tensor ids = Tensor::from_ids({1, 2, 9, 0}, {1, 4});
  const std::vector<float> h = clip.forward(ids).last_hidden_state.to_f32_vector();
  clip.replace_weight("text_model.encoder.layers.0.mlp.fc2.bias", Tensor::full({8}, 1.0f));
  EXPECT_NE(clip.forward(ids).last_hidden_state.to_f32_vector(), h);
}

TEST(Weights, RandomInitIsDeterministicAndNeverZeros) {
  const WeightSpecs specs = {{"big.weight", {256, 256}}, {"big.bias", {256}}, {"ln.weight", {4096}}};
  const TensorMap a = random_weights(specs, 9, DType::kF32);
  EXPECT_EQ(a.at("big.weight").to_f32_vector(), random_weights(specs, 9, DType::kF32).at("big.weight").to_f32_vector());
  EXPECT_NE(a.at("big.weight").to_f32_vector(), random_weights(specs, 10, DType::kF32).at("big.weight").to_f32_vector());
  auto rms = [](const std::vector<float>& v, float centre) {
    double s = 0;
    for (float x : v) s += (x - centre) * (x - centre);
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  EXPECT_NEAR(rms(a.at("big.weight").to_f32_vector(), 0.0f), 0.02, 0.0005);
  EXPECT_NEAR(rms(a.at("big.bias").to_f32_vector(), 0.0f), 0.02, 0.003);  // biases too: never all zeros
  const std::vector<float> ln = a.at("ln.weight").to_f32_vector();
  EXPECT_NEAR(rms(ln, 1.0f), 0.02, 0.002);  // norm scales around 1
  for (float x : ln) ASSERT_LT(std::fabs(x - 1.0f), 0.035f);
  // Other dtypes hold the same draws, rounded.
  const std::vector<float> f32 = a.at("big.weight").to_f32_vector();
  const std::vector<float> bf16 = random_weights(specs, 9, DType::kBF16).at("big.weight").to_f32_vector();
  EXPECT_EQ(bf16, Tensor::from_vector(f32, {256, 256}).to(DType::kBF16).to_f32_vector());
}

TEST(Weights, ConvertWeightsConvertsFloatingCpuTensorsOnly) {
  TensorMap w;
  w["f"] = Tensor::from_vector({1.5f, -2.25f}, {2}).to(DType::kF16);
  w["ids"] = Tensor::from_ids({3, 4}, {2});
  convert_weights(w, DType::kF32);
  EXPECT_EQ(w.at("f").dtype(), DType::kF32);
  EXPECT_EQ(w.at("f").to_f32_vector(), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_EQ(w.at("ids").dtype(), DType::kI64);
  EXPECT_THROW(convert_weights(w, DType::kI32), Error);
}

}  // namespace
}  // namespace diffuse
