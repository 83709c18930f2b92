// `diffuse generate` with LoRAs and embeddings, as a user drives it: --lora
// NAME:W and <lora:NAME:W> in the prompt give the same picture (and another
// than without), --lora-dir and sub-folders, a path, A1111's weight order,
// "Lora hashes" in the PNG with the tag kept in its prompt, --embeddings-dir;
// a bad weight (exit 2) and a missing LoRA (exit 2, its name and the folder's
// LoRAs in the message) fail before the model is loaded.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::noise;

namespace fs = std::filesystem;
using testing::RunResult;

std::string quote(const std::string& s) { return testing::shell_quote(s); }

// A kohya LoRA (rank 4) for the model's UNet attention projections and the
// first text-encoder layer's attention.
void write_kohya_lora(const std::string& model_dir, const std::string& path, uint32_t seed) {
  TensorMap out;
  uint32_t s = seed;
  auto add = [&](const std::string& prefix, const std::string& weight, const Shape& shape) {
    std::string key = prefix + weight.substr(0, weight.size() - 7);
    for (size_t i = prefix.size(); i < key.size(); ++i) key[i] = key[i] == '.' ? '_' : key[i];
    out[key + ".lora_down.weight"] = Tensor::from_vector(noise(4 * shape[1], ++s, 0.3f), {4, shape[1]});
    out[key + ".lora_up.weight"] = Tensor::from_vector(noise(shape[0] * 4, ++s, 0.3f), {shape[0], 4});
    out[key + ".alpha"] = Tensor::from_vector({4.0f}, {});
  };
  auto ends = [](const std::string& n, const char* suffix) {
    const std::string x(suffix);
    return n.size() > x.size() && n.compare(n.size() - x.size(), x.size(), x) == 0;
  };
  for (const auto& [name, t] : load_safetensors(model_dir + "/unet/diffusion_pytorch_model.safetensors").tensors) {
    if (name.find(".attn2.to_") != std::string::npos && t.ndim() == 2 && ends(name, ".weight")) {
      add("lora_unet_", name, t.shape());
    }
  }
  for (const auto& [name, t] : load_safetensors(model_dir + "/text_encoder/model.safetensors").tensors) {
    if (name.rfind("text_model.encoder.layers.0.self_attn.", 0) == 0 && t.ndim() == 2) add("lora_te_", name, t.shape());
  }
  save_safetensors(path, out);
}

class CliLora : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    model_ = testing::fixtures_dir() + "/sd1/model";
    work_ = testing::temp_dir();
    fs::create_directories(work_ + "/models/Lora/styles");
    write_kohya_lora(model_, work_ + "/models/Lora/styles/ink.safetensors", 3);
  }
  // Runs `diffuse generate` in work_ (whose models/Lora is the default LoRA folder).
  RunResult generate(const std::string& args, const std::string& out) {
    return testing::run_command("cd " + quote(work_) + " && " + DIFFUSE_BINARY + " generate --device cpu --model " +
                                quote(model_) + " --steps 2 -W 64 -H 64 --seed 77 --sampler euler --output " +
                                quote(work_ + "/" + out) + " " + args);
  }
  PngImage image(const std::string& out) {
    const std::string bytes = testing::read_file(work_ + "/" + out);
    return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::string parameters(const std::string& out) { return read_png_text(work_ + "/" + out).at("parameters"); }
  std::string model_, work_;
};

