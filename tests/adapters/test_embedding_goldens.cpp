// Textual inversion through the pipeline: diffusers' goldens
// (load_textual_inversion(file, token="<fixture-concept>"), fixture set v2,
// section textual_inversion) replayed with A1111's rule instead (the file,
// renamed, named by its stem in the prompt); and what the conditioning does
// with an embedding: its vectors stand where its words would (bit for bit),
// in weighting, across 75-token chunks, in the negative prompt; the infotext's
// "TI hashes"; errors that leave the model as it was.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "adapters/embedding.h"
#include "core/error.h"
#include "core/ops.h"
#include "io/checkpoint.h"
#include "io/infotext.h"
#include "io/png.h"
#include "io/sha256.h"
#include "pipeline/pipeline.h"
#include "pipeline/pipeline_impl.h"
#include "pipeline/edit_runs.h"
#include "test_util.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using namespace testing;

std::string model_dir(const std::string& fam) { return fixtures_dir() + "/" + fam + "/model"; }

Pipeline& pipeline(const std::string& fam) {
  static std::map<std::string, std::unique_ptr<Pipeline>> cache;
  auto& p = cache[fam];
  if (!p) p = Pipeline::load(model_dir(fam));
  return *p;
}
Pipeline::Impl& impl(const std::string& fam) {
  static std::map<std::string, std::unique_ptr<Pipeline::Impl>> cache;
  auto& p = cache[fam];
  if (!p) p = load_pipeline_impl(model_dir(fam), {});
  return *p;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

std::string infotext_value(const std::string& parameters, const std::string& key) {
  for (const auto& [k, v] : parse_infotext(parameters).extra)
    if (k == key) return v;
  return "";
}

void expect_close(const Tensor& got, const Tensor& want, double rel, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const Diff d = compare(got.to(DType::kF32).to_f32_vector(), want.to(DType::kF32).to_f32_vector());
  EXPECT_LE(d.max_rel, rel) << what << ": " << d.str();
  std::printf("    %s: %s\n", what.c_str(), d.str().c_str());
}


// ---- diffusers' goldens ------------------------------------------------------------

class TextualInversionGoldens : public ::testing::TestWithParam<std::string> {};

TEST_P(TextualInversionGoldens, MatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string fam = GetParam();
  const std::string dir = goldens_dir() + "/" + fam;
  ASSERT_TRUE(fs::exists(dir + "/cases.json")) << dir;
  const nlohmann::json cases = nlohmann::json::parse(read_file(dir + "/cases.json"));
  ASSERT_TRUE(cases.contains("textual_inversion")) << dir << "/cases.json has no textual_inversion section";
  const nlohmann::json& section = cases["textual_inversion"];
  const TensorMap golden = load_safetensors(dir + "/tensors.safetensors").tensors;
  const std::string token = section["token"].get<std::string>();
  ASSERT_FALSE(section["runs"].empty());
  // The vectors diffusers put in each encoder's token table.
  if (section.contains("embedding_values")) {
    const std::vector<std::string> keys = section["embedding_values"].size() == 2
                                              ? std::vector<std::string>{"clip_l", "clip_g"}
                                              : std::vector<std::string>{""};
    int compared = 0;
    for (const auto& run : section["runs"]) {
      const TextualInversionFile f = read_embedding_file(dir + "/" + run["file"].get<std::string>());
      for (const auto& [encoder, tensor_key] : section["embedding_values"].items()) {
        if (!golden.count(tensor_key.get<std::string>())) continue;
        const std::string key = encoder == "text_encoder_2" ? "clip_g" : keys.size() == 2 ? "clip_l" : "";
        ASSERT_TRUE(f.vectors.count(key)) << encoder;
        EXPECT_EQ(f.vectors.at(key).to_f32_vector(), golden.at(tensor_key.get<std::string>()).to(DType::kF32).to_f32_vector())
            << run["file"] << " " << encoder;
        ++compared;
      }
    }
    if (compared) std::printf("  %d embedding tables equal the files' vectors\n", compared);
  }
  int images = 0, latents = 0, run_index = 0;
  for (const auto& run : section["runs"]) {
    const std::string name = run["name"].get<std::string>();
    SCOPED_TRACE(fam + " " + name);
    std::printf("  %s/%s\n", fam.c_str(), name.c_str());
    // A1111's rule: the file (copied under a stem that is one word) named in the prompt.
    const fs::path src = dir + "/" + run["file"].get<std::string>();
    ASSERT_TRUE(fs::exists(src)) << src;
    const std::string stem = "fixtureconcept";
    const std::string tmp = temp_dir();
    const fs::path file = fs::path(tmp) / (stem + src.extension().string());
    fs::copy_file(src, file);

    GenerationParams p;
    p.prompt = replace_all(run["prompt"].get<std::string>(), token, stem);
    ASSERT_NE(p.prompt, run["prompt"].get<std::string>());
    if (!run["negative_prompt"].is_null()) p.negative_prompt = run["negative_prompt"].get<std::string>();
    // Half the runs find it in a folder, half are given the file.
    if (run_index++ % 2 == 0) p.embedding_dirs = {tmp};
    else p.embeddings = {file.string()};
    p.cfg_scale = run["guidance_scale"].get<float>();
    p.steps = run["num_inference_steps"].get<int>();
    p.width = run["width"].get<int>();
    p.height = run["height"].get<int>();
    p.sampler = run["scheduler"].get<std::string>();
    p.seed = run["generator"]["seed"].get<int64_t>();
    p.rng = RngKind::kCpu;

    // The conditioning, where the set stores it.
    const auto& enc = run["encode"];
    if (golden.count(enc["prompt_embeds"].get<std::string>())) {
      Pipeline::Impl& m = impl(fam);
      EmbeddingSet set = m.embeddings_for(p);
      const Pipeline::Impl::Conditioning c = m.encode_prompts({p.prompt}, 1, &set);
      expect_close(c.context, golden.at(enc["prompt_embeds"].get<std::string>()), 1e-4, "prompt_embeds");
      if (enc.contains("pooled_prompt_embeds"))
        expect_close(c.pooled, golden.at(enc["pooled_prompt_embeds"].get<std::string>()), 1e-4, "pooled_prompt_embeds");
      if (golden.count(enc["negative_prompt_embeds"].get<std::string>())) {
        const Pipeline::Impl::Conditioning u = m.encode_prompts({*p.negative_prompt}, 1, &set);
        expect_close(u.context, golden.at(enc["negative_prompt_embeds"].get<std::string>()), 1e-4,
                     "negative_prompt_embeds");
      }
      EXPECT_EQ(set.used().size(), 1u);
    }

    const GenerationResult r = pipeline(fam).generate(p);
    ASSERT_EQ(r.images.size(), 1u);
    EXPECT_EQ(r.timings.unet_evals, run["n_unet_evals"].get<int>());
    // A1111's TI hashes: the name and sha256[:12] of the file.
    EXPECT_EQ(infotext_value(r.images[0].parameters, "TI hashes"),
              stem + ": " + run["file_sha256"].get<std::string>().substr(0, 12));

    const std::string lat_key = run["final_latents"].get<std::string>();
    if (golden.count(lat_key)) {
      expect_close(r.final_latents, golden.at(lat_key), 1e-3, "final latents");
      ++latents;
    }
    // The image: the f32 golden where the set has it, else its 8-bit PNG
    // (diffusers stored one per file format: the formats hold the same vectors).
    if (!run.contains("image")) continue;
    std::vector<float> want;
    const std::string key = run["image"].get<std::string>();
    const std::string png_path = dir + "/" + run.value("image_png", std::string());
    if (golden.count(key)) {
      want = golden.at(key).to(DType::kF32).to_f32_vector();
    } else if (fs::exists(png_path)) {
      const std::string bytes = read_file(png_path);
      const PngImage im = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      for (uint8_t v : im.rgb) want.push_back(v / 255.0f);
    } else {
      continue;
    }
    ++images;
    const std::vector<float> got = to_nhwc(r.decoded);
    ASSERT_EQ(got.size(), want.size());
    double sum = 0, worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const double d = std::fabs(got[i] - want[i]);
      sum += d;
      worst = std::max(worst, d);
    }
    std::printf("    image: mean %.4f/255, max %.3f/255\n", sum / got.size() * 255, worst * 255);
    EXPECT_LE(sum / got.size(), 1.0 / 255);
    EXPECT_LE(worst, 8.0 / 255);
  }
  EXPECT_GE(latents, 1) << "no final latents golden of " << fam << "/textual_inversion in " << goldens_dir();
  EXPECT_GE(images, 1) << "no image golden of " << fam << "/textual_inversion in " << goldens_dir();
}

