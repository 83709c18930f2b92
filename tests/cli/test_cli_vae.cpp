// `diffuse generate --vae`, as a user drives it (docs/vae.md): the model's own
// weights as an LDM file give the same picture, with "VAE hash"/"VAE" in the
// PNG; a name in models/VAE (the default --vae-dir) with other weights gives
// another picture; a diffusers folder and a Hugging Face repo id of the local
// cache work; an unknown --vae is a usage error (exit 2) and a corrupt file a
// runtime error (exit 1) naming it; generate, serve and bench list --vae.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "io/sha256.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

std::string quote(const std::string& s) { return testing::shell_quote(s); }

class CliVae : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    model_ = testing::fixtures_dir() + "/sd1/model";
    work_ = testing::temp_dir();
    fs::create_directories(work_ + "/models/VAE");
    // The model's own VAE as an LDM single file (the fixture checkpoint's first_stage_model.*).
    TensorMap ldm;
    for (auto& [k, t] : load_safetensors(testing::fixtures_dir() + "/sd1/single_file.safetensors").tensors)
      if (k.rfind("first_stage_model.", 0) == 0) ldm.emplace(k.substr(18), t.contiguous());
    save_safetensors(work_ + "/own-ldm.safetensors", ldm);
    // A darker VAE in models/VAE: conv_out's bias - 0.2.
    TensorMap w;
    for (auto& [k, t] : load_safetensors(model_ + "/vae/diffusion_pytorch_model.safetensors").tensors)
      w.emplace(k, t.to(DType::kF32).contiguous());
    std::vector<float> bias = w.at("decoder.conv_out.bias").to_f32_vector();
    for (float& b : bias) b -= 0.2f;
    w["decoder.conv_out.bias"] = Tensor::from_vector(bias, {static_cast<int64_t>(bias.size())});
    save_safetensors(work_ + "/models/VAE/dark.safetensors", w);
    std::ofstream(work_ + "/corrupt.safetensors") << "garbage, not a safetensors header";
  }
  RunResult generate(const std::string& args, const std::string& out, const std::string& env = "") {
    return testing::run_command("cd " + quote(work_) + " && " + env + " " + DIFFUSE_BINARY +
                                " generate --device cpu --model " + quote(model_) +
                                " --prompt 'a red fox' --steps 2 -W 64 -H 64 --seed 77 --sampler euler --output " +
                                quote(work_ + "/" + out) + " " + args);
  }
  std::vector<uint8_t> pixels(const std::string& out) {
    const std::string bytes = testing::read_file(work_ + "/" + out);
    return read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).rgb;
  }
  std::string parameters(const std::string& out) { return read_png_text(work_ + "/" + out).at("parameters"); }
  std::string model_, work_;
};

TEST_F(CliVae, FilesNamesFoldersAndCachedRepos) {
  RunResult r = generate("", "base.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(parameters("base.png").find("VAE"), std::string::npos);

  r = generate("--vae " + quote(work_ + "/own-ldm.safetensors"), "ldm.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(pixels("ldm.png"), pixels("base.png")) << "the model's own weights in LDM form decode the same";
  const std::string hash = sha256_file(work_ + "/own-ldm.safetensors").substr(0, 10);
  EXPECT_NE(parameters("ldm.png").find("VAE hash: " + hash + ", VAE: own-ldm.safetensors"), std::string::npos)
      << parameters("ldm.png");
  EXPECT_NE(r.out.find("vae: own-ldm.safetensors [" + hash + "]"), std::string::npos) << r.out;

  // A name in models/VAE, without its extension; --json tells the VAE.
  r = generate("--vae dark --json", "dark.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(pixels("dark.png"), pixels("base.png"));
  const size_t brace = r.out.find("{\n");
  ASSERT_NE(brace, std::string::npos) << r.out;
  const nlohmann::json j = nlohmann::json::parse(r.out.substr(brace, r.out.rfind('}') - brace + 1));
  EXPECT_EQ(j["vae"]["name"], "dark.safetensors");
  EXPECT_EQ(j["vae"]["hash"], sha256_file(work_ + "/models/VAE/dark.safetensors").substr(0, 10));

  // A Hugging Face repo id whose snapshot is in the cache (a diffusers VAE folder).
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  const fs::path snap = fs::path(work_) / "hf" / "models--test-org--my-vae" / "snapshots" / commit;
  fs::create_directories(snap);
  fs::create_directories(fs::path(work_) / "hf" / "models--test-org--my-vae" / "refs");
  std::ofstream(fs::path(work_) / "hf" / "models--test-org--my-vae" / "refs" / "main") << commit;
  fs::copy_file(model_ + "/vae/config.json", snap / "config.json");
  fs::copy_file(work_ + "/models/VAE/dark.safetensors", snap / "diffusion_pytorch_model.safetensors");
  r = generate("--vae test-org/my-vae", "repo.png", "HF_HUB_CACHE=" + quote(work_ + "/hf"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(pixels("repo.png"), pixels("dark.png")) << "the same weights from a diffusers folder";
  EXPECT_NE(parameters("repo.png").find("VAE: test-org/my-vae"), std::string::npos) << parameters("repo.png");
}

TEST_F(CliVae, BadVaesFailWithTheirNames) {
  RunResult r = generate("--vae no-such-vae", "x.png");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--vae 'no-such-vae'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("models/VAE"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(work_ + "/x.png"));

  r = generate("--vae " + quote(work_ + "/corrupt.safetensors"), "y.png");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("corrupt.safetensors"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(work_ + "/y.png"));
}

TEST_F(CliVae, HelpListsVae) {
  for (const char* cmd : {"generate", "serve", "bench"}) {
    SCOPED_TRACE(cmd);
    const RunResult r = testing::run_command(std::string(DIFFUSE_BINARY) + " " + cmd + " --help");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("--vae "), std::string::npos) << r.out;
  }
  EXPECT_NE(testing::run_command(std::string(DIFFUSE_BINARY) + " serve --help").out.find("--vae-dir"),
            std::string::npos);
}

}  // namespace
}  // namespace diffuse
