// GenerationParams::vae (docs/vae.md): a VAE file or folder in place of the
// model's own, on the sd1 fixture model.
//  - The fixture single file's first_stage_model.* tensors, written as a VAE
//    file of their own (LDM keys, with and without the prefix) and the model's
//    vae/ folder copied elsewhere, decode bit for bit as the built-in VAE.
//  - Other weights change the image; "VAE hash: <sha256[:10]>, VAE: <file name>"
//    follow "Model" in the infotext (A1111's key order).
//  - Corrupt files, wrong shapes, missing tensors and missing paths are errors
//    naming the problem, and leave the model (and the VAE kept) bitwise as before.
//  - fp16 on the CPU (f16 activations): a VAE whose decode overflows 65504
//    decodes again in f32, with a warning, giving exactly what an f32 VAE of
//    the same (f16-rounded) weights gives.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "io/checkpoint.h"
#include "io/infotext.h"
#include "io/sha256.h"
#include "models/vae.h"
#include "models/vae_file.h"
#include "pipeline/pipeline.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

using testing::error_of;
using testing::fixtures_dir;

std::string model_dir() { return fixtures_dir() + "/sd1/model"; }

Pipeline& fp32_pipeline() {
  static std::unique_ptr<Pipeline> p = Pipeline::load(model_dir());
  return *p;
}

GenerationParams small_params() {
  GenerationParams p;
  p.prompt = "a red cube";
  p.negative_prompt = "";
  p.width = p.height = 64;
  p.steps = 3;
  p.seed = 7;
  p.sampler = "euler";
  return p;
}

std::vector<float> decoded(const GenerationResult& r) { return r.decoded.contiguous().to_f32_vector(); }

// The fixture single file's VAE tensors: key prefix kept or stripped.
TensorMap single_file_vae(bool keep_prefix) {
  const TensorMap all = load_safetensors(fixtures_dir() + "/sd1/single_file.safetensors").tensors;
  const std::string prefix = "first_stage_model.";
  TensorMap out;
  for (const auto& [k, t] : all) {
    if (k.rfind(prefix, 0) != 0) continue;
    out.emplace(keep_prefix ? k : k.substr(prefix.size()), t.contiguous());
  }
  return out;
}

// The model's own VAE weights (diffusers names), f32 CPU copies.
TensorMap folder_vae() {
  TensorMap out;
  for (auto& [k, t] : load_safetensors(model_dir() + "/vae/diffusion_pytorch_model.safetensors").tensors)
    out.emplace(k, t.to(DType::kF32).contiguous());
  return out;
}

VaeConfig fixture_vae_config() {
  return VaeConfig::from_json(nlohmann::json::parse(testing::read_file(model_dir() + "/vae/config.json")));
}

// Baseline: the model's own VAE.
const GenerationResult& baseline() {
  static const GenerationResult r = fp32_pipeline().generate(small_params());
  return r;
}

TEST(VaeOverride, LdmSingleFileDecodesBitIdentically) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = testing::temp_dir();
  const TensorMap stripped = single_file_vae(false);
  ASSERT_TRUE(stripped.count("decoder.up.0.block.0.conv1.weight")) << "the fixture's VAE is not in LDM layout";
  save_safetensors(dir + "/vae-ft-test.safetensors", stripped);
  save_safetensors(dir + "/prefixed.safetensors", single_file_vae(true));

  const VaeFile f = read_vae_file(dir + "/vae-ft-test.safetensors");
  EXPECT_EQ(f.layout, "ldm");
  EXPECT_EQ(f.name, "vae-ft-test.safetensors");
  EXPECT_TRUE(f.ignored.empty()) << f.ignored.front();

  for (const char* file : {"vae-ft-test.safetensors", "prefixed.safetensors"}) {
    SCOPED_TRACE(file);
    GenerationParams p = small_params();
    p.vae = dir + "/" + file;
    const GenerationResult r = fp32_pipeline().generate(p);
    EXPECT_EQ(decoded(r), decoded(baseline()));  // bit for bit
    ASSERT_EQ(r.images.size(), 1u);
    EXPECT_EQ(r.images[0].rgb, baseline().images[0].rgb);
    EXPECT_EQ(r.vae_name, file);
    EXPECT_EQ(r.vae_hash, sha256_file(dir + "/" + file).substr(0, 10));
  }
  EXPECT_TRUE(baseline().vae_name.empty());
  EXPECT_EQ(baseline().images[0].parameters.find("VAE"), std::string::npos);
}

