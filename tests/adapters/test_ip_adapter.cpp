// IP-Adapter pieces against this project's own pure-torch float64 reference
// (tools/reference/ipadapter_goldens.py torch_ref/*, written from the
// transformers / diffusers / original IP-Adapter classes) on tiny random
// models (tests/adapters/data/ipadapter): CLIP preprocessing (PIL bicubic),
// the CLIP vision encoder, the base projection and the plus Resampler, the
// .bin and .safetensors readers, the decoupled cross-attention's wiring, the
// per-layer scales and the errors.
#include "ip_adapter_test_util.h"

namespace diffuse {
namespace {

using namespace testing;
using namespace ipa_test;

TEST(IpAdapterPreprocess, MatchesPilBicubicAndClipNormalisation) {
  for (const char* n : {"a", "b"}) {
    SCOPED_TRACE(n);
    const image::Rgb im = read_rgb(data_dir() + "/ref_" + n + ".png");
    const std::vector<float> got = image::clip_pixel_values(im, 32);
    const Diff d = compare(got, golden(pixel_values_key(n)));
    std::printf("  preprocess %s: %s\n", n, d.str().c_str());
    EXPECT_LE(d.max_abs, 1e-5) << d.str();  // PIL's 8-bit pixels exactly, then the float32 normalisation
  }
}

TEST(IpAdapterPreprocess, ResizeIsPilsBicubic) {
  // Bytes from PIL 9.4 Image.resize(..., Image.BICUBIC): a shrink (antialiased) and an enlargement.
  const image::Rgb ramp{4, 1, {0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255}};
  EXPECT_EQ(image::resize_bicubic_pil(ramp, 2, 1).px, (std::vector<uint8_t>{50, 50, 50, 205, 205, 205}));
  EXPECT_EQ(image::resize_bicubic_pil(ramp, 4, 1).px, ramp.px);
  const image::Rgb small{3, 2, {10, 200, 30, 250, 0, 90, 40, 40, 40, 0, 255, 128, 77, 66, 55, 200, 100, 0}};
  const std::vector<uint8_t> want = {
      0,   215, 13,  37,  175, 27,  170, 79,  65,  255, 0,   93,  177, 0,   77,  49,  29,  49,  1,   38,  38,
      0,   221, 31,  32,  185, 42,  150, 89,  69,  239, 4,   88,  171, 8,   69,  70,  39,  42,  33,  48,  33,
      0,   237, 80,  20,  209, 79,  97,  116, 79,  164, 33,  73,  155, 36,  49,  126, 65,  25,  116, 74,  18,
      0,   253, 128, 8,   233, 116, 43,  143, 89,  88,  62,  57,  138, 64,  29,  181, 91,  8,   199, 99,  2,
      0,   255, 146, 3,   243, 131, 23,  153, 93,  60,  73,  52,  132, 74,  21,  202, 101, 1,   231, 109, 0};
  EXPECT_EQ(image::resize_bicubic_pil(small, 7, 5).px, want);
  EXPECT_EQ(error_of([] { image::clip_pixel_values(image::Rgb{}, 224); }).code(), ErrorCode::kInvalidArgument);
}

TEST(IpAdapterEncoder, MatchesTorchReference) {
  const auto enc = ClipVisionModel::load(data_dir() + "/image_encoder", DType::kF32, Device::kCPU);
  EXPECT_EQ(enc->config().image_size, 32);
  const ClipVisionModel::Output o = enc->forward(pixel_values_ab());
  const Diff de = compare(o.image_embeds.to_f32_vector(), golden("torch_ref/image_embeds"));
  const Diff dh = compare(o.penultimate.contiguous().to_f32_vector(), golden("torch_ref/hidden_minus2"));
  const ClipVisionModel::Output u = enc->forward(Tensor::zeros({1, 3, 32, 32}, DType::kF32), false);
  EXPECT_FALSE(u.image_embeds.defined());
  const Diff du = compare(u.penultimate.contiguous().to_f32_vector(), golden("torch_ref/uncond_hidden_minus2"));
  std::printf("  encoder: embeds %s; hidden[-2] %s; uncond %s\n", de.str().c_str(), dh.str().c_str(),
              du.str().c_str());
  EXPECT_LE(de.max_rel, 1e-5);
  EXPECT_LE(dh.max_rel, 1e-5);
  EXPECT_LE(du.max_rel, 1e-5);
}

TEST(IpAdapterEncoder, ConfigInferredFromABareFile) {
  const TensorMap w = load_safetensors(data_dir() + "/image_encoder/model.safetensors").tensors;
  const ClipVisionConfig c = ClipVisionConfig::infer(w);
  EXPECT_EQ(c.hidden_size, 16);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.image_size, 32);
  EXPECT_EQ(c.patch_size, 8);
  EXPECT_EQ(c.projection_dim, 16);
  EXPECT_EQ(c.intermediate_size, 32);
  const Error e = error_of([&] { ClipVisionConfig::infer(TensorMap{}); });
  EXPECT_EQ(e.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e.what()).find("patch_embedding"), std::string::npos) << e.what();
}