INSTANTIATE_TEST_SUITE_P(V2, TextualInversionGoldens, ::testing::Values("sd1", "sd2", "sdxl"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// ---- the vectors stand where the words would --------------------------------------------

// The model's own token rows for `words` ([N, D] of `encoder`): an embedding
// made of them must condition exactly as the words do.
Tensor token_rows(const std::string& fam, size_t encoder, const std::string& words) {
  Pipeline::Impl& m = impl(fam);
  const TextEncoderSlot& slot = m.encoders.at(encoder);
  const Tensor table = slot.model->weights().get("text_model.embeddings.token_embedding.weight").to(DType::kF32);
  std::vector<Tensor> rows;
  for (int id : slot.tokenizer->tokenize(words)) rows.push_back(table.slice(0, id, id + 1));
  return concat(rows, 0).contiguous();
}

// An embedding file `name`.safetensors in `dir` made of the model's rows for `words`.
std::string write_word_embedding(const std::string& fam, const std::string& dir, const std::string& name,
                                 const std::string& words) {
  const std::string path = dir + "/" + name + ".safetensors";
  if (impl(fam).encoders.size() == 2)
    save_safetensors(path, {{"clip_l", token_rows(fam, 0, words)}, {"clip_g", token_rows(fam, 1, words)}});
  else
    save_safetensors(path, {{"emb_params", token_rows(fam, 0, words)}});
  return path;
}

std::string filler(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += i ? " a" : "a";
  return s;
}

class Conditioning : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { DIFFUSE_REQUIRE_FIXTURES(); }
  // The context of `with` (embeddings from dir) and of `words` (none) must be equal, bit for bit.
  void expect_same(const std::string& dir, const std::string& with, const std::string& words, int clip_skip = 1) {
    SCOPED_TRACE(with);
    Pipeline::Impl& m = impl(GetParam());
    GenerationParams p;
    p.embedding_dirs = {dir};
    EmbeddingSet set = m.embeddings_for(p);
    const Pipeline::Impl::Conditioning a = m.encode_prompts({with}, clip_skip, &set);
    const Pipeline::Impl::Conditioning b = m.encode_prompts({words}, clip_skip);
    ASSERT_EQ(a.context.shape(), b.context.shape());
    EXPECT_EQ(a.context.to_f32_vector(), b.context.to_f32_vector());
    EXPECT_FALSE(set.used().empty());
  }
};

TEST_P(Conditioning, EmbeddingVectorsStandWhereTheirWordsWould) {
  const std::string dir = temp_dir();
  write_word_embedding(GetParam(), dir, "trio", "small red circle");  // 3 vectors
  write_word_embedding(GetParam(), dir, "bg", "blue");                 // 1 vector
  expect_same(dir, "a trio on the left", "a small red circle on the left");
  expect_same(dir, "a trio on the left, bg background", "a small red circle on the left, blue background");
  expect_same(dir, "Trio, TRIO", "small red circle, small red circle");
  expect_same(dir, "a trio on the left", "a small red circle on the left", 2);  // clip skip
}

TEST_P(Conditioning, EmbeddingInsidePromptWeighting) {
  const std::string dir = temp_dir();
  write_word_embedding(GetParam(), dir, "trio", "small red circle");
  expect_same(dir, "a (trio:1.3) on the left", "a (small red circle:1.3) on the left");
  expect_same(dir, "a [trio] on ((the left))", "a [small red circle] on ((the left))");
}

TEST_P(Conditioning, EmbeddingThatWouldStraddleAChunkStartsTheNext) {
  const std::string dir = temp_dir();
  write_word_embedding(GetParam(), dir, "trio", "small red circle");
  // 73 + 3 > 75: as if a BREAK came before it.
  expect_same(dir, filler(73) + " trio on the left", filler(73) + " BREAK small red circle on the left");
  // 72 + 3 = 75: it ends the first chunk.
  expect_same(dir, filler(72) + " trio on the left", filler(72) + " small red circle BREAK on the left");
  // Further chunks.
  expect_same(dir, filler(150) + " trio", filler(150) + " BREAK small red circle");
}

INSTANTIATE_TEST_SUITE_P(Families, Conditioning, ::testing::Values("sd1", "sd2", "sdxl"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(ConditioningCache, RepeatedPromptsReadTheFileOnce) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = temp_dir();
  write_word_embedding("sd1", dir, "trio", "small red circle");
  Pipeline::Impl& m = impl("sd1");
  GenerationParams p;
  p.embedding_dirs = {dir};
  const uint64_t before = m.embedding_cache->files_read();
  for (int i = 0; i < 3; ++i) {
    EmbeddingSet set = m.embeddings_for(p);
    m.encode_prompts({"a trio"}, 1, &set);
    m.encode_prompts({"trio, trio"}, 1, &set);
  }
  EXPECT_EQ(m.embedding_cache->files_read(), before + 1);
}

// ---- generation ------------------------------------------------------------------------

GenerationParams small_params(const std::string& prompt) {
  GenerationParams p;
  p.prompt = prompt;
  p.negative_prompt = "";
  p.width = p.height = 64;
  p.steps = 3;
  p.sampler = "euler";
  p.seed = 42;
  return p;
}

TEST(EmbeddingGeneration, NegativePromptEmbeddingAsEasyNegative) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = temp_dir();
  const std::string easy = write_word_embedding("sd1", dir, "EasyNegative", "blurry low quality");
  write_word_embedding("sd1", dir, "unused", "green");
  std::ofstream(dir + "/broken.pt") << "not a torch file";  // not named by any prompt: never read

  GenerationParams with = small_params("a red circle");
  with.negative_prompt = "EasyNegative";
  with.embedding_dirs = {dir};
  GenerationParams words = small_params("a red circle");
  words.negative_prompt = "blurry low quality";
  const GenerationResult a = pipeline("sd1").generate(with);
  const GenerationResult b = pipeline("sd1").generate(words);
  EXPECT_EQ(a.final_latents.to_f32_vector(), b.final_latents.to_f32_vector());
  ASSERT_EQ(a.images.size(), 1u);
  EXPECT_NE(a.images[0].parameters.find("TI hashes: \"EasyNegative: " + sha256_file(easy).substr(0, 12) + "\""),
            std::string::npos)
      << a.images[0].parameters;
  EXPECT_NE(a.images[0].parameters.find("Negative prompt: EasyNegative\n"), std::string::npos);
  EXPECT_EQ(b.images[0].parameters.find("TI hashes"), std::string::npos);

  // In the prompt and the negative prompt: both listed, the prompt's first.
  const std::string trio = write_word_embedding("sd1", dir, "trio", "small red circle");
  with.prompt = "a trio";
  const GenerationResult c = pipeline("sd1").generate(with);
  EXPECT_EQ(infotext_value(c.images[0].parameters, "TI hashes"),
            "trio: " + sha256_file(trio).substr(0, 12) + ", EasyNegative: " + sha256_file(easy).substr(0, 12));
}

TEST(EmbeddingGeneration, ErrorsNameTheFileAndLeaveTheModelAsItWas) {
  DIFFUSE_REQUIRE_FIXTURES();
  Pipeline& pipe = pipeline("sd1");
  const GenerationResult before = pipe.generate(small_params("a red circle"));
  const std::string dir = temp_dir();
  auto expect_error = [&](const GenerationParams& p, ErrorCode code, const std::vector<std::string>& parts) {
    try {
      pipe.generate(p);
      ADD_FAILURE() << "no error for " << p.prompt;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      for (const std::string& s : parts) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
  };
  // Vectors 17 wide for an encoder of width 16.
  save_safetensors(dir + "/wide.safetensors", {{"emb_params", Tensor::zeros({2, 17}, DType::kF32)}});
  GenerationParams p = small_params("a wide red circle");
  p.embedding_dirs = {dir};
  expect_error(p, ErrorCode::kInvalidArgument, {dir + "/wide.safetensors", "17 wide", "text_encoder takes 16"});
  // An SDXL embedding on SD 1.x.
  fs::copy_file(goldens_dir() + "/sdxl/ti/ti_fixture_concept_sdxl.safetensors", dir + "/xl.safetensors");
  p.prompt = "an xl red circle";
  expect_error(p, ErrorCode::kInvalidArgument, {dir + "/xl.safetensors", "SDXL embedding"});
  // Corrupt and truncated files.
  std::ofstream(dir + "/junk.pt") << "PK\x03\x04 and then nothing";
  p.prompt = "junk";
  expect_error(p, ErrorCode::kIo, {dir + "/junk.pt"});
  const std::string good = read_file(goldens_dir() + "/sd1/ti/ti_fixture_concept.safetensors");
  std::ofstream(dir + "/cut.safetensors", std::ios::binary) << good.substr(0, good.size() - 8);
  p.prompt = "a cut circle";
  p.negative_prompt = "cut";
  expect_error(p, ErrorCode::kIo, {dir + "/cut.safetensors"});
  // A named file that does not exist.
  GenerationParams missing = small_params("a red circle");
  missing.embeddings = {dir + "/nothing.pt"};
  expect_error(missing, ErrorCode::kIo, {dir + "/nothing.pt"});

  const GenerationResult after = pipe.generate(small_params("a red circle"));
  EXPECT_EQ(after.final_latents.to_f32_vector(), before.final_latents.to_f32_vector());
}

TEST(EmbeddingGeneration, SdxlNeedsClipLAndClipG) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string dir = temp_dir();
  save_safetensors(dir + "/half.safetensors", {{"clip_l", Tensor::zeros({2, 16}, DType::kF32)}});
  fs::copy_file(goldens_dir() + "/sd1/ti/ti_fixture_concept.safetensors", dir + "/sdone.safetensors");
  GenerationParams p = small_params("a half circle");
  p.embedding_dirs = {dir};
  try {
    pipeline("sdxl").generate(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(dir + "/half.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("has no clip_g"), std::string::npos) << e.what();
  }
  p.prompt = "a sdone circle";
  try {
    pipeline("sdxl").generate(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs clip_l and clip_g"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace diffuse