TEST(VaeOverride, DiffusersFolderDecodesBitIdentically) {
  DIFFUSE_REQUIRE_FIXTURES();
  const fs::path dir = fs::path(testing::temp_dir()) / "my-vae";
  fs::create_directories(dir);
  fs::copy_file(model_dir() + "/vae/config.json", dir / "config.json");
  fs::copy_file(model_dir() + "/vae/diffusion_pytorch_model.safetensors", dir / "diffusion_pytorch_model.safetensors");
  GenerationParams p = small_params();
  p.vae = dir.string();
  const GenerationResult r = fp32_pipeline().generate(p);
  EXPECT_EQ(decoded(r), decoded(baseline()));
  EXPECT_EQ(r.vae_name, "my-vae");
  EXPECT_EQ(r.vae_hash, sha256_file((dir / "diffusion_pytorch_model.safetensors").string()).substr(0, 10));
  // A diffusers pipeline folder stands for its vae/.
  EXPECT_EQ(read_vae_file(model_dir()).weights_path, fs::path(model_dir() + "/vae/diffusion_pytorch_model.safetensors").lexically_normal().string());
}

TEST(VaeOverride, OtherWeightsChangeTheImageAndTheInfotext) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = testing::temp_dir();
  TensorMap w = folder_vae();
  // A brighter VAE: conv_out's bias + 0.2 adds 0.1 to every pixel before the clamp.
  std::vector<float> bias = w.at("decoder.conv_out.bias").to_f32_vector();
  for (float& b : bias) b += 0.2f;
  w["decoder.conv_out.bias"] = Tensor::from_vector(bias, {static_cast<int64_t>(bias.size())});
  const std::string file = dir + "/bright, vae.safetensors";  // a comma: quoted in the infotext
  save_safetensors(file, w);

  GenerationParams p = small_params();
  p.vae = file;
  const GenerationResult r = fp32_pipeline().generate(p);
  const std::vector<float> a = decoded(r), b = decoded(baseline());
  ASSERT_EQ(a.size(), b.size());
  double mean = 0;
  for (size_t i = 0; i < a.size(); ++i) mean += a[i] - b[i];
  mean /= static_cast<double>(a.size());
  EXPECT_GT(mean, 0.03) << "the brighter VAE did not brighten the image";
  const std::string hash = sha256_file(file).substr(0, 10);
  EXPECT_EQ(r.vae_hash, hash);
  const std::string& text = r.images[0].parameters;
  const std::string expected = "VAE hash: " + hash + ", VAE: \"bright, vae.safetensors\"";
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_LT(text.find("Model: "), text.find("VAE hash: ")) << text;
  const InfotextFields f = parse_infotext(text);
  EXPECT_EQ(f.vae_hash, hash);
  EXPECT_EQ(f.vae, "bright, vae.safetensors");

  // The kept VAE is used again; "" is the model's own again.
  EXPECT_EQ(decoded(fp32_pipeline().generate(p)), a);
  EXPECT_EQ(decoded(fp32_pipeline().generate(small_params())), b);
}

TEST(VaeOverride, BadFilesAreErrorsAndChangeNothing) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = testing::temp_dir();
  // A good override is kept first: failures must not replace it either.
  const std::string good = dir + "/good.safetensors";
  save_safetensors(good, single_file_vae(false));
  GenerationParams pg = small_params();
  pg.vae = good;
  ASSERT_EQ(decoded(fp32_pipeline().generate(pg)), decoded(baseline()));

  {  // not a checkpoint at all
    std::ofstream(dir + "/corrupt.safetensors") << "this is not a safetensors file, it is some text";
  }
  TensorMap wrong = folder_vae();
  wrong["decoder.conv_in.weight"] = Tensor::zeros({64, 4, 1, 1}, DType::kF32);
  save_safetensors(dir + "/wrong_shape.safetensors", wrong);
  TensorMap missing = folder_vae();
  missing.erase("decoder.mid_block.attentions.0.to_q.weight");
  save_safetensors(dir + "/missing.safetensors", missing);
  save_safetensors(dir + "/not_a_vae.safetensors", {{"foo.weight", Tensor::zeros({2}, DType::kF32)}});

  struct Case {
    std::string file;
    ErrorCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"corrupt.safetensors", ErrorCode::kIo, "corrupt.safetensors"},
      {"wrong_shape.safetensors", ErrorCode::kIo, "'decoder.conv_in.weight' has shape (64,4,1,1), expected (64,4,3,3)"},
      {"missing.safetensors", ErrorCode::kIo, "missing 'decoder.mid_block.attentions.0.to_q.weight'"},
      {"not_a_vae.safetensors", ErrorCode::kIo, "holds no VAE tensors"},
      {"no_such_file.safetensors", ErrorCode::kNotFound, "VAE not found"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    GenerationParams p = small_params();
    p.vae = dir + "/" + c.file;
    const Error e = error_of([&] { fp32_pipeline().generate(p); });
    EXPECT_EQ(e.code(), c.code) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << e.what();
  }
  // The model's own VAE and the kept override decode as before, bit for bit.
  EXPECT_EQ(decoded(fp32_pipeline().generate(small_params())), decoded(baseline()));
  EXPECT_EQ(decoded(fp32_pipeline().generate(pg)), decoded(baseline()));
}