class IpAdapterProjection : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(IpAdapterProjection, MatchesTorchReference) {
  const auto [fam, kind] = GetParam();
  const auto ad = load_adapter(fam, kind);
  EXPECT_EQ(ad->kind(), kind == "base" ? IpAdapterKind::kBase : IpAdapterKind::kPlus);
  EXPECT_EQ(ad->num_layers(), fam == "sd1" ? 16u : 17u);
  EXPECT_EQ(ad->tokens_per_image(), kind == "base" ? 4 : 6);
  const Tensor in = kind == "base" ? golden_tensor("torch_ref/image_embeds") : golden_tensor("torch_ref/hidden_minus2");
  const Tensor t = ad->project(in);
  const Diff d = compare(t.contiguous().to_f32_vector(), golden("torch_ref/" + fam + "/" + kind + "/tokens"));
  std::printf("  %s %s tokens %s: %s\n", fam.c_str(), kind.c_str(), shape_str(t.shape()).c_str(), d.str().c_str());
  EXPECT_LE(d.max_rel, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(All, IpAdapterProjection,
                         ::testing::Values(std::make_pair(std::string("sd1"), std::string("base")),
                                           std::make_pair(std::string("sd1"), std::string("plus")),
                                           std::make_pair(std::string("sdxl"), std::string("base")),
                                           std::make_pair(std::string("sdxl"), std::string("plus"))));

// The decoupled cross-attention's wiring, exactly: with every layer's to_k_ip / to_v_ip
// equal to its own to_k / to_v and the text context as the image tokens, each
// cross-attention gives (1 + s) x its text attention, i.e. the plain UNet with every
// attn2.to_out.0.weight scaled by (1 + s). A layer given another layer's weights, a
// skipped layer or a wrong scale breaks the equality.
TEST(IpAdapterAttention, EqualsScaledOutputProjection) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const std::string fam : {"sd1", "sdxl"}) {
    SCOPED_TRACE(fam);
    const UNetConfig cfg = fixture_unet_config(fam);
    const TensorMap w = load_safetensors(fixtures_dir() + "/" + fam + "/model/unet/diffusion_pytorch_model.safetensors").tensors;
    const UNet unet(cfg, w);
    const auto names = UNet::cross_attention_names(cfg);
    const int64_t d = cfg.cross_attention_dim[0];
    const Tensor x = Tensor::from_vector(noise(2 * 4 * 8 * 8, 11, 1.0f), {2, 4, 8, 8});
    const Tensor ctx = Tensor::from_vector(noise(2 * 5 * d, 12, 1.0f), {2, 5, d});
    const Tensor t = Tensor::from_vector({500.0f}, {1});
    Tensor te, ti;
    if (cfg.has_text_time()) {
      te = Tensor::from_vector(noise(2 * 32, 13, 1.0f), {2, 32});
      ti = Tensor::from_vector({64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64}, {2, 6});
    }
    std::vector<float> scales(names.size());
    for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.25f + 0.05f * static_cast<float>(i);
    UNetImagePrompt ip;
    UNetImagePrompt::Source src;
    src.tokens = ctx;
    for (size_t i = 0; i < names.size(); ++i)
      src.layers.push_back({unet.weights().get(names[i].first + ".to_k.weight"),
                            unet.weights().get(names[i].first + ".to_v.weight"), scales[i]});
    ip.sources.push_back(src);
    UNetResiduals r;
    r.image_prompt = &ip;
    const Tensor got = unet.forward(x, t, ctx, te, ti, nullptr, &r);

    UNet scaled(cfg, w);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string k = names[i].first + ".to_out.0.weight";
      scaled.replace_weight(k, scale(w.at(k).to(DType::kF32), 1.0f + scales[i]));
    }
    const Tensor want = scaled.forward(x, t, ctx, te, ti);
    const Diff diff = compare(got.to_f32_vector(), want.to_f32_vector());
    const Tensor plain = unet.forward(x, t, ctx, te, ti);
    const Diff acts = compare(got.to_f32_vector(), plain.to_f32_vector());
    std::printf("  %s decoupled attention identity: %s (the adapter moves the output by %s)\n", fam.c_str(),
                diff.str().c_str(), acts.str().c_str());
    // This build's own f32 noise for the same kind of identity: the plain UNet with its
    // text tokens twice over (softmax over 2L keys instead of L) against the plain UNet.
    // How far rounding travels through the tiny random UNet depends on the compiler's
    // evaluation order (g++ and clang differ several-fold), so the bound follows it.
    const Diff floor = compare(unet.forward(x, t, concat({ctx, ctx}, 1), te, ti).to_f32_vector(),
                               plain.to_f32_vector());
    const double bound = std::max(1e-4, 2 * floor.max_rel);
    std::printf("  %s rounding floor (text tokens twice): %s; bound %.3g\n", fam.c_str(), floor.str().c_str(), bound);
    // Two f32 evaluation orders of the same function (o + s o, and (1 + s) W o); any
    // wiring mistake moves the output on the scale of the adapter's effect (6-8% here).
    EXPECT_LE(diff.max_rel, bound);
    EXPECT_GT(acts.max_rel, 3e-2);
    EXPECT_LT(bound, acts.max_rel / 50);  // the bound stays far below the effect