TEST_F(CliLora, FlagAndPromptTagGiveTheSamePicture) {
  RunResult r = generate("--prompt 'a red fox'", "base.png");
  ASSERT_EQ(r.code, 0) << r.out;
  r = generate("--prompt 'a red fox <lora:ink:0.8>'", "tag.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("lora: ink, text encoder 0.8, UNet 0.8"), std::string::npos) << r.out;
  // One value per --lora: the positional prompt after it is the prompt.
  r = generate("--lora ink:0.8 'a red fox '", "flag.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(image("tag.png").rgb, image("base.png").rgb) << "the LoRA changes the image";
  EXPECT_EQ(image("tag.png").rgb, image("flag.png").rgb) << "--lora ink:0.8 is <lora:ink:0.8>";

  // The PNG keeps the tag in its prompt and names the LoRA's hash, as A1111 writes it.
  const std::string p = parameters("tag.png");
  EXPECT_EQ(p.rfind("a red fox <lora:ink:0.8>\n", 0), 0u) << p;
  EXPECT_NE(p.find("Lora hashes: \"ink: "), std::string::npos) << p;
  EXPECT_NE(parameters("flag.png").find("Lora hashes: \"ink: "), std::string::npos);

  // A path, a sub-folder path and named weights find the same file with the same weights.
  r = generate("--prompt 'a red fox ' --lora " + quote(work_ + "/models/Lora/styles/ink.safetensors") + ":0.8",
               "path.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(image("path.png").rgb, image("tag.png").rgb);
  r = generate("--prompt 'a red fox <lora:styles/ink:te=0.8:unet=0.8>'", "sub.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(image("sub.png").rgb, image("tag.png").rgb);
}

// A1111's order: <lora:name:TE:UNET>.
TEST_F(CliLora, SecondWeightIsTheUnets) {
  RunResult r = generate("--prompt 'a red fox <lora:ink:0:0.8>' --json", "unet_only.png");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out.substr(r.out.find("{\n")));
  ASSERT_EQ(j["loras"].size(), 1u);
  EXPECT_FLOAT_EQ(j["loras"][0]["te_weight"].get<float>(), 0.0f);
  EXPECT_FLOAT_EQ(j["loras"][0]["unet_weight"].get<float>(), 0.8f);
  r = generate("--prompt 'a red fox' --lora ink:te=0:unet=0.8", "unet_only_flag.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(image("unet_only.png").rgb, image("unet_only_flag.png").rgb);
}

TEST_F(CliLora, LoraDirAndEmbeddingsDir) {
  const std::string other = testing::temp_dir();
  fs::copy_file(work_ + "/models/Lora/styles/ink.safetensors", other + "/elsewhere.safetensors");
  RunResult r = generate("--lora-dir " + quote(other) + " --prompt 'a red fox <lora:elsewhere:0.8>'", "dir.png");
  ASSERT_EQ(r.code, 0) << r.out;
  // Not in the default folder any more: --lora-dir replaces it.
  r = generate("--lora-dir " + quote(other) + " --prompt 'a red fox <lora:ink:0.8>'", "x.png");
  EXPECT_EQ(r.code, 2) << r.out;

  // An embedding from --embeddings-dir, used by its file name.
  const Tensor table = load_safetensors(model_ + "/text_encoder/model.safetensors")
                           .tensors.at("text_model.embeddings.token_embedding.weight")
                           .to(DType::kF32);
  const std::string emb = testing::temp_dir();
  save_safetensors(emb + "/inkconcept.safetensors",
                   {{"emb_params", Tensor::from_vector(table.slice(0, 500, 502).contiguous().to_f32_vector(),
                                                       {2, table.dim(1)})}});
  r = generate("--embeddings-dir " + quote(emb) + " --prompt 'a photo of inkconcept'", "ti.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(parameters("ti.png").find("TI hashes: \"inkconcept: "), std::string::npos) << parameters("ti.png");
}

TEST_F(CliLora, BadWeightIsAUsageError) {
  RunResult r = generate("--prompt 'a red fox <lora:ink:strong>'", "bad.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("<lora:ink:strong>"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'strong' is not a number"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("model:"), std::string::npos) << "fails before loading the model: " << r.out;
  r = generate("--prompt 'a red fox' --lora ink:0.5:lots", "bad.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--lora ink:0.5:lots"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(work_ + "/bad.png"));
}

TEST_F(CliLora, MissingLoraNamesItAndTheFolder) {
  RunResult r = generate("--prompt 'a red fox <lora:watercolour:1>'", "missing.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("LoRA 'watercolour' not found in " + fs::path(work_ + "/models/Lora").lexically_normal().string()),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("(available: ink)"), std::string::npos) << r.out;
  r = generate("--prompt 'a red fox' --lora-dir " + quote(work_ + "/nowhere") + " --lora ink", "missing.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("the folder does not exist"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(work_ + "/missing.png"));
}

TEST_F(CliLora, HelpNamesTheFlags) {
  RunResult r = testing::run_command(std::string(DIFFUSE_BINARY) + " generate --help");
  ASSERT_EQ(r.code, 0);
  for (const char* flag : {"--lora ", "--lora-dir", "--embeddings-dir", "<lora:"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  r = testing::run_command(std::string(DIFFUSE_BINARY) + " serve --help");
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--lora-dir"), std::string::npos);
  EXPECT_NE(r.out.find("--embeddings-dir"), std::string::npos);
}

}  // namespace
}  // namespace diffuse