// fp16 on the CPU runs the VAE with f16 activations (each op's output is
// rounded to f16), so a decoder whose conv_in is scaled by 1e5 overflows.
TEST(VaeOverride, Fp16OverflowDecodesAgainInF32) {
  DIFFUSE_REQUIRE_FIXTURES();
  LoadOptions o;
  o.precision = Precision::kFp16;
  std::unique_ptr<Pipeline> pipe = Pipeline::load(model_dir(), o);

  // The model's own VAE in f16 does not overflow: no warning, no second decode.
  const GenerationResult plain = pipe->generate(small_params());
  for (const std::string& w : plain.warnings) EXPECT_EQ(w.find("overflowed"), std::string::npos) << w;

  const std::string dir = testing::temp_dir();
  TensorMap w = folder_vae();
  std::vector<float> conv_in = w.at("decoder.conv_in.weight").to_f32_vector();
  for (float& v : conv_in) v *= 1e5f;
  w["decoder.conv_in.weight"] = Tensor::from_vector(conv_in, w.at("decoder.conv_in.weight").shape());
  const std::string file = dir + "/hot.safetensors";
  save_safetensors(file, w);

  GenerationParams p = small_params();
  p.vae = file;
  const GenerationResult r = pipe->generate(p);
  const std::string want = "the VAE's fp16 decode overflowed; decoded again in f32 (A1111's --no-half-vae)";
  EXPECT_NE(std::find(r.warnings.begin(), r.warnings.end(), want), r.warnings.end());

  // The seam: the f16 VAE really gives non-finite values on these latents ...
  const VaeConfig cfg = fixture_vae_config();
  const Tensor z = scale(r.final_latents, 1.0f / cfg.scaling_factor);
  TensorMap w16;
  for (const auto& [k, t] : w) w16.emplace(k, t.to(DType::kF16));
  const Vae vae16(cfg, w16, DType::kF16);
  const std::vector<float> raw16 = vae16.decode(z.to(DType::kF16)).to(DType::kF32).to_f32_vector();
  size_t bad = 0;
  for (float v : raw16) bad += !std::isfinite(v);
  EXPECT_GT(bad, 0u) << "the scaled VAE did not overflow in f16: the test would not test the fallback";

  // ... and the result is exactly the f32 decode with the f16 weights widened (A1111's VAE.to(float32)).
  TensorMap w32;
  for (const auto& [k, t] : w16) w32.emplace(k, t.to(DType::kF32));
  const Vae vae32(cfg, w32, DType::kF32);
  std::vector<float> ref = vae32.decode(z).contiguous().to_f32_vector();
  for (float& v : ref) v = std::clamp(v / 2.0f + 0.5f, 0.0f, 1.0f);
  const std::vector<float> got = decoded(r);
  size_t finite = 0;
  for (float v : got) finite += std::isfinite(v);
  EXPECT_EQ(finite, got.size());
  EXPECT_EQ(got, ref);
}

// The same for an edit's encode: an encoder whose conv_in is scaled by 1e5.
TEST(VaeOverride, Fp16EncodeOverflowEncodesAgainInF32) {
  DIFFUSE_REQUIRE_FIXTURES();
  LoadOptions o;
  o.precision = Precision::kFp16;
  std::unique_ptr<Pipeline> pipe = Pipeline::load(model_dir(), o);
  const std::string dir = testing::temp_dir();
  TensorMap w = folder_vae();
  std::vector<float> conv_in = w.at("encoder.conv_in.weight").to_f32_vector();
  for (float& v : conv_in) v *= 1e5f;
  w["encoder.conv_in.weight"] = Tensor::from_vector(conv_in, w.at("encoder.conv_in.weight").shape());
  save_safetensors(dir + "/hot_encoder.safetensors", w);

  GenerationParams p = small_params();
  p.edit.init_image.width = p.edit.init_image.height = 64;
  p.edit.init_image.px.resize(64 * 64 * 3);
  for (size_t i = 0; i < p.edit.init_image.px.size(); ++i) p.edit.init_image.px[i] = static_cast<uint8_t>(i * 7 % 251);
  p.edit.strength = 0.5;
  const std::string want = "the VAE's fp16 encode overflowed; encoded again in f32 (A1111's --no-half-vae)";
  const GenerationResult plain = pipe->generate(p);  // the model's own VAE: no overflow
  EXPECT_EQ(std::find(plain.warnings.begin(), plain.warnings.end(), want), plain.warnings.end());
  p.vae = dir + "/hot_encoder.safetensors";
  const GenerationResult r = pipe->generate(p);
  EXPECT_NE(std::find(r.warnings.begin(), r.warnings.end(), want), r.warnings.end());
  for (float v : decoded(r)) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace diffuse