    // Two images (the tokens twice over) attend like one; zero scales are the plain UNet.
    src.tokens = concat({ctx, ctx}, 1);
    ip.sources[0] = src;
    EXPECT_LE(compare(unet.forward(x, t, ctx, te, ti, nullptr, &r).to_f32_vector(), want.to_f32_vector()).max_rel, bound);
    for (auto& l : ip.sources[0].layers) l.scale = 0.0f;
    EXPECT_EQ(unet.forward(x, t, ctx, te, ti, nullptr, &r).to_f32_vector(), plain.to_f32_vector());
    // A prompt that does not fit is refused.
    ip.sources[0].layers.pop_back();
    const Error e = error_of([&] { unet.forward(x, t, ctx, te, ti, nullptr, &r); });
    EXPECT_NE(std::string(e.what()).find("cross-attentions"), std::string::npos) << e.what();
  }
}

TEST(IpAdapterAttention, ProcessorOrderIsDownUpMid) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json cases = read_python_json_file(data_dir() + "/cases.json");
  for (const std::string fam : {"sd1", "sdxl"}) {
    std::vector<std::string> want;
    const nlohmann::json& order = cases.contains("families") && cases["families"][fam].contains("diffusers_ip_layer_order")
                                      ? cases["families"][fam]["diffusers_ip_layer_order"]
                                      : cases["ip_layers"][fam];
    for (const auto& n : order) {
      std::string s = n.get<std::string>();
      want.push_back(s.substr(0, s.size() - std::string(".processor").size()));
    }
    std::vector<std::string> got;
    for (const auto& n : UNet::cross_attention_names(fixture_unet_config(fam))) got.push_back(n.first);
    EXPECT_EQ(got, want) << fam;
  }
  EXPECT_EQ(UNet::cross_attention_names(UNetConfig::sd15()).size(), 16u);   // ip_adapter.1 ... ip_adapter.31
  EXPECT_EQ(UNet::cross_attention_names(UNetConfig::sdxl_base()).size(), 70u);  // ip_adapter.1 ... ip_adapter.139
}

TEST(IpAdapterScales, ExpandAsDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const UNetConfig sd1 = fixture_unet_config("sd1");  // down 0-2 and up 1-3 have attention; 16 layers
  EXPECT_EQ(ip_adapter_layer_scales(nlohmann::json(0.6), sd1), std::vector<float>(16, 0.6f));
  const auto s = ip_adapter_layer_scales(
      nlohmann::json::parse(R"({"down": {"block_1": [0.0, 1.0]}, "mid": 0.5, "up": {"block_1": [1.0, 0.0, 0.6], "block_3": 0.8}})"),
      sd1);
  // down 0 (2), down 1 (2), down 2 (2), up 1 (3), up 2 (3), up 3 (3), mid (1)
  const std::vector<float> want = {0, 0, 0, 1, 0, 0, 1, 0, 0.6f, 0, 0, 0, 0.8f, 0.8f, 0.8f, 0.5f};
  EXPECT_EQ(s, want);
  const auto all_up = ip_adapter_layer_scales(nlohmann::json::parse(R"({"up": 0.7})"), sd1);
  EXPECT_EQ(std::count(all_up.begin(), all_up.end(), 0.7f), 9);
  for (const char* bad : {R"({"up": {"block_0": 1.0}})", R"({"down": {"block_1": [1, 1, 1]}})",
                          R"({"side": 1})", R"({"up": {"block_x": 1}})", R"({"mid": 2.5})", "-0.1", "\"a\""}) {
    SCOPED_TRACE(bad);
    const Error e = error_of([&] { ip_adapter_layer_scales(nlohmann::json::parse(bad), sd1); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
  const Error e = error_of([&] { ip_adapter_layer_scales(nlohmann::json::parse(R"({"up": {"block_0": 1.0}})"), sd1); });
  EXPECT_NE(std::string(e.what()).find("up.block_0"), std::string::npos) << e.what();
}

TEST(IpAdapterFiles, BinAndSafetensorsReadTheSameTensors) {
  const TensorMap bin = IpAdapter::read_weights(data_dir() + "/sd1_base.bin");
  EXPECT_EQ(bin.count("image_proj.proj.weight"), 1u);
  EXPECT_EQ(bin.count("ip_adapter.31.to_v_ip.weight"), 1u);
  const std::string dir = temp_dir();
  TensorMap copy;
  for (const auto& kv : bin) copy[kv.first] = kv.second.contiguous();
  save_safetensors(dir + "/a.safetensors", copy);
  const TensorMap st = IpAdapter::read_weights(dir + "/a.safetensors");
  ASSERT_EQ(st.size(), bin.size());
  for (const auto& kv : bin) EXPECT_EQ(st.at(kv.first).to_f32_vector(), kv.second.to_f32_vector()) << kv.first;
}

TEST(IpAdapterFiles, ClearErrors) {
  DIFFUSE_REQUIRE_FIXTURES();
  // Wrong family: an SD1 adapter on the SDXL UNet names both.
  const auto sd1 = load_adapter("sd1", "base");
  const Error e = error_of([&] { sd1->check_unet(fixture_unet_config("sdxl"), "SDXL model 'x'"); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("SDXL model 'x'"), std::string::npos) << e.what();
  EXPECT_NO_THROW(sd1->check_unet(fixture_unet_config("sd1"), "m"));
  // An encoder of the wrong width names what the adapter needs.
  ClipVisionConfig big = ClipVisionConfig::vit_bigg14();
  const Error e2 = error_of([&] { sd1->check_encoder(big, "enc/"); });
  EXPECT_NE(std::string(e2.what()).find("image_embeds 16"), std::string::npos) << e2.what();
  EXPECT_NE(std::string(e2.what()).find("ViT-bigG/14"), std::string::npos) << e2.what();
  // Not an adapter / missing tensors / missing file.
  const Error e3 = error_of([&] { IpAdapter(TensorMap{{"x", Tensor::zeros({2}, DType::kF32)}}, DType::kF32, Device::kCPU, "n"); });
  EXPECT_EQ(e3.code(), ErrorCode::kIo);
  EXPECT_NE(std::string(e3.what()).find("image_proj"), std::string::npos) << e3.what();
  TensorMap w = IpAdapter::read_weights(data_dir() + "/sd1_base.bin");
  w.erase("ip_adapter.5.to_k_ip.weight");
  const Error e4 = error_of([&] { IpAdapter(w, DType::kF32, Device::kCPU, "n"); });
  EXPECT_NE(std::string(e4.what()).find("ip_adapter.5.to_k_ip.weight"), std::string::npos) << e4.what();
  EXPECT_EQ(error_of([] { IpAdapter::load("/nonexistent/ip.bin", DType::kF32, Device::kCPU); }).code(),
            ErrorCode::kNotFound);
  const Error e5 = error_of([] { ClipVisionModel::load("/nonexistent/image_encoder", DType::kF32, Device::kCPU); });
  EXPECT_NE(std::string(e5.what()).find("/nonexistent/image_encoder"), std::string::npos) << e5.what();
}

}  // namespace
}  // namespace diffuse
